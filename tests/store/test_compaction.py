"""Online compaction: a long-lived committer keeps its tables' file count bounded, rows unchanged."""

from __future__ import annotations

from dicomlake.store import Lakehouse
from dicomlake.store.committer import Committer
from dicomlake.store.compaction import ONLINE_EVERY, FileCountGuard
from dicomlake.store.read import scan
from tests.retrieve.dicom_builder import instance, uid


def _versions(n: int) -> list[dict]:
    from dicomlake.dicom.parse import parse_instance
    from dicomlake.store.blobs import blob_key

    out = []
    for _ in range(n):
        data = instance(uid())
        parsed = parse_instance(data)
        version = dict(parsed.record)
        version.setdefault("warnings", [])
        version.update(sha256=parsed.sha256, blob_key=blob_key(parsed.sha256), size_bytes=len(data),
                       source="test")
        out.append(version)
    return out


def test_many_small_commits_are_compacted_as_they_go_and_the_feed_is_unchanged(tmp_path):
    tenant = Lakehouse(tmp_path / "lake").tenant()
    committer = Committer(tenant)
    commits = ONLINE_EVERY * 2 + 5
    for versions in [_versions(2) for _ in range(commits)]:
        outcome = committer.commit_versions(versions, operation="stow")
        committer.sync_instances(outcome)
    changes, instances = tenant.table("changes"), tenant.table("instances")
    # Without compaction each table would hold one file per commit.
    assert len(changes.file_uris()) < 20 and len(instances.file_uris()) < 20
    feed = scan(changes, ["seq", "sop_instance_uid"], order_by="seq")
    assert feed.column("seq").to_pylist() == list(range(1, 2 * commits + 1))
    projected = scan(instances, ["seq", "sop_instance_uid"], order_by="seq")
    assert projected.to_pylist() == feed.to_pylist()
    operations = [h.get("operation") for h in changes.history()]
    assert operations.count("OPTIMIZE") == 2


def test_the_guard_compacts_every_nth_append_only(tmp_path):
    tenant = Lakehouse(tmp_path / "lake").tenant()
    committer = Committer(tenant)
    table = tenant.table("changes")
    guard = FileCountGuard(every=3)
    compacted = []
    for versions in [_versions(1) for _ in range(7)]:
        committer.commit_versions(versions)
        table.update_incremental()
        compacted.append(guard.after_commit(table))
    assert compacted == [False, False, True, False, False, True, False]
    assert len(table.file_uris()) == 2  # one compacted file (commits 1-6) + the seventh's
    assert scan(table, ["seq"], order_by="seq").column("seq").to_pylist() == list(range(1, 8))
