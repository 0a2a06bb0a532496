"""Where an export's files go: a local folder, written in place, or an `s3://bucket/prefix`.

For S3, workers write each file into a local staging folder; `publish` then puts the chunk's files
(an S3 PUT is atomic: an object is there whole or not at all) and deletes the local copies. The
progress file lives on the destination too, so a rerun resumes from any machine; the manifest is
written last. A staging folder left by a killed export is removed by the next S3 export on the
machine (`sweep_abandoned_staging`: its owner process is gone). S3 access comes from the
lakehouse's AWS_* settings (`s3_options_from_env`) or the `storage_options` given, the same
configuration the lakehouse itself uses.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dicomlake.store.lakehouse import fsspec_s3_kwargs, s3_options_from_env

STAGING_PREFIX = "dicomlake-export-"
STAGING_OWNER = ".owner"  # in each staging folder: the pid of the process writing there


def is_remote(out: str | Path) -> bool:
    return str(out).startswith("s3://")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_abandoned_staging(root: str | Path | None = None) -> int:
    """Remove the staging folders of S3 exports whose process is gone (killed or crashed before
    `close`); a live export's folder is left alone. Returns how many were removed. Nothing in one is
    lost: a file reaches the progress record only once it is on S3, so a rerun redoes its chunk."""
    removed = 0
    for folder in Path(root or tempfile.gettempdir()).glob(f"{STAGING_PREFIX}*"):
        try:
            pid = int((folder / STAGING_OWNER).read_text().strip())
        except (OSError, ValueError):
            continue  # not ours, or still being made
        if not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


class Destination:
    """A local folder or an S3 prefix; `staging` is the local folder the workers write files into."""

    def __init__(self, out: str | Path, storage_options: Mapping[str, str] | None = None) -> None:
        self.remote = is_remote(out)
        if self.remote:
            import fsspec

            options = dict(storage_options) if storage_options else s3_options_from_env()
            self.fs = fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False,
                                        **fsspec_s3_kwargs(options))  # fmt: skip
            self.url = str(out).rstrip("/")
            self._prefix = self.url.removeprefix("s3://")
            sweep_abandoned_staging()
            self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX))
            (self.staging / STAGING_OWNER).write_text(str(os.getpid()))
        else:
            self.url = str(Path(out))
            self.staging = Path(out)
            self.staging.mkdir(parents=True, exist_ok=True)

    def location(self, name: str) -> str:
        """The address of `name` (a path relative to the export root) for people and summaries."""
        return f"{self.url}/{name}" if self.remote else str(self.staging / name)

    def read_json(self, name: str) -> Any | None:
        """The JSON document `name`, or None when there is none."""
        if self.remote:
            key = f"{self._prefix}/{name}"
            return json.loads(self.fs.cat_file(key)) if self.fs.exists(key) else None
        path = self.staging / name
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def write_json(self, name: str, data: Any) -> None:
        self.write_bytes(name, json.dumps(data, indent=2, default=str).encode())

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write `name` atomically: readers see the old document or the new one, never a part."""
        if self.remote:
            self.fs.pipe_file(f"{self._prefix}/{name}", data)
            return
        path = self.staging / name
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)

    def publish(self, files: list[dict[str, Any]]) -> None:
        """Move files the workers wrote into `staging` (entries with a relative `path`) to the destination."""
        if not self.remote or not files:
            return
        local = [str(self.staging / f["path"]) for f in files]
        self.fs.put(local, [f"{self._prefix}/{f['path']}" for f in files])
        for path in local:
            Path(path).unlink()

    def drop_unrecorded(self, recorded: set[str], pattern: str) -> None:
        """Remove files matching `pattern` that no progress record lists (a killed run wrote them)."""
        for tmp in self.staging.rglob("*.tmp"):
            tmp.unlink()
        if self.remote:
            found = self.fs.glob(f"{self._prefix}/{pattern}")
            stale = [key for key in found if key.removeprefix(self._prefix + "/") not in recorded]
            if stale:
                self.fs.rm(stale)
            return
        for path in self.staging.glob(pattern):
            if str(path.relative_to(self.staging)) not in recorded:
                path.unlink()

    def close(self) -> None:
        """Remove the local staging folder of an S3 destination."""
        if self.remote:
            shutil.rmtree(self.staging, ignore_errors=True)
