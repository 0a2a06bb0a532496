"""DICOMcast in Dagster: the sensor asks for a run when the feed moves; the job syncs and checks."""

import json
from pathlib import Path

import dagster as dg
import pytest

from assets.fhir import fhir_resources
from dicomlake.changefeed import ConsumerCursor
from dicomlake.ingest import ingest
from dicomlake.lifecycle import delete_instances
from dicomlake.samples import generate_sample_drop
from dicomlake.store import Lakehouse
from dicomlake.store.read import scan
from pipelines.definitions import build_defs
from resources import DropFolderResource, IngestResource, LakehouseResource

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")


def _context(instance: dg.DagsterInstance, defs: dg.Definitions) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [materialization] = result.asset_materializations_for_node("fhir_resources")
    return {key: value.value for key, value in materialization.metadata.items()}


def test_sensor_runs_dicomcast_when_the_feed_moves_and_the_check_holds(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    tenant = Lakehouse(root).tenant()
    drop = generate_sample_drop(tmp_path / "drop", n_instances=9, seed=4)
    defs = build_defs({
        "lakehouse": LakehouseResource(root=str(root)),
        "drop_folder": DropFolderResource(path=str(tmp_path / "drops")),
        "ingest_settings": IngestResource(workers=1),
    })
    sensor = defs.resolve_sensor_def("dicomcast_sensor")
    job = defs.resolve_job_def("dicomcast_job")
    assert fhir_resources.op.pool == "dicomlake_committer"
    with dg.DagsterInstance.ephemeral() as instance:
        with _context(instance, defs) as context:
            assert not sensor(context).run_requests  # an empty feed: nothing to do
        ingest(drop.files, tenant)
        with _context(instance, defs) as context:
            [request] = sensor(context).run_requests
        assert request.run_key == "default:dicomcast:9"
        assert request.tags == {"dicomlake/tenant": "default"}
        result = job.execute_in_process(instance=instance, tags=request.tags)
        assert result.success
        assert _metadata(result)["entries_applied"] == 9 and _metadata(result)["lag"] == 0
        studies = len(set(scan(tenant.table("instances"), ["study_instance_uid"]).column(0).to_pylist()))
        [check] = result.get_asset_check_evaluations()
        assert check.passed and check.metadata["studies"].value == studies >= 2
        with _context(instance, defs) as context:
            assert not sensor(context).run_requests  # caught up

        # a delete moves the feed: the next run removes that study's ImagingStudy
        study = scan(tenant.table("instances"), ["study_instance_uid"]).column(0)[0].as_py()
        delete_instances(tenant, study)
        with _context(instance, defs) as context:
            [request] = sensor(context).run_requests
        result = job.execute_in_process(instance=instance, tags=request.tags)
        assert result.success and _metadata(result)["imaging_studies_deleted"] == 1
        [check] = result.get_asset_check_evaluations()
        assert check.passed and check.metadata["studies"].value == studies - 1
        assert ConsumerCursor(tenant, "dicomcast").lag() == 0
        uids = {json.loads(r)["identifier"][0]["value"]
                for r in scan(tenant.table("fhir_imagingstudy"), ["resource_json"]).column(0).to_pylist()}
        assert f"urn:oid:{study}" not in uids and len(uids) == studies - 1


def test_the_check_fails_when_imaging_studies_lag_the_feed(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    tenant = Lakehouse(root).tenant()
    ingest(generate_sample_drop(tmp_path / "drop", n_instances=9, seed=4).files, tenant)
    defs = build_defs({
        "lakehouse": LakehouseResource(root=str(root)),
        "drop_folder": DropFolderResource(path=str(tmp_path / "drops")),
        "ingest_settings": IngestResource(workers=1),
    })
    job = defs.resolve_job_def("dicomcast_job")
    with dg.DagsterInstance.ephemeral() as instance:
        assert job.execute_in_process(instance=instance).success
        # someone removes an ImagingStudy behind DICOMcast's back: the check must say so
        row = scan(tenant.table("fhir_imagingstudy"), ["id", "study_instance_uid"]).to_pylist()[0]
        tenant.table("fhir_imagingstudy").delete(f"id = '{row['id']}'")
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        [check] = result.get_asset_check_evaluations()
        assert not check.passed
        assert check.metadata["missing"].value == [row["study_instance_uid"]]
