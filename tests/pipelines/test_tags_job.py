"""Extended query tags in Dagster: the sensor asks for a reindex, the job makes adding tags ready."""

from pathlib import Path

import dagster as dg
import pytest

from dicomlake import tags
from dicomlake.ingest import ingest
from dicomlake.samples import generate_sample_drop
from dicomlake.store import Lakehouse
from pipelines.definitions import build_defs
from pipelines.tags import reindex_tags
from resources import DropFolderResource, IngestResource, LakehouseResource

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")


def _context(instance: dg.DagsterInstance, defs: dg.Definitions) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)


def test_sensor_requests_and_job_reindexes_adding_tags(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    tenant = Lakehouse(root).tenant()
    ingest(generate_sample_drop(tmp_path / "drop", n_instances=6, seed=5).files, tenant)
    defs = build_defs({
        "lakehouse": LakehouseResource(root=str(root)),
        "drop_folder": DropFolderResource(path=str(tmp_path / "drops")),
        "ingest_settings": IngestResource(workers=1),
    })
    sensor = defs.resolve_sensor_def("query_tags_sensor")
    job = defs.resolve_job_def("reindex_query_tags")
    assert reindex_tags.pool == "dicomlake_committer"  # one committer per tenant, as ingest
    with dg.DagsterInstance.ephemeral() as instance:
        with _context(instance, defs) as context:
            assert not sensor(context).run_requests  # no tags: nothing to do
        tags.add_query_tags(tenant, ["SliceLocation", "KVP"])
        with _context(instance, defs) as context:
            requests = sensor(context).run_requests
        assert len(requests) == 1 and requests[0].tags == {"dicomlake/tenant": "default"}
        result = job.execute_in_process(instance=instance, tags=requests[0].tags)
        assert result.success
        [event] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
        assert event.step_output_data.metadata["instances_processed"].value == 6
        assert {t.key: t.status for t in tags.list_query_tags(tenant)} == {"00180060": "ready",
                                                                           "00201041": "ready"}
        assert tags.queryable_tags(tenant)["KVP"].indexed_through == 6
        with _context(instance, defs) as context:
            assert not sensor(context).run_requests  # all ready now
