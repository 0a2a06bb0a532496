"""The clinical FHIR import as a Dagster asset: real materializations over a tenant holding the demo's
DICOM samples, from a folder of the clinical samples and from a real FHIR server (Medplum); its
check; its place in the lineage (FHIR -> dbt marts -> saved cohorts)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from assets.clinical import CLINICAL_CHECK, clinical_fhir
from dicomlake.fhir.clinical_samples import build, generate_clinical_data
from dicomlake.fhir.rest import FhirServerTarget
from dicomlake.ingest import ingest
from dicomlake.samples import generate_sample_drop
from dicomlake.sql import query
from dicomlake.store import Lakehouse
from pipelines.definitions import build_defs, fhir_source_for, resources_for
from resources import FhirSourceResource, LakehouseResource
from tests.fhir.server import FhirServer

TOKEN_ENV = "DICOMLAKE_FHIR_SOURCE_TOKEN"


@dataclass(frozen=True)
class Lake:
    resource: LakehouseResource
    clinical: Path


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    base = tmp_path_factory.mktemp("clinical-job")
    tenant = Lakehouse(base / "lakehouse").tenant()
    ingest(generate_sample_drop(base / "drop", n_instances=300, seed=0).files, tenant)
    generate_clinical_data(base / "clinical")
    return Lake(LakehouseResource(root=str(base / "lakehouse")), base / "clinical")


def materialize(lake: Lake, source: FhirSourceResource) -> tuple[dict, dg.AssetCheckEvaluation]:
    result = dg.materialize([clinical_fhir], resources={"lakehouse": lake.resource, "fhir_source": source})
    assert result.success
    (event,) = result.asset_materializations_for_node("clinical_fhir")
    (check,) = result.get_asset_check_evaluations()
    return {k: v.value for k, v in event.metadata.items()}, check


def test_the_folder_is_imported_and_reimporting_it_changes_nothing(lake: Lake) -> None:
    resources, _ = build(300, 0)
    valid = sum(len(v) for v in resources.values())  # what the generator wrote, minus invalid.ndjson
    first, check = materialize(lake, FhirSourceResource(path=str(lake.clinical)))
    assert (first["inserted"], first["updated"], first["unchanged"]) == (valid, 0, 0)
    assert first["quarantined"] == 5  # 4 invalid resources + 1 line that is not JSON
    assert first["by_type"] == {kind: len(v) for kind, v in sorted(resources.items())}
    # Patients: the 10 DICOM patients linked by MRN; EXT-900001..3 on purpose unlinked.
    assert (first["patients_linked"], first["patients_unlinked"]) == (10, 3)
    # 30 reports (one per study) + dr-unmatched; every 3rd study has an ImagingStudy; 18 CT/MR documents.
    assert first["links"] == {
        "DiagnosticReport": {"linked": 30, "unlinked": 1},
        "DocumentReference": {"linked": 18, "unlinked": 0},
        "ImagingStudy": {"linked": 10, "unlinked": 0},
    }
    assert (first["resources_linked"], first["resources_unlinked"]) == (58, 1)
    assert check.check_name == CLINICAL_CHECK and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN  # a warning, the run still succeeded
    assert check.metadata["quarantined"].value == 5 and check.metadata["patients_unlinked"].value == 3
    assert check.metadata["resources_unlinked"].value == {
        "DiagnosticReport": 1, "DocumentReference": 0, "ImagingStudy": 0}

    again, _ = materialize(lake, FhirSourceResource(path=str(lake.clinical)))
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, valid)
    assert query(lake.resource.tenant_store(), "SELECT count(*) AS n FROM conditions").to_pylist() == [
        {"n": len(resources["Condition"])}
    ]


def test_a_fhir_server_is_pulled_with_the_token_from_the_environment(
    lake: Lake, fhir_server: FhirServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = f"urn:test:{secrets.token_hex(4)}"
    server = FhirServerTarget(fhir_server.base_url, fhir_server.token)
    server.request("POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f1c1a52-0000-4000-8000-000000000001",
         "resource": {"resourceType": "Patient", "identifier": [{"system": marker, "value": "DL-000007"}],
                      "gender": "male", "birthDate": "1938-04-29"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Condition",
                      "code": {"coding": [{"system": marker, "code": "X1", "display": "Marker disease"}],
                               "text": "Marker disease"},
                      "subject": {"reference": "urn:uuid:6f1c1a52-0000-4000-8000-000000000001"},
                      "onsetDateTime": "2026-01-02"},
         "request": {"method": "POST", "url": "Condition"}},
    ]})
    monkeypatch.setenv(TOKEN_ENV, fhir_server.token)
    source = FhirSourceResource(path=str(lake.clinical), server_url=fhir_server.base_url,
                                token=dg.EnvVar(TOKEN_ENV), resource_types=["Patient", "Condition"])
    first, _ = materialize(lake, source)
    assert first["server"] == fhir_server.base_url
    assert fhir_server.token not in json.dumps(first, default=str)  # never in Dagster's metadata
    # The folder again (unchanged) plus what the server holds: at least our Patient and Condition new.
    assert first["inserted"] >= 2 and first["updated"] == 0
    tenant = lake.resource.tenant_store()
    rows = query(tenant, "SELECT patient_id, text FROM conditions WHERE text = 'Marker disease'").to_pylist()
    assert rows == [{"patient_id": "DL-000007", "text": "Marker disease"}]  # linked by the identifier
    again, _ = materialize(lake, source)
    assert (again["inserted"], again["updated"]) == (0, 0)

    monkeypatch.setenv(TOKEN_ENV, "wrong")  # the token is read when the run starts
    with pytest.raises(Exception, match=r"401|nauthori"):
        dg.materialize([clinical_fhir], resources={"lakehouse": lake.resource, "fhir_source": source})


def test_no_source_is_a_clear_failure(lake: Lake, tmp_path: Path) -> None:
    source = FhirSourceResource(path=str(tmp_path / "nothing-here"), server_url=None)
    with pytest.raises(dg.Failure, match="No FHIR source"):
        dg.materialize([clinical_fhir], resources={"lakehouse": lake.resource, "fhir_source": source})


def test_lineage_runs_from_fhir_through_the_marts_to_the_cohorts(tmp_path: Path) -> None:
    defs = build_defs(resources_for({"DICOMLAKE_ROOT": str(tmp_path / "lakehouse"),
                                     "DICOMLAKE_DROP_DIR": str(tmp_path / "drops")}))
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("clinical_fhir"))
    assert node.group_name == "fhir" and dg.AssetKey("studies") in node.parent_keys
    assert {"imaging_cohort_base", "patient_timeline", "cohort_osteosarcoma_ct"} <= {
        k.to_user_string() for k in node.child_keys}
    assert dg.AssetKey("clinical_fhir") not in graph.get(dg.AssetKey("image_occurrence")).parent_keys
    assert defs.resolve_job_def("clinical_fhir_job") is not None


def test_the_source_follows_the_environment(tmp_path: Path) -> None:
    source = fhir_source_for({"DICOMLAKE_FHIR_DIR": str(tmp_path / "fhir"),
                              "DICOMLAKE_FHIR_SOURCE_URL": "http://fhir.example/R4",
                              TOKEN_ENV: "secret"})
    assert (source.path, source.server_url) == (str(tmp_path / "fhir"), "http://fhir.example/R4")
    assert "secret" not in repr(source)  # an EnvVar, resolved only when a run starts
    assert fhir_source_for({}).token is None
