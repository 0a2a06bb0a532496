"""Index group: study and series level tables, rebuilt from `instances` after each ingest."""

from collections.abc import Iterator, Sequence

import dagster as dg
import polars as pl
from deltalake import DeltaTable

from assets.ingest import COMMITTER_POOL, dicom_instances, table_link
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.levels import build_levels
from dicomlake.store.read import scan
from resources import LakehouseResource

PREVIEW_ROWS = 5
# No patient names or IDs in previews: Dagster metadata is visible to everyone who can open the UI.
STUDY_PREVIEW = ["study_date", "modalities_in_study", "study_description",
                 "number_of_study_related_series", "number_of_study_related_instances"]
SERIES_PREVIEW = ["modality", "series_number", "series_description", "body_part_examined",
                  "number_of_series_related_instances"]

# Eager, minus "wait until every upstream partition exists": with one partition per drop batch, a
# single failed batch would otherwise hold the levels back forever. Levels are rebuilt from the
# whole `instances` table, so whatever has been committed is what they should show.
LEVELS_CONDITION = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


def _markdown(frame: pl.DataFrame) -> str:
    def cell(value: object) -> str:
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def _preview(tenant: TenantStore, name: str, columns: Sequence[str]) -> dg.MetadataValue:
    table = DeltaTable(tenant.table_uri(name), storage_options=tenant.storage_options or None)
    return dg.MetadataValue.md(_markdown(pl.from_arrow(scan(table, columns)).head(PREVIEW_ROWS)))


@dg.multi_asset(
    name="levels",
    specs=[
        dg.AssetSpec("series", deps=[dicom_instances], group_name="index", kinds={"python", "deltalake"},
                     automation_condition=LEVELS_CONDITION,
                     description="One row per series: counts, size, series attributes (QIDO series level)."),
        dg.AssetSpec("studies", deps=[dicom_instances], group_name="index", kinds={"python", "deltalake"},
                     automation_condition=LEVELS_CONDITION,
                     description="One row per study: modalities in study, counts, patient and study data."),
    ],
    # build_levels brings the `instances` projection up to date first: a tenant write, hence the pool.
    pool=COMMITTER_POOL,
)
def levels(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> Iterator[dg.MaterializeResult]:
    tenant = lakehouse.tenant_store()
    summary = build_levels(tenant)
    state = "rebuilt" if summary.rebuilt else "already current"
    context.log.info(f"{tenant.name}: series and studies at seq {summary.seq} ({state})")
    tables = (("series", summary.series, SERIES_PREVIEW), ("studies", summary.studies, STUDY_PREVIEW))
    for name, rows, columns in tables:
        yield dg.MaterializeResult(
            asset_key=name,
            metadata={
                "dagster/row_count": rows,
                "seq": summary.seq,
                "rebuilt": summary.rebuilt,
                "table": table_link(tenant, name),
                "preview": _preview(tenant, name, columns),
            },
        )
