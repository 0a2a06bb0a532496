"""Run an export: resolve the selection, write files chunk by chunk, record progress, write the manifest.

Formats: `parquet` (parquet.py), `dicom` (copies, or de-identified copies), `nifti` (nifti.py, one
volume per series; a chunk never splits a series) and `png` (png.py, one file per frame). The
destination is a folder or an s3:// prefix (destination.py).

Resume: `progress.json` (written atomically after every chunk's files) holds the selection, the
pinned `instances` version, the files written and every instance done (exported, skipped or
failed). A rerun into the same folder re-resolves the selection at that same version, drops files
that a killed run left unrecorded, and continues with the instances not done yet, so an
interrupted export ends equal to an uninterrupted one, without duplicates.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomlake.export.destination import Destination
from dicomlake.export.selection import ResolvedSelection, Selection, resolve
from dicomlake.store.lakehouse import Lakehouse, TenantStore

FORMATS = ("parquet", "dicom", "nifti", "png")
FILE_PATTERNS = {"parquet": "*/*.parquet", "dicom": "*/*/*.dcm", "nifti": "*/*.nii.gz", "png": "*/*/*.png"}
CHUNK_INSTANCES = 256
PROGRESS = "progress.json"
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
KEY_CHECK = "dicomlake export key check"  # its keyed hash tells two project keys apart, revealing neither
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


def _decode_task(task: tuple[dict[str, Any], bool, Any]) -> tuple[str, Any]:
    """('ok', rows) | ('skipped', reason) | ('failed', error) for one instance."""
    from dicomlake.export.decode import decode_row
    from dicomlake.export.parquet import NO_PIXEL_DATA, NoPixelData, decode_instance, rows_of

    row, per_frame, deid = task
    assert _worker_tenant is not None
    if not row["rows"] or not row["columns"]:
        return "skipped", NO_PIXEL_DATA
    try:
        if deid is None:  # metadata from the row, pixels by the fast path where it applies
            decoded = decode_row(row, _source(_worker_tenant, row["blob_key"]))
            return "ok", rows_of(decoded, row["sha256"], per_frame)
        # De-identified metadata comes from the de-identified dataset: the whole header is parsed.
        decoded = decode_instance(_source(_worker_tenant, row["blob_key"]), deid)
        # De-identified rows do not carry the source file's hash: it would link them back.
        return "ok", rows_of(decoded, None, per_frame)
    except NoPixelData as exc:  # an image header whose Pixel Data is absent: as if it had no Rows
        return "skipped", str(exc)
    except Exception as exc:  # any decoder failure is recorded per instance
        return "failed", f"{type(exc).__name__}: {exc}"


SliceTask = tuple[list[dict[str, Any]], dict[str, Any], str, str]  # rows, options, out, file name


def _parquet_task(task: SliceTask) -> tuple[list, list[dict]]:
    """Decode a slice of a chunk and write its files in the worker: no pixels cross processes."""
    from dicomlake.export.identity import deidentifier

    rows, options, out, name = task
    deid = deidentifier(options["deid"])
    results = [_decode_task((row, options["per_frame"], deid)) for row in rows]
    files = _write_parquet_files(Path(out), name, results)
    return [(status, None if status == "ok" else value) for status, value in results], files


def _read(row: dict[str, Any]) -> Any:
    import pydicom

    assert _worker_tenant is not None
    source = _source(_worker_tenant, row["blob_key"])
    return pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source)


def _nifti_task(task: SliceTask) -> tuple[list, list[dict]]:
    """One volume per series of the slice (whole series only); every instance shares its series' status."""
    from dicomlake.export.identity import deidentifier
    from dicomlake.export.nifti import NotAVolume, export_series

    rows, options, out, _ = task
    deid = deidentifier(options["deid"])
    results: list[tuple[str, Any]] = []
    files = []
    for _, group in itertools.groupby(rows, key=_series_key):
        series = list(group)
        try:
            files.append(export_series([_read(row) for row in series], Path(out), deid))
            status, value = "ok", None
        except NotAVolume as exc:
            status, value = "skipped", f"the series is not one regular volume: {exc}"
        except Exception as exc:  # recorded for the series' instances, not fatal
            status, value = "failed", f"{type(exc).__name__}: {exc}"
        results += [(status, value)] * len(series)
    return results, files


