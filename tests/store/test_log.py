"""LogFollower: the live files of a Delta table, followed one log entry per commit."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from dicomlake.store.log import LogFollower, app_version, remember_app_version, update_if_moved


def _append(uri: str, first: int, n: int, app_version: int | None = None) -> None:
    rows = pa.table({"seq": pa.array(range(first, first + n), pa.int64()), "v": [f"x{i}" for i in range(n)]})
    txn = [Transaction(app_id="test.app", version=app_version)] if app_version is not None else []
    write_deltalake(uri, rows, mode="append", commit_properties=CommitProperties(app_transactions=txn))


def _truth(uri: str) -> dict[str, int]:
    actions = pa.table(DeltaTable(uri).get_add_actions(flatten=True))
    paths, records = actions.column("path").to_pylist(), actions.column("num_records").to_pylist()
    return dict(zip(paths, records, strict=True))


def test_follows_appends_compaction_and_app_versions(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    _append(uri, 1, 3)
    follower = LogFollower(
        DeltaTable(uri), fsspec.filesystem("file"), stats_columns=["seq"], apps=["test.app"]
    )
    assert follower.refresh() is True
    assert {p: f.num_records for p, f in follower.files.items()} == _truth(uri)
    assert follower.refresh() is False  # nothing new

    for step in range(4):
        _append(uri, 4 + 2 * step, 2, app_version=step + 1)
    assert follower.refresh() is True
    assert {p: f.num_records for p, f in follower.files.items()} == _truth(uri)
    assert follower.app_versions["test.app"] == 4
    assert follower.version == DeltaTable(uri).version()
    newest = max(follower.files.values(), key=lambda f: f.max["seq"])
    assert (newest.min["seq"], newest.max["seq"]) == (10, 11)

    DeltaTable(uri).optimize.compact()  # removes five files, adds one
    assert follower.refresh() is True
    assert {p: f.num_records for p, f in follower.files.items()} == _truth(uri)
    assert len(follower.files) == 1
    assert follower.reloads == 1  # everything after the first load came from the log entries


def test_a_cleaned_up_log_means_a_full_reload(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    _append(uri, 1, 1)
    follower = LogFollower(DeltaTable(uri), fsspec.filesystem("file"))
    follower.refresh()
    for step in range(3):
        _append(uri, 2 + step, 1)
    table = DeltaTable(uri)
    table.create_checkpoint()
    for version in range(0, table.version()):  # as log retention would, long after a checkpoint
        (tmp_path / "t" / "_delta_log" / f"{version:020d}.json").unlink()
    assert follower.refresh() is True
    assert follower.reloads == 2
    assert {p: f.num_records for p, f in follower.files.items()} == _truth(uri)


def _append_one(table_or_path, value: int, app_version: int | None = None) -> None:
    properties = None
    if app_version is not None:
        properties = CommitProperties(app_transactions=[Transaction(app_id="app", version=app_version)])
    write_deltalake(table_or_path, pa.table({"x": [value]}), mode="append", commit_properties=properties)


def test_update_if_moved_follows_another_writer(tmp_path: Path) -> None:
    _append_one(str(tmp_path), 1)
    ours, theirs = DeltaTable(str(tmp_path)), DeltaTable(str(tmp_path))
    assert update_if_moved(ours) is False  # nothing new: no reload
    _append_one(theirs, 2, app_version=5)
    assert ours.version() == 0
    assert update_if_moved(ours) is True
    assert ours.version() == 1
    assert app_version(ours, "app") == 5


def test_app_version_is_per_table_version(tmp_path: Path) -> None:
    _append_one(str(tmp_path), 1, app_version=1)
    old = DeltaTable(str(tmp_path))
    new = DeltaTable(str(tmp_path))
    _append_one(new, 2, app_version=2)
    remember_app_version(new, "app", 2)
    assert app_version(new, "app") == 2
    assert app_version(old, "app") == 1  # an older snapshot of the same table keeps its own answer
    assert app_version(old, "other") == 0
