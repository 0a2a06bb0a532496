"""The change feed in Dagster: an observed source whose data version is the latest seq; maintenance."""

from pathlib import Path

import dagster as dg
import pytest

from dicomlake.changefeed import ChangeFeed
from dicomlake.ingest import ingest
from dicomlake.samples import generate_sample_drop
from dicomlake.store import Lakehouse
from pipelines.definitions import build_defs
from resources import DropFolderResource, IngestResource, LakehouseResource

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")


def _defs(root: Path) -> dg.Definitions:
    return build_defs({
        "lakehouse": LakehouseResource(root=str(root)),
        "drop_folder": DropFolderResource(path=str(root.parent / "drops")),
        "ingest_settings": IngestResource(workers=1),
    })


def _data_version(instance: dg.DagsterInstance) -> str | None:
    records = instance.fetch_observations(dg.AssetKey("change_feed"), limit=1).records
    if not records:
        return None
    observation = records[0].asset_observation
    assert observation is not None
    return observation.tags.get("dagster/data_version")


def test_observing_the_feed_records_its_latest_sequence(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    defs = _defs(root)
    job = defs.resolve_job_def("observe_change_feed_job")
    with dg.DagsterInstance.ephemeral() as instance:
        assert job.execute_in_process(instance=instance).success
        assert _data_version(instance) == "0"
        ingest([generate_sample_drop(tmp_path / "drop", n_instances=9, seed=2).dest],
               Lakehouse(root).tenant())
        assert job.execute_in_process(instance=instance).success
        assert _data_version(instance) == "9"


def test_maintenance_job_compacts_without_changing_the_feed(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    tenant = Lakehouse(root).tenant()
    files = generate_sample_drop(tmp_path / "drop", n_instances=12, seed=3).files
    for start in range(0, 12, 3):
        ingest(files[start : start + 3], tenant)
    before = [e.as_json() for e in ChangeFeed(tenant).read(0, 100, include_metadata=True)]
    job = _defs(root).resolve_job_def("maintenance_job")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            run_config={"ops": {"maintain_tenant": {"config": {"vacuum_retention_hours": 0}}}},
        )
    assert result.success
    assert tenant.table("changes").get_add_actions().num_rows == 1  # 4 files compacted into 1
    after = [e.as_json() for e in ChangeFeed(Lakehouse(root).tenant()).read(0, 100, include_metadata=True)]
    assert after == before
