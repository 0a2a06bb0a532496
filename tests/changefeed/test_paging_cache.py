"""The paging cache: blocks decoded ahead for forward readers, slices for pages, and what must not
change because of it (exact ranges, one chunk, states, freshness, seeks, the memory bound)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from dicomlake.changefeed import ChangeFeed
from dicomlake.changefeed import files as feed_files
from dicomlake.changefeed.reader import ENTRY_COLUMNS
from dicomlake.maintenance import maintain_tables
from dicomlake.store import TenantStore
from dicomlake.store.committer import Committer
from dicomlake.store.read import scan


def _version(number: int, edition: int = 0) -> dict:
    sha = f"{number:056x}{edition:08x}"
    return {
        "study_instance_uid": f"1.2.3.1.{number // 20}",
        "series_instance_uid": f"1.2.3.2.{number // 5}",
        "sop_instance_uid": f"1.2.3.3.{number}",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "sha256": sha,
        "blob_key": f"blobs/{sha[:2]}/{sha}.dcm",
        "size_bytes": 1000,
        "modality": "CT",
        "patient_id": "P1",
        "source": "test",
        "dicom_json": "{}",
    }


def _commit(tenant: TenantStore, numbers: range, edition: int = 0) -> None:
    Committer(tenant).commit_versions([_version(n, edition) for n in numbers], operation="test")


def _fill(tenant: TenantStore, commits: int, size: int) -> int:
    for start in range(0, commits * size, size):
        _commit(tenant, range(start, start + size))
    return commits * size


def _reference(tenant: TenantStore) -> pa.Table:
    return scan(tenant.table("changes"), ENTRY_COLUMNS, order_by="seq")


def _assert_page(page: pa.Table, offset: int, limit: int, last: int) -> None:
    assert page.column("seq").to_pylist() == list(range(offset + 1, min(offset + limit, last) + 1))
    assert all(column.num_chunks == 1 for column in page.columns)  # one chunk, whatever the layout


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_files, "READ_AHEAD_ROWS", 25)  # blocks of a few files


def test_pages_straddling_blocks_are_exact_and_one_chunk(tenant: TenantStore, small_blocks) -> None:
    last = _fill(tenant, commits=15, size=7)
    reference = _reference(tenant)
    feed = ChangeFeed(tenant)
    pages = []
    for offset in range(0, last, 10):  # pages of 10 over files of 7 and blocks of about 28
        page = feed.read_arrow(offset, 10)
        _assert_page(page, offset, 10, last)
        assert set(page.column("state").to_pylist()) == {"current"}
        assert set(page.column("tenant").to_pylist()) == {tenant.name}
        # The same page from a fresh reader (a seek: one file at a time, another decoder) is equal.
        assert ChangeFeed(tenant).read_arrow(offset, 10).equals(page)
        pages.append(page)
    assert pa.concat_tables(pages).select(ENTRY_COLUMNS).equals(reference)
    # A reader paging forward frees what it has read: the cache holds the block it is in, not history.
    assert sum(isinstance(v, feed_files._Block) for v in feed._files._cache.values()) == 1


def test_seeks_after_paging_match_a_fresh_reader(tenant: TenantStore, small_blocks) -> None:
    last = _fill(tenant, commits=12, size=9)
    feed = ChangeFeed(tenant)
    for offset in range(0, last, 13):
        feed.read_arrow(offset, 13)
    rng = random.Random(5)
    for _ in range(25):
        offset, limit = rng.randrange(0, last + 3), rng.randrange(1, 40)
        page = feed.read_arrow(offset, limit)
        _assert_page(page, offset, limit, last)
        assert page.equals(ChangeFeed(tenant).read_arrow(offset, limit))
    assert feed.read_arrow(last, 10).num_rows == 0


def test_reader_paging_forward_while_a_writer_appends(tenant: TenantStore, small_blocks) -> None:
    _fill(tenant, commits=3, size=10)
    feed = ChangeFeed(tenant)
    seen: list[int] = []
    for _ in range(8):  # a reader at the head of the feed...
        seen.extend(feed.read_arrow(len(seen), 4).column("seq").to_pylist())
    assert seen == list(range(1, 31))
    _commit(tenant, range(30, 36))  # ...sees each commit as it lands
    while page := feed.read_arrow(len(seen), 4).column("seq").to_pylist():
        seen.extend(page)
    assert seen == list(range(1, 37))
    assert set(feed.read_arrow(0, 10).column("state").to_pylist()) == {"current"}  # now cached
    _commit(tenant, range(0, 2), edition=1)  # updates: entries 1 and 2 are replaced (seq 37, 38)
    assert feed.read_arrow(0, 3).column("state").to_pylist() == ["replaced", "replaced", "current"]
    while page := feed.read_arrow(len(seen), 4).column("seq").to_pylist():
        seen.extend(page)
    assert seen == list(range(1, 39))
    # States are derived again for blocks decoded before the updates arrived.
    states = feed.read_arrow(0, 40).column("state").to_pylist()
    assert states == ["replaced", "replaced"] + ["current"] * 36
    assert feed.read_arrow(0, 40).equals(ChangeFeed(tenant).read_arrow(0, 40))


def test_with_and_without_metadata_are_cached_apart(tenant: TenantStore, small_blocks) -> None:
    last = _fill(tenant, commits=6, size=5)
    feed = ChangeFeed(tenant)
    for offset in range(0, last, 4):
        plain = feed.read_arrow(offset, 4)
        full = feed.read_arrow(offset, 4, include_metadata=True)
        assert "dicom_json" not in plain.column_names
        assert full.drop_columns(["dicom_json"]).equals(plain)


def test_cache_stays_within_its_bound(tenant: TenantStore) -> None:
    last = _fill(tenant, commits=20, size=5)
    feed = ChangeFeed(tenant)
    files = feed._files
    files.cache_bytes = 4_000  # a block or two
    rng = random.Random(3)
    for _ in range(40):
        offset = rng.randrange(0, last)
        _assert_page(feed.read_arrow(offset, 7), offset, 7, last)
        assert files._cached_bytes <= files.cache_bytes or len(files._cache) == 1
        assert files._cached_bytes == sum(v.nbytes for v in files._cache.values())


def test_files_overlapping_in_seq_are_read_exactly(tmp_path: Path) -> None:
    """Foreign writers (or a compaction that merged non-adjacent files) may leave files whose seq
    ranges interleave: every page must still be exactly its range, in order."""
    schema = pa.schema([("seq", pa.int64()), ("action", pa.string()), ("previous_seq", pa.int64())])
    uri = str(tmp_path / "changes")
    layout = [[1, 2, 3], [4, 5, 6], [7, 9, 11], [8, 10, 12], [14, 13]]
    for seqs in layout:
        rows = {
            "seq": seqs,
            "action": ["update" if s == 12 else "create" for s in seqs],
            "previous_seq": [3 if s == 12 else None for s in seqs],
        }
        write_deltalake(uri, pa.table(rows, schema=schema), mode="append")

    def reader() -> feed_files.FeedFiles:
        files = feed_files.FeedFiles(DeltaTable(uri), fsspec.filesystem("file"))
        files.refresh()
        files.latest_seq = 14  # (this table has no committer's transaction marker)
        return files

    forward = reader()
    for limit in (1, 2, 3, 5):
        position = 0
        while position < 14:
            page = forward.page(position, min(position + limit, 14), ["seq", "action"], schema.remove(2))
            upper = min(position + limit, 14)
            assert page.column("seq").to_pylist() == list(range(position + 1, upper + 1))
            position = upper
    for lower in range(14):
        for upper in range(lower + 1, 15):
            page = reader().page(lower, upper, ["seq", "action"], schema.remove(2))
            assert page.column("seq").to_pylist() == list(range(lower + 1, upper + 1))
            states = dict(zip(page.column("seq").to_pylist(), page.column("state").to_pylist(), strict=True))
            assert states.get(3, "replaced") == "replaced"
            assert {s for q, s in states.items() if q != 3} <= {"current"}


def test_paging_a_compacted_feed_gives_the_same_pages(tenant: TenantStore, small_blocks) -> None:
    """Compaction may write the rows in another order than seq (delta-rs: newer files first)."""
    last = _fill(tenant, commits=15, size=7)
    before = [ChangeFeed(tenant).read_arrow(offset, 10) for offset in range(0, last, 10)]
    maintain_tables(tenant, vacuum_retention_hours=0)
    assert tenant.table("changes").get_add_actions().num_rows == 1
    feed = ChangeFeed(tenant)
    assert [feed.read_arrow(offset, 10) for offset in range(0, last, 10)] == before
    assert [ChangeFeed(tenant).read_arrow(offset, 10) for offset in range(0, last, 10)] == before


def test_a_reader_whose_files_were_vacuumed_recovers(tenant: TenantStore, small_blocks) -> None:
    last = _fill(tenant, commits=10, size=5)
    fresh = [ChangeFeed(tenant).read_arrow(offset, 6) for offset in range(0, last, 6)]
    feed = ChangeFeed(tenant)
    assert feed.read_arrow(0, 6) == fresh[0]
    files = feed._files
    files._moved = lambda: files._version < 0  # it does not notice the new versions by itself...
    maintain_tables(tenant, vacuum_retention_hours=0)  # ...while its files are compacted and deleted
    assert [feed.read_arrow(offset, 6) for offset in range(30, last, 6)] == fresh[5:]
    assert files._version == tenant.table("changes").version()  # it re-read the log on FileNotFoundError
    assert [feed.read_arrow(offset, 6) for offset in range(0, last, 6)] == fresh


def test_files_on_an_object_store_are_read_the_same(tenant: TenantStore, small_blocks) -> None:
    """The path for non-local roots (pyarrow through fsspec, a row group at a time)."""
    last = _fill(tenant, commits=9, size=6)
    _commit(tenant, range(3, 5), edition=1)
    remote = ChangeFeed(tenant)
    remote._files._local = False
    for offset in [*range(0, last + 2, 4), 7, 2, 40]:
        assert remote.read_arrow(offset, 4) == ChangeFeed(tenant).read_arrow(offset, 4)


def test_runs_out_of_order_are_put_in_order() -> None:
    runs = pa.table({"seq": [7, 8, 9, 1, 2, 3, 10, 4, 5, 6], "x": list("ghiabcjdef")})
    assert feed_files._in_seq_order(runs).column("x").to_pylist() == list("abcdefghij")
    interleaved = pa.table({"seq": [5, 1, 3, 2, 4], "x": list("eacbd")})
    assert feed_files._in_seq_order(interleaved).column("x").to_pylist() == list("abcde")
    ordered = pa.table({"seq": [1, 2, 5], "x": list("abc")})
    assert feed_files._in_seq_order(ordered) is ordered


def test_a_fresh_reader_derives_states_for_time_windows_too(tenant: TenantStore) -> None:
    _fill(tenant, commits=2, size=5)
    _commit(tenant, range(0, 1), edition=1)  # entry 1 replaced by entry 11
    entries = ChangeFeed(tenant).read_arrow(0, 11)
    start = entries.column("changed_at")[0].as_py()
    window = ChangeFeed(tenant).read_window_arrow(start, start + dt.timedelta(days=1), limit=100)
    assert window.column("state").to_pylist() == ["replaced"] + ["current"] * 10
    assert window.equals(entries)
