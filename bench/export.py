"""Export benchmark: Parquet export MB/s of pixel data beside a plain pydicom decode of the same files.

    python bench/export.py [--instances 5000] [--workers 2] [--seed 1] [--json]

Generates N sample instances (dicomlake.samples) and ingests them (neither is timed), then measures
in the same run, on the same blob files, with the same number of processes:
  reference  pydicom.dcmread(path).pixel_array of every blob in a ProcessPoolExecutor(--workers):
             the floor for "decode every image", nothing written
  ours       dicomlake.export.export(..., "parquet", workers=--workers): selection at a pinned Delta
             version, metadata columns from the `instances` rows, decode (native pixels by a header
             walk + numpy, else pydicom), Arrow tensors, lz4 Parquet files, sha256 of every file,
             progress records, manifest
MB/s counts decoded pixel bytes (the same total for both). Target: ours / reference >= 0.70.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dicomlake.export import Selection, export
from dicomlake.ingest import ingest
from dicomlake.samples import generate_sample_drop
from dicomlake.store import Lakehouse
from dicomlake.store.read import scan

TARGET = 0.70


@dataclass
class Report:
    instances: int
    workers: int
    pixel_mb: float
    reference_seconds: float
    ours_seconds: float
    reference_mb_s: float
    ours_mb_s: float
    ratio: float
    exported: int
    load_average: tuple[float, float, float]


def decode_pixels(path: str) -> int:
    import pydicom

    return int(pydicom.dcmread(path).pixel_array.nbytes)


def run(instances: int, workers: int, seed: int, root: Path) -> Report:
    drop = root / "drop"
    generate_sample_drop(drop, n_instances=instances, seed=seed, layout="flat")
    tenant = Lakehouse(root / "lake").tenant("bench")
    ingest([drop], tenant)
    rows = scan(tenant.table("instances"), ["study_instance_uid", "blob_key"]).to_pylist()
    paths = [str(tenant.blobs.local_path(r["blob_key"])) for r in rows]

    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pixel_bytes = sum(pool.map(decode_pixels, paths, chunksize=32))
    reference = time.perf_counter() - started

    studies = tuple(sorted({r["study_instance_uid"] for r in rows}))
    started = time.perf_counter()
    summary = export(tenant, Selection(uids=studies), root / "out", "parquet", workers=workers)
    ours = time.perf_counter() - started
    mb = pixel_bytes / 1e6
    return Report(instances, workers, mb, reference, ours, mb / reference, mb / ours,
                  (mb / ours) / (mb / reference), summary.exported, os.getloadavg())  # fmt: skip


def render(report: Report) -> str:
    verdict = "PASS" if report.ratio >= TARGET else "MISS"
    return "\n".join([
        f"{report.instances} instances, {report.pixel_mb:.1f} MB of pixels, {report.workers} process(es), "
        "load average " + " ".join(f"{v:.2f}" for v in report.load_average),
        f"  reference pydicom pixel_array : {report.reference_mb_s:8.1f} MB/s "
        f"({report.reference_seconds:.2f} s)",
        f"  ours parquet export           : {report.ours_mb_s:8.1f} MB/s  ({report.ours_seconds:.2f} s)",
        f"  ratio ours / reference        : {report.ratio:8.2f}  (target >= {TARGET:.2f}: {verdict})",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = run(args.instances, args.workers, args.seed, Path(tmp))
    print(json.dumps(asdict(report), indent=2) if args.json else render(report))


if __name__ == "__main__":
    main()
