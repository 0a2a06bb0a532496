"""Run an export: resolve the selection, write files chunk by chunk, record progress, write the manifest.

Resume: `progress.json` (written atomically after every chunk's files) holds the selection, the
pinned `instances` version, the files written and every instance done (exported, skipped or
failed). A rerun into the same folder re-resolves the selection at that same version, drops files
that a killed run left unrecorded, and continues with the instances not done yet, so an
interrupted export ends equal to an uninterrupted one, without duplicates.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomlake.export.selection import ResolvedSelection, Selection, resolve
from dicomlake.store.lakehouse import Lakehouse, TenantStore

FORMATS = ("parquet", "dicom")
CHUNK_INSTANCES = 256
PROGRESS = "progress.json"
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
ProgressCallback = Callable[[int, int], None]


class ExportError(ValueError):
    """An export that cannot start (bad options, a folder holding a different export)."""


@dataclass(frozen=True)
class ExportSummary:
    out: str
    manifest: str
    selected: int
    exported: int
    skipped: int
    failed: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- workers: each process opens the tenant once and handles one instance per call --------------
_worker_tenant: TenantStore | None = None


def _die_with_parent() -> None:
    """Linux: a worker is killed when the export process is, so it cannot write into a resumed run."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _init_worker(root: str, storage_options: dict[str, str], tenant: str) -> None:
    global _worker_tenant
    _die_with_parent()
    _worker_tenant = Lakehouse(root, storage_options or None).tenant(tenant)


def _source(tenant: TenantStore, blob_key: str) -> str | bytes:
    local = tenant.blobs.local_path(blob_key)
    return str(local) if local is not None else tenant.blobs.get(blob_key)


def _decode_task(task: tuple[dict[str, Any], bool]) -> tuple[str, Any]:
    """('ok', rows) | ('skipped', reason) | ('failed', error) for one instance."""
    from dicomlake.export.decode import decode_row
    from dicomlake.export.parquet import rows_of

    row, per_frame = task
    assert _worker_tenant is not None
    if not row["rows"] or not row["columns"]:
        return "skipped", "the instance has no pixel data"
    try:
        decoded = decode_row(row, _source(_worker_tenant, row["blob_key"]))
        return "ok", rows_of(decoded, row["sha256"], per_frame)
    except Exception as exc:  # any decoder failure is recorded per instance
        return "failed", f"{type(exc).__name__}: {exc}"


def _parquet_task(task: tuple[list[dict[str, Any]], bool, str, str]) -> tuple[list, list[dict]]:
    """Decode a slice of a chunk and write its files in the worker: no pixels cross processes."""
    rows, per_frame, out, name = task
    results = [_decode_task((row, per_frame)) for row in rows]
    files = _write_parquet_files(Path(out), name, results)
    return [(status, None if status == "ok" else value) for status, value in results], files


