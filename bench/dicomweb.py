"""DICOMweb: ours (`dicomlake serve`) beside Orthanc 1.10 + its DICOMweb plugin, on the same instances.

    python bench/dicomweb.py [--instances 20000] [--second-size 200000] [--skip-second] [--ceiling]
                             [--repeats 20] [--batch 50] [--clients 2] [--workers 2] [--seed 1]
                             [--root DIR] [--json]

Generates N instances with `dicomlake.samples.generate_sample_drop` (timed, in no figure), starts
both servers as subprocesses on loopback (real sockets), then measures in the same run:
  STOW   instances/s, --clients concurrent clients POSTing multipart/related batches of --batch
         instances (the same batches to both: ours `/dicomweb/studies`, Orthanc `/dicom-web/studies`);
         plus, for reference, Orthanc's REST `POST /instances` (one file per request, same clients)
         into a second, empty Orthanc; with --ceiling also into bench/stow_ceiling.py's variants of
         ours (without the projection, without any Delta commit: upper bounds, not the product);
  QIDO   p50 / p95 of the search benchmark's five queries, --repeats random keys drawn from the data,
         the same keys for both, back to back per key, after one untimed warm-up per query;
  WADO   a study of about 200 instances as multipart/related (transfer-syntax=*), warm, MB/s;
then (unless --skip-second) loads --second-size instances into fresh instances of both (ours with
`dicomlake ingest`, Orthanc with REST POST /instances: the fastest honest way for each; timed, in no
QIDO figure) and measures QIDO again. Every QIDO key must give both servers the same answer and
every WADO answer the same bytes, or the run fails. See bench/README.md ("DICOMweb").

The Orthanc launcher here (`start_orthanc`) is also what the interop tests use.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# -- Orthanc: find it, start it with our own config, stop it for sure ----------------------------

ORTHANC_PACKAGES = ("orthanc", "orthanc-dicomweb")
PLUGIN_NAME = "libOrthancDicomWeb.so"
START_TIMEOUT_S = 30.0
DICOM_MEDIA = 'multipart/related; type="application/dicom"'


def orthanc_executable() -> Path | None:
    found = shutil.which("Orthanc")
    for candidate in (found, "/usr/sbin/Orthanc", "/usr/bin/Orthanc"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin's shared library, as the Debian package `orthanc-dicomweb` installed it."""
    listed: list[Path] = []
    if shutil.which("dpkg"):
        out = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False)
        listed = [Path(line) for line in out.stdout.splitlines() if PLUGIN_NAME in line]
    listed.append(Path("/usr/share/orthanc/plugins") / PLUGIN_NAME)
    # Prefer the plugins folder's name (what Orthanc's own config points at), then any real file.
    listed.sort(key=lambda p: (p.name != PLUGIN_NAME, str(p)))
    return next((p for p in listed if p.is_file()), None)


def orthanc_missing() -> str | None:
    """Why Orthanc + the DICOMweb plugin cannot be run here, or None when they can."""
    missing = []
    if orthanc_executable() is None:
        missing.append("the Orthanc executable (package `orthanc`)")
    if dicomweb_plugin() is None:
        missing.append(f"{PLUGIN_NAME} (package `orthanc-dicomweb`)")
    if not missing:
        return None
    return ("Orthanc interop needs " + " and ".join(missing) + ": `apt-get install orthanc orthanc-dicomweb` "
            "as root (`python3 dev.py test` does it when it can)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM to its process group, then SIGKILL after `timeout` (Orthanc may not exit on SIGTERM)."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)  # started with start_new_session: the group is its own
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait(timeout)


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}; log {log}:\n"
                               + log.read_text(errors="replace")[-3000:])
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"{url}: not up after {timeout:.0f} s; log {log}")
        time.sleep(0.05)


@dataclass
class Orthanc:
    base: str  # http://127.0.0.1:PORT (the DICOMweb root is base + "/dicom-web")
    process: subprocess.Popen
    workdir: Path
    config: dict[str, Any]

    def url(self, path: str) -> str:
        return self.base + path


def orthanc_config(workdir: Path, port: int, servers: dict[str, Any] | None = None) -> dict[str, Any]:
    storage = workdir / "storage"
    plugin = dicomweb_plugin()
    assert plugin is not None, orthanc_missing()
    return {
        "Name": "dicomlake-peer",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),  # SQLite index (the default back end)
        "StorageCompression": False,
        "HttpPort": port,
        "DicomServerEnabled": False,  # no DIMSE listener at all
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,  # Orthanc binds all interfaces; this refuses non-loopback clients
        "AuthenticationEnabled": False,  # loopback-only test instance
        "HttpTimeout": 60,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": servers or {}},
    }


