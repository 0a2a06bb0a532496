"""Nightly table maintenance: compaction, checkpoints, vacuum and the retention purge of blobs.

None of these changes what a feed reader sees (dicomlake.maintenance); the job runs in the
committer pool so it never competes with an ingest of the same tenant for commits.
"""

import dagster as dg

from assets import COMMITTER_POOL
from dicomlake.maintenance import DEFAULT_VACUUM_RETENTION_HOURS, maintain
from pipelines.sensors import TENANT_TAG
from resources import LakehouseResource


class MaintenanceConfig(dg.Config):
    blob_retention_days: float = 7.0  # bytes of replaced/deleted versions are kept this long
    vacuum_retention_hours: int = DEFAULT_VACUUM_RETENTION_HOURS


@dg.op(pool=COMMITTER_POOL)
def maintain_tenant(context: dg.OpExecutionContext, config: MaintenanceConfig,
                    lakehouse: LakehouseResource) -> dg.Output:
    import datetime as dt

    report = maintain(lakehouse.tenant_store(), dt.timedelta(days=config.blob_retention_days),
                      config.vacuum_retention_hours)
    for table in report["tables"]:
        context.log.info(f"{table['table']}: {table['files_removed']} -> {table['files_added']} files, "
                         f"{table['vacuumed']} vacuumed")
    purge = report["purge"]
    return dg.Output(None, metadata={
        "blobs_purged": purge["purged"],
        "bytes_freed": purge["bytes_freed"],
        "waiting_for_retention": purge["waiting_for_retention"],
        "files_compacted": sum(t["files_removed"] for t in report["tables"]),
    })


@dg.job(description="Compact, checkpoint and vacuum the tenant's tables; purge expired blobs.")
def maintenance_job() -> None:
    maintain_tenant()


def maintenance_schedule(tenant: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="nightly_maintenance",
        job=maintenance_job,
        cron_schedule="30 3 * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        tags={TENANT_TAG: tenant},
    )
