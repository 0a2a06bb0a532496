"""Asset checks: the core's great-expectations rules (dicomlake.quality) reported to Dagster."""

import dagster as dg

from assets.ingest import dicom_instances
from dicomlake.quality import QualityReport, check_changes, check_instances, check_studies
from resources import LakehouseResource


def check_result(report: QualityReport) -> dg.AssetCheckResult:
    """One metadata entry per expectation, plus a table of them all."""
    lines = ["| expectation | column | result |", "|---|---|---|"]
    metadata: dict[str, dg.MetadataValue] = {"rows": dg.MetadataValue.int(report.rows)}
    for r in report.results:
        outcome = "passed" if r["success"] else f"FAILED ({r['unexpected_count']} unexpected)"
        lines.append(f"| {r['expectation']} | {r['column'] or ''} | {outcome} |")
        label = f"{r['column']}: {r['expectation']}" if r["column"] else r["expectation"]
        metadata[label] = dg.MetadataValue.json(
            {"success": r["success"], "unexpected_count": r["unexpected_count"], **r["details"]}
        )
    metadata["expectations"] = dg.MetadataValue.md("\n".join(lines))
    return dg.AssetCheckResult(passed=report.success, metadata=metadata)


# Blocking: when the tables an ingest wrote break a rule, the run fails and no level table in
# the same run is built from them. These check the whole tenant, not only the batch: a rule broken
# by any writer (web app, CLI, another run) shows up on the next ingest.
@dg.asset_check(
    asset=dicom_instances,
    blocking=True,
    description="Instances: valid UIDs present, SOP Instance UID unique, blob referenced, plausible dates.",
)
def instances_are_valid(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    return check_result(check_instances(lakehouse.tenant_store()))


@dg.asset_check(
    asset=dicom_instances,
    blocking=True,
    description="Change feed: seq unique, dense and gapless from 1; actions create/update/delete.",
)
def change_feed_is_dense(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    return check_result(check_changes(lakehouse.tenant_store()))


# Not blocking: nothing downstream of the studies table runs in the same job yet.
@dg.asset_check(
    asset="studies",
    description="Studies: one row per valid Study UID, none empty, together all instances at their seq.",
)
def studies_are_consistent(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    return check_result(check_studies(lakehouse.tenant_store()))
