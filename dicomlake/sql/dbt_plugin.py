"""A dbt-duckdb plugin: dbt sources are the analyst views of `dicomlake.sql`, for one tenant.

dbt-duckdb's own `delta` plugin reads through `DeltaTable.to_pyarrow_dataset`, which aborts the
interpreter at exit with deltalake 1.6 + pyarrow 26 (see dicomlake.store.read); this one reads the
same way `dicomlake sql` does, so dbt, the CLI and cohorts see identical rows. Configured in
dbt_project/profiles.yml:

    plugins:
      - module: dicomlake.sql.dbt_plugin
        alias: dicomlake
        config: {root: ..., tenant: ...}

and a source table with `meta: {plugin: dicomlake}` loads the view of the same name.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import SourceConfig


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        from dicomlake.store.lakehouse import Lakehouse

        lakehouse = Lakehouse(plugin_config.get("root") or None)
        self.tenant = lakehouse.tenant(plugin_config.get("tenant") or "default")
        self._connection = None

    def load(self, source_config: SourceConfig) -> Any:
        from dicomlake.sql import ANALYST_VIEWS, connect

        view = source_config.get("view", source_config.identifier)
        if view not in ANALYST_VIEWS:
            raise ValueError(f"dicomlake has no view {view!r}; views: {', '.join(ANALYST_VIEWS)}")
        if self._connection is None:  # one set of views per dbt invocation
            self._connection = connect(self.tenant)
        return self._connection.sql(f'SELECT * FROM "{view}"').to_arrow_table()

    def default_materialization(self) -> str:
        return "view"
