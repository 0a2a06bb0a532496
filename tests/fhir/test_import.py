"""FHIR import: files, folders, gzip, Bundles; quarantine; idempotence; version precedence; links;
the sample generator; a paged pull from a real FHIR server (Medplum)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from dicomlake.fhir.clinical_samples import AS_OF, age_on, build, generate_clinical_data
from dicomlake.fhir.importer import import_paths, import_server
from dicomlake.fhir.rest import FhirServerTarget
from dicomlake.ingest import ingest
from dicomlake.samples import generate_sample_drop, plan_studies
from dicomlake.store import Lakehouse
from dicomlake.store.read import scan
from tests.fhir.server import FhirServer


def patient(pid: str, value: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": "urn:mrn", "value": value}],
        "gender": "female",
        "birthDate": "1970-05-06",
        **extra,
    }


def ndjson(path: Path, resources: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in resources))
    return path


def rows(tenant: Any, table: str, order: str = "id") -> list[dict[str, Any]]:
    return scan(tenant.table(table), order_by=order).to_pylist()


def test_files_folders_gzip_and_bundles(tmp_path: Path) -> None:
    tenant = Lakehouse(tmp_path / "lake").tenant()
    ndjson(tmp_path / "in" / "Patient.ndjson", [patient("p1", "A"), patient("p2", "B")])
    gz = tmp_path / "in" / "sub" / "More.ndjson.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress((json.dumps(patient("p3", "C")) + "\n").encode()))
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": patient("p4", "D")},
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "o1",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                    "subject": {"reference": "Patient/p4"},
                    "valueQuantity": {"value": 70.5, "unit": "kg"},
                }
            },
        ],
    }
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    summary = import_paths(tenant, [tmp_path / "in", tmp_path / "bundle.json"])
    assert (summary.sources, summary.inserted, summary.quarantined) == (3, 5, 0)
    assert [r["id"] for r in rows(tenant, "fhir_view_patient")] == ["p1", "p2", "p3", "p4"]
    [obs] = rows(tenant, "fhir_view_observation")
    assert (obs["patient_id"], obs["code"], obs["value_quantity"], obs["value_unit"]) == (
        "p4",
        "29463-7",
        70.5,
        "kg",
    )
    assert str(rows(tenant, "fhir_view_patient")[0]["birth_date"]) == "1970-05-06"


def test_invalid_resources_are_quarantined_with_reason_and_rerun_is_idempotent(tmp_path: Path) -> None:
    tenant = Lakehouse(tmp_path / "lake").tenant()
    source = ndjson(
        tmp_path / "mixed.ndjson",
        [
            patient("ok", "A"),
            '{"resourceType": "Patient", "id": "bad", "birthDate": "yesterday"}',
            '{"resourceType": "Patient"}',
            '{"resourceType": "Basic", "id": "x"}',
            "{broken",
        ],
    )
    first = import_paths(tenant, [source])
    assert (first.read, first.inserted, first.quarantined) == (5, 1, 4)
    quarantined = rows(tenant, "fhir_import_quarantine", "line")
    assert [q["line"] for q in quarantined] == [2, 3, 4, 5]
    reasons = [q["reason"] for q in quarantined]
    assert "birthDate" in reasons[0] and "no id" in reasons[1] and "unsupported" in reasons[2]
    assert "invalid JSON" in reasons[3]
    assert quarantined[3]["raw"] == "{broken"  # the original text, kept
    version = tenant.table("fhir_resources").version()
    again = import_paths(tenant, [source])
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 1)
    assert tenant.table("fhir_resources").version() == version  # nothing rewritten
    assert len(rows(tenant, "fhir_import_quarantine", "line")) == 4  # not quarantined twice


def test_newer_version_wins_older_never_rolls_back(tmp_path: Path) -> None:
    tenant = Lakehouse(tmp_path / "lake").tenant()

    def version(n: int, updated: str, family: str) -> Path:
        return ndjson(
            tmp_path / f"v{n}.ndjson",
            [
                patient(
                    "p", "A", name=[{"family": family}], meta={"versionId": str(n), "lastUpdated": updated}
                )
            ],
        )

    v1, v2, v3 = (
        version(1, "2026-01-01T00:00:00Z", "One"),
        version(2, "2026-02-01T00:00:00Z", "Two"),
        version(10, "2026-03-01T00:00:00Z", "Ten"),
    )
    assert import_paths(tenant, [v2]).inserted == 1
    older = import_paths(tenant, [v1])
    assert (older.stale, older.updated) == (1, 0)
    assert rows(tenant, "fhir_view_patient")[0]["family"] == "Two"
    assert import_paths(tenant, [v3]).updated == 1  # "10" > "2": numeric, not text, comparison
    [stored] = rows(tenant, "fhir_resources")
    assert stored["version_id"] == "10" and rows(tenant, "fhir_view_patient")[0]["family"] == "Ten"
    # both in one batch, older file last: the newer still wins
    tenant2 = Lakehouse(tmp_path / "lake2").tenant()
    import_paths(tenant2, [v3, v1])
    assert rows(tenant2, "fhir_view_patient")[0]["family"] == "Ten"


def test_linking_keeps_unlinked_rows(tmp_path: Path) -> None:
    tenant = Lakehouse(tmp_path / "lake").tenant()
    drop = generate_sample_drop(tmp_path / "drop", n_instances=40, seed=3)
    ingest(drop.files, tenant)
    studies = plan_studies(40, 3)
    dicom_pid, uid, acc = (
        studies[0].patient.patient_id,
        studies[0].study_instance_uid,
        studies[0].accession_number,
    )
    acsn = {"type": {"coding": [{"code": "ACSN"}]}, "value": acc}
    resources = [
        {
            "resourceType": "Patient",
            "id": "linked",
            "identifier": [{"system": "urn:a", "value": "zzz"}, {"system": "urn:b", "value": dicom_pid}],
        },
        patient("lonely", "NO-SUCH-ID"),
        {
            "resourceType": "ImagingStudy",
            "id": "is1",
            "status": "available",
            "subject": {"reference": "Patient/linked"},
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        },
        {
            "resourceType": "DiagnosticReport",
            "id": "dr-acc",
            "status": "final",
            "identifier": [acsn],
            "code": {"text": "CT"},
            "subject": {"reference": "Patient/linked"},
        },
        {
            "resourceType": "DiagnosticReport",
            "id": "dr-none",
            "status": "final",
            "code": {"text": "CT"},
            "identifier": [{"type": {"coding": [{"code": "ACSN"}]}, "value": "NOPE"}],
        },
    ]
    summary = import_paths(tenant, [ndjson(tmp_path / "r.ndjson", resources)])
    links = {r["fhir_patient_id"]: r for r in rows(tenant, "fhir_patient_link", "fhir_patient_id")}
    assert links["linked"]["dicom_patient_id"] == dicom_pid and links["linked"]["matched_system"] == "urn:b"
    assert links["lonely"]["dicom_patient_id"] is None
    study_links = {r["resource_id"]: r for r in rows(tenant, "fhir_study_link", "resource_id")}
    assert (study_links["is1"]["study_instance_uid"], study_links["is1"]["matched_by"]) == (
        uid,
        "study_instance_uid",
    )
    assert (study_links["dr-acc"]["study_instance_uid"], study_links["dr-acc"]["matched_by"]) == (
        uid,
        "accession_number",
    )
    assert study_links["dr-none"]["study_instance_uid"] is None
    assert summary.links["patients_unlinked"] == 1 and summary.links["unlinked"] == 2
    # a configured system narrows it: urn:a holds no PatientID
    from dicomlake.fhir.links import relink

    assert relink(tenant, "urn:a").patients_linked == 0


def test_sample_generator_is_deterministic_and_consistent(tmp_path: Path) -> None:
    a, b = generate_clinical_data(tmp_path / "a"), generate_clinical_data(tmp_path / "b")
    for name in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a.counts == b.counts
    resources, osteo = build(300, 0)
    studies = plan_studies(300, 0)
    accessions = {s.accession_number for s in studies}
    reports = resources["DiagnosticReport"]
    report_acc = {r["identifier"][0]["value"] for r in reports}
    assert accessions <= report_acc and report_acc - accessions == {"ACC99999999"}
    patients = {p["identifier"][0]["value"]: p for p in resources["Patient"]}
    for s in studies:
        assert patients[s.patient.patient_id]["birthDate"] == s.patient.birth_date.isoformat()
    osteo_onsets = {
        c["subject"]["reference"].split("/")[1]: c["onsetDateTime"]
        for c in resources["Condition"]
        if c["code"]["coding"][1]["code"].startswith("C40")
    }
    assert set(osteo_onsets) == set(osteo) and len(osteo) >= 4
    births = {p["id"]: p["birthDate"] for p in resources["Patient"]}
    import datetime as dt

    recent_over_45 = [
        p
        for p, onset in osteo_onsets.items()
        if age_on(dt.date.fromisoformat(births[p])) > 45
        and dt.date.fromisoformat(onset) >= AS_OF - dt.timedelta(days=730)
    ]
    assert len(recent_over_45) >= 2  # the cohort question has answers, with and without CT


def test_clinical_samples_import_and_link_to_dicom_samples(tmp_path: Path) -> None:
    tenant = Lakehouse(tmp_path / "lake").tenant()
    ingest(generate_sample_drop(tmp_path / "drop", n_instances=300, seed=0).files, tenant)
    generate_clinical_data(tmp_path / "fhir")
    summary = import_paths(tenant, [tmp_path / "fhir"])
    assert summary.quarantined == 5 and summary.inserted == sum(summary.by_type.values())
    assert summary.links["patients_unlinked"] == 3  # EXT-900001..3
    assert summary.links["studies"]["DiagnosticReport"] == {"linked": 30, "unlinked": 1}
    assert summary.links["studies"]["DocumentReference"]["unlinked"] == 0


def test_pull_from_a_real_fhir_server_with_paging(fhir_server: FhirServer, tmp_path: Path) -> None:
    server = FhirServerTarget(fhir_server.base_url, fhir_server.token)
    marker = f"pull-{tmp_path.name}"
    entries = [
        {
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": marker, "value": f"V{i}"}],
                "gender": "male",
            },
            "request": {"method": "POST", "url": "Patient"},
        }
        for i in range(7)
    ]
    server.request("POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    tenant = Lakehouse(tmp_path / "lake").tenant()
    summary = import_server(
        tenant, fhir_server.base_url, fhir_server.token, resource_types=["Patient"], page_size=3
    )
    values = {
        r["value"] for r in rows(tenant, "fhir_view_patient_identifier", "value") if r["system"] == marker
    }
    assert values == {f"V{i}" for i in range(7)}  # all pages followed (3 + 3 + 1 at least)
    assert summary.quarantined == 0
    again = import_server(
        tenant, fhir_server.base_url, fhir_server.token, resource_types=["Patient"], page_size=3
    )
    assert again.inserted == 0 and again.updated == 0


def test_fhir_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dicomlake.cli import main

    assert main(["fhir", "samples", str(tmp_path / "s"), "--instances", "60", "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["fhir", "import", str(tmp_path / "s"), "--root", str(tmp_path / "lake"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["quarantined"] == 5 and out["inserted"] > 50
    assert main(["fhir", "import", str(tmp_path / "missing"), "--root", str(tmp_path / "lake")]) == 2
