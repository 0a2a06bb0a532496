"""Kill -9 an ingest at several points; the rerun must converge with nothing lost or doubled."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from dicomlake.samples import generate_bad_inputs, generate_sample_drop
from dicomlake.store import Lakehouse
from dicomlake.store.read import scan

N_GOOD = 90
REPO = Path(__file__).resolve().parents[2]


def _commits(root: Path) -> int:
    log = root / "tenants" / "default" / "tables" / "changes" / "_delta_log"
    return len(list(log.glob("*.json"))) if log.exists() else 0


def _blobs(root: Path) -> int:
    return len(list((root / "tenants" / "default" / "blobs").glob("*/*.dcm")))


def _start(drop: Path, root: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "dicomlake",
        "ingest",
        str(drop),
        "--root",
        str(root),
        "--workers",
        "1",
        "--batch-size",
        "4",
        "--disposition",
        "delete",
        "--json",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "ingest finished before the crash point; make the drop bigger"
        assert time.monotonic() < deadline, "crash point never reached"
        time.sleep(0.005)


CRASH_POINTS: dict[str, Callable[[Path, Path, int], bool]] = {
    # bytes written, nothing committed yet
    "after_first_blob": lambda root, drop, total: _blobs(root) > 0,
    # a few batches committed, the rest not
    "after_three_commits": lambda root, drop, total: _commits(root) >= 4,
    # some drop files already removed after their commit
    "during_disposition": lambda root, drop, total: (
        sum(1 for p in drop.rglob("*") if p.is_file()) < total - 8
    ),
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_kill_mid_ingest_then_rerun_converges(tmp_path: Path, point: str) -> None:
    drop, root = tmp_path / "drop", tmp_path / "lake"
    good = generate_sample_drop(drop / "good", n_instances=N_GOOD, seed=5)
    bad = generate_bad_inputs(drop / "bad")
    originals = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in drop.rglob("*") if p.is_file()}
    total = len(originals)

    process = _start(drop, root)
    _wait_for(lambda: CRASH_POINTS[point](root, drop, total), process)
    process.send_signal(signal.SIGKILL)
    process.wait()

    tenant = Lakehouse(root).tenant()
    seqs = scan(tenant.table("changes"), ["seq"]).column("seq").to_pylist()
    assert sorted(seqs) == list(range(1, len(seqs) + 1))  # whatever committed is dense

    rerun = _start(drop, root)
    _, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err.decode()

    changes = pl.from_arrow(scan(tenant.table("changes"))).sort("seq")
    assert changes["seq"].to_list() == list(range(1, N_GOOD + 1))
    assert changes["action"].unique().to_list() == ["create"]
    assert changes["sop_instance_uid"].n_unique() == N_GOOD
    instances = pl.from_arrow(scan(tenant.table("instances")))
    assert sorted(instances["sha256"]) == sorted(changes["sha256"])
    # Nothing lost: every original file is either a stored blob or kept in quarantine.
    stored = set(changes["sha256"])
    quarantine = pl.from_arrow(scan(tenant.table("quarantine")))
    quarantined = set(quarantine["sha256"])
    for path, digest in originals.items():
        assert digest in stored or digest in quarantined, path
        key = f"blobs/{digest[:2]}/{digest}.dcm" if digest in stored else f"quarantine/{digest}.bin"
        assert hashlib.sha256(tenant.blobs.get(key)).hexdigest() == digest
    assert quarantine.height == len(bad)  # no duplicate quarantine rows
    assert len(good.files) == N_GOOD
    assert [p for p in drop.rglob("*") if p.is_file()] == []  # every file committed, then removed
