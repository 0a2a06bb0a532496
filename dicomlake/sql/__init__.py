"""SQL for analysts: one tenant's tables as DuckDB views (`dicomlake sql "SELECT ..."`).

from dicomlake.sql import connect, query
con = connect(tenant)                      # views: studies, series, instances, patients, ...
table = query(tenant, "SELECT modality, count(*) FROM series GROUP BY 1")   # a pyarrow.Table
"""

from __future__ import annotations

import pyarrow as pa

from dicomlake.sql.views import ANALYST_VIEWS, connect, tenant_table_names
from dicomlake.store.lakehouse import TenantStore

__all__ = ["ANALYST_VIEWS", "connect", "query", "tenant_table_names"]


def query(tenant: TenantStore, sql: str, parameters: list[object] | None = None) -> pa.Table:
    """Run one SQL statement over the tenant's views; the result as an Arrow table."""
    con = connect(tenant)
    try:
        return con.sql(sql, params=parameters or None).to_arrow_table()
    finally:
        con.close()
