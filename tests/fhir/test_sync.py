"""DICOMcast from the change feed into Delta tables + NDJSON: create, update, delete, crash, outage."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomlake.changefeed import ConsumerCursor
from dicomlake.fhir.mapping import resource_id, validate
from dicomlake.fhir.sync import DicomCast, check_imaging_studies
from dicomlake.ingest import ingest
from dicomlake.lifecycle import delete_instances
from dicomlake.samples import SampleSummary, generate_sample_drop
from dicomlake.store import Lakehouse, TenantStore
from dicomlake.store.read import scan


@pytest.fixture
def tenant(tmp_path: Path) -> TenantStore:
    return Lakehouse(tmp_path / "lake").tenant("cast")


@pytest.fixture
def drop(tmp_path: Path) -> SampleSummary:
    return generate_sample_drop(tmp_path / "drop", n_instances=12, seed=5)


def rows(tenant: TenantStore, table: str) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in scan(tenant.table(table), order_by="id").to_pylist()}


def studies(tenant: TenantStore) -> dict[str, dict[str, Any]]:
    """ImagingStudy resources by StudyInstanceUID."""
    return {r["study_instance_uid"]: json.loads(r["resource_json"])
            for r in rows(tenant, "fhir_imagingstudy").values()}


def ndjson(tenant: TenantStore, kind: str) -> list[dict[str, Any]]:
    path = Path(tenant.uri) / "fhir" / "export" / f"{kind}.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewritten(source: Path, dest: Path, **changes: str) -> Path:
    ds = pydicom.dcmread(source)
    for keyword, value in changes.items():
        if value == "":
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest)
    return dest


def test_create_update_delete_follow_the_feed(tenant: TenantStore, drop: SampleSummary,
                                              tmp_path: Path) -> None:
    ingest(drop.files, tenant)
    cast = DicomCast(tenant)
    report = cast.sync()
    assert (report.entries, report.position, report.lag, report.dead_lettered) == (12, 12, 0, 0)
    instances = scan(tenant.table("instances"), ["study_instance_uid", "series_instance_uid",
                                                 "sop_instance_uid", "patient_id"]).to_pylist()
    per_study = Counter(r["study_instance_uid"] for r in instances)
    got = studies(tenant)
    assert {uid: s["numberOfInstances"] for uid, s in got.items()} == dict(per_study)
    assert check_imaging_studies(tenant)["passed"]
    # Bulk Data NDJSON: one file per type, the same resources as the tables
    exported = sorted(r["id"] for r in ndjson(tenant, "ImagingStudy"))
    assert exported == sorted(rows(tenant, "fhir_imagingstudy"))
    assert len(ndjson(tenant, "Patient")) == len({r["patient_id"] for r in instances})
    assert [r["resourceType"] for r in ndjson(tenant, "Endpoint")] == ["Endpoint"]
    for kind in ("Patient", "ImagingStudy", "Endpoint"):  # every emitted resource validates (R4B)
        for resource in ndjson(tenant, kind):
            assert validate(resource) is resource and resource["meta"]["versionId"] == "1"
    # every study references its patient and the endpoint, and is at version 1
    patients = rows(tenant, "fhir_patient")
    for study in got.values():
        assert study["subject"]["reference"].removeprefix("Patient/") in patients
        assert study["meta"]["versionId"] == "1"

    # update: a new version of one instance with another series description
    target = next(r for r in instances if per_study[r["study_instance_uid"]] >= 2)
    source = next(f for f in drop.files if pydicom.dcmread(f).SOPInstanceUID == target["sop_instance_uid"])
    ingest([rewritten(source, tmp_path / "v2" / "a.dcm", SeriesDescription="RENAMED")], tenant)
    assert cast.sync().entries == 1
    study = studies(tenant)[target["study_instance_uid"]]
    assert study["meta"]["versionId"] == "2"
    series = next(s for s in study["series"] if s["uid"] == target["series_instance_uid"])
    assert series["description"] == "RENAMED"
    assert study["numberOfInstances"] == per_study[target["study_instance_uid"]]  # updated, not added
    patient_id = study["subject"]["reference"].removeprefix("Patient/")
    assert rows(tenant, "fhir_patient")[patient_id]["version_id"] == 1  # demographics unchanged

    # delete one instance: it leaves the ImagingStudy
    uid = target["study_instance_uid"]
    delete_instances(tenant, uid, target["series_instance_uid"], target["sop_instance_uid"])
    cast.sync()
    study = studies(tenant)[uid]
    assert study["numberOfInstances"] == per_study[uid] - 1
    listed = [i["uid"] for s in study["series"] for i in s["instance"]]
    assert target["sop_instance_uid"] not in listed and len(listed) == per_study[uid] - 1
    assert check_imaging_studies(tenant)["passed"]

    # delete the rest: the ImagingStudy goes away, the Patient stays
    delete_instances(tenant, uid)
    cast.sync()
    assert uid not in studies(tenant)
    assert resource_id("ImagingStudy", uid) not in {r["id"] for r in ndjson(tenant, "ImagingStudy")}
    assert patient_id in rows(tenant, "fhir_patient")
    assert patient_id in {r["id"] for r in ndjson(tenant, "Patient")}
    assert check_imaging_studies(tenant)["passed"]


def test_an_emptied_series_is_dropped(tenant: TenantStore, tmp_path: Path) -> None:
    drop = generate_sample_drop(tmp_path / "many", n_instances=40, seed=11)
    ingest(drop.files, tenant)
    cast = DicomCast(tenant)
    cast.sync()
    uid, study = next((u, s) for u, s in studies(tenant).items() if len(s["series"]) >= 2)
    dropped = study["series"][0]["uid"]
    delete_instances(tenant, uid, dropped)
    cast.sync()
    after = studies(tenant)[uid]
    assert [s["uid"] for s in after["series"]] == [s["uid"] for s in study["series"][1:]]
    assert after["numberOfSeries"] == study["numberOfSeries"] - 1


def test_a_crash_before_the_commit_reapplies_with_the_same_result(tenant: TenantStore,
                                                                  drop: SampleSummary) -> None:
    ingest(drop.files, tenant)

    class Crash(Exception):
        pass

    def crash(_upper: int) -> None:
        raise Crash

    with pytest.raises(Crash):
        DicomCast(tenant, before_commit=crash).sync()
    assert ConsumerCursor(tenant, "dicomcast").position() == 0  # written, but not committed
    tables = {name: rows(tenant, name) for name in ("fhir_patient", "fhir_imagingstudy", "fhir_endpoint")}
    files = {kind: ndjson(tenant, kind) for kind in ("Patient", "ImagingStudy", "Endpoint")}
    assert len(tables["fhir_imagingstudy"]) == 5

    report = DicomCast(tenant).sync()  # a fresh process: the same 12 entries again
    assert (report.entries, report.position) == (12, 12)
    assert {name: rows(tenant, name) for name in tables} == tables  # same rows, versions not bumped
    assert {kind: ndjson(tenant, kind) for kind in files} == files


def test_outage_retries_with_backoff_then_recovers(tenant: TenantStore, drop: SampleSummary,
                                                   tmp_path: Path) -> None:
    ingest(drop.files, tenant)
    blocked = tmp_path / "export"
    blocked.write_text("a file where the export folder should be")  # the target cannot write
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 2:
            blocked.unlink()  # the outage ends during the third wait

    cast = DicomCast(tenant, export_dir=str(blocked), attempts=4, backoff_seconds=0.5, sleep=sleep)
    report = cast.sync()
    assert delays == [0.5, 1.0]
    assert (report.position, report.dead_lettered) == (12, 0)
    assert len(list(blocked.glob("*.ndjson"))) == 3


def test_entries_that_keep_failing_are_dead_lettered_and_replayed(tenant: TenantStore, drop: SampleSummary,
                                                                  tmp_path: Path) -> None:
    ingest(drop.files, tenant)
    blocked = tmp_path / "export"
    blocked.write_text("not a folder")
    delays: list[float] = []
    cast = DicomCast(tenant, export_dir=str(blocked), attempts=3, backoff_seconds=0.1, sleep=delays.append)
    report = cast.sync()
    assert delays == [0.1, 0.2]
    assert (report.position, report.dead_lettered) == (12, 12)  # the cursor moves on
    letters = scan(tenant.table("fhir_dead_letters"), order_by="seq").to_pylist()
    assert [r["seq"] for r in letters] == list(range(1, 13))
    assert all(r["reason"].startswith("target: ") and r["replayed_at"] is None for r in letters)
    assert cast.pending_dead_letters() == 12

    blocked.unlink()
    replay = cast.replay_dead_letters()
    assert (replay.entries, replay.dead_lettered) == (12, 0)
    assert cast.pending_dead_letters() == 0
    assert check_imaging_studies(tenant)["passed"]
    assert len(ndjson_at(blocked, "ImagingStudy")) == 5
    assert cast.replay_dead_letters().entries == 0  # nothing left


def ndjson_at(folder: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / f"{kind}.ndjson").read_text().splitlines()]


def test_an_unmappable_study_is_dead_lettered_without_holding_others(tenant: TenantStore, drop: SampleSummary,
                                                                     tmp_path: Path) -> None:
    # an instance in a series of its own, without Modality: that series cannot be mapped
    bad = rewritten(drop.files[0], tmp_path / "bad" / "x.dcm", Modality="", SeriesInstanceUID="1.2.3.999",
                    SOPInstanceUID="1.2.3.999.1")
    bad_uid = pydicom.dcmread(bad).StudyInstanceUID
    ingest([bad], tenant)
    ingest(drop.files[1:], tenant)
    delays: list[float] = []
    cast = DicomCast(tenant, sleep=delays.append)
    report = cast.sync()
    assert delays == []  # a mapping error is not retried: it would fail the same way
    letters = scan(tenant.table("fhir_dead_letters")).to_pylist()
    assert {r["study_instance_uid"] for r in letters} == {bad_uid}
    assert all("Modality" in r["reason"] and r["reason"].startswith("mapping: ") for r in letters)
    assert report.dead_lettered == len(letters) and report.position == 12
    assert bad_uid not in studies(tenant) and len(studies(tenant)) == 4
    assert cast.replay_dead_letters().dead_lettered == len(letters)  # still unmappable: kept
    assert cast.pending_dead_letters() == len(letters)


def test_cli_dicomcast_once_json(tenant: TenantStore, drop: SampleSummary,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from dicomlake.cli import main

    ingest(drop.files, tenant)
    root = str(Path(tenant.uri).parent.parent)
    assert main(["dicomcast", "--root", root, "--tenant", "cast", "--once", "--json", "--check"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["entries"], out["position"], out["lag"], out["pending_dead_letters"]) == (12, 12, 0, 0)
    assert out["check"]["passed"] and out["check"]["studies"] == 5
    assert main(["dicomcast", "--root", root, "--tenant", "cast", "--once"]) == 0
    assert "applied 0 entries" in capsys.readouterr().out
