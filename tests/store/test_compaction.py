"""Online compaction: a long-lived committer keeps its tables' file count bounded, rows unchanged,
and two processes never compact one table at once (delta-rs would let both commit: rows doubled)."""

from __future__ import annotations

import multiprocessing
import time

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from dicomlake.maintenance import maintain_tables
from dicomlake.store import Lakehouse
from dicomlake.store.committer import Committer
from dicomlake.store.compaction import (
    LEASE_APP,
    ONLINE_EVERY,
    CompactionBusy,
    FileCountGuard,
    _commit_lease,
    _take_lease,
    compact,
    lease_holder_until,
)
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
    assert [c is not None for c in compacted] == [False, False, True, False, False, True, False]
    assert table.history(1)[0]["operation"] == "WRITE"  # the lease's release came after the compaction
    assert {h["version"] for h in table.history() if h["operation"] == "OPTIMIZE"} == {
        c for c in compacted if c is not None}
    assert len(table.file_uris()) == 2  # one compacted file (commits 1-6) + the seventh's
    assert scan(table, ["seq"], order_by="seq").column("seq").to_pylist() == list(range(1, 8))


def _small_table(path, files: int) -> DeltaTable:
    for i in range(files):
        write_deltalake(str(path), pa.table({"uid": [f"u{i}"]}), mode="append")
    return DeltaTable(str(path))


def test_a_held_lease_makes_every_other_compaction_wait(tmp_path):
    tenant = Lakehouse(tmp_path / "lake").tenant()
    committer = Committer(tenant)
    for versions in [_versions(1) for _ in range(4)]:
        committer.commit_versions(versions)
    table = tenant.table("changes")
    _take_lease(tenant.table("changes"))  # another process, say: its own table object
    with pytest.raises(CompactionBusy, match="held until"):
        compact(table)
    assert lease_holder_until(table) > time.time() + 60
    assert FileCountGuard(every=1).after_commit(table) is None  # online: skipped, not an error
    report = {t.table: t for t in maintain_tables(tenant)}
    assert "held until" in report["changes"].busy and report["changes"].files_removed == 0
    assert len(tenant.table("changes").file_uris()) == 4
    assert report["instances"].busy is None  # the lease is per table


def test_of_two_leases_taken_at_the_same_version_exactly_one_commits(tmp_path):
    _small_table(tmp_path / "t", 3)
    first, second = DeltaTable(str(tmp_path / "t")), DeltaTable(str(tmp_path / "t"))
    _take_lease(first)
    # `second` read the table before the first lease: its own lease commit must conflict.
    with pytest.raises(CommitFailedError):
        _commit_lease(second, time.time_ns() // 1000 + 10**9)
    with pytest.raises(CompactionBusy, match="held until"):
        _take_lease(second)  # and once it has read the log, it sees the lease


def test_compaction_releases_its_lease(tmp_path):
    table = _small_table(tmp_path / "t", 4)
    metrics = compact(table)
    assert metrics["numFilesRemoved"] == 4 and lease_holder_until(table) is None
    assert table.transaction_version(LEASE_APP) is not None
    assert compact(table)["numFilesAdded"] == 0  # a second round, right away, is allowed


def _append_and_compact(uri: str, name: str, commits: int) -> None:
    table = DeltaTable(uri)
    guard = FileCountGuard(every=3, target_size=1 << 20)
    for i in range(commits):
        for _ in range(50):
            try:
                rows = pa.table({"uid": [f"{name}-{i}-{k}" for k in range(5)]})
                write_deltalake(table, rows, mode="append")
                break
            except CommitFailedError:  # a concurrent commit won; retry on the new version
                table.update_incremental()
        guard.after_commit(table)


def test_two_processes_compacting_one_table_never_duplicate_a_row(tmp_path):
    uri = str(tmp_path / "t")
    write_deltalake(uri, pa.table({"uid": ["seed"]}))
    context = multiprocessing.get_context("spawn")  # delta-rs' runtime does not survive fork
    workers = [context.Process(target=_append_and_compact, args=(uri, f"w{j}", 60)) for j in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    table = DeltaTable(uri)
    uids = table.to_pyarrow_table(columns=["uid"]).column("uid").to_pylist()
    assert len(uids) == len(set(uids)) == 1 + 2 * 60 * 5
    assert sum(h["operation"] == "OPTIMIZE" for h in table.history()) >= 2


def _stats_keys(table: DeltaTable) -> set[str]:
    """The columns with a min value in some live file's statistics."""
    actions = pa.table(table.get_add_actions(flatten=True))
    return {name.removeprefix("min.") for name in actions.column_names
            if name.startswith("min.") and actions.column(name).null_count < actions.num_rows}


def test_feed_and_instances_keep_statistics_only_for_the_columns_readers_filter_on(tmp_path):
    from dicomlake.store.lakehouse import STATS_COLUMNS

    tenant = Lakehouse(tmp_path / "lake").tenant()
    committer = Committer(tenant)
    committer.sync_instances(committer.commit_versions(_versions(3)))
    for name in ("changes", "instances"):
        keys = _stats_keys(tenant.table(name))
        # Every listed column that has a value has statistics; no other column has any.
        assert keys <= set(STATS_COLUMNS[name]) and {"seq", "study_instance_uid", "sop_instance_uid"} <= keys
    assert "dicom_json" not in _stats_keys(tenant.table("changes"))


def test_maintenance_gives_an_older_table_the_statistics_columns(tmp_path):
    from dicomlake.maintenance import upgrade_table_properties
    from dicomlake.store.lakehouse import table_configuration
    from dicomlake.store.schemas import INSTANCES

    tenant = Lakehouse(tmp_path / "lake").tenant()
    # An `instances` table as an older dicomlake made it: Delta's default statistics.
    write_deltalake(tenant.table_uri("instances"), pa.Table.from_pylist([], schema=INSTANCES), mode="append")
    committer = Committer(tenant)
    for _ in range(2):  # two files, for compaction to rewrite
        committer.sync_instances(committer.commit_versions(_versions(1)))
    assert "patient_name" in _stats_keys(tenant.table("instances"))
    report = {t.table: t for t in maintain_tables(tenant)}
    assert report["instances"].files_removed >= 1
    table = tenant.table("instances")
    assert table.metadata().configuration == table_configuration("instances")
    assert "patient_name" not in _stats_keys(table)  # the compacted file follows the new properties
    assert upgrade_table_properties(table, "instances") == {}  # idempotent
    assert scan(table, ["seq"], order_by="seq").column("seq").to_pylist() == [1, 2]
