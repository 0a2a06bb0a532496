"""Several processes writing one tenant at once: no lost, duplicated or reordered changes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import polars as pl
import pytest

from dicomlake.ingest import IngestOptions, ingest
from dicomlake.samples import generate_sample_drop
from dicomlake.store import Lakehouse, TenantStore
from dicomlake.store.committer import sync_instances
from dicomlake.store.read import scan
from tests.ingest.conftest import rewrite


def _ingest_files(root: str, files: list[str], barrier) -> None:
    barrier.wait()
    ingest(files, Lakehouse(root).tenant(), IngestOptions(workers=1, batch_size=3))


def _run_concurrently(root: Path, file_sets: list[list[Path]]) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(file_sets))
    processes = [
        context.Process(target=_ingest_files, args=(str(root), [str(f) for f in files], barrier))
        for files in file_sets
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
        assert process.exitcode == 0


def replay(tenant: TenantStore) -> pl.DataFrame:
    """The current state implied by the feed alone: last action per UID, deletes dropped."""
    feed = pl.from_arrow(scan(tenant.table("changes"), ["seq", "action", "sop_instance_uid", "sha256"]))
    last = feed.sort("seq").group_by("sop_instance_uid").last()
    return (
        last.filter(pl.col("action") != "delete")
        .select("sop_instance_uid", "sha256", "seq")
        .sort("sop_instance_uid")
    )


def assert_feed_is_dense_and_replays_to_instances(tenant: TenantStore) -> pl.DataFrame:
    sync_instances(tenant)
    feed = pl.from_arrow(scan(tenant.table("changes"))).sort("seq")
    assert feed["seq"].to_list() == list(range(1, feed.height + 1))
    assert feed["changed_at"].is_sorted()  # time never goes backwards along seq
    instances = pl.from_arrow(scan(tenant.table("instances"), ["sop_instance_uid", "sha256", "seq"]))
    assert instances.sort("sop_instance_uid").equals(replay(tenant))
    return feed


@pytest.mark.timeout(300)
def test_overlapping_ingests_store_each_instance_once(tmp_path: Path) -> None:
    files = generate_sample_drop(tmp_path / "drop", n_instances=60, seed=21).files
    a, b, c = files[:40], files[20:60], files[:10] + files[30:50]
    _run_concurrently(tmp_path / "lake", [a, b, c])
    tenant = Lakehouse(tmp_path / "lake").tenant()
    feed = assert_feed_is_dense_and_replays_to_instances(tenant)
    assert feed.height == 60
    assert feed["action"].unique().to_list() == ["create"]
    assert feed["sop_instance_uid"].n_unique() == 60


@pytest.mark.timeout(300)
def test_competing_versions_of_the_same_instances_serialize(tmp_path: Path) -> None:
    files = generate_sample_drop(tmp_path / "drop", n_instances=15, seed=22).files
    fixed = [
        rewrite(f, tmp_path / "fixed" / f"{i}.dcm", SeriesDescription="FIXED") for i, f in enumerate(files)
    ]
    _run_concurrently(tmp_path / "lake", [files, fixed])
    tenant = Lakehouse(tmp_path / "lake").tenant()
    feed = assert_feed_is_dense_and_replays_to_instances(tenant)
    per_uid = feed.group_by("sop_instance_uid").agg(pl.col("action").sort_by("seq"))
    assert per_uid.height == 15
    for actions in per_uid["action"].to_list():
        assert actions == ["create", "update"]  # one wins the create, the other's bytes update it


def test_a_projection_far_behind_catches_up_in_bounded_windows(tmp_path: Path, monkeypatch) -> None:
    import dicomlake.store.committer as committer

    monkeypatch.setattr(committer, "PROJECTION_WINDOW", 4)  # 30 changes -> 8 windows
    tenant = Lakehouse(tmp_path / "lake").tenant()
    files = generate_sample_drop(tmp_path / "drop", n_instances=30, seed=23).files
    writer = committer.Committer(tenant)
    from dicomlake.ingest.worker import prepare

    versions = [prepare(str(f), f.read_bytes())[0] for f in files]
    writer.commit_versions(versions[:20])
    writer.commit_versions(versions[20:])
    assert tenant.table("instances").transaction_version(committer.PROJECTION_APP) is None
    assert sync_instances(tenant) == 30
    assert tenant.table("instances").version() == 8
    assert_feed_is_dense_and_replays_to_instances(tenant)
