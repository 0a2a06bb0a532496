"""Ingest throughput and peak memory beside two references, measured on the same warm files.

    python bench/ingest.py [--instances 20000] [--workers 2] [--sizes 1000,20000,100000]
                           [--layout flat|tree] [--keep] [--json]

Per size N: generate N sample instances (not timed), then time on those same files
  A. pydicom header parse (`dcmread(stop_before_pixels=True)`) in a spawn Pool(workers);
  B. a plain copy of every file (shutil.copyfile) into a fresh folder;
  C. ours: `dicomlake.ingest.ingest` into a fresh local lakehouse, end to end (committed and
     projected), in a child process whose process tree is sampled for RSS every 50 ms.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import pydicom

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.60
TARGET_RSS = 1 << 30  # bytes, at TARGET_RSS_AT instances
TARGET_RSS_AT = 100_000
SAMPLE_INTERVAL_S = 0.05
MIB = 1 << 20


@dataclass
class Result:
    instances: int
    layout: str
    workers: int
    data_bytes: int
    generate_s: float
    pydicom_s: float
    copy_s: float
    ours_s: float
    pydicom_cpu_s: float  # user+sys CPU of the bench process and its pool workers
    copy_cpu_s: float
    ours_cpu_s: float  # user+sys CPU of the ingest process (from the call) and its workers
    peak_rss_tree: int  # bytes: max over samples of the sum over the ingest process and its children
    peak_rss_main: int  # bytes: max over samples of the ingest process alone
    created: int
    quarantined: int
    latest_seq: int
    instances_seq: int
    instances_rows: int
    load_before: float
    load_after: float

    @property
    def pydicom_rate(self) -> float:
        return self.instances / self.pydicom_s

    @property
    def copy_rate(self) -> float:
        return self.instances / self.copy_s

    @property
    def copy_mb_s(self) -> float:
        return self.data_bytes / 1e6 / self.copy_s

    @property
    def ours_rate(self) -> float:
        return self.instances / self.ours_s

    @property
    def ratio(self) -> float:
        return self.ours_rate / self.pydicom_rate

    @property
    def cpu_ratio(self) -> float:
        """Like `ratio` but from CPU time per file: barely moved by other load on the machine."""
        return self.pydicom_cpu_s / self.ours_cpu_s

    @property
    def verified(self) -> bool:
        n = self.instances
        return self.created == n and self.latest_seq == self.instances_seq == n and self.instances_rows == n

    def as_dict(self) -> dict[str, object]:
        rates = {"pydicom_files_s": self.pydicom_rate, "copy_files_s": self.copy_rate,
                 "copy_mb_s": self.copy_mb_s, "ours_files_s": self.ours_rate, "ratio": self.ratio,
                 "cpu_ratio": self.cpu_ratio, "verified": self.verified}
        merged = {**asdict(self), **rates}
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in merged.items()}


def cpu_seconds(*who: int) -> float:
    """user+sys CPU seconds of RUSAGE_SELF and/or RUSAGE_CHILDREN (terminated, waited-for)."""
    usages = [resource.getrusage(w) for w in who]
    return sum(u.ru_utime + u.ru_stime for u in usages)


SELF_AND_CHILDREN = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)


# -- reference A: pydicom header parse ---------------------------------------------------------


def _read_header(path: str) -> int:
    return len(pydicom.dcmread(path, stop_before_pixels=True))


def time_pydicom(paths: list[str], workers: int) -> tuple[float, float]:
    """Wall and CPU seconds for a spawn Pool(workers) to parse every header, start-up included."""
    chunksize = max(1, min(256, len(paths) // (workers * 16)))
    cpu, started = cpu_seconds(*SELF_AND_CHILDREN), time.perf_counter()
    pool = multiprocessing.get_context("spawn").Pool(workers)
    for _ in pool.imap_unordered(_read_header, paths, chunksize=chunksize):
        pass
    pool.close()
    pool.join()  # workers waited for: their CPU time is now in RUSAGE_CHILDREN
    return time.perf_counter() - started, cpu_seconds(*SELF_AND_CHILDREN) - cpu


# -- reference B: plain copy ------------------------------------------------------------------


def time_copy(paths: list[str], dest: Path) -> tuple[float, float]:
    dest.mkdir(parents=True)
    cpu, started = cpu_seconds(resource.RUSAGE_SELF), time.perf_counter()
    for index, path in enumerate(paths):
        shutil.copyfile(path, dest / f"{index:07d}.dcm")
    return time.perf_counter() - started, cpu_seconds(resource.RUSAGE_SELF) - cpu


# -- ours: ingest in a child process, its tree sampled for RSS ---------------------------------


class TreeSampler(threading.Thread):
    """Peak RSS of one process and of it plus all its descendants, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak_main = 0
        self.peak_tree = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                main = self.root.memory_info().rss
                children = self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            total = main + sum(_rss(child) for child in children)
            self.peak_main = max(self.peak_main, main)
            self.peak_tree = max(self.peak_tree, total)
            self._stop_event.wait(SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


def run_ours_child(drop: str, root: str, workers: int, report: str) -> None:
    """In the child: ingest `drop` into a fresh `root`, then write timings and checks to `report`."""
    from dicomlake.ingest import IngestOptions, ingest
    from dicomlake.store.committer import PROJECTION_APP, latest_seq
    from dicomlake.store.lakehouse import Lakehouse

    tenant = Lakehouse(root).tenant()
    cpu, started = cpu_seconds(*SELF_AND_CHILDREN), time.perf_counter()
    summary = ingest([drop], tenant, IngestOptions(workers=workers))  # joins its pool on return
    seconds, cpu = time.perf_counter() - started, cpu_seconds(*SELF_AND_CHILDREN) - cpu
    instances = tenant.table("instances")
    Path(report).write_text(json.dumps({
        "seconds": seconds,
        "cpu_seconds": cpu,
        "created": summary.created,
        "quarantined": summary.quarantined,
        "latest_seq": latest_seq(tenant.table("changes")),
        "instances_seq": instances.transaction_version(PROJECTION_APP) or 0,
        "instances_rows": instances.count(),
    }))


def time_ours(drop: Path, root: Path, workers: int) -> tuple[dict[str, float], TreeSampler]:
    report = root.parent / "ours.json"
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    command = [sys.executable, str(Path(__file__).resolve()), "--child-ours",
               str(drop), str(root), str(workers), str(report)]
    child = subprocess.Popen(command, env=env)
    sampler = TreeSampler(child.pid)
    sampler.start()
    code = child.wait()
    sampler.stop()
    if code != 0:
        raise SystemExit(f"ingest child failed with exit code {code}")
    return json.loads(report.read_text()), sampler


# -- one size ---------------------------------------------------------------------------------


def measure(n: int, workers: int, layout: str, seed: int, workdir: Path, keep: bool) -> Result:
    from dicomlake.samples import generate_sample_drop

    base = Path(tempfile.mkdtemp(prefix=f"dicomlake-bench-{n}-", dir=workdir))
    try:
        started = time.perf_counter()
        summary = generate_sample_drop(base / "drop", n, seed=seed, layout=layout)
        generate_s = time.perf_counter() - started
        paths = [str(p) for p in summary.files]
        data_bytes = sum(os.path.getsize(p) for p in paths)
        del summary
        load_before = os.getloadavg()[0]
        # Each figure starts with nothing left to write back from the set-up or the figure before:
        # the generated drop (and the copy) would otherwise be flushed by whichever phase comes next.
        os.sync()
        pydicom_s, pydicom_cpu_s = time_pydicom(paths, workers)
        os.sync()
        copy_s, copy_cpu_s = time_copy(paths, base / "copy")
        shutil.rmtree(base / "copy")
        os.sync()
        ours, sampler = time_ours(base / "drop", base / "lake", workers)
        return Result(
            instances=n, layout=layout, workers=workers, data_bytes=data_bytes, generate_s=generate_s,
            pydicom_s=pydicom_s, copy_s=copy_s, ours_s=ours["seconds"],
            pydicom_cpu_s=pydicom_cpu_s, copy_cpu_s=copy_cpu_s, ours_cpu_s=ours["cpu_seconds"],
            peak_rss_tree=sampler.peak_tree, peak_rss_main=sampler.peak_main,
            created=int(ours["created"]), quarantined=int(ours["quarantined"]),
            latest_seq=int(ours["latest_seq"]), instances_seq=int(ours["instances_seq"]),
            instances_rows=int(ours["instances_rows"]),
            load_before=load_before, load_after=os.getloadavg()[0],
        )
    finally:
        if keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


# -- output -----------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render(r: Result) -> str:
    mb = r.data_bytes / 1e6

    def ms(cpu_s: float) -> float:
        return cpu_s / r.instances * 1e3

    rss_note = "" if r.instances >= TARGET_RSS_AT else f" (target is at {TARGET_RSS_AT:,})"
    check = (f"{r.created:,} created, {r.quarantined} quarantined; instances reflect seq "
             f"{r.instances_seq:,}, latest seq {r.latest_seq:,}, {r.instances_rows:,} rows")
    lines = [
        f"dicomlake ingest benchmark: {r.instances:,} instances ({r.layout}), {mb:,.0f} MB "
        f"({r.data_bytes / r.instances / 1e3:.1f} kB/file), workers {r.workers}, {os.cpu_count()} CPUs",
        "same files for every figure, warm in the page cache (written just before; caches not "
        "dropped; the file system synced before each figure)",
        f"generation {r.generate_s:.1f} s (not in any figure); load average 1 min "
        f"{r.load_before:.2f} before, {r.load_after:.2f} after",
        "",
        f"  {'figure':<26}{'ours':>12}   {'reference':<34}{'ratio':>7}   target",
        f"  {'rate (files/s)':<26}{r.ours_rate:>12,.0f}   "
        f"{f'{r.pydicom_rate:,.0f}  pydicom header, {r.workers} procs':<34}"
        f"{r.ratio:>7.2f}   >= {TARGET_RATIO:.2f}  {_verdict(r.ratio >= TARGET_RATIO)}",
        f"  {'':<26}{'':>12}   {f'{r.copy_rate:,.0f}  file copy ({r.copy_mb_s:,.0f} MB/s)':<34}"
        f"{r.ours_rate / r.copy_rate:>7.2f}",
        f"  {'wall time (s)':<26}{r.ours_s:>12,.1f}   "
        f"{f'{r.pydicom_s:,.1f} pydicom, {r.copy_s:,.1f} copy':<34}",
        f"  {'CPU per file (ms)':<26}{ms(r.ours_cpu_s):>12.2f}   "
        f"{f'{ms(r.pydicom_cpu_s):.2f} pydicom, {ms(r.copy_cpu_s):.2f} copy':<34}"
        f"{r.cpu_ratio:>7.2f}   (ratio from CPU time: robust to other load)",
        f"  {'peak RSS main+workers':<26}{r.peak_rss_tree / MIB:>8,.0f} MiB   {'':<34}{'':>7}   "
        f"< 1 GiB  {_verdict(r.peak_rss_tree < TARGET_RSS)}{rss_note}",
        f"  {'peak RSS main only':<26}{r.peak_rss_main / MIB:>8,.0f} MiB",
        f"  check: {check}  {'OK' if r.verified else 'FAILED'}",
    ]
    return "\n".join(lines)


def render_growth(results: list[Result]) -> str:
    header = (f"  {'instances':>10}{'MB':>8}{'pydicom/s':>11}{'copy/s':>9}{'ours/s':>8}{'ratio':>7}"
              f"{'cpu ratio':>10}{'RSS tree MiB':>14}{'RSS main MiB':>14}")
    rows = [
        f"  {r.instances:>10,}{r.data_bytes / 1e6:>8,.0f}{r.pydicom_rate:>11,.0f}{r.copy_rate:>9,.0f}"
        f"{r.ours_rate:>8,.0f}{r.ratio:>7.2f}{r.cpu_ratio:>10.2f}"
        f"{r.peak_rss_tree / MIB:>14,.0f}{r.peak_rss_main / MIB:>14,.0f}"
        for r in results
    ]
    title = "growth with N (flat peak RSS means memory does not scale with the drop):"
    return "\n".join([title, header, *rows])


# -- entry point ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=20_000, help="N instances (default 20000)")
    parser.add_argument("--sizes", help="comma-separated Ns, e.g. 1000,20000,100000 (overrides --instances)")
    parser.add_argument("--workers", type=int, default=2, help="processes for ours and for pydicom")
    parser.add_argument("--layout", choices=("flat", "tree"), default="flat")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the generated files and lakehouse")
    parser.add_argument("--json", action="store_true", help="print results as JSON instead of tables")
    parser.add_argument("--child-ours", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child_ours:
        drop, root, workers, report = args.child_ours
        run_ours_child(drop, root, int(workers), report)
        return
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.instances]
    results = []
    for n in sizes:
        result = measure(n, args.workers, args.layout, args.seed, args.workdir, args.keep)
        results.append(result)
        if not args.json:
            print(render(result), end="\n\n", flush=True)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    elif len(results) > 1:
        print(render_growth(results))
    if not all(r.verified for r in results):
        raise SystemExit("ingest result failed its check (see 'check' above)")


if __name__ == "__main__":
    main()
