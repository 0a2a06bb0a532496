"""Drop-folder batching: which files under a drop folder form the next ingest batch.

A batch is a manifest, `<tenant>/drops/<key>.json`, listing each file with its size and mtime.
Manifests are the durable record of what has been handed to ingest: a file is batched once for a
given (path, size, mtime), so a file rewritten in place (new size or mtime) is batched again and
its new bytes become an update. Keys are `<UTC time>-<8 hex of the file list's sha256>`: they sort
by creation time and the same files at the same second always give the same key.

Files are skipped while they may still be growing: dot-files and anything under a dot-folder
(how uploaders mark partial files, e.g. `.scan.dcm.part`), and files modified in the last
`settle_seconds`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from dicomlake.ingest import IngestOptions, IngestSummary, ingest
from dicomlake.ingest.sources import s3_filesystem
from dicomlake.store.lakehouse import TenantStore

DROPS_FOLDER = "drops"


@dataclass(frozen=True)
class DropFile:
    path: str  # absolute local path or s3:// URI
    size: int
    mtime: float  # seconds since the epoch

    @property
    def identity(self) -> tuple[str, int, float]:
        return self.path, self.size, self.mtime


@dataclass(frozen=True)
class DropBatch:
    key: str
    files: list[DropFile]
    drop_dir: str = ""
    created_at: str = ""

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]


def _is_remote(path: str) -> bool:
    return "://" in path


def _list_local(drop_dir: str) -> Iterator[DropFile]:
    for folder, dirs, names in os.walk(drop_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # never descend into dot-folders
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # removed between listing and stat
                continue
            yield DropFile(path, stat.st_size, stat.st_mtime)


def _list_s3(drop_dir: str, storage_options: Mapping[str, str] | None) -> Iterator[DropFile]:
    fs = s3_filesystem(storage_options)
    prefix = drop_dir.removeprefix("s3://").rstrip("/")
    for key, info in sorted(fs.find(prefix, detail=True).items()):
        relative = key[len(prefix) + 1 :]
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        yield DropFile(f"s3://{key}", int(info["size"]), info["LastModified"].timestamp())


def list_drop_files(drop_dir: str, storage_options: Mapping[str, str] | None = None) -> list[DropFile]:
    """Every visible file under `drop_dir` (recursive, dot-files and dot-folders skipped), sorted."""
    if _is_remote(drop_dir):
        return list(_list_s3(drop_dir, storage_options))
    if not os.path.isdir(drop_dir):
        return []
    return list(_list_local(os.path.abspath(drop_dir)))


def batch_key(files: Sequence[DropFile], now: float) -> str:
    listing = json.dumps([f.identity for f in sorted(files, key=lambda f: f.path)], separators=(",", ":"))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{stamp}-{hashlib.sha256(listing.encode()).hexdigest()[:8]}"


def _manifest_uri(tenant: TenantStore, key: str) -> str:
    return f"{tenant.uri}/{DROPS_FOLDER}/{key}.json"


def list_drop_batches(tenant: TenantStore) -> list[str]:
    """Keys of every batch manifest of `tenant`, oldest first."""
    fs = tenant.lakehouse.filesystem()
    folder = f"{tenant.uri}/{DROPS_FOLDER}"
    if not fs.exists(folder):
        return []
    names = (p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False))
    return sorted(n.removesuffix(".json") for n in names if n.endswith(".json") and not n.startswith("."))


def load_drop_batch(tenant: TenantStore, key: str) -> DropBatch:
    raw = json.loads(tenant.lakehouse.filesystem().cat_file(_manifest_uri(tenant, key)))
    files = [DropFile(f["path"], int(f["size"]), float(f["mtime"])) for f in raw["files"]]
    return DropBatch(raw["key"], files, raw["drop_dir"], raw["created_at"])


def _write_manifest(tenant: TenantStore, batch: DropBatch) -> None:
    payload = {
        "key": batch.key,
        "created_at": batch.created_at,
        "drop_dir": batch.drop_dir,
        "files": [{"path": f.path, "size": f.size, "mtime": f.mtime} for f in batch.files],
    }
    data = json.dumps(payload, indent=1).encode()
    fs = tenant.lakehouse.filesystem()
    target = _manifest_uri(tenant, batch.key)
    if not tenant.lakehouse.is_local:
        fs.pipe_file(target, data)  # an S3 put is atomic
        return
    # Locally, write then rename, so a crash never leaves half a manifest (it would hide its files).
    folder = f"{tenant.uri}/{DROPS_FOLDER}"
    fs.makedirs(folder, exist_ok=True)
    partial = f"{folder}/.{batch.key}.json.partial"
    fs.pipe_file(partial, data)
    os.replace(partial, target)


def _already_batched(tenant: TenantStore) -> set[tuple[str, int, float]]:
    # Reads every manifest: fine for thousands of batches; past that, keep a compacted index.
    return {f.identity for key in list_drop_batches(tenant) for f in load_drop_batch(tenant, key).files}


def plan_drop_batch(
    tenant: TenantStore,
    drop_dir: str,
    max_files: int = 5000,
    settle_seconds: float = 2.0,
    now: float | None = None,
) -> DropBatch | None:
    """Record the next batch of settled, not yet batched files under `drop_dir`; None when there is none."""
    now = time.time() if now is None else now
    if not _is_remote(drop_dir):
        drop_dir = os.path.abspath(drop_dir)
    listed = list_drop_files(drop_dir, tenant.storage_options)
    settled = [f for f in listed if now - f.mtime >= settle_seconds]
    if not settled:
        return None
    done = _already_batched(tenant)
    fresh = [f for f in settled if f.identity not in done][:max_files]
    if not fresh:
        return None
    created_at = dt.datetime.fromtimestamp(now, dt.UTC).isoformat()
    batch = DropBatch(batch_key(fresh, now), fresh, drop_dir, created_at)
    _write_manifest(tenant, batch)
    return batch


# -- ingesting a batch ------------------------------------------------------------------------


@dataclass
class DropIngestResult:
    summary: IngestSummary
    # Listed in the manifest but gone before ingest (typically moved away by an earlier run).
    missing: list[str] = field(default_factory=list)
    # Rewritten since the batch was planned: not ingested now; their new bytes get a batch of their own.
    rewritten: list[str] = field(default_factory=list)


def _stat(path: str, storage_options: Mapping[str, str] | None) -> DropFile | None:
    """The file as it is now (None when it is gone), comparable with a manifest entry."""
    try:
        if _is_remote(path):
            info = s3_filesystem(storage_options).info(path)
            return DropFile(path, int(info["size"]), info["LastModified"].timestamp())
        stat = os.stat(path)
        return DropFile(path, stat.st_size, stat.st_mtime)
    except FileNotFoundError:
        return None


def ingest_drop_batch(
    tenant: TenantStore,
    batch: DropBatch,
    options: IngestOptions | None = None,
    disposition: str = "keep",
    move_to: str | None = None,
) -> DropIngestResult:
    """Ingest the files of `batch` as they were when it was planned; dispose of them after commit.

    Moved files keep their layout below the drop folder. A rerun of the same batch is a no-op for
    files already moved or deleted, and files changed since planning wait for their own batch.
    """
    storage = tenant.storage_options
    result = DropIngestResult(IngestSummary(tenant.name))
    as_planned = []
    for entry in batch.files:
        now = _stat(entry.path, storage)
        if now is None:
            result.missing.append(entry.path)
        elif now != entry:
            result.rewritten.append(entry.path)
        else:
            as_planned.append(entry.path)
    if as_planned:
        run = replace(options or IngestOptions(), disposition=disposition, move_to=move_to,
                      move_relative_to=batch.drop_dir)
        result.summary = ingest(as_planned, tenant, run)
    return result