def _dicom_task(task: tuple[dict[str, Any], str, Any]) -> tuple[str, Any]:
    """Copy (or de-identify) one instance's bytes to out/<study>/<series>/<sop>.dcm."""
    row, out, deid_options = task
    assert _worker_tenant is not None
    try:
        data = _worker_tenant.blobs.get(row["blob_key"])
        uids = (row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"])
        if deid_options is not None:
            import pydicom

            from dicomlake.deid import Deidentifier

            data = Deidentifier(deid_options).deidentify_bytes(data)
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        path = Path(out, *uids[:2], f"{uids[2]}.dcm")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return "ok", {"path": str(path.relative_to(out)), "sha256": hashlib.sha256(data).hexdigest(),
                      "rows": 1}  # fmt: skip
    except Exception as exc:  # recorded per instance, not fatal
        return "failed", f"{type(exc).__name__}: {exc}"


def _identifier(row: dict[str, Any]) -> str:
    return f"{row['study_instance_uid']}/{row['series_instance_uid']}/{row['sop_instance_uid']}"


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def export(
    tenant: TenantStore,
    selection: Selection,
    out: str | Path,
    fmt: str = "parquet",
    *,
    per_frame: bool = False,
    deid_options: Any = None,
    workers: int = 1,
    chunk_instances: int = CHUNK_INSTANCES,
    progress: ProgressCallback | None = None,
) -> ExportSummary:
    """Export `selection` to folder `out` in `fmt`; resumes an interrupted export into the same folder.

    `deid_options` (a dicomlake.deid.DeidOptions) de-identifies `dicom` copies; Parquet metadata
    columns are read from the original instances, so Parquet export refuses it.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, not {fmt!r}")
    if deid_options is not None and fmt != "dicom":
        raise ExportError("--deid is supported for the dicom format only (so far)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    deid_record = None
    if deid_options is not None:
        from dicomlake.deid import Deidentifier

        deid_record = Deidentifier(deid_options).describe()
    state_path = out / PROGRESS
    settings = {"selection": selection.describe(), "format": fmt, "per_frame": per_frame,
                "tenant": tenant.name, "deid": deid_record}  # fmt: skip
    state: dict[str, Any]
    if state_path.exists():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state["settings"] != settings:
            raise ExportError(f"{out} holds a different export ({state['settings']}); use another folder")
        resolved = resolve(tenant, selection, version=state["instances_version"])
    else:
        resolved = resolve(tenant, selection)
        state = {"settings": settings, "instances_version": resolved.instances_version,
                 "feed_seq": resolved.feed_seq, "chunks": 0, "files": [], "done": {},
                 "errors": []}  # fmt: skip
    _drop_unrecorded(out, state, fmt)
    rows = [r for r in resolved.instances.to_pylist() if r["sop_instance_uid"] not in state["done"]]
    total = resolved.instances.num_rows
    if progress:
        progress(len(state["done"]), total)
    pool = ProcessPoolExecutor(
        max_workers=max(1, workers), initializer=_init_worker,
        initargs=(tenant.lakehouse.root, dict(tenant.storage_options or {}), tenant.name),
    )  # fmt: skip
    slices = max(1, workers)

    def submit(chunk: list[dict[str, Any]], index: int) -> Iterator[tuple[list, list[dict]]]:
        # Executor.map submits every task at once: the next chunk decodes while this one finishes.
        if fmt == "parquet":
            size = -(-len(chunk) // slices)
            parts = [chunk[i : i + size] for i in range(0, len(chunk), size)]
            tasks = [(part, per_frame, str(out), f"{index:05d}-{n}") for n, part in enumerate(parts)]
            return pool.map(_parquet_task, tasks)
        copies = pool.map(_dicom_task, [(r, str(out), deid_options) for r in chunk],
                          chunksize=max(1, len(chunk) // 8))  # fmt: skip
        return iter([(copies, [])])

    try:
        chunks = list(_chunks(rows, chunk_instances))
        # Two chunks in flight: workers never wait for the slowest slice of the current one.
        pending = [submit(chunk, state["chunks"] + n) for n, chunk in enumerate(chunks[:2])]
        for number, chunk in enumerate(chunks):
            results: list[tuple[str, Any]] = []
            files: list[dict] = []
            for part_results, part_files in pending.pop(0):
                results += list(part_results)
                files += part_files
            if number + 2 < len(chunks):
                pending.append(submit(chunks[number + 2], state["chunks"] + 2))
            if fmt == "dicom":
                files = [value for status, value in results if status == "ok"]
            for row, (status, value) in zip(chunk, results, strict=True):
                state["done"][row["sop_instance_uid"]] = "exported" if status == "ok" else status
                if status != "ok":
                    state["errors"].append({"identifier": _identifier(row), "status": status, "error": value})
            state["files"] += files
            state["chunks"] += 1
            _write_json_atomic(state_path, state)
            if progress:
                progress(len(state["done"]), total)
    finally:
        pool.shutdown(cancel_futures=True)
    return _finish(out, state, resolved, deid_record)


def _write_parquet_files(out: Path, name: str, results: list) -> list[dict]:
    from dicomlake.export.parquet import build_table, shape_key, write_table

    groups: dict[str, list] = {}
    for status, value in results:
        if status == "ok":
            for metadata, array in value:
                groups.setdefault(shape_key(array), []).append((metadata, array))
    files = []
    for key in sorted(groups):
        folder = out / key
        folder.mkdir(exist_ok=True)
        path = folder / f"part-{name}.parquet"
        table = build_table(groups[key])
        write_table(table, path)
        relative = str(path.relative_to(out))
        files.append({"path": relative, "sha256": _sha256_file(path), "rows": table.num_rows})
    return files


def _drop_unrecorded(out: Path, state: dict[str, Any], fmt: str) -> None:
    """Remove output files a killed run wrote after its last progress record (rewritten now)."""
    recorded = {f["path"] for f in state["files"]}
    pattern = "*/*.parquet" if fmt == "parquet" else "*/*/*.dcm"
    for path in out.glob(pattern):
        if str(path.relative_to(out)) not in recorded:
            path.unlink()
    for tmp in out.rglob("*.tmp"):
        tmp.unlink()


def _finish(out: Path, state: dict[str, Any], resolved: ResolvedSelection, deid: Any) -> ExportSummary:
    done = list(state["done"].values())
    counts = {k: done.count(k) for k in ("exported", "skipped", "failed")}
    with open(out / ERRORS, "w", encoding="utf-8") as handle:
        for error in state["errors"]:
            handle.write(json.dumps(error) + "\n")
    manifest = {
        **state["settings"],
        "selected": resolved.instances.num_rows,
        "cohort_studies": list(resolved.studies_from_cohort),
        "change_feed_seq": state["feed_seq"],
        "delta_versions": {"instances": state["instances_version"]},
        "files": sorted(state["files"], key=lambda f: f["path"]),
        "counts": counts,
        "errors_file": ERRORS,
    }
    _write_json_atomic(out / MANIFEST, manifest)
    return ExportSummary(str(out), str(out / MANIFEST), resolved.instances.num_rows, **counts)