@contextmanager
def start_orthanc(workdir: Path, servers: dict[str, Any] | None = None) -> Iterator[Orthanc]:
    """Orthanc with our config in `workdir` (storage, index, log), HTTP on a free port; stopped (SIGKILL
    after 5 s if need be) when the block ends. `servers`: the DicomWeb plugin's remote servers."""
    problem = orthanc_missing()
    if problem:
        raise RuntimeError(problem)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = orthanc_config(workdir, port, servers)
    (workdir / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = workdir / "orthanc.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(orthanc_executable()), str(workdir / "orthanc.json")], cwd=workdir,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/system", process, log)
        yield Orthanc(f"http://127.0.0.1:{port}", process, workdir, config)
    finally:
        stop_process(process)


# -- ours: `dicomlake serve` in a subprocess ------------------------------------------------------


@dataclass
class Ours:
    base: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    headers: dict[str, str]  # Authorization


def mint_token(root: Path, permissions: Sequence[str] = ("read", "write")) -> str:
    from dicomlake.store import Lakehouse
    from dicomlake.web.auth import TokenStore

    token, _ = TokenStore(Lakehouse(root)).create(f"bench-{time.time_ns()}", ["default"], list(permissions))
    return token


@contextmanager
def start_ours(root: Path, workers: int, ceiling: str | None = None) -> Iterator[Ours]:
    """`dicomlake serve`, or with `ceiling` bench/stow_ceiling.py's variant of it (same app, a
    stage of STOW's commit taken out: an upper bound, not the product)."""
    token = mint_token(root)
    port = free_port()
    log = root / f"serve-{port}.log"
    command = ["-m", "dicomlake", "serve"]
    if ceiling is not None:
        command = ["-m", "bench.stow_ceiling", "--variant", ceiling]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, *command, "--root", str(root), "--port", str(port), "--workers", str(workers)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process, log)
        yield Ours(f"http://127.0.0.1:{port}", process, {"Authorization": f"Bearer {token}"})
    finally:
        stop_process(process, timeout=10)


# -- the measurements ---------------------------------------------------------------------------


