"""Drop-folder batching: settle time, dot-files, no double batching, manifests, keys, ingest + disposition."""

import json
import os
import re
import time
from pathlib import Path

import pytest

from dicomlake.drops import (
    DropFile,
    batch_key,
    ingest_drop_batch,
    list_drop_batches,
    load_drop_batch,
    plan_drop_batch,
)
from dicomlake.ingest import IngestOptions
from dicomlake.samples import generate_sample_drop
from dicomlake.store.lakehouse import Lakehouse, TenantStore

NOW = 1_800_000_000.0  # a fixed clock: every file below is written with an mtime relative to it


def write(path: Path, data: bytes = b"x", age: float = 60.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (NOW - age, NOW - age))
    return path


@pytest.fixture
def tenant(tmp_path: Path) -> TenantStore:
    return Lakehouse(tmp_path / "lakehouse").tenant()


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    folder = tmp_path / "drops"
    folder.mkdir()
    return folder


def batched_names(batch, drop: Path) -> list[str]:
    return sorted(str(Path(f.path).relative_to(drop)) for f in batch.files)


def test_files_younger_than_the_settle_time_wait(tenant: TenantStore, drop: Path) -> None:
    write(drop / "old.dcm", age=10)
    write(drop / "fresh.dcm", age=0.5)
    batch = plan_drop_batch(tenant, str(drop), settle_seconds=2, now=NOW)
    assert batch is not None and batched_names(batch, drop) == ["old.dcm"]
    assert plan_drop_batch(tenant, str(drop), settle_seconds=2, now=NOW) is None
    later = plan_drop_batch(tenant, str(drop), settle_seconds=2, now=NOW + 5)
    assert later is not None and batched_names(later, drop) == ["fresh.dcm"]


def test_dot_files_and_dot_folders_are_uploads_in_progress(tenant: TenantStore, drop: Path) -> None:
    write(drop / "a" / "done.dcm")
    write(drop / "a" / ".partial.dcm.part")
    write(drop / ".incoming" / "b.dcm")
    write(drop / "c" / ".tmp" / "d.dcm")
    batch = plan_drop_batch(tenant, str(drop), settle_seconds=2, now=NOW)
    assert batch is not None and batched_names(batch, drop) == ["a/done.dcm"]


def test_a_file_is_batched_once_until_it_changes(tenant: TenantStore, drop: Path) -> None:
    first = write(drop / "one.dcm")
    write(drop / "two.dcm")
    assert batched_names(plan_drop_batch(tenant, str(drop), now=NOW), drop) == ["one.dcm", "two.dcm"]
    assert plan_drop_batch(tenant, str(drop), now=NOW) is None
    write(drop / "three.dcm")
    assert batched_names(plan_drop_batch(tenant, str(drop), now=NOW), drop) == ["three.dcm"]
    write(first, b"new bytes", age=30)  # rewritten in place: new size and mtime, so batched again
    assert batched_names(plan_drop_batch(tenant, str(drop), now=NOW), drop) == ["one.dcm"]
    assert len(list_drop_batches(tenant)) == 3


def test_max_files_splits_the_drop_into_batches(tenant: TenantStore, drop: Path) -> None:
    for n in range(5):
        write(drop / f"{n}.dcm")
    sizes = []
    while (batch := plan_drop_batch(tenant, str(drop), max_files=2, now=NOW)) is not None:
        sizes.append(len(batch.files))
    assert sizes == [2, 2, 1]


def test_manifest_round_trip(tenant: TenantStore, drop: Path) -> None:
    write(drop / "s" / "1.dcm", b"abc")
    batch = plan_drop_batch(tenant, str(drop), now=NOW)
    assert batch is not None
    assert load_drop_batch(tenant, batch.key) == batch
    assert list_drop_batches(tenant) == [batch.key]
    manifest = json.loads(Path(f"{tenant.uri}/drops/{batch.key}.json").read_text())
    assert set(manifest) == {"key", "created_at", "drop_dir", "files"}
    assert manifest["drop_dir"] == str(drop)
    assert manifest["files"] == [{"path": str(drop / "s" / "1.dcm"), "size": 3, "mtime": NOW - 60}]


def test_keys_are_sortable_and_deterministic(tmp_path: Path, drop: Path) -> None:
    files = [DropFile("/d/b.dcm", 2, 1.5), DropFile("/d/a.dcm", 1, 1.0)]
    key = batch_key(files, NOW)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", key)
    assert key.startswith(time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW)))
    assert batch_key(list(reversed(files)), NOW) == key
    assert batch_key(files[:1], NOW) != key
    assert batch_key(files, NOW + 1) > key
    # The same files seen by two planners at the same moment get the same key.
    write(drop / "x.dcm")
    one, two = (plan_drop_batch(Lakehouse(tmp_path / name).tenant(), str(drop), now=NOW) for name in "ab")
    assert one is not None and two is not None and one.key == two.key


def test_a_missing_drop_folder_has_nothing_to_batch(tenant: TenantStore, tmp_path: Path) -> None:
    assert plan_drop_batch(tenant, str(tmp_path / "nowhere")) is None
    assert list_drop_batches(tenant) == []


def test_ingest_moves_files_keeping_their_folders(tenant: TenantStore, drop: Path, tmp_path: Path) -> None:
    sample = generate_sample_drop(drop / "samples", n_instances=6, seed=3)
    (drop / "notes.txt").write_bytes(b"not dicom")
    batch = plan_drop_batch(tenant, str(drop), settle_seconds=0)
    assert batch is not None
    processed = tmp_path / "processed"
    result = ingest_drop_batch(tenant, batch, IngestOptions(workers=1), "move", str(processed))
    assert (result.summary.created, result.summary.quarantined, result.summary.left_in_place) == (6, 1, [])
    moved = sorted(str(p.relative_to(processed)) for p in processed.rglob("*") if p.is_file())
    assert moved == sorted([str(p.relative_to(drop)) for p in sample.files] + ["notes.txt"])
    # A rerun of the same batch finds its files gone and changes nothing.
    again = ingest_drop_batch(tenant, batch, IngestOptions(workers=1), "move", str(processed))
    assert (again.summary.received, len(again.missing)) == (0, 7)


def test_a_file_rewritten_after_batching_stays_for_the_next_batch(tenant: TenantStore, drop: Path,
                                                                 tmp_path: Path) -> None:
    sample = generate_sample_drop(drop, n_instances=2, seed=4, layout="flat")
    batch = plan_drop_batch(tenant, str(drop), settle_seconds=0)
    assert batch is not None
    rewritten = sample.files[0]
    rewritten.write_bytes(rewritten.read_bytes())  # same bytes, new mtime: no longer what was listed
    os.utime(rewritten, (time.time() - 10, time.time() - 10))
    result = ingest_drop_batch(tenant, batch, IngestOptions(workers=1), "delete")
    assert (result.rewritten, result.summary.received) == ([str(rewritten)], 1)
    assert rewritten.exists() and not sample.files[1].exists()
    again = plan_drop_batch(tenant, str(drop), settle_seconds=0)
    assert again is not None and again.paths == [str(rewritten)]