def _png_task(task: SliceTask) -> tuple[list, list[dict]]:
    """One PNG per frame of each instance of the slice."""
    from dicomlake.export.identity import deidentifier
    from dicomlake.export.parquet import NO_PIXEL_DATA, NoPixelData
    from dicomlake.export.png import export_instance

    rows, options, out, _ = task
    deid = deidentifier(options["deid"])
    results: list[tuple[str, Any]] = []
    files = []
    for row in rows:
        if not row["rows"] or not row["columns"]:
            results.append(("skipped", NO_PIXEL_DATA))
            continue
        try:
            files += export_instance(_read(row), Path(out), options["png_bits"], deid)
            results.append(("ok", None))
        except NoPixelData as exc:
            results.append(("skipped", str(exc)))
        except Exception as exc:  # recorded per instance, not fatal
            results.append(("failed", f"{type(exc).__name__}: {exc}"))
    return results, files


SLICE_TASKS = {"parquet": _parquet_task, "nifti": _nifti_task, "png": _png_task}


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


def _identifier(row: dict[str, Any], deid: Any = None) -> str:
    """study/series/sop of `row`; de-identified exports name instances by their replacement UIDs."""
    uids = [row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"]]
    return "/".join(deid.map_uid(uid) for uid in uids) if deid is not None else "/".join(uids)


def _done_key(row: dict[str, Any], deid: Any = None) -> str:
    """How progress.json names a done instance: its SOP UID, de-identified with `deid`."""
    return deid.map_uid(row["sop_instance_uid"]) if deid is not None else row["sop_instance_uid"]


def _recorded_selection(selection: Selection, deid: Any = None) -> dict[str, Any]:
    """The selection as progress.json and the manifest record it. De-identified exports name no source
    identifier anywhere in their folder: UIDs go through `map_uid` (the export's own UIDs), filter
    values become keyed hashes (a value may be a PatientID or a name); the cohort question stays."""
    described = selection.describe()
    if deid is None:
        return described
    described["uids"] = ["/".join(deid.map_uid(part) for part in spec.strip("/").split("/"))
                         for spec in selection.uids]  # fmt: skip
    described["filters"] = {key: "hmac-sha256:" + deid.pseudonym(value)
                            for key, value in selection.filters.items()}  # fmt: skip
    return described


def _series_key(row: dict[str, Any]) -> tuple[str, str]:
    return row["study_instance_uid"], row["series_instance_uid"]


def _chunks(rows: list[dict[str, Any]], size: int, whole_series: bool = False) -> Iterator[list[dict]]:
    """Batches of up to `size` rows (rows come sorted by series); `whole_series`: never split a series."""
    if whole_series:
        units = [list(group) for _, group in itertools.groupby(rows, key=_series_key)]
    else:
        units = [[row] for row in rows]
    batch: list[dict[str, Any]] = []
    for unit in units:
        if batch and len(batch) + len(unit) > size:
            yield batch
            batch = []
        batch += unit
    if batch:
        yield batch


def export(
    tenant: TenantStore,
    selection: Selection,
    out: str | Path,
    fmt: str = "parquet",
    *,
    per_frame: bool = False,
    deid_options: Any = None,
    png_bits: int = 8,
    storage_options: Mapping[str, str] | None = None,
    workers: int = 1,
    chunk_instances: int = CHUNK_INSTANCES,
    progress: ProgressCallback | None = None,
) -> ExportSummary:
    """Export `selection` to `out` (a folder or s3://bucket/prefix) in `fmt`; resumes an interrupted
    export into the same place.

    `deid_options` (a dicomlake.deid.DeidOptions) de-identifies: `dicom` copies are de-identified
    files; the other formats take their UIDs (paths, columns, manifest), PatientID and StudyDate
    from the de-identified header (dicomlake.export.identity). `png_bits`: 8 (windowed) or 16
    (stored values). `storage_options` for an s3:// `out`: delta-rs style AWS_* keys (default: the
    environment's, as for the lakehouse).
    """
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, not {fmt!r}")
    if png_bits not in (8, 16):
        raise ExportError(f"PNG bits are 8 or 16, not {png_bits}")
    dest = Destination(out, storage_options)
    try:
        return _export(tenant, selection, dest, fmt, per_frame, deid_options, png_bits, workers,
                       chunk_instances, progress)  # fmt: skip
    finally:
        dest.close()


def _export(
    tenant: TenantStore, selection: Selection, dest: Destination, fmt: str, per_frame: bool,
    deid_options: Any, png_bits: int, workers: int, chunk_instances: int, progress: ProgressCallback | None,
) -> ExportSummary:  # fmt: skip
    out = dest.staging
    from dicomlake.export.identity import deidentifier

    deid = deidentifier(deid_options)
    deid_record = deid.describe() if deid is not None else None
    settings = {"selection": _recorded_selection(selection, deid), "format": fmt, "per_frame": per_frame,
                "tenant": tenant.name, "deid": deid_record}  # fmt: skip
    if deid is not None:  # a rerun with another key would mix two sets of UIDs in one export
        settings["deid_key_check"] = deid.pseudonym(KEY_CHECK)
    if fmt == "png":
        settings["png_bits"] = png_bits
    state: dict[str, Any] | None = dest.read_json(PROGRESS)
    if state is not None:
        if state["settings"] != settings:
            raise ExportError(f"{dest.url} holds a different export ({state['settings']}); use another place")
        resolved = resolve(tenant, selection, version=state["instances_version"])
    else:
        resolved = resolve(tenant, selection)
        state = {"settings": settings, "instances_version": resolved.instances_version,
                 "feed_seq": resolved.feed_seq, "chunks": 0, "files": [], "done": {},
                 "errors": []}  # fmt: skip
    dest.drop_unrecorded({f["path"] for f in state["files"]}, FILE_PATTERNS[fmt])
    rows = [r for r in resolved.instances.to_pylist() if _done_key(r, deid) not in state["done"]]
    total = resolved.instances.num_rows
    if progress:
        progress(len(state["done"]), total)
    pool = ProcessPoolExecutor(
        max_workers=max(1, workers), initializer=_init_worker,
        initargs=(tenant.lakehouse.root, dict(tenant.storage_options or {}), tenant.name),
    )  # fmt: skip
    slices = max(1, workers)
    options = {"per_frame": per_frame, "deid": deid_options, "png_bits": png_bits}

    def submit(chunk: list[dict[str, Any]], index: int) -> Iterator[tuple[list, list[dict]]]:
        # Executor.map submits every task at once: the next chunk decodes while this one finishes.
        if fmt in SLICE_TASKS:
            parts = _chunks(chunk, -(-len(chunk) // slices), whole_series=fmt == "nifti")
            tasks = [(part, options, str(out), f"{index:05d}-{n}") for n, part in enumerate(parts)]
            return pool.map(SLICE_TASKS[fmt], tasks)
        copies = pool.map(_dicom_task, [(r, str(out), deid_options) for r in chunk],
                          chunksize=max(1, len(chunk) // 8))  # fmt: skip
        return iter([(copies, [])])

    try:
        chunks = list(_chunks(rows, chunk_instances, whole_series=fmt == "nifti"))
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
                state["done"][_done_key(row, deid)] = "exported" if status == "ok" else status
                if status != "ok":
                    error = {"identifier": _identifier(row, deid), "status": status, "error": value}
                    state["errors"].append(error)
            dest.publish(files)
            state["files"] += files
            state["chunks"] += 1
            dest.write_json(PROGRESS, state)
            if progress:
                progress(len(state["done"]), total)
    finally:
        pool.shutdown(cancel_futures=True)
    return _finish(dest, state, resolved, deid)


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


def _finish(
    dest: Destination, state: dict[str, Any], resolved: ResolvedSelection, deid: Any
) -> ExportSummary:
    """errors.jsonl, then the manifest: the last file written, so its presence means the export is whole."""
    studies = list(resolved.studies_from_cohort)
    done = list(state["done"].values())
    counts = {k: done.count(k) for k in ("exported", "skipped", "failed")}
    dest.write_bytes(ERRORS, "".join(json.dumps(error) + "\n" for error in state["errors"]).encode())
    manifest = {
        **state["settings"],
        "selected": resolved.instances.num_rows,
        "cohort_studies": [deid.map_uid(uid) for uid in studies] if deid is not None else studies,
        "change_feed_seq": state["feed_seq"],
        "delta_versions": {"instances": state["instances_version"]},
        "files": sorted(state["files"], key=lambda f: f["path"]),
        "counts": counts,
        "errors_file": ERRORS,
    }
    dest.write_json(MANIFEST, manifest)
    return ExportSummary(dest.url, dest.location(MANIFEST), resolved.instances.num_rows, **counts)
