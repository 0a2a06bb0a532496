"""The local blob store: write-once, content-addressed, durable before it returns."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from dicomlake.store import blobs
from dicomlake.store.blobs import LocalBlobStore, blob_key


def _item(data: bytes) -> tuple[str, bytes]:
    return blob_key(hashlib.sha256(data).hexdigest()), data


@pytest.fixture(params=["syncfs", "fsync per file"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalBlobStore:
    if request.param == "fsync per file":
        monkeypatch.setattr(blobs, "_SYNCFS", None)
    elif blobs._SYNCFS is None:
        pytest.skip("syncfs(2) is Linux-only")
    else:
        monkeypatch.setattr(blobs, "dirty_bytes", lambda: 0)  # nothing else waiting: syncfs is used
    return LocalBlobStore(tmp_path / "tenant")


def test_put_many_writes_each_new_blob_once_and_reports_which(store: LocalBlobStore) -> None:
    first, second, third = _item(b"one"), _item(b"two"), _item(b"three")
    assert store.put_many([first, second]) == [True, True]
    # Existing keys are left alone; a key given twice in one batch is written once.
    assert store.put_many([first, third, third]) == [False, True, False]
    for key, data in (first, second, third):
        assert store.get(key) == data
    assert store.keys("blobs") == sorted(key for key, _ in (first, second, third))
    assert list((store.base / ".tmp").iterdir()) == []  # every staged file was renamed into place


def test_put_single_and_empty_batch(store: LocalBlobStore) -> None:
    key, data = _item(b"x" * 100_000)
    assert store.put(key, data) is True
    assert store.put(key, data) is False
    assert store.put_many([]) == []
    assert store.get(key) == data


def test_a_failing_sync_raises_and_no_name_points_at_unsynced_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def failing_syncfs(descriptor: int) -> int:
        calls.append(descriptor)
        return -1

    monkeypatch.setattr(blobs, "_SYNCFS", failing_syncfs)
    monkeypatch.setattr(blobs, "dirty_bytes", lambda: 0)
    store = LocalBlobStore(tmp_path / "tenant")
    key, data = _item(b"payload")
    with pytest.raises(OSError, match="syncfs failed"):
        store.put_many([(key, data)])
    assert calls  # the sync was attempted before any rename ...
    assert not store.exists(key)  # ... and its failure left the key absent, so a retry writes it


def test_sync_filesystem_on_a_real_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    blobs.sync_filesystem(tmp_path)  # no error on this machine's file system


def test_much_foreign_dirty_data_means_fsync_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(blobs, "_SYNCFS", lambda descriptor: calls.append(descriptor) or 0)
    monkeypatch.setattr(blobs, "dirty_bytes", lambda: blobs.SYNCFS_MAX_FOREIGN_BYTES + 10_000)
    store = LocalBlobStore(tmp_path / "tenant")
    assert store.put_many([_item(b"a" * 5000), _item(b"b")]) == [True, True]
    assert calls == []  # other writers' data would have made syncfs slow: each file was fsynced
    monkeypatch.setattr(blobs, "dirty_bytes", lambda: 6000)  # only about our own batch
    assert store.put_many([_item(b"c" * 5000)]) == [True]
    assert len(calls) == 2  # bytes, then renames


def test_dirty_bytes_reads_this_machine() -> None:
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo")
    assert isinstance(blobs.dirty_bytes(), int)


def test_staged_blobs_are_invisible_until_published(store: LocalBlobStore) -> None:
    key, data = _item(b"staged bytes")
    first, second = store.stage([(key, data)]), store.stage([(key, data)])  # two chunks, same bytes
    assert not store.exists(key)  # a reader never sees a blob that is not yet durable
    store.publish([first, second])
    assert store.get(key) == data
    assert list((store.base / ".tmp").iterdir()) == []  # the second copy was dropped, not left
    assert store.stage([(key, data)]).files == ()  # now it exists: nothing to stage


def test_sweep_removes_only_old_leftovers_of_a_crashed_writer(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "tenant")
    crashed = store.stage([_item(b"left behind")])  # staged, never published: the writer died
    live = store.stage([_item(b"being written")])
    old = Path(crashed.files[0][1])
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert store.sweep_staging(older_than_s=3600) == 1
    assert not old.exists() and Path(live.files[0][1]).exists()
