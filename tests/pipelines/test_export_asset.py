"""The ml_export asset: real materializations on a tmp lakehouse; its metadata equals the files written."""

import base64
import io
import json
import re
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pydicom
import pytest
from PIL import Image

from assets.export import exports, ml_export
from dicomlake.changefeed.reader import ChangeFeed
from dicomlake.ingest import IngestOptions, ingest
from dicomlake.samples import generate_sample_drop
from dicomlake.store import Lakehouse
from dicomlake.store.read import scan
from pipelines.definitions import build_defs
from pipelines.export import request_export, run_config
from resources import DropFolderResource, IngestResource, LakehouseResource

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("export-asset")
    drop = generate_sample_drop(base / "drop", n_instances=8, seed=4)
    summary = ingest(drop.files, Lakehouse(base / "lake").tenant(), IngestOptions(workers=1))
    assert summary.created == 8
    return base


def _resources(base: Path) -> dict:
    return {
        "lakehouse": LakehouseResource(root=str(base / "lake")),
        "drop_folder": DropFolderResource(path=str(base / "drops")),
        "ingest_settings": IngestResource(workers=1),
    }


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [materialization] = result.asset_materializations_for_node(ml_export.op.name)
    return {key: value.value for key, value in materialization.metadata.items()}


def _sensor_context(instance: dg.DagsterInstance, defs: dg.Definitions) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)


def _png(markdown: str) -> Image.Image:
    match = re.fullmatch(r"!\[one exported frame\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, markdown[:80]
    image = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert image.format == "PNG"
    return image


def test_parquet_partition_metadata_equals_the_files(lake: Path) -> None:
    tenant = Lakehouse(lake / "lake").tenant()
    rows = scan(tenant.table("instances"), ["study_instance_uid", "modality"]).to_pylist()
    studies = sorted({r["study_instance_uid"] for r in rows})
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(exports.name, ["all-studies"])
        result = dg.materialize([ml_export], partition_key="all-studies", instance=instance,
                                resources=_resources(lake), run_config=run_config({"studies": studies}))
    assert result.success
    meta = _metadata(result)
    out = Path(tenant.uri) / "exports" / "all-studies"  # the default destination
    parts = sorted(out.glob("*/*.parquet"))
    written_rows = sum(pq.read_metadata(p).num_rows for p in parts)
    assert meta["exported"] == written_rows == len(rows) and meta["skipped"] == meta["failed"] == 0
    assert meta["files"] == len(parts) and meta["rows"] == written_rows and meta["selected"] == len(rows)
    assert meta["manifest"] == str(out / "manifest.json")
    manifest = json.loads((out / "manifest.json").read_text())
    assert meta["change_feed_seq"] == manifest["change_feed_seq"] == ChangeFeed(tenant).latest_sequence()
    assert meta["instances_version"] == tenant.table("instances").version()
    image = _png(meta["sample"])
    assert max(image.size) <= 256


def test_dicom_deid_partition_through_the_request_sensor_and_job(lake: Path, monkeypatch) -> None:
    monkeypatch.setenv("TEST_DEID_KEY", "a-test-project-key")
    tenant = Lakehouse(lake / "lake").tenant()
    every = scan(tenant.table("instances"), ["modality", "patient_id"]).to_pylist()
    modality = every[0]["modality"]
    ct = [r for r in every if r["modality"] == modality]
    destination = lake / "elsewhere" / "ct-deid"
    config = {"filters": {"Modality": modality}, "format": "dicom", "deid": True,
              "project_key_env": "TEST_DEID_KEY", "destination": str(destination)}
    request_export(tenant, "ct-deid", config)
    defs = build_defs(_resources(lake))
    sensor = defs.resolve_sensor_def("export_requests_sensor")
    with dg.DagsterInstance.ephemeral() as instance:
        with _sensor_context(instance, defs) as context:
            evaluated = sensor(context)
        [run] = evaluated.run_requests
        assert run.partition_key == "ct-deid" and run.tags == {"dicomlake/tenant": "default"}
        [added] = evaluated.dynamic_partitions_requests
        instance.add_dynamic_partitions(added.partitions_def_name, list(added.partition_keys))
        job = defs.resolve_job_def("export_job")
        result = job.execute_in_process(instance=instance, run_config=run.run_config,
                                        partition_key=run.partition_key, tags=run.tags)  # fmt: skip
        assert result.success
        with _sensor_context(instance, defs) as context:
            assert not sensor(context).run_requests  # launched once
    meta = _metadata(result)
    copies = sorted(destination.glob("*/*/*.dcm"))
    assert meta["exported"] == len(copies) == len(ct) > 0 and meta["failed"] == 0
    assert {pydicom.dcmread(c).PatientID for c in copies}.isdisjoint({r["patient_id"] for r in ct})
    _png(meta["sample"])


def test_a_request_the_asset_would_refuse_is_refused(lake: Path) -> None:
    tenant = Lakehouse(lake / "lake").tenant()
    with pytest.raises(Exception, match="surprise"):
        request_export(tenant, "bad", {"studies": ["1.2.3"], "surprise": True})
    with pytest.raises(ValueError, match="export name"):
        request_export(tenant, "../up", {"studies": ["1.2.3"]})
