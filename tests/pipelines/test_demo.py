"""`python -m pipelines.demo` as a new user runs it: twice in a fresh folder, with --json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTANCES = 60


def run_demo(cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DICOMLAKE_", "DAGSTER_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.demo", "--instances", str(INSTANCES), "--json"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def first_and_second(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Path]:
    cwd = tmp_path_factory.mktemp("demo")
    return run_demo(cwd), run_demo(cwd), cwd


def test_first_run_ingests_the_samples(first_and_second: tuple[dict, dict, Path]) -> None:
    first, _, cwd = first_and_second
    assert first["success"] and first["lakehouse"] == str(cwd / "lakehouse")
    assert first["dagster_home"] == str(cwd / ".dagster_home")
    assert (cwd / ".dagster_home" / "dagster.yaml").exists()
    samples = first["samples"]
    assert samples["instances"] == INSTANCES and samples["bad_inputs"] > 0
    assert [r["job"] for r in first["runs"]] == [
        "ingest_job", "levels_job", "clinical_fhir_job", "cohort_marts_job"]
    assert all(r["success"] and r["run_id"] for r in first["runs"])
    assert first["instances"] == first["ingested"]["created"] == INSTANCES
    assert (first["studies"], first["series"]) == (samples["studies"], samples["series"])
    assert first["quarantine"]["count"] == first["ingested"]["quarantined"] == samples["bad_inputs"]
    assert sum(first["quarantine"]["by_code"].values()) == samples["bad_inputs"]
    checks = first["checks"]
    # warned: the DICOM batch's bad inputs, and the clinical samples' invalid and unlinked resources
    assert (checks["failed"], checks["warned"]) == (0, 2) and checks["passed"] >= 3
    assert {r["check"] for r in checks["results"] if not r["passed"]} == {
        "no_new_quarantined_files", "no_quarantined_or_unlinked"}
    clinical = first["clinical"]
    assert clinical["dest"] == str(cwd / "clinical" / "samples-0")  # the default FHIR source folder
    assert clinical["inserted"] > 0 and clinical["quarantined"] == 5 and clinical["patients_unlinked"] == 3
    marts = first["marts"]["tables"]  # one row per study and per series, built by dbt in the tenant
    assert marts["imaging_cohort_base"] == samples["studies"]
    assert marts["image_occurrence"] == samples["series"]
    assert first["marts"]["path"] == str(cwd / "lakehouse/tenants/default/marts/cohort.duckdb")
    assert any("dagster dev" in command for command in first["next"])


def test_second_run_has_nothing_new(first_and_second: tuple[dict, dict, Path]) -> None:
    first, second, _ = first_and_second
    assert second["success"] and second["samples"] is None and second["clinical"] is None
    assert second["new_batches"] == [] and second["runs"] == []
    assert (second["instances"], second["studies"], second["latest_seq"]) == (
        first["instances"], first["studies"], first["latest_seq"])
