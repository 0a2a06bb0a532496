"""Extended query tags end to end on real ingested files: catalog, reindex, ingest, errors, CLI."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from dicomlake import tags
from dicomlake.cli import main
from dicomlake.errors import InvalidQueryTag, QueryTagNotFound
from dicomlake.ingest import ingest
from dicomlake.lifecycle import delete_instances
from dicomlake.store import TenantStore
from dicomlake.store.read import scan
from dicomlake.tags.operations import _path as operation_path
from dicomlake.tags.service import tag_values_table
from tests.tags.conftest import ACME, SERIES, STUDY, make_file, sop

PRIVATE = {"tag": "00091010", "vr": "LO", "private_creator": ACME}


def values(tenant: TenantStore, key: str, current_only: bool = True) -> list[tuple[str, object]]:
    """(sop, value) of a tag, only for current versions (what search keeps) unless told otherwise."""
    current = set(scan(tenant.table("instances"), ["seq"]).column("seq").to_pylist())
    out = []
    for row in tag_values_table(tenant).to_pylist():
        if row["tag_key"] != key or (current_only and row["seq"] not in current):
            continue
        value = next((row[c] for c in ("value_string", "value_int", "value_float", "value_date")
                      if row[c] is not None), None)
        out.append((row["sop_instance_uid"], value))
    return sorted(out)


def test_add_reindex_query_disable_enable_delete(tenant: TenantStore, tmp_path: Path) -> None:
    files = [make_file(tmp_path / f"{n}.dcm", n, PatientWeight=70 + n, acme={0x10: ("LO", f"v{n}")},
                       acme_block=0x11 + n) for n in range(3)]  # the creator in blocks 11, 12, 13
    ingest(files, tenant)
    added = tags.add_query_tags(tenant, ["PatientWeight", PRIVATE])
    assert [t.status for t in added] == ["adding", "adding"]
    assert tags.queryable_tags(tenant) == {}  # not ready yet
    summary = tags.reindex(tenant)
    assert sorted(summary.ready) == ["00091010:ACME 1.0", "00101030"] and summary.errors == 0
    assert values(tenant, "00101030") == [(sop(0), 70.0), (sop(1), 71.0), (sop(2), 72.0)]
    assert values(tenant, "00091010:ACME 1.0") == [(sop(n), f"v{n}") for n in range(3)]

    weight = tags.get_query_tag(tenant, "PatientWeight")
    assert weight == tags.get_query_tag(tenant, "00101030") == tags.get_query_tag(tenant, "(0010,1030)")
    assert (weight.status, weight.query_status, weight.indexed_through, weight.level) == (
        "ready", "enabled", 3, "study")
    assert [t.key for t in tags.list_query_tags(tenant)] == ["00091010:ACME 1.0", "00101030"]
    spellings = tags.queryable_tags(tenant)
    assert set(spellings) == {"00101030", "PatientWeight", "00091010", "00091010:ACME 1.0"}
    assert spellings["PatientWeight"].key == "00101030"

    tags.set_query_status(tenant, "PatientWeight", "disabled")
    assert "PatientWeight" not in tags.queryable_tags(tenant)
    tags.set_query_status(tenant, "00101030", "enabled")
    assert "PatientWeight" in tags.queryable_tags(tenant)

    with pytest.raises(InvalidQueryTag, match="exists"):
        tags.add_query_tags(tenant, ["PatientWeight"])
    deleted = tags.delete_query_tag(tenant, "PatientWeight")
    assert deleted.key == "00101030"
    assert [t.key for t in tags.list_query_tags(tenant)] == ["00091010:ACME 1.0"]
    assert values(tenant, "00101030", current_only=False) == []
    with pytest.raises(QueryTagNotFound):
        tags.get_query_tag(tenant, "PatientWeight")

    # Added again: a new watermark, indexed from scratch, every value exactly once.
    assert tags.add_query_tags(tenant, ["PatientWeight"])[0].indexed_through == 0
    tags.reindex(tenant)
    assert values(tenant, "00101030", current_only=False) == [(sop(0), 70.0), (sop(1), 71.0), (sop(2), 72.0)]


def test_a_delete_left_half_done_is_finished_by_deleting_again(tenant: TenantStore, tmp_path: Path) -> None:
    ingest([make_file(tmp_path / "0.dcm", 0, PatientWeight=80)], tenant)
    tags.add_query_tags(tenant, ["PatientWeight"])
    tags.reindex(tenant)
    from dicomlake.tags.catalog import mutate

    def interrupted(catalog):  # what the first step of a delete leaves when the process dies
        catalog["00101030"] = catalog["00101030"].with_(status="deleting")
        return catalog, None

    mutate(tenant, interrupted, "test")
    assert tags.queryable_tags(tenant) == {}
    assert tags.reindex(tenant).tags == []  # a deleting tag is never indexed
    with pytest.raises(InvalidQueryTag, match="being deleted"):
        tags.add_query_tags(tenant, ["PatientWeight"])
    tags.delete_query_tag(tenant, "PatientWeight")
    assert tags.list_query_tags(tenant) == [] and values(tenant, "00101030", current_only=False) == []


def test_errors_are_recorded_and_disable_querying_until_enabled(tenant: TenantStore, tmp_path: Path) -> None:
    files = [
        make_file(tmp_path / "0.dcm", 0, AcquisitionDate="20240131", DeviceSerialNumber="SN-1"),
        make_file(tmp_path / "1.dcm", 1, AcquisitionDate="20241341", DeviceSerialNumber="S" * 70),
        make_file(tmp_path / "2.dcm", 2, AcquisitionDate="20240229", DeviceSerialNumber="SN-3"),
    ]
    ingest(files, tenant)
    tags.add_query_tags(tenant, ["AcquisitionDate", "DeviceSerialNumber", "PatientWeight"])
    summary = tags.reindex(tenant)
    assert summary.errors == 2 and sorted(summary.disabled) == ["00080022", "00181000"]
    import datetime as dt

    assert values(tenant, "00080022") == [(sop(0), dt.date(2024, 1, 31)), (sop(2), dt.date(2024, 2, 29))]
    assert values(tenant, "00181000") == [(sop(0), "SN-1"), (sop(2), "SN-3")]
    errors = tags.tag_errors(tenant, "AcquisitionDate")
    assert [(e["sop_instance_uid"], e["error_code"], e["seq"]) for e in errors] == [
        (sop(1), "unparsable_date", 2)]
    assert tags.tag_errors(tenant, "DeviceSerialNumber")[0]["error_code"] == "value_too_long"
    date = tags.get_query_tag(tenant, "AcquisitionDate")
    assert (date.status, date.query_status, date.error_count) == ("ready", "disabled", 1)
    assert set(tags.queryable_tags(tenant)) == {"PatientWeight", "00101030"}  # no errors, still enabled
    tags.set_query_status(tenant, "AcquisitionDate", "enabled")
    assert "AcquisitionDate" in tags.queryable_tags(tenant)
    tags.reindex(tenant)  # nothing new: errors are not recorded twice
    assert tags.get_query_tag(tenant, "AcquisitionDate").error_count == 1
    assert len(tags.tag_errors(tenant, "AcquisitionDate")) == 1


def test_reindex_resumes_after_an_interruption_without_duplicate_values(
        tenant: TenantStore, tmp_path: Path) -> None:
    files = [make_file(tmp_path / f"{n}.dcm", n, PatientWeight=60 + n,
                       AcquisitionDate="2024013" if n == 3 else "20240131") for n in range(7)]
    ingest(files, tenant)
    tags.add_query_tags(tenant, ["PatientWeight", "AcquisitionDate"])
    seen: list[tags.Progress] = []

    def crash_midway(progress: tags.Progress) -> None:
        seen.append(progress)
        if len(seen) == 3:  # after the second window of 2 seqs
            raise KeyboardInterrupt("operator pressed ^C")

    with pytest.raises(KeyboardInterrupt):
        tags.reindex(tenant, progress=crash_midway, window=2)
    halfway = tags.get_query_tag(tenant, "PatientWeight")
    assert halfway.status == "adding" and halfway.indexed_through == 4
    assert seen[-1].percent == pytest.approx(57.1) and seen[-1].total == 7
    assert tags.get_query_tag(tenant, "AcquisitionDate").query_status == "disabled"  # seq 4 had the error

    rest: list[tags.Progress] = []
    summary = tags.reindex(tenant, progress=rest.append, window=2)
    assert summary.processed == 3 and rest[0].percent == 0.0 and rest[-1].percent == 100.0
    rows = tag_values_table(tenant).to_pylist()
    assert Counter((r["tag_key"], r["seq"]) for r in rows).most_common(1)[0][1] == 1  # no duplicates
    assert len(values(tenant, "00101030")) == 7 and len(values(tenant, "00080022")) == 6
    assert len(tags.tag_errors(tenant, "AcquisitionDate")) == 1
    assert tags.get_query_tag(tenant, "PatientWeight").status == "ready"


def test_ingest_indexes_ready_tags_and_follows_updates_and_deletes(
        tenant: TenantStore, tmp_path: Path) -> None:
    tags.add_query_tags(tenant, ["PatientWeight", PRIVATE])
    assert sorted(tags.reindex(tenant).ready) == ["00091010:ACME 1.0", "00101030"]  # empty tenant: ready
    ingest([make_file(tmp_path / f"{n}.dcm", n, PatientWeight=50 + n, acme={0x10: ("LO", "x")})
            for n in range(2)], tenant)
    assert values(tenant, "00101030") == [(sop(0), 50.0), (sop(1), 51.0)]
    assert tags.get_query_tag(tenant, "PatientWeight").indexed_through == 2

    ingest([make_file(tmp_path / "v2" / "1.dcm", 1, PatientWeight=99, acme={0x10: ("LO", "y")})], tenant)
    assert values(tenant, "00101030") == [(sop(0), 50.0), (sop(1), 99.0)]
    assert values(tenant, "00091010:ACME 1.0") == [(sop(0), "x"), (sop(1), "y")]
    assert len(values(tenant, "00101030", current_only=False)) == 3  # the old version's row may stay

    delete_instances(tenant, STUDY, SERIES, sop(0))
    assert values(tenant, "00101030") == [(sop(1), 99.0)]
    ingest([make_file(tmp_path / "2.dcm", 2, PatientWeight=None)], tenant)  # after a delete seq
    assert tags.get_query_tag(tenant, "PatientWeight").indexed_through == 5


def test_implicit_vr_private_elements_are_read_from_un(tenant: TenantStore, tmp_path: Path) -> None:
    ingest([make_file(tmp_path / "0.dcm", 0, implicit=True, acme={0x10: ("LO", "implicit"), 0x20: ("UL", 7)},
                      acme_block=0x12)], tenant)
    tags.add_query_tags(tenant, [PRIVATE, {"tag": "00091020", "vr": "UL", "private_creator": ACME}])
    assert tags.reindex(tenant).errors == 0
    assert values(tenant, "00091010:ACME 1.0") == [(sop(0), "implicit")]
    assert values(tenant, "00091020:ACME 1.0") == [(sop(0), 7)]


def test_concurrent_catalog_changes_are_all_kept(tenant: TenantStore) -> None:
    names = ["PatientWeight", "PatientSize", "EthnicGroup", "KVP"]
    barrier = threading.Barrier(len(names))
    failures: list[BaseException] = []

    def add(name: str) -> None:
        barrier.wait()
        try:
            tags.add_query_tags(tenant, [name])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(t.keyword for t in tags.list_query_tags(tenant)) == sorted(names)


def test_background_reindex_reports_progress_and_resumes(tenant: TenantStore, tmp_path: Path) -> None:
    ingest([make_file(tmp_path / f"{n}.dcm", n, PatientWeight=40 + n) for n in range(3)], tenant)
    tags.add_query_tags(tenant, ["PatientWeight"])
    operation = tags.start_reindex(tenant, window=1)
    assert tags.wait(operation, timeout=60)
    status = tags.operation_status(tenant, operation)
    assert (status["state"], status["percent"], status["summary"]["processed"]) == ("succeeded", 100.0, 3)
    assert [s["id"] for s in tags.list_operations(tenant)] == [operation]

    # A process that died mid-way: its document still says running; the pid is gone.
    tags.add_query_tags(tenant, ["PatientSize"])
    document = json.loads(Path(operation_path(tenant, operation)).read_text())
    document.update(state="running", pid=2**22 + 12345, summary=None, keys=["PatientSize"])
    Path(operation_path(tenant, operation)).write_text(json.dumps(document))
    assert tags.operation_status(tenant, operation)["state"] == "interrupted"
    assert tags.resume_reindex(tenant, operation) == operation
    assert tags.wait(operation, timeout=60)
    resumed = tags.operation_status(tenant, operation)
    assert (resumed["state"], resumed["resumed"], resumed["pid"]) == ("succeeded", 1, os.getpid())
    assert tags.get_query_tag(tenant, "PatientSize").status == "ready"
    with pytest.raises(tags.OperationNotFound):
        tags.operation_status(tenant, "0123abcd")


def test_cli_end_to_end(tenant: TenantStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ingest([make_file(tmp_path / "0.dcm", 0, PatientWeight=64, AcquisitionDate="2024",
                      acme={0x10: ("LO", "cli")})], tenant)
    where = ["--root", tenant.lakehouse.root, "--tenant", tenant.name]

    def run(*argv: str) -> tuple[int, str]:
        code = main(["tags", *argv, *where])
        return code, capsys.readouterr().out

    assert run("add", "PatientWeight", "--level", "study", "--json")[1].count('"status": "adding"') == 1
    assert run("add", "00091010", "--vr", "LO", "--private-creator", ACME, "--level", "instance")[0] == 0
    assert run("add", "AcquisitionDate")[0] == 0
    assert main(["tags", "add", "PatientID", *where]) == 2
    assert "already searchable" in capsys.readouterr().err
    code, out = run("reindex", "--json")
    assert code == 0 and json.loads(out)["errors"] == 1
    listed = json.loads(run("list", "--json")[1])
    assert {t["key"]: t["status"] for t in listed} == {
        "00080022": "ready", "00091010:ACME 1.0": "ready", "00101030": "ready"}
    assert json.loads(run("get", "AcquisitionDate", "--json")[1])["query_status"] == "disabled"
    errors = json.loads(run("errors", "AcquisitionDate", "--json")[1])
    assert [e["error_code"] for e in errors] == ["unparsable_date"]
    assert json.loads(run("enable", "AcquisitionDate", "--json")[1])["query_status"] == "enabled"
    assert json.loads(run("disable", "00091010", "--json")[1])["query_status"] == "disabled"
    assert json.loads(run("delete", "00091010", "--json")[1]) == {"deleted": "00091010:ACME 1.0"}
    assert main(["tags", "get", "00091010", *where]) == 1
    assert "no extended query tag" in capsys.readouterr().err
    code, out = run("reindex", "--background", "--json")
    operation = json.loads(out)["operation"]
    assert json.loads(run("status", operation, "--json")[1])["state"] == "succeeded"
    assert "PatientWeight" in run("list")[1]
