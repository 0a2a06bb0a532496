"""The drop-folder sensor: turns settled files in the drop folder into drop-batch partitions and runs."""

import dagster as dg

from assets import drop_batches
from dicomlake.drops import list_drop_batches, plan_drop_batch
from pipelines.jobs import ingest_job
from resources import DropFolderResource, LakehouseResource

TENANT_TAG = "dicomlake/tenant"


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def drop_folder_sensor(
    context: dg.SensorEvaluationContext, lakehouse: LakehouseResource, drop_folder: DropFolderResource
) -> dg.SensorResult | dg.SkipReason:
    """Batches settled files from the drop folder and requests one ingest run per new batch.

    The batch manifest is written before the partition exists. If a tick dies between the two,
    the manifest's files are no longer "new", so every manifest not yet registered as a partition
    is requested again here: a batch is never orphaned (re-ingesting is idempotent anyway).
    """
    tenant = lakehouse.tenant_store()
    batch = plan_drop_batch(
        tenant, drop_folder.path, drop_folder.max_files_per_batch, drop_folder.settle_seconds
    )
    registered = set(context.instance.get_dynamic_partitions(drop_batches.name))
    keys = [key for key in list_drop_batches(tenant) if key not in registered]
    if not keys:
        return dg.SkipReason(f"no new settled files in {drop_folder.path}")
    if batch:
        context.log.info(f"batch {batch.key}: {len(batch.files)} files from {drop_folder.path}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=key, partition_key=key, tags={TENANT_TAG: tenant.name}) for key in keys
        ],
        dynamic_partitions_requests=[drop_batches.build_add_request(keys)],
    )
