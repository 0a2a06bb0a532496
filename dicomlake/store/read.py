"""The one way this library reads Delta tables: delta-rs's own query engine (DataFusion).

Why not DeltaTable.to_pyarrow_table: with pyarrow 26 its Python filesystem handler leaves IO threads
that abort the interpreter at exit ("terminate called without an active exception", seen here on
most full-table reads). The native engine has no such handler, prunes files by their statistics for
`where`, and reads s3:// with the table's own storage options.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def scan(
    table: DeltaTable,
    columns: Sequence[str] | None = None,
    where: str | None = None,
    order_by: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> pa.Table:
    """Rows of `table` (optionally projected, filtered by a SQL predicate, ordered, paged) as Arrow."""
    schema = pa.schema(table.schema().to_arrow())
    wanted = pa.schema([schema.field(c) for c in columns]) if columns else schema
    select = ", ".join(_quote(c) for c in columns) if columns else "*"
    sql = f"SELECT {select} FROM t"
    if where:
        sql += f" WHERE {where}"
    if order_by:
        sql += f" ORDER BY {order_by}"
    if limit is not None:
        sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
    result = pa.table(QueryBuilder().register("t", table).execute(sql).read_all())
    if result.num_columns == 0:
        return wanted.empty_table()
    # The engine hands back view types (Utf8View); give callers the table's declared types.
    return result.cast(wanted)
