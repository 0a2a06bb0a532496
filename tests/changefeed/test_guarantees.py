"""The feed's promises: dense, immutable, same bytes on every read, same order for every reader."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomlake.changefeed import ChangeFeed
from dicomlake.ingest import IngestOptions, ingest
from dicomlake.lifecycle import NotFound, delete_instances
from dicomlake.maintenance import maintain_tables
from dicomlake.samples import SampleSummary, generate_sample_drop
from dicomlake.store import Lakehouse, TenantStore
from dicomlake.store.committer import sync_instances
from dicomlake.store.read import scan
from tests.ingest.conftest import rewrite
from tests.store.test_concurrency import replay


def page_bytes(feed: ChangeFeed, offset: int, limit: int) -> bytes:
    """A page exactly as a client receives it (the CLI's and the HTTP API's JSON)."""
    entries = feed.read(offset, limit, include_metadata=True)
    return json.dumps([e.as_json() for e in entries], sort_keys=True).encode()


def test_same_range_same_bytes_across_compaction_checkpoint_and_vacuum(
    tenant: TenantStore, drop: SampleSummary
) -> None:
    for start in range(0, 30, 5):  # many small commits, so compaction has files to merge
        ingest(drop.files[start : start + 5], tenant)
    feed = ChangeFeed(tenant)
    before = [page_bytes(feed, offset, 7) for offset in range(0, 30, 7)]
    report = maintain_tables(tenant, vacuum_retention_hours=0)
    changes = next(r for r in report if r.table == "changes")
    assert changes.files_removed >= 6 and changes.files_added >= 1 and changes.vacuumed >= 6
    fresh = ChangeFeed(tenant)  # a new reader after the files were rewritten and the old ones deleted
    after = [page_bytes(fresh, offset, 7) for offset in range(0, 30, 7)]
    assert before == after
    assert [page_bytes(feed, offset, 7) for offset in range(0, 30, 7)] == before  # the reader from before too
    assert [e.sequence for e in fresh.read(0, 100)] == list(range(1, 31))


def _write_in_small_batches(root: str, files: list[str]) -> None:
    ingest(files, Lakehouse(root).tenant(), IngestOptions(workers=1, batch_size=2))


def _read_everything(root: str, page: int, expected: int, queue) -> None:
    feed = ChangeFeed(Lakehouse(root).tenant())
    seen: list[tuple[int, str]] = []
    for _ in range(20_000):
        entries = feed.read(seen[-1][0] if seen else 0, page)
        seen.extend((e.sequence, e.sop_instance_uid) for e in entries)
        if len(seen) >= expected:
            break
    queue.put(seen)


@pytest.mark.timeout(300)
def test_readers_in_parallel_with_concurrent_writers_see_one_order(tmp_path: Path) -> None:
    files = [str(f) for f in generate_sample_drop(tmp_path / "drop", n_instances=40, seed=31).files]
    root = str(tmp_path / "lake")
    Lakehouse(root).tenant().table("changes")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    writers = [context.Process(target=_write_in_small_batches, args=(root, files[i::2])) for i in range(2)]
    readers = [context.Process(target=_read_everything, args=(root, page, 40, queue)) for page in (1, 3, 7)]
    for process in writers + readers:
        process.start()
    results = [queue.get(timeout=240) for _ in readers]
    for process in writers + readers:
        process.join(timeout=60)
        assert process.exitcode == 0
    for seen in results:
        assert [seq for seq, _ in seen] == list(range(1, 41))  # nothing skipped, nothing twice
    assert results[0] == results[1] == results[2]  # the same order for every reader


# -- property: any interleaving of ingest / new bytes / delete replays to exactly `instances` ------

SLOTS = 4  # instances 0,1 in study A; 2,3 in study B (templates from one sample drop)
VERSIONS = 3


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], Path]:
    base = tmp_path_factory.mktemp("versions")
    summary = generate_sample_drop(base / "drop", n_instances=40, seed=41)
    by_study: dict[str, list[Path]] = {}
    import pydicom

    for path in summary.files:
        study = pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
        by_study.setdefault(study, []).append(path)
    two_studies = [paths[:2] for paths in by_study.values() if len(paths) >= 2][:2]
    slots = [p for pair in two_studies for p in pair]
    assert len(slots) == SLOTS
    return {
        (slot, version): (
            slots[slot]
            if version == 0
            else rewrite(slots[slot], base / f"s{slot}v{version}.dcm", SeriesDescription=f"v{version}")
        )
        for slot in range(SLOTS)
        for version in range(VERSIONS)
    }


operation = st.one_of(
    st.tuples(st.just("store"), st.integers(0, SLOTS - 1), st.integers(0, VERSIONS - 1)),
    st.tuples(st.just("delete_instance"), st.integers(0, SLOTS - 1), st.just(0)),
    st.tuples(st.just("delete_series"), st.integers(0, SLOTS - 1), st.just(0)),
    st.tuples(st.just("delete_study"), st.integers(0, SLOTS - 1), st.just(0)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(operation, min_size=1, max_size=9))
def test_replaying_the_feed_gives_exactly_the_instances_table(versions, operations) -> None:
    import pydicom

    root = tempfile.mkdtemp()
    try:
        tenant = Lakehouse(root).tenant()
        for kind, slot, version in operations:
            path = versions[(slot, version)]
            if kind == "store":
                ingest([path], tenant)
                continue
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            uids = [ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID]
            keep = {"delete_study": 1, "delete_series": 2, "delete_instance": 3}[kind]
            with contextlib.suppress(NotFound):
                delete_instances(tenant, *uids[:keep])
        sync_instances(tenant)
        feed = pl.from_arrow(scan(tenant.table("changes"))).sort("seq")
        assert feed["seq"].to_list() == list(range(1, feed.height + 1))
        current = pl.from_arrow(scan(tenant.table("instances"), ["sop_instance_uid", "sha256", "seq"]))
        assert current.sort("sop_instance_uid").equals(replay(tenant))
        entries = ChangeFeed(tenant).read(0, 1000)
        current_entries = sorted(e.sequence for e in entries if e.state == "current")
        assert current_entries == sorted(current["seq"].to_list())  # exactly one current per live instance
        for entry in entries:
            if entry.action == "delete":
                assert entry.state == "deleted"
    finally:
        shutil.rmtree(root, ignore_errors=True)
