"""The Dagster shell: definitions load, the sensor batches a drop, the jobs run, the checks judge."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from assets import QUARANTINE_CHECK, drop_batches
from dicomlake.drops import list_drop_batches, plan_drop_batch
from dicomlake.samples import generate_bad_inputs, generate_sample_drop
from pipelines.definitions import build_defs, deployment_name, resources_for
from resources import Disposition, DropFolderResource, IngestResource, LakehouseResource

SAMPLE_INSTANCES = 20
# evaluate_automation_conditions selects with a beta parameter internally; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")


@dataclass
class Stack:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    drop: Path
    processed: Path
    lakehouse: LakehouseResource


def make_stack(base: Path, instance: dg.DagsterInstance) -> Stack:
    lakehouse = LakehouseResource(root=str(base / "lakehouse"))
    resources = {
        "lakehouse": lakehouse,
        "drop_folder": DropFolderResource(path=str(base / "drops"), settle_seconds=0),
        "ingest_settings": IngestResource(workers=1),  # no worker processes for a few files
    }
    return Stack(build_defs(resources), instance, base / "drops", base / "processed", lakehouse)


def tick(stack: Stack) -> dg.SensorResult | dg.SkipReason:
    sensor = stack.defs.resolve_sensor_def("drop_folder_sensor")
    with dg.build_sensor_context(instance=stack.instance, definitions=stack.defs,
                                 resources=stack.defs.resources) as context:
        return sensor(context)


def register(stack: Stack, result: dg.SensorResult) -> None:
    for request in result.dynamic_partitions_requests or []:
        stack.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, instance: dg.DagsterInstance) -> Stack:
    stack = make_stack(tmp_path_factory.mktemp("stack"), instance)
    generate_sample_drop(stack.drop / "samples", n_instances=SAMPLE_INSTANCES, seed=7)
    generate_bad_inputs(stack.drop / "bad", seed=7)
    return stack


@pytest.fixture(scope="module")
def automation_cursor(stack: Stack) -> str:
    """Declarative automation compares against its previous evaluation: take one before ingesting."""
    return dg.evaluate_automation_conditions(defs=stack.defs, instance=stack.instance).cursor


@pytest.fixture(scope="module")
def ingest_run(stack: Stack, automation_cursor: str) -> dg.ExecuteInProcessResult:
    result = tick(stack)
    assert isinstance(result, dg.SensorResult)
    register(stack, result)
    # A batch whose run never succeeded must not hold the levels back (see assets.index).
    stack.instance.add_dynamic_partitions(drop_batches.name, ["20000101T000000Z-00000000"])
    (request,) = result.run_requests
    return stack.defs.resolve_job_def("ingest_job").execute_in_process(
        instance=stack.instance, partition_key=request.partition_key, raise_on_error=False
    )


@pytest.fixture(scope="module")
def levels_run(stack: Stack, ingest_run: dg.ExecuteInProcessResult) -> dg.ExecuteInProcessResult:
    job = stack.defs.resolve_job_def("levels_job")
    return job.execute_in_process(instance=stack.instance, raise_on_error=False)


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_the_code_location_loads() -> None:
    from pipelines import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys >= {"change_feed", "dicom_instances", "series", "studies", "fhir_resources"}
    assert graph.get(dg.AssetKey("dicom_instances")).group_name == "ingest"
    assert graph.get(dg.AssetKey("studies")).group_name == "index"
    assert {j.name for j in defs.resolve_all_job_defs()} >= {
        "ingest_job", "levels_job", "observe_change_feed_job", "maintenance_job"}
    assert defs.resolve_schedule_def("nightly_maintenance").cron_schedule == "30 3 * * *"
    assert defs.resolve_sensor_def("drop_folder_sensor").minimum_interval_seconds == 30
    assert defs.resolve_sensor_def("levels_automation_sensor") is not None


def test_resources_follow_the_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = resources_for({})
    assert deployment_name({}) == "local"
    assert local["lakehouse"].root == str(tmp_path / "lakehouse")
    assert local["drop_folder"].move_to() == str(tmp_path / "processed")
    env = {"DICOMLAKE_ROOT": "s3://bucket/lake", "DICOMLAKE_TENANT": "north", "AWS_ACCESS_KEY_ID": "id",
           "AWS_SECRET_ACCESS_KEY": "secret", "AWS_ENDPOINT_URL": "http://127.0.0.1:8333",
           "AWS_ALLOW_HTTP": "true"}
    s3 = resources_for(env)["lakehouse"]
    assert deployment_name(env) == "s3" and (s3.root, s3.tenant) == ("s3://bucket/lake", "north")
    assert isinstance(s3.access_key_id, dg.EnvVar)  # read when a run starts, never shown in the UI
    resolved = LakehouseResource(root="s3://b", access_key_id="id", endpoint_url="http://x", allow_http=True)
    assert resolved.storage_options() == {"AWS_ACCESS_KEY_ID": "id", "AWS_ENDPOINT_URL": "http://x",
                                          "AWS_ALLOW_HTTP": "true"}
    assert DropFolderResource(path="s3://bucket/drops/in").move_to() == "s3://bucket/drops/processed"
    assert DropFolderResource(disposition=Disposition.KEEP).move_to() is None


def test_the_sensor_batches_a_drop_once(tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        stack = make_stack(tmp_path, instance)
        assert isinstance(tick(stack), dg.SkipReason)  # no drop folder yet
        (stack.drop / "a").mkdir(parents=True)
        (stack.drop / "a" / "one.dcm").write_bytes(b"x")
        (stack.drop / "a" / ".two.dcm.part").write_bytes(b"still uploading")
        result = tick(stack)
        assert isinstance(result, dg.SensorResult)
        (request,) = result.run_requests
        (partitions,) = result.dynamic_partitions_requests
        assert partitions.partitions_def_name == drop_batches.name
        manifests = list_drop_batches(stack.lakehouse.tenant_store())
        assert list(partitions.partition_keys) == [request.partition_key] == manifests
        assert request.run_key == request.partition_key and request.tags == {"dicomlake/tenant": "default"}
        register(stack, result)
        assert isinstance(tick(stack), dg.SkipReason)
        # A manifest written by a tick that died before its partition was registered is requested again.
        (stack.drop / "three.dcm").write_bytes(b"y")
        orphan = plan_drop_batch(stack.lakehouse.tenant_store(), str(stack.drop), settle_seconds=0)
        retried = tick(stack)
        assert isinstance(retried, dg.SensorResult) and orphan is not None
        assert [r.partition_key for r in retried.run_requests] == [orphan.key]


def test_ingest_run_materializes_the_batch(ingest_run: dg.ExecuteInProcessResult, stack: Stack) -> None:
    assert ingest_run.success
    (event,) = ingest_run.get_asset_materialization_events()
    metadata = {key: value.value for key, value in event.materialization.metadata.items()}
    bad = len(list((stack.processed / "bad").iterdir()))
    assert metadata["created"] == SAMPLE_INSTANCES and metadata["quarantined"] == bad > 0
    assert (metadata["first_seq"], metadata["last_seq"]) == (1, SAMPLE_INSTANCES)
    assert metadata["instances_table"].endswith("/tenants/default/tables/instances")
    assert not [p for p in stack.drop.rglob("*") if p.is_file()]  # every file moved to processed


def test_quality_checks_pass_on_good_data(ingest_run: dg.ExecuteInProcessResult) -> None:
    checks = checks_of(ingest_run)
    assert checks["instances_are_valid"].passed and checks["change_feed_is_dense"].passed
    assert "sop_instance_uid: expect_column_values_to_be_unique" in checks["instances_are_valid"].metadata


def test_quarantine_check_warns_about_bad_inputs(ingest_run: dg.ExecuteInProcessResult) -> None:
    warning = checks_of(ingest_run)[QUARANTINE_CHECK]
    assert not warning.passed and warning.severity == dg.AssetCheckSeverity.WARN
    assert warning.metadata["quarantined"].value > 0
    assert "invalid_uid" in warning.metadata["reasons"].value
    assert ingest_run.success  # a warning never fails the run


def test_levels_follow_the_ingest(
    stack: Stack, automation_cursor: str, ingest_run: dg.ExecuteInProcessResult
) -> None:
    requested = dg.evaluate_automation_conditions(
        defs=stack.defs, instance=stack.instance, cursor=automation_cursor
    )
    assert requested.get_num_requested(dg.AssetKey("series")) == 1
    assert requested.get_num_requested(dg.AssetKey("studies")) == 1


def test_levels_run_builds_series_and_studies(levels_run: dg.ExecuteInProcessResult) -> None:
    assert levels_run.success
    events = {e.asset_key.to_user_string(): e.materialization.metadata
              for e in levels_run.get_asset_materialization_events()}
    assert set(events) == {"series", "studies"}
    assert events["studies"]["seq"].value == SAMPLE_INSTANCES
    assert 0 < events["studies"]["dagster/row_count"].value <= events["series"]["dagster/row_count"].value
    assert events["studies"]["preview"].value.startswith("| study_date |")
    assert checks_of(levels_run)["studies_are_consistent"].passed
