"""DICOMcast target (b): a real FHIR server (Medplum's FHIR router) over REST with a bearer token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomlake.fhir.mapping import validate
from dicomlake.fhir.rest import FhirServerError, FhirServerTarget
from dicomlake.fhir.sync import DicomCast
from dicomlake.ingest import ingest
from dicomlake.lifecycle import delete_instances
from dicomlake.samples import generate_sample_drop
from dicomlake.store import Lakehouse
from dicomlake.store.read import scan
from tests.conftest import free_ports
from tests.fhir.server import FhirServer
from tests.fhir.test_sync import rewritten


def study_on(server: FhirServerTarget, uid: str) -> list[dict[str, Any]]:
    return server.search("ImagingStudy", {"identifier": f"urn:dicom:uid|urn:oid:{uid}"})


def test_studies_are_created_updated_and_deleted_on_the_server(fhir_server: FhirServer,
                                                               tmp_path: Path) -> None:
    tenant = Lakehouse(tmp_path / "lake").tenant("rest")
    drop = generate_sample_drop(tmp_path / "drop", n_instances=10, seed=21)
    ingest(drop.files, tenant)
    server = FhirServerTarget(fhir_server.base_url, fhir_server.token)
    cast = DicomCast(tenant, fhir_server=server, sleep=lambda _s: None)
    assert cast.sync().dead_lettered == 0
    instances = scan(tenant.table("instances"), ["study_instance_uid", "series_instance_uid",
                                                 "sop_instance_uid", "patient_id"]).to_pylist()
    uids = sorted({r["study_instance_uid"] for r in instances})
    system = cast.patient_id_system
    for uid in uids:
        [study] = study_on(server, uid)  # exactly one: accepted, searchable by identifier
        validate({k: v for k, v in study.items() if k != "meta"})
        patient_ref = study["subject"]["reference"]
        [patient] = server.search("Patient", {"_id": patient_ref.removeprefix("Patient/")})
        assert patient["identifier"][0]["system"] == system
        # searchable by patient, and its endpoint resolved to the server's Endpoint
        assert uid in {s["identifier"][0]["value"].removeprefix("urn:oid:")
                       for s in server.search("ImagingStudy", {"subject": patient_ref})}
        [endpoint] = server.search("Endpoint", {"_id": study["endpoint"][0]["reference"].split("/")[1]})
        assert endpoint["address"] == cast.dicomweb_base
    for pid in {r["patient_id"] for r in instances}:
        assert len(server.search("Patient", {"identifier": f"{system}|{pid}"})) == 1

    # a DICOM update changes the ImagingStudy in place (same server id, a new version)
    target = instances[0]
    uid = target["study_instance_uid"]
    [before] = study_on(server, uid)
    source = next(f for f in drop.files if pydicom.dcmread(f).SOPInstanceUID == target["sop_instance_uid"])
    ingest([rewritten(source, tmp_path / "v2" / "a.dcm", StudyDescription="UPDATED STUDY")], tenant)

    class Crash(Exception):
        pass

    def crash(_upper: int) -> None:
        raise Crash

    with pytest.raises(Crash):  # written to the server, cursor not committed
        DicomCast(tenant, fhir_server=server, before_commit=crash).sync()
    [after] = study_on(server, uid)
    assert after["id"] == before["id"] and after["description"] == "UPDATED STUDY"
    assert after["meta"]["versionId"] != before["meta"]["versionId"]
    assert cast.sync().entries == 1  # the same entry again: no duplicate, no new version
    [again] = study_on(server, uid)
    assert again["meta"]["versionId"] == after["meta"]["versionId"]

    # deleting the study deletes its ImagingStudy; the Patient stays
    delete_instances(tenant, uid)
    cast.sync()
    assert study_on(server, uid) == []
    assert server.search("Patient", {"_id": before["subject"]["reference"].removeprefix("Patient/")})


def test_an_outage_dead_letters_and_replay_delivers(fhir_server: FhirServer, tmp_path: Path) -> None:
    tenant = Lakehouse(tmp_path / "lake").tenant("outage")
    ingest(generate_sample_drop(tmp_path / "drop", n_instances=4, seed=33).files, tenant)
    down = FhirServerTarget(f"http://127.0.0.1:{free_ports(1)[0]}/fhir/R4", fhir_server.token, timeout=2)
    delays: list[float] = []
    report = DicomCast(tenant, fhir_server=down, attempts=3, backoff_seconds=0.05, sleep=delays.append).sync()
    assert delays == [0.05, 0.1] and report.dead_lettered == 4
    reasons = scan(tenant.table("fhir_dead_letters"), ["reason"]).column(0).to_pylist()
    assert all("FhirServerError" in r for r in reasons)

    up = FhirServerTarget(fhir_server.base_url, fhir_server.token)
    cast = DicomCast(tenant, fhir_server=up)
    assert cast.replay_dead_letters().entries == 4 and cast.pending_dead_letters() == 0
    for uid in set(scan(tenant.table("instances"), ["study_instance_uid"]).column(0).to_pylist()):
        assert len(study_on(up, uid)) == 1


def test_the_server_wants_the_bearer_token(fhir_server: FhirServer) -> None:
    with pytest.raises(FhirServerError) as refused:
        FhirServerTarget(fhir_server.base_url, "not-the-token").search("Patient", {})
    assert refused.value.status == 401
    allowed = FhirServerTarget(fhir_server.base_url, fhir_server.token)
    assert isinstance(allowed.search("Endpoint", {"_count": "1"}), list)  # a searchset, not a 401


def test_cli_pushes_to_the_fhir_url(fhir_server: FhirServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from dicomlake.cli import main

    root = tmp_path / "lake"
    tenant = Lakehouse(root).tenant("cli")
    ingest(generate_sample_drop(tmp_path / "drop", n_instances=3, seed=44).files, tenant)
    monkeypatch.setenv("DICOMLAKE_FHIR_TOKEN", fhir_server.token)
    assert main(["dicomcast", "--root", str(root), "--tenant", "cli", "--once", "--json",
                 "--fhir-url", fhir_server.base_url]) == 0
    assert '"pending_dead_letters": 0' in capsys.readouterr().out
    server = FhirServerTarget(fhir_server.base_url, fhir_server.token)
    uids = set(scan(tenant.table("instances"), ["study_instance_uid"]).column(0).to_pylist())
    assert all(len(study_on(server, uid)) == 1 for uid in uids)