def progress(text: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def multipart_body(files: Sequence[Path], boundary: str) -> bytes:
    chunks = []
    for path in files:
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        chunks += [head, path.read_bytes(), b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def split_multipart(content_type: str, body: bytes) -> list[bytes]:
    """The parts' contents of a multipart/related answer (no headers)."""
    boundary = next(p.split("=", 1)[1].strip('"') for p in content_type.split(";")
                    if p.strip().startswith("boundary="))
    delimiter = b"\r\n--" + boundary.encode()
    segments = (b"\r\n" + body).split(delimiter)
    parts = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            break
        parts.append(segment.partition(b"\r\n\r\n")[2])
    return parts


@dataclass
class Load:
    instances: int
    seconds: float
    failed: int = 0  # not stored (the rate counts only the stored ones)
    mb: float = 0.0
    failed_files: list[str] = field(default_factory=list)
    resent: int = 0  # failed ones sent again afterwards (untimed, REST) so both hold the same data
    latency_ms: float | None = None  # STOW: mean time from sending a request to its whole answer
    stages_ms: dict[str, float] = field(default_factory=dict)  # ours' Server-Timing, mean per request

    @property
    def rate(self) -> float:
        return (self.instances - self.failed) / self.seconds if self.seconds else float("nan")


def run_clients(work: Sequence[Any], clients: int, send: Callable[[requests.Session, Any], list[Path]]
                ) -> tuple[float, list[Path]]:
    """`clients` threads take items of `work` in order and `send` them; wall time and failed files."""
    lock = threading.Lock()
    position = iter(range(len(work)))
    failures: list[Path] = []
    errors: list[BaseException] = []

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    index = next(position, None)
                if index is None:
                    return
                try:
                    failed = send(session, work[index])
                except BaseException as exc:  # re-raised after the join
                    errors.append(exc)
                    return
                with lock:
                    failures.extend(failed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return seconds, failures


def stow(url: str, headers: dict[str, str], files: Sequence[Path], batch: int, clients: int) -> Load:
    batches = [files[i:i + batch] for i in range(0, len(files), batch)]
    boundary = "dicomlake-bench-boundary"
    request_headers = {**headers, "Accept": "application/dicom+json",
                       "Content-Type": f'{DICOM_MEDIA}; boundary={boundary}'}

    latencies: list[float] = []
    timings: list[str] = []

    def send(session: requests.Session, paths: Sequence[Path]) -> list[Path]:
        body = multipart_body(paths, boundary)
        sent = time.perf_counter()
        response = session.post(url, data=body, headers=request_headers, timeout=600)
        latencies.append((time.perf_counter() - sent) * 1000)  # list.append is atomic: no lock
        if "Server-Timing" in response.headers:
            timings.append(response.headers["Server-Timing"])
        if response.status_code not in (200, 202, 409):
            raise RuntimeError(f"STOW {url}: {response.status_code} {response.text[:500]}")
        stored = {item["00081155"]["Value"][0]
                  for item in response.json().get("00081199", {}).get("Value", [])}
        if len(stored) == len(paths):
            return []
        import pydicom

        return [p for p in paths if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID not in stored]

    seconds, failed = run_clients(batches, clients, send)
    return Load(len(files), seconds, len(failed), sum(p.stat().st_size for p in files) / 1e6,
                sorted(str(p) for p in failed), latency_ms=statistics.mean(latencies) if latencies else None,
                stages_ms=mean_server_timing(timings))


def mean_server_timing(headers: Sequence[str]) -> dict[str, float]:
    """Mean duration per stage over W3C Server-Timing headers (`name;dur=ms, ...`), in their order."""
    totals: dict[str, float] = {}
    for header in headers:
        for entry in header.split(","):
            name, _, duration = entry.strip().partition(";dur=")
            totals[name] = totals.get(name, 0.0) + float(duration or 0)
    return {name: total / len(headers) for name, total in totals.items()}


def orthanc_rest_post(orthanc: Orthanc, files: Sequence[Path], clients: int) -> Load:
    url = orthanc.url("/instances")

    def send(session: requests.Session, path: Path) -> list[Path]:
        response = session.post(url, data=path.read_bytes(), timeout=600)
        return [] if response.status_code == 200 and response.json().get("Status") == "Success" else [path]

    seconds, failed = run_clients(files, clients, send)
    return Load(len(files), seconds, len(failed), sum(p.stat().st_size for p in files) / 1e6,
                sorted(str(p) for p in failed))


def orthanc_count(orthanc: Orthanc) -> int:
    return requests.get(orthanc.url("/statistics"), timeout=60).json()["CountInstances"]


# QIDO: the search benchmark's five queries. A key gives (path, ours' params, Orthanc's params).
LEVEL_UID = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}
QUERY_NAMES = ("study by PatientID", "StudyDate range + Modality", "PatientName fuzzy", "series of one study",
               "instances of one series")
LIMIT = 1000  # every answer whole (the largest here is one series of a few hundred instances)


@dataclass
class Key:
    path: str  # under the DICOMweb base
    ours: dict[str, str]
    orthanc: dict[str, str]
    subset: bool = False  # Orthanc's answer need only be a subset of ours (fuzzy matching, see draw_keys)


def plain(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()


def quarter(day: dt.date) -> str:
    first = dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    after = dt.date(first.year + (first.month + 2) // 12, (first.month + 2) % 12 + 1, 1)
    last = after - dt.timedelta(days=1)
    return f"{first:%Y%m%d}-{last:%Y%m%d}"


def draw_keys(root: Path, repeats: int, seed: int) -> dict[str, list[Key]]:
    """Keys drawn from the instances we hold (the same files Orthanc holds), with a fixed seed."""
    import polars as pl

    from dicomlake.store import Lakehouse

    rows = pl.read_delta(Lakehouse(root).tenant().table_uri("instances"), columns=[
        "patient_id", "patient_name", "study_instance_uid", "series_instance_uid", "study_date", "modality"])
    rng = random.Random(seed)
    records = rows.sort("study_instance_uid", "series_instance_uid").to_dicts()
    patients = sorted(set(rows["patient_id"].to_list()))
    studies = sorted(set(rows["study_instance_uid"].to_list()))
    series = sorted({(r["study_instance_uid"], r["series_instance_uid"]) for r in records})
    families = sorted({r["patient_name"].split("^")[0] for r in records if r["patient_name"]})
    keys: dict[str, list[Key]] = {name: [] for name in QUERY_NAMES}
    for i in range(repeats):
        pid = rng.choice(patients)
        keys["study by PatientID"].append(Key("/studies", {"PatientID": pid}, {"PatientID": pid}))
        row = rng.choice(records)
        when = {"StudyDate": quarter(row["study_date"]), "ModalitiesInStudy": row["modality"]}
        keys["StudyDate range + Modality"].append(Key("/studies", when, dict(when)))
        family = rng.choice(families)
        # Ours: fuzzy matching, half typed plain ("muller"), half as stored ("Müller"). Orthanc's plugin
        # has no fuzzy matching (it ignores fuzzymatching=true): it gets the wildcard an Orthanc user
        # types, "Müller*" (Orthanc matches PN case-insensitively). So Orthanc's answer must be a subset
        # of ours, not equal: ours also matches the word in given names ("Moore^Thomas" for "thomas"),
        # and Orthanc 1.10's QIDO matches no percent-encoded value (a space, any non-ASCII character:
        # "van der Berg*", "Müller*" find nothing; its /tools/find finds them).
        typed = plain(family) if i % 2 == 0 else family
        keys["PatientName fuzzy"].append(Key("/studies", {"PatientName": typed, "fuzzymatching": "true"},
                                             {"PatientName": f"{family}*", "fuzzymatching": "true"},
                                             subset=True))
        study = rng.choice(studies)
        keys["series of one study"].append(Key(f"/studies/{study}/series", {}, {}))
        study, uid = rng.choice(series)
        keys["instances of one series"].append(Key(f"/studies/{study}/series/{uid}/instances", {}, {}))
    return keys


@dataclass
class Timing:
    samples_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms) if self.samples_ms else float("nan")

    @property
    def p95(self) -> float:
        return percentile(self.samples_ms, 0.95)


@dataclass
class QueryResult:
    name: str
    ours: Timing
    orthanc: Timing
    mean_matches: float
    mismatches: list[str]
    only_ours: int = 0  # subset keys: matches ours found beyond Orthanc's answer


def qido(session: requests.Session, url: str, params: dict[str, str], headers: dict[str, str]
         ) -> tuple[float, set[str]]:
    level = url.rsplit("/", 1)[1]
    # '*', '^' and "'" literally: Orthanc 1.10 does not match percent-encoded values ('%2A' is no
    # wildcard, "O%27Brien*" finds nothing); spaces as %20.
    query = urllib.parse.urlencode({**params, "limit": str(LIMIT)}, safe="*^'", quote_via=urllib.parse.quote)
    start = time.perf_counter()
    response = session.get(f"{url}?{query}", headers=headers, timeout=120)
    body = response.content
    ms = (time.perf_counter() - start) * 1000
    if response.status_code == 204:
        return ms, set()
    if response.status_code != 200:
        raise RuntimeError(f"QIDO {url} {params}: {response.status_code} {body[:300]!r}")
    return ms, {m[LEVEL_UID[level]]["Value"][0] for m in json.loads(body)}


def measure_qido(ours: Ours, orthanc: Orthanc, keys: dict[str, list[Key]]) -> list[QueryResult]:
    results = []
    accept = {"Accept": "application/dicom+json"}
    with requests.Session() as mine, requests.Session() as theirs:
        for name, query_keys in keys.items():
            ours_t, orthanc_t, mismatches, matches, only_ours = Timing(), Timing(), [], [], 0
            first = query_keys[0]  # one untimed warm-up per query and server
            qido(mine, ours.base + "/dicomweb" + first.path, first.ours, {**ours.headers, **accept})
            qido(theirs, orthanc.url("/dicom-web" + first.path), first.orthanc, accept)
            for key in query_keys:
                ms, got = qido(mine, ours.base + "/dicomweb" + key.path, key.ours, {**ours.headers, **accept})
                ours_t.samples_ms.append(ms)
                ms, expected = qido(theirs, orthanc.url("/dicom-web" + key.path), key.orthanc, accept)
                orthanc_t.samples_ms.append(ms)
                matches.append(len(expected))
                if key.subset and expected <= got:
                    only_ours += len(got - expected)
                elif got != expected:
                    mismatches.append(f"{name} {key.path} {key.ours}: ours {len(got)}, "
                                      f"Orthanc {len(expected)}, only ours {sorted(got - expected)[:3]}, "
                                      "only Orthanc "
                                      f"{sorted(expected - got)[:3]}")
            results.append(QueryResult(name, ours_t, orthanc_t, statistics.mean(matches), mismatches,
                                       only_ours))
            progress(f"QIDO {name}: ours p50 {ours_t.p50:.1f} ms, Orthanc p50 {orthanc_t.p50:.1f} ms")
    return results


@dataclass
class Wado:
    study: str
    instances: int
    mb: float
    ours_mb_s: float
    orthanc_mb_s: float
    same_bytes: bool


def wado_study(root: Path, ours: Ours, orthanc: Orthanc, repeats: int, size: int = 200) -> Wado:
    import polars as pl

    from dicomlake.store import Lakehouse

    counts = (pl.read_delta(Lakehouse(root).tenant().table_uri("instances"), columns=["study_instance_uid"])
              .group_by("study_instance_uid").len().sort("study_instance_uid"))
    study, n = min(counts.iter_rows(), key=lambda r: (abs(r[1] - size), r[0]))
    accept = {"Accept": f"{DICOM_MEDIA}; transfer-syntax=*"}

    def fetch(session: requests.Session, url: str, headers: dict[str, str]) -> tuple[float, bytes, str]:
        start = time.perf_counter()
        response = session.get(url, headers=headers, timeout=600)
        body = response.content
        seconds = time.perf_counter() - start
        if response.status_code != 200:
            raise RuntimeError(f"WADO {url}: {response.status_code}")
        return seconds, body, response.headers["Content-Type"]

    rates: dict[str, list[float]] = {"ours": [], "orthanc": []}
    digests = {}
    with requests.Session() as mine, requests.Session() as theirs:
        targets = {"ours": (mine, f"{ours.base}/dicomweb/studies/{study}", {**ours.headers, **accept}),
                   "orthanc": (theirs, orthanc.url(f"/dicom-web/studies/{study}"), accept)}
        for who, (session, url, headers) in targets.items():  # warm-up, and the bytes to compare
            _, body, content_type = fetch(session, url, headers)
            digests[who] = sorted(hashlib.sha256(p).hexdigest() for p in split_multipart(content_type, body))
        for _ in range(repeats):
            for who, (session, url, headers) in targets.items():
                seconds, body, _ = fetch(session, url, headers)
                rates[who].append(len(body) / 1e6 / seconds)
    mb = len(body) / 1e6
    same = digests["ours"] == digests["orthanc"] and len(digests["ours"]) == n
    return Wado(study, n, mb, statistics.median(rates["ours"]), statistics.median(rates["orthanc"]), same)


# -- one pass ------------------------------------------------------------------------------------


@dataclass
class Pass:
    instances: int
    studies: int
    generation_s: float
    ours_load: Load | None = None  # STOW (first pass) or `dicomlake ingest` (second)
    orthanc_load: Load | None = None  # STOW (first pass) or REST POST /instances (second)
    orthanc_rest: Load | None = None  # first pass: REST POST /instances into an empty second Orthanc
    ceilings: dict[str, Load] = field(default_factory=dict)  # --ceiling: bench/stow_ceiling.py variants
    queries: list[QueryResult] = field(default_factory=list)
    wado: Wado | None = None
    load_avg: tuple[float, float] = (0.0, 0.0)

    @property
    def mismatches(self) -> list[str]:
        out = [m for q in self.queries for m in q.mismatches]
        if self.wado and not self.wado.same_bytes:
            out.append(f"WADO study {self.wado.study}: ours and Orthanc returned different bytes")
        if self.ours_load and self.ours_load.failed:
            out.append(f"ours: {self.ours_load.failed} of {self.ours_load.instances} instances not stored")
        return out  # Orthanc's failed writes are in its rate and noted; resend_failures checks its count


def generate(dest: Path, n: int, seed: int) -> tuple[list[Path], int, float]:
    from dicomlake.samples import generate_sample_drop

    progress(f"generating {n:,} instances in {dest}")
    start = time.perf_counter()
    summary = generate_sample_drop(dest, n, seed=seed, layout="flat")
    return summary.files, summary.n_studies, time.perf_counter() - start


def settle_disk() -> None:
    """Untimed, before each timed write load: flush what earlier steps left for the disk (the
    generated files, the previous server's writes, a removed temp dir's discards), so no server's
    durable writes pay for them. Both servers sync what they store (ours syncfs, Orthanc fsync)."""
    os.sync()


def first_pass(root: Path, args: argparse.Namespace) -> Pass:
    files, studies, gen_s = generate(root / "drop", args.instances, args.seed)
    result = Pass(len(files), studies, gen_s)
    load_before = os.getloadavg()[0]
    with start_ours(root / "ours", args.workers) as ours, start_orthanc(root / "orthanc") as orthanc:
        progress(f"STOW into ours ({args.clients} clients, {args.batch} per request)")
        settle_disk()
        result.ours_load = stow(ours.base + "/dicomweb/studies", ours.headers, files, args.batch,
                                args.clients)
        progress(f"  {result.ours_load.rate:,.0f} instances/s; STOW into Orthanc")
        settle_disk()
        result.orthanc_load = stow(orthanc.url("/dicom-web/studies"), {}, files, args.batch, args.clients)
        progress(f"  {result.orthanc_load.rate:,.0f} instances/s; Orthanc REST POST, empty Orthanc")
        resend_failures(orthanc, result.orthanc_load)
        with start_orthanc(root / "orthanc-rest") as rest:
            settle_disk()
            result.orthanc_rest = orthanc_rest_post(rest, files, args.clients)
        shutil.rmtree(root / "orthanc-rest", ignore_errors=True)
        progress(f"  {result.orthanc_rest.rate:,.0f} instances/s; QIDO")
        from bench.stow_ceiling import VARIANTS

        for variant in VARIANTS if args.ceiling else ():
            with start_ours(root / f"ceiling-{variant}", args.workers, ceiling=variant) as bound:
                settle_disk()
                result.ceilings[variant] = stow(bound.base + "/dicomweb/studies", bound.headers, files,
                                                args.batch, args.clients)
            shutil.rmtree(root / f"ceiling-{variant}", ignore_errors=True)
            progress(f"  ceiling {variant}: {result.ceilings[variant].rate:,.0f} instances/s")
        result.queries = measure_qido(ours, orthanc, draw_keys(root / "ours", args.repeats, args.seed))
        progress("WADO-RS")
        result.wado = wado_study(root / "ours", ours, orthanc, args.wado_repeats)
    result.load_avg = (load_before, os.getloadavg()[0])
    return result


def resend_failures(orthanc: Orthanc, load: Load) -> None:
    """Orthanc 1.10 sometimes fails a write under concurrent load (its log: "Unable to create a
    subdirectory or a file in the file storage"): those instances are out of its rate; send them again
    (untimed, REST, one client) so both servers hold the same data for QIDO and WADO."""
    if load.failed:
        progress(f"  Orthanc failed {load.failed} instances; sending them again (untimed)")
        again = orthanc_rest_post(orthanc, [Path(p) for p in load.failed_files], 1)
        load.resent = load.failed - again.failed
    if orthanc_count(orthanc) != load.instances:
        raise RuntimeError(f"Orthanc holds {orthanc_count(orthanc)} instances, not {load.instances}")


def second_pass(root: Path, args: argparse.Namespace) -> Pass:
    files, studies, gen_s = generate(root / "drop2", args.second_size, args.seed + 1)
    result = Pass(len(files), studies, gen_s)
    load_before = os.getloadavg()[0]
    lake = root / "ours2"
    progress(f"dicomlake ingest of {len(files):,} instances")
    settle_disk()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dicomlake", "ingest", "--root", str(lake), "--workers",
                    str(args.workers), str(root / "drop2")], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    result.ours_load = Load(len(files), time.perf_counter() - start)
    progress(f"  {result.ours_load.rate:,.0f} instances/s; Orthanc REST POST /instances")
    with start_orthanc(root / "orthanc2") as orthanc:
        settle_disk()
        result.orthanc_load = orthanc_rest_post(orthanc, files, args.clients)
        resend_failures(orthanc, result.orthanc_load)
        progress(f"  {result.orthanc_load.rate:,.0f} instances/s; QIDO")
        with start_ours(lake, args.workers) as ours:
            result.queries = measure_qido(ours, orthanc, draw_keys(lake, args.repeats, args.seed))
    result.load_avg = (load_before, os.getloadavg()[0])
    return result


# -- report --------------------------------------------------------------------------------------

STOW_TARGET = 3.0
SECOND_QIDO_TARGET = 3.0


@dataclass
class Report:
    first: Pass
    second: Pass | None
    settings: dict[str, Any]

    @property
    def mismatches(self) -> list[str]:
        return self.first.mismatches + (self.second.mismatches if self.second else [])

    def rows(self) -> list[dict[str, Any]]:
        """figure, ours, Orthanc, ratio (how many times better ours is), target, verdict."""
        rows = []
        f = self.first
        assert f.ours_load and f.orthanc_load and f.orthanc_rest and f.wado
        ratio = f.ours_load.rate / f.orthanc_load.rate
        rows.append(dict(figure=f"STOW instances/s ({self.settings['clients']} clients)",
                         ours=f.ours_load.rate, orthanc=f.orthanc_load.rate, ratio=ratio,
                         target=f">= {STOW_TARGET:.0f}x",
                         passed=ratio >= STOW_TARGET))
        rows.append(dict(figure="  Orthanc REST POST /instances/s", ours=None, orthanc=f.orthanc_rest.rate,
                         ratio=f.ours_load.rate / f.orthanc_rest.rate, target="(reference)", passed=None))
        from bench.stow_ceiling import VARIANTS

        for variant, load in f.ceilings.items():
            rows.append(dict(figure=f"  ceiling: ours STOW {VARIANTS[variant]}", ours=load.rate,
                             orthanc=f.orthanc_load.rate, ratio=load.rate / f.orthanc_load.rate,
                             target="(bound)", passed=None))
        passes: list[tuple[Pass, float]] = [(f, 1.0)]
        if self.second:
            passes.append((self.second, SECOND_QIDO_TARGET))
        for p, target in passes:
            label = f"{p.instances:,}"
            for q in p.queries:
                ratio = q.orthanc.p95 / q.ours.p95
                rows.append(dict(figure=f"QIDO {q.name} p50 @{label}", ours=q.ours.p50, orthanc=q.orthanc.p50,
                                 ratio=q.orthanc.p50 / q.ours.p50, target="", passed=None))
                rows.append(dict(figure=f"QIDO {q.name} p95 @{label}", ours=q.ours.p95, orthanc=q.orthanc.p95,
                                 ratio=ratio, target="no worse" if target == 1.0 else f">= {target:.0f}x",
                                 passed=ratio >= target))
        ratio = f.wado.ours_mb_s / f.wado.orthanc_mb_s
        rows.append(dict(figure=f"WADO-RS MB/s ({f.wado.instances}-instance study, warm)",
                         ours=f.wado.ours_mb_s, orthanc=f.wado.orthanc_mb_s, ratio=ratio, target=">= 1x",
                         passed=ratio >= 1.0))
        return rows

    def as_dict(self) -> dict[str, Any]:
        def pass_dict(p: Pass) -> dict[str, Any]:
            out = asdict(p)
            out["queries"] = [{"name": q.name, "ours_ms": q.ours.samples_ms,
                               "orthanc_ms": q.orthanc.samples_ms, "ours_p50": q.ours.p50,
                               "ours_p95": q.ours.p95, "orthanc_p50": q.orthanc.p50,
                               "orthanc_p95": q.orthanc.p95, "mean_matches": q.mean_matches,
                               "mismatches": q.mismatches, "only_ours": q.only_ours}
                              for q in p.queries]
            for name in ("ours_load", "orthanc_load", "orthanc_rest"):
                load = getattr(p, name)
                if load:
                    out[name]["rate"] = load.rate
            return out

        return {"settings": self.settings, "first": pass_dict(self.first),
                "second": pass_dict(self.second) if self.second else None, "table": self.rows(),
                "mismatches": self.mismatches}


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def render(r: Report) -> str:
    f, s = r.first, r.second
    lines = [
        f"dicomlake DICOMweb benchmark: ours beside Orthanc, {os.cpu_count()} CPUs, same files, same run",
        f"ours: {r.settings['ours']}",
        f"Orthanc: {r.settings['orthanc']}",
        f"pass 1: {f.instances:,} instances ({f.studies:,} studies), generated in {f.generation_s:.0f} s (no "
        f"figure); load average 1 min {f.load_avg[0]:.2f} before, {f.load_avg[1]:.2f} after",
    ]
    if s:
        assert s.ours_load and s.orthanc_load
        lines.append(
            f"pass 2: {s.instances:,} instances ({s.studies:,} studies), generated in {s.generation_s:.0f} s;"
            " "
            f"loaded: ours `dicomlake ingest` {s.ours_load.seconds:.0f} s ({s.ours_load.rate:,.0f}/s), "
            f"Orthanc REST POST /instances {s.orthanc_load.seconds:.0f} s ({s.orthanc_load.rate:,.0f}/s) "
            f"(not in the QIDO figures); load average {s.load_avg[0]:.2f} before, {s.load_avg[1]:.2f} after")
    lines += [
        f"STOW: {r.settings['clients']} clients, multipart/related of {r.settings['batch']} instances per "
        f"request; QIDO: {r.settings['repeats']} random keys per query (seed {r.settings['seed']}), the same "
        "for both, "
        f"back to back, limit={LIMIT}, after one warm-up; WADO: transfer-syntax=*, median of "
        f"{r.settings['wado_repeats']} after a warm-up",
        "",
        f"  {'figure':<52}{'ours':>9}{'Orthanc':>10}{'ratio':>8}   {'target':<12}",
    ]
    for row in r.rows():
        verdict = "" if row["passed"] is None else ("PASS" if row["passed"] else "MISS")
        lines.append(f"  {row['figure']:<52}{_num(row['ours']):>9}{_num(row['orthanc']):>10}"
                     f"{row['ratio']:>7.1f}x   {row['target']:<12}{verdict}")
    lines.append("  (ms for QIDO; ratio = how many times better ours is: rate ours/Orthanc, latency "
                 "Orthanc/ours)")
    extra = sum(q.only_ours for p in (f, s) if p for q in p.queries)
    lines.append("  PatientName: ours fuzzymatching=true (half the keys typed plain); Orthanc has no fuzzy "
                 "matching and gets 'Family*', so its answer is checked to be a subset of ours: ours also "
                 "matches given names, Orthanc's QIDO no percent-encoded value (space, non-ASCII); "
                 f"{extra} studies only ours found")
    for p in (f, s):
        for who, load in (("STOW", p and p.orthanc_load), ("REST", p and p.orthanc_rest)):
            if load and load.failed:
                lines.append(f"  Orthanc {who} @{p.instances:,}: {load.failed} instances failed (its log: "
                             "\"Unable to create a subdirectory or a file in the file storage\"), out of its "
                             f"rate; {load.resent} sent again untimed")
    ours_stow = f.ours_load
    if ours_stow and ours_stow.stages_ms and ours_stow.latency_ms:
        stages = ", ".join(f"{name} {ms:.1f}" for name, ms in ours_stow.stages_ms.items())
        bound = r.settings["clients"] * r.settings["batch"] / (ours_stow.latency_ms / 1000)
        lines.append(f"  ours STOW, mean ms per request (its Server-Timing): {stages}; latency seen by the "
                     f"client {ours_stow.latency_ms:.1f} ms. With {r.settings['clients']} clients at most "
                     f"{r.settings['clients']} requests are in flight: rate <= clients x batch / latency "
                     f"= {bound:,.0f}/s")
    problems = r.mismatches
    ok = "same answers for every QIDO key (PatientName: a subset), same WADO bytes, all stored  OK"
    lines.append(f"  check: {ok if not problems else f'{len(problems)} differences  FAILED'}")
    lines += [f"    {p}" for p in problems[:10]]
    return "\n".join(lines)


# -- entry point ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=20_000)
    parser.add_argument("--second-size", type=int, default=200_000,
                        help="instances of the QIDO-at-scale pass (default 200,000)")
    parser.add_argument("--skip-second", action="store_true", help="no second (QIDO at scale) pass")
    parser.add_argument("--repeats", type=int, default=20, help="random keys per query (default 20)")
    parser.add_argument("--wado-repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=50, help="instances per STOW request (default 50)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent clients (default 2)")
    parser.add_argument("--workers", type=int, default=2,
                        help="ours: `serve --workers` and `ingest --workers` (default 2)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also STOW into bench/stow_ceiling.py's variants of ours (upper bounds: "
                             "without the projection, without any Delta commit)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--root", type=Path, help="put (and keep) the data here instead of a temp dir")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Report:
    problem = orthanc_missing()
    if problem:
        raise SystemExit(problem)
    version = subprocess.run([str(orthanc_executable()), "--version"], capture_output=True, text=True).stdout
    settings = {
        "clients": args.clients, "batch": args.batch, "repeats": args.repeats,
        "wado_repeats": args.wado_repeats, "seed": args.seed,
        "ours": f"`dicomlake serve --workers {args.workers}` (uvicorn), token auth on, local lakehouse",
        "orthanc": f"{version.splitlines()[0] if version else 'Orthanc'} + {dicomweb_plugin()}, "
                   "SQLite index, StorageCompression false, other settings default, auth off, loopback only",
    }
    root = args.root or Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        first = first_pass(root, args)
        second = None if args.skip_second else second_pass(root, args)
        return Report(first, second, settings)
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    if report.mismatches:
        raise SystemExit("ours and Orthanc differ (see 'check' above)")


if __name__ == "__main__":
    main()
