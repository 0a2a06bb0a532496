"""Extended query tags in Dagster: `reindex_query_tags` indexes tags over existing data, and
`query_tags_sensor` launches it when a tag waits in status 'adding' (dicomlake.tags).

The op runs in the committer pool: a reindex commits to the tenant's tables like an ingest does.
"""

import hashlib

import dagster as dg

from assets import COMMITTER_POOL
from dicomlake.tags import Progress, list_query_tags, reindex
from pipelines.sensors import TENANT_TAG
from resources import LakehouseResource


class ReindexConfig(dg.Config):
    keys: list[str] | None = None  # key, keyword or path of each tag; default: every adding/lagging tag
    window: int = 5000  # seqs per commit; progress is saved after each one


@dg.op(pool=COMMITTER_POOL)
def reindex_tags(context: dg.OpExecutionContext, config: ReindexConfig,
                 lakehouse: LakehouseResource) -> dg.Output:
    tenant = lakehouse.tenant_store()

    def progress(p: Progress) -> None:
        context.log.info(f"{tenant.name}: {p.percent}% ({p.processed}/{p.total} instances, "
                         f"{p.errors} errors)")

    summary = reindex(tenant, config.keys, progress, window=config.window)
    return dg.Output(None, metadata={
        "tags": ", ".join(summary.tags) or "none",
        "latest_seq": summary.latest_seq,
        "instances_processed": summary.processed,
        "values": summary.values,
        "errors": summary.errors,
        "ready": ", ".join(summary.ready) or "none",
        "disabled_by_errors": ", ".join(summary.disabled) or "none",
    })


@dg.job(description="Index extended query tags over existing data; adding tags become ready.")
def reindex_query_tags() -> None:
    reindex_tags()


@dg.sensor(job=reindex_query_tags, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def query_tags_sensor(context: dg.SensorEvaluationContext, lakehouse: LakehouseResource) -> dg.SensorResult:
    """Requests a reindex when tags are in status 'adding'. The run key names those tags and how
    far they are indexed: a run that made progress and stopped is requested again, one that
    failed without progress is not (no hot loop), and a second request never piles onto a run."""
    tenant = lakehouse.tenant_store()
    adding = [tag for tag in list_query_tags(tenant) if tag.status == "adding"]
    if not adding:
        return dg.SensorResult(skip_reason="no extended query tag is waiting to be indexed")
    active = context.instance.get_runs(dg.RunsFilter(
        job_name=reindex_query_tags.name,
        statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                  dg.DagsterRunStatus.STARTED],
    ), limit=1)
    if active:
        return dg.SensorResult(skip_reason=f"reindex run {active[0].run_id} is in progress")
    state = ";".join(f"{tag.id}@{tag.indexed_through}" for tag in adding)
    run_key = f"{tenant.name}:" + hashlib.sha256(state.encode()).hexdigest()[:16]
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=run_key, tags={TENANT_TAG: tenant.name})])
