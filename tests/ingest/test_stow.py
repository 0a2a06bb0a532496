"""store_instances (the core of STOW-RS), without HTTP: the rules of ingest for uploaded files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dicomlake.ingest.stow import (
    FAILURE_DUPLICATE,
    FAILURE_INVALID,
    FAILURE_STUDY_MISMATCH,
    InstanceStore,
    UploadedPart,
    store_instances,
)
from dicomlake.search import SearchIndex
from dicomlake.store import Lakehouse
from dicomlake.store.blobs import LocalBlobStore
from dicomlake.store.read import scan
from tests.retrieve.dicom_builder import instance, uid


@pytest.fixture
def tenant(tmp_path):
    return Lakehouse(tmp_path / "lake").tenant("t")


def spooled(tenant, data: bytes, hashed: bool = True) -> UploadedPart:
    folder = tenant.blobs.staging_dir()
    path = folder / f"stow-{uid()}.part"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest() if hashed else None
    return UploadedPart(path=path, size=len(data), sha256=sha)


def test_parts_are_moved_into_blobs_committed_once_and_searchable(tenant):
    study = uid()
    files = [instance(study), instance(study), instance(study)]
    parts = [spooled(tenant, f, hashed=i != 1) for i, f in enumerate(files)]  # one hashed here
    index = SearchIndex(tenant)
    index.search("studies")
    outcome = store_instances(tenant, parts, expected_study=study)
    assert outcome.http_status == 200
    assert [r.action for r in outcome.results] == ["create"] * 3
    assert outcome.commit.first_seq == 1 and outcome.commit.last_seq == 3  # one commit for the request
    assert all(not p.path.exists() for p in parts)  # renamed into place, not copied
    for data in files:
        sha = hashlib.sha256(data).hexdigest()
        assert tenant.blobs.get(f"blobs/{sha[:2]}/{sha}.dcm") == data
    assert len(index.search("instances", {"StudyInstanceUID": study})) == 3
    changes = scan(tenant.table("changes"), ["source"]).column("source").to_pylist()
    assert changes == ["stow/0", "stow/1", "stow/2"]


def test_refused_parts_are_quarantined_and_the_rest_stored(tenant):
    study = uid()
    good, other_study, broken = instance(study), instance(uid()), b"\0" * 200
    outcome = store_instances(tenant, [spooled(tenant, good), spooled(tenant, other_study),
                                       spooled(tenant, broken)], expected_study=study)
    assert outcome.http_status == 202
    codes = [(r.stored, r.failure_code, r.error_code) for r in outcome.results]
    assert codes == [(True, None, None), (False, FAILURE_STUDY_MISMATCH, "study_uid_mismatch"),
                     (False, FAILURE_INVALID, "not_dicom")]
    rows = scan(tenant.table("quarantine")).to_pylist()
    assert {r["error_code"] for r in rows} == {"study_uid_mismatch", "not_dicom"}
    for row in rows:
        data = tenant.blobs.get(row["quarantine_key"])
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
    assert scan(tenant.table("instances"), ["sop_instance_uid"]).num_rows == 1


def test_without_replace_other_bytes_fail_with_45070(tenant):
    study, series, sop = uid(), uid(), uid()
    store = InstanceStore(tenant)
    assert store.store([spooled(tenant, instance(study, series, sop, patient_id="A"))]).http_status == 200
    same = instance(study, series, sop, patient_id="B")
    outcome = store.store([spooled(tenant, same)], allow_replace=False)
    assert outcome.http_status == 409
    assert outcome.results[0].failure_code == FAILURE_DUPLICATE
    rows = scan(tenant.table("quarantine")).to_pylist()
    assert [r["error_code"] for r in rows] == ["duplicate_instance"]
    assert tenant.blobs.get(rows[0]["quarantine_key"]) == same
    # With replace (the default, as file ingest): an update.
    outcome = store.store([spooled(tenant, same)])
    assert outcome.http_status == 200 and outcome.results[0].action == "update"


def test_a_huge_non_dicom_part_is_classified_from_a_bounded_prefix(tenant):
    data = b"\x1f\x8b" + b"\0" * (9 * 1024 * 1024)  # gzip magic, larger than the prefix
    outcome = store_instances(tenant, [spooled(tenant, data)])
    assert outcome.results[0].error_code == "gzip"


def test_put_file_copies_across_folders_and_is_idempotent(tmp_path):
    store = LocalBlobStore(tmp_path / "blobs")
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"hello")
    assert store.put_file("blobs/aa/x.dcm", outside) is True
    assert store.get("blobs/aa/x.dcm") == b"hello" and outside.exists()  # copied, caller keeps it
    staged = store.staging_dir() / "y.part"
    staged.write_bytes(b"hello")
    assert store.put_file("blobs/aa/x.dcm", staged, move=True) is False  # exists: nothing written
    assert store.put_file("blobs/aa/z.dcm", staged, move=True) is True
    assert not staged.exists() and store.get("blobs/aa/z.dcm") == b"hello"
    assert not list(Path(store.staging_dir()).iterdir())


def test_concurrent_requests_share_one_commit_round_and_each_is_searchable_on_return(tenant):
    import threading
    import time

    store = InstanceStore(tenant)
    studies = [uid() for _ in range(6)]
    requests = [[instance(study) for _ in range(3)] for study in studies]
    results: dict[int, tuple[object, int]] = {}

    def send(index: int) -> None:
        outcome = store.store([spooled(tenant, data) for data in requests[index]], source=f"r{index}")
        visible = scan(tenant.table("instances"), ["sop_instance_uid"],
                       where=f"study_instance_uid = '{studies[index]}'").num_rows
        results[index] = (outcome, visible)

    store._commit_lock.acquire()  # a commit in progress: every request queues behind it
    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(store._queue) < len(requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(store._queue) == len(requests)
    store._commit_lock.release()
    for thread in threads:
        thread.join(timeout=60)

    for outcome, visible in results.values():
        assert outcome.http_status == 200 and [r.action for r in outcome.results] == ["create"] * 3
        assert visible == 3  # committed and in `instances` before its own store returned
        assert outcome.commit.first_seq == 1 and outcome.commit.last_seq == 18  # the one shared round
    stow_commits = [h for h in tenant.table("changes").history() if h.get("operation") == "WRITE"]
    assert len(stow_commits) == 1
    sources = scan(tenant.table("changes"), ["source", "seq"], order_by="seq").column("source").to_pylist()
    assert sorted(s.split("/")[0] for s in sources) == sorted(f"r{i}" for i in range(6) for _ in range(3))
    assert scan(tenant.table("instances"), ["seq"]).num_rows == 18


def test_a_failed_commit_round_fails_every_request_in_it(tenant, monkeypatch):
    store = InstanceStore(tenant)

    def refuse(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(store.committer, "commit_versions", refuse)
    outcome = store.store([spooled(tenant, instance(uid()))])
    assert outcome.http_status == 409
    assert outcome.results[0].error_code == "commit_failed" and outcome.results[0].failure_code == 272
