"""Change feed read benchmark: page through N entries, beside a raw polars read of the same table.

    python bench/changefeed.py [--entries 1000000] [--commit-size 1000] [--page 1000] [--root DIR]

Generates N feed entries through the real committer (one Delta commit per --commit-size entries, so
the log has N / commit-size commits, with checkpoints as in production), then measures in the same
run on the same table:
  raw      polars.read_delta of the entry columns (one columnar read of everything)
  ours     ChangeFeed.read_arrow pages of --page entries from offset 0 to the end (entry columns +
           derived state), and, for reference, the Python-object API on the first 50 pages
  seek     a fresh reader fetching one page at offset N - page (cold: new process state), and at
           random offsets; p50 / p95 over repeats
Targets (issue 3): ours >= 50% of raw; a page at any offset < 50 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dicomlake.changefeed import ChangeFeed
from dicomlake.changefeed.reader import ENTRY_COLUMNS
from dicomlake.maintenance import maintain_tables
from dicomlake.store import Lakehouse
from dicomlake.store.committer import Committer


def generate(root: Path, entries: int, commit_size: int) -> float:
    tenant = Lakehouse(root).tenant()
    committer = Committer(tenant)
    started = time.perf_counter()
    for start in range(0, entries, commit_size):
        rows = []
        for number in range(start, min(start + commit_size, entries)):
            study, series = number // 500, number // 100
            sha = f"{number:064x}"
            rows.append(
                {
                    "study_instance_uid": f"1.2.826.0.1.3680043.10.1.{study}",
                    "series_instance_uid": f"1.2.826.0.1.3680043.10.2.{series}",
                    "sop_instance_uid": f"1.2.826.0.1.3680043.10.3.{number}",
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                    "sha256": sha,
                    "blob_key": f"blobs/{sha[:2]}/{sha}.dcm",
                    "size_bytes": 40_000,
                    "modality": "CT",
                    "patient_id": f"P{study % 9000:05d}",
                    "source": "bench",
                    "dicom_json": json.dumps({"00080018": {"vr": "UI", "Value": [f"1.2.3.{number}"]}}),
                }
            )
        committer.commit_versions(rows, operation="bench")
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--commit-size", type=int, default=1000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--root", help="reuse (or keep) a lakehouse here instead of a temp folder")
    args = parser.parse_args()

    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="bench-changefeed-"))
    tenant = Lakehouse(root).tenant()
    existing = ChangeFeed(tenant).latest_sequence()
    if existing < args.entries:
        if existing:
            sys.exit(f"{root} holds {existing} entries, fewer than --entries; use an empty --root")
        seconds = generate(root, args.entries, args.commit_size)
        print(
            f"generated {args.entries:,} entries in {args.entries // args.commit_size:,} commits "
            f"in {seconds:.1f} s (not a figure)"
        )
    n = args.entries
    uri = tenant.table_uri("changes")

    started = time.perf_counter()
    raw = pl.read_delta(uri, columns=ENTRY_COLUMNS)
    raw_seconds = time.perf_counter() - started
    assert raw.height >= n

    feed = ChangeFeed(tenant)
    started = time.perf_counter()
    read = 0
    for offset in range(0, n, args.page):
        read += feed.read_arrow(offset, args.page).num_rows
    ours_seconds = time.perf_counter() - started
    assert read == n

    objects = ChangeFeed(tenant)
    pages = min(50, n // args.page)
    started = time.perf_counter()
    for offset in range(0, pages * args.page, args.page):
        objects.read(offset, args.page)
    object_rate = pages * args.page / (time.perf_counter() - started)

    def seek(offset: int) -> float:
        reader = ChangeFeed(Lakehouse(root).tenant())
        begin = time.perf_counter()
        page = reader.read_arrow(offset, args.page)
        elapsed = time.perf_counter() - begin
        assert page.num_rows == min(args.page, n - offset) and page.column("seq")[0].as_py() == offset + 1
        return elapsed * 1000

    last_page = [seek(n - args.page) for _ in range(15)]
    rng = random.Random(7)
    random_pages = [seek(rng.randrange(0, n - args.page)) for _ in range(30)]

    # Production tables are compacted nightly (dicomlake maintain): measure a compacted copy too.
    compacted_root = Path(tempfile.mkdtemp(prefix="bench-changefeed-compacted-"))
    shutil.copytree(root / "tenants", compacted_root / "tenants")
    compacted = Lakehouse(compacted_root).tenant()
    maintain_tables(compacted, vacuum_retention_hours=0)
    started = time.perf_counter()
    pl.read_delta(compacted.table_uri("changes"), columns=ENTRY_COLUMNS)
    compacted_raw = n / (time.perf_counter() - started)
    compacted_feed = ChangeFeed(compacted)
    started = time.perf_counter()
    for offset in range(0, n, args.page):
        compacted_feed.read_arrow(offset, args.page)
    compacted_ours = n / (time.perf_counter() - started)
    files = compacted.table("changes").get_add_actions().num_rows
    shutil.rmtree(compacted_root, ignore_errors=True)

    raw_rate, ours_rate = n / raw_seconds, n / ours_seconds
    print(f"\nchange feed read, {n:,} entries, pages of {args.page:,}, 2 cores")
    print(f"  {'raw polars.read_delta (reference)':<44} {raw_rate:>12,.0f} entries/s  ({raw_seconds:.2f} s)")
    print(
        f"  {'ours: ChangeFeed.read_arrow pages':<44} {ours_rate:>12,.0f} entries/s  ({ours_seconds:.2f} s)"
        f"  = {ours_rate / raw_rate:.0%} of raw (target >= 50%)"
    )
    print(
        f"  {'ours: ChangeFeed.read (Python entries)':<44} {object_rate:>12,.0f} entries/s"
        f"  (first {pages} pages)"
    )
    print(
        f"  after compaction ({files} file{'s' if files > 1 else ''}): raw {compacted_raw:,.0f} entries/s, "
        f"ours {compacted_ours:,.0f} entries/s = {compacted_ours / compacted_raw:.0%} of raw"
    )
    print(
        f"  page at offset {n - args.page:,}, fresh reader: p50 {statistics.median(last_page):.1f} ms, "
        f"p95 {percentile(last_page, 0.95):.1f} ms (target < 50 ms)"
    )
    print(
        f"  page at random offsets, fresh reader:  p50 {statistics.median(random_pages):.1f} ms, "
        f"p95 {percentile(random_pages, 0.95):.1f} ms (target < 50 ms)"
    )
    if not args.root:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
