"""Ingest group: one drop batch per partition goes through the core ingest into the tenant tables."""

from pathlib import PurePosixPath

import dagster as dg

from dicomlake.drops import DropIngestResult, ingest_drop_batch, load_drop_batch
from dicomlake.store.lakehouse import TenantStore
from resources import DropFolderResource, IngestResource, LakehouseResource

# One partition per drop batch; the drop_folder_sensor adds them as it writes batch manifests.
drop_batches = dg.DynamicPartitionsDefinition(name="drop_batches")

# Every step that commits to a tenant's tables runs in this pool; pipelines/dagster.yaml limits
# each pool to 1 slot. The core committer is already safe under concurrent writers (optimistic
# Delta transactions, dense seq), but two writers on one tenant only make each other retry: one at
# a time is as fast and keeps the seq ranges of successive batches in order.
COMMITTER_POOL = "dicomlake_committer"
QUARANTINE_CHECK = "no_new_quarantined_files"
REASONS_LISTED = 50


def table_link(tenant: TenantStore, name: str) -> dg.MetadataValue:
    uri = tenant.table_uri(name)
    return dg.MetadataValue.path(uri) if tenant.lakehouse.is_local else dg.MetadataValue.url(uri)


def _short(source: str, drop_dir: str) -> str:
    return source.removeprefix(drop_dir.rstrip("/") + "/") if drop_dir else PurePosixPath(source).name


def quarantine_check(result: DropIngestResult, drop_dir: str) -> dg.AssetCheckResult:
    """WARN (never fail the run) when this batch sent files to quarantine or left files in the drop."""
    summary = result.summary
    rows = [f"| {_short(e['source'], drop_dir)} | {e['code']} | {e['reason']} |" for e in summary.errors]
    reasons = "\n".join(["| file | code | reason |", "|---|---|---|", *rows[:REASONS_LISTED]])
    return dg.AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        passed=summary.quarantined == 0 and not summary.left_in_place,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "quarantined": summary.quarantined,
            "left_in_drop": len(summary.left_in_place),
            "reasons": dg.MetadataValue.md(reasons if rows else "nothing quarantined"),
        },
    )


@dg.asset(
    partitions_def=drop_batches,
    group_name="ingest",
    pool=COMMITTER_POOL,
    kinds={"python", "deltalake"},
    check_specs=[
        dg.AssetCheckSpec(
            QUARANTINE_CHECK,
            asset="dicom_instances",
            description="Warns when a batch had files that went to quarantine or could not be read; "
            "see `dicomlake quarantine` for the full list.",
        )
    ],
)
def dicom_instances(
    context: dg.AssetExecutionContext,
    lakehouse: LakehouseResource,
    drop_folder: DropFolderResource,
    ingest_settings: IngestResource,
) -> dg.MaterializeResult:
    """DICOM instances of one drop batch, committed to the tenant's `changes` feed and `instances` table.

    Reruns are safe: identical bytes are 'unchanged', and files already moved away count as missing.
    """
    tenant = lakehouse.tenant_store()
    batch = load_drop_batch(tenant, context.partition_key)
    result = ingest_drop_batch(
        tenant, batch, ingest_settings.options(), drop_folder.disposition.value, drop_folder.move_to()
    )
    summary = result.summary
    context.log.info(
        f"{tenant.name}: {summary.received} received, {summary.created} created, {summary.updated} updated, "
        f"{summary.unchanged} unchanged, {summary.quarantined} quarantined, {len(result.missing)} missing"
    )
    return dg.MaterializeResult(
        metadata={
            "tenant": tenant.name,
            "batch_files": len(batch.files),
            "received": summary.received,
            "created": summary.created,
            "updated": summary.updated,
            "unchanged": summary.unchanged,
            "quarantined": summary.quarantined,
            "unreadable": summary.unreadable,
            "missing_files": len(result.missing),
            "rewritten_files": len(result.rewritten),  # changed since batched: left for the next batch
            "left_in_drop": len(summary.left_in_place),  # unreadable, or changed while being read
            # Null seqs when nothing new was committed (a rerun, or a batch of duplicates).
            "first_seq": dg.MetadataValue.int(summary.first_seq) if summary.first_seq else None,
            "last_seq": dg.MetadataValue.int(summary.last_seq) if summary.last_seq else None,
            "instances_per_second": dg.MetadataValue.float(summary.instances_per_second),
            "seconds": dg.MetadataValue.float(summary.seconds),
            "instances_table": table_link(tenant, "instances"),
            "changes_table": table_link(tenant, "changes"),
        },
        check_results=[quarantine_check(result, batch.drop_dir)],
    )
