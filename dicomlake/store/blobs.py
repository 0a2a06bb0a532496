"""Content-addressed, immutable blob stores: the original Part-10 bytes, never rewritten.

Keys are relative to the tenant root (e.g. 'blobs/ab/ab12....dcm'); no PHI ever appears in a key.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import fsspec


def blob_key(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}.dcm"


def quarantine_key(sha256: str) -> str:
    return f"quarantine/{sha256}.bin"


@dataclass(frozen=True)
class Staged:
    """Blobs written by stage() and not yet published: (key, temp path, size) each. Picklable."""

    files: tuple[tuple[str, str, int], ...] = ()


class BlobStore(Protocol):
    """Write-once storage of bytes under tenant-relative keys."""

    def put(self, key: str, data: bytes) -> bool:
        """Store `data` under `key` unless it exists; True when this call wrote it."""

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """put() for many blobs; every one is durable when this returns."""

    def stage(self, items: Sequence[tuple[str, bytes]]) -> Staged:
        """Write new blobs where no reader sees them yet, not yet durable (cheap; e.g. in workers)."""

    def publish(self, staged: Sequence[Staged]) -> None:
        """Make staged blobs durable and visible at their keys (one sync for many stagings)."""

    def put_file(self, key: str, path: str | Path, *, move: bool = False) -> bool:
        """put() for the bytes of a local file, never read into memory; durable when it returns."""

    def put_files(self, items: Sequence[tuple[str, str | Path | bytes]], *, move: bool = False) -> list[bool]:
        """put_file() (for paths) or put() (for bytes) for a batch, with one durability step for all;
        True where written."""

    def get(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO:
        """A binary file object over the blob (read in chunks, seek; the caller closes it)."""

    def local_path(self, key: str) -> Path | None:
        """The blob's path when it is a local file (mmap, sendfile), else None."""

    def staging_dir(self) -> Path | None:
        """A local folder for files that put_file(move=True) can rename into place, or None."""


_WRITERS: ThreadPoolExecutor | None = None


def _writers() -> ThreadPoolExecutor:
    # Durable writes wait on the disk; concurrent fsyncs share journal commits instead of queueing.
    global _WRITERS
    if _WRITERS is None:
        _WRITERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicomlake-blob")
    return _WRITERS


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by path (a folder's fsync makes the renames inside it durable)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _load_syncfs()
# syncfs flushes everything dirty on the file system, not only our batch: when other writers have
# left more than this waiting, a batch is made durable file by file instead, so that one sync never
# waits for more than a few seconds of someone else's writes. Below it, the one-off flush of, say,
# a drop folder just written is cheaper than an fsync per file (the kernel would flush it anyway).
SYNCFS_MAX_FOREIGN_BYTES = 512 * 1024 * 1024


def dirty_bytes() -> int | None:
    """Bytes waiting to be written back, machine-wide (Linux /proc/meminfo); None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith((b"Dirty:", b"Writeback:")):
            total += int(line.split()[1]) * 1024
    return total


def _syncfs_worth_it(batch_bytes: int) -> bool:
    if _SYNCFS is None:
        return False
    dirty = dirty_bytes()
    return dirty is not None and dirty - batch_bytes <= SYNCFS_MAX_FOREIGN_BYTES


def sync_filesystem(folder: Path) -> None:
    """Make everything written to the file system holding `folder` durable: data, names, renames.

    Linux's syncfs(2): one call flushes a whole batch of files, where per-file fsyncs cost a
    journal commit each (measured here: 0.08 instead of 0.36 ms of CPU per 32 kB blob).
    """
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        if _SYNCFS is None:
            os.fsync(descriptor)
            return
        if _SYNCFS(descriptor) != 0:  # reports write-back errors since Linux 5.8
            error = ctypes.get_errno()
            raise OSError(error, f"syncfs failed: {os.strerror(error)}", str(folder))
    finally:
        os.close(descriptor)


class LocalBlobStore:
    """A folder. Blobs are written to temp files, made durable, then renamed into place and the
    renames made durable: a reader never sees half a blob, and a blob that exists at its key has
    survived a power cut. A batch is made durable with two file-system syncs (syncfs) on Linux when
    little else is waiting to be written, else with an fsync per file and per folder."""

    def __init__(self, base: Path, durable: bool = True) -> None:
        self.base = base
        self.durable = durable
        self._tmp = base / ".tmp"
        self._made: set[Path] = set()

    def _path(self, key: str) -> Path:
        return self.base / key

    def _folder(self, path: Path) -> None:
        if path not in self._made:
            path.mkdir(parents=True, exist_ok=True)
            self._made.add(path)

    def _write_temp(self, data: bytes) -> Path:
        self._folder(self._tmp)
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        with open(tmp, "wb") as handle:
            handle.write(data)
        return tmp

    def put(self, key: str, data: bytes) -> bool:
        return self.put_many([(key, data)])[0]

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        staged = self.stage(items)
        self.publish([staged])
        written = {key for key, _, _ in staged.files}
        result = []
        for key, _ in items:  # a key given twice in one batch is written once
            result.append(key in written)
            written.discard(key)
        return result

    def stage(self, items: Sequence[tuple[str, bytes]]) -> Staged:
        # Content-addressed: an existing key already holds these bytes (durably, see publish).
        fresh = {key: data for key, data in items if not self._path(key).exists()}
        return Staged(tuple((key, str(self._write_temp(data)), len(data)) for key, data in fresh.items()))

    def publish(self, staged: Sequence[Staged]) -> None:
        files = [f for batch in staged for f in batch.files]
        if not files:
            return
        batched = self.durable and _syncfs_worth_it(sum(size for _, _, size in files))
        if self.durable and not batched:
            list(_writers().map(lambda f: fsync_path(Path(f[1])), files))
        elif batched:
            sync_filesystem(self.base)  # the bytes, before any name points at them
        for key, tmp, _ in files:
            path = self._path(key)
            if path.exists():  # staged twice (two chunks with the same bytes): the first one won
                Path(tmp).unlink(missing_ok=True)
                continue
            self._folder(path.parent)
            os.replace(tmp, path)
        if batched:
            sync_filesystem(self.base)  # the renames
        elif self.durable:
            for folder in {self._path(key).parent for key, _, _ in files}:
                fsync_path(folder)

    def put_file(self, key: str, path: str | Path, *, move: bool = False) -> bool:
        """Store the file at `path` under `key` unless the key exists; True when this call wrote it.

        The same durability as put_many (the bytes, then the rename, are made durable) with a per-
        file fsync: one large file gains nothing from syncfs. With `move=True` a file on the same
        file system (e.g. in staging_dir()) is renamed into place instead of copied; a file on
        another one is copied. Either way `path` may remain, and then belongs to the caller.
        """
        target = self._path(key)
        if target.exists():
            return False
        source = Path(path)
        self._folder(self._tmp)
        staged = self._tmp / f"{uuid.uuid4().hex}.part"
        renamed = False
        if move:
            try:
                os.rename(source, staged)  # atomic, no copy; fails across file systems
                renamed = True
            except OSError:
                renamed = False
        if not renamed:
            shutil.copyfile(source, staged)  # kernel-side copy (sendfile/copy_file_range)
        try:
            if self.durable:
                fsync_path(staged)
            self._folder(target.parent)
            os.replace(staged, target)
        except BaseException:
            if renamed:  # give the caller its file back rather than leave it in .tmp
                with contextlib.suppress(OSError):
                    os.replace(staged, source)
            else:
                staged.unlink(missing_ok=True)
            raise
        if self.durable:
            fsync_path(target.parent)
        return True

    def put_files(self, items: Sequence[tuple[str, str | Path | bytes]], *, move: bool = False) -> list[bool]:
        """put_file() for a batch of files or in-memory bytes: each file is renamed (or copied) into
        the temp folder, each bytes value written there, then the batch is published like stage()d
        blobs (two syncfs, or parallel fsyncs when much else is waiting): a request of 50 small
        instances pays one durability step, not 100 fsyncs. When it raises, nothing new is at any
        key and the staged copies are gone (moved files too)."""
        self._folder(self._tmp)
        files: list[tuple[str, str, int]] = []
        result: list[bool] = []
        try:
            for key, content in items:
                if self._path(key).exists() or any(key == f[0] for f in files):
                    result.append(False)
                    continue
                if isinstance(content, bytes):
                    staged, size = self._write_temp(content), len(content)
                else:
                    staged = self._tmp / f"{uuid.uuid4().hex}.part"
                    try:
                        if not move:
                            raise OSError("copy")
                        os.rename(content, staged)
                    except OSError:
                        shutil.copyfile(content, staged)
                    size = staged.stat().st_size
                files.append((key, str(staged), size))
                result.append(True)
            self.publish([Staged(tuple(files))])
        except BaseException:
            for _, tmp, _ in files:
                Path(tmp).unlink(missing_ok=True)
            raise
        return result

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def staging_dir(self) -> Path | None:
        self._folder(self._tmp)
        return self._tmp

    def sweep_staging(self, older_than_s: float) -> int:
        """Remove staged temp files a crashed writer left behind; never ones a live writer may use."""
        if not self._tmp.exists():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for leftover in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if leftover.is_file() and leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
        return removed

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> list[str]:
        root = self._path(prefix)
        if not root.exists():
            return []
        return sorted(
            str(p.relative_to(self.base)) for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts
        )


class FsspecBlobStore:
    """An object store through fsspec (s3fs for s3://). A PUT of a whole object is atomic there."""

    def __init__(self, base_uri: str, fs: fsspec.AbstractFileSystem) -> None:
        self.base = base_uri.rstrip("/")
        self.fs = fs

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}"

    def put(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if self.fs.exists(path):
            return False
        self.fs.pipe_file(path, data)
        return True

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        return [self.put(key, data) for key, data in items]

    def stage(self, items: Sequence[tuple[str, bytes]]) -> Staged:
        self.put_many(items)  # an object store's PUT is atomic and durable: nothing left to publish
        return Staged()

    def publish(self, staged: Sequence[Staged]) -> None:
        return None

    def put_file(self, key: str, path: str | Path, *, move: bool = False) -> bool:
        """Upload a local file (s3fs: a multipart upload for large ones, visible only once complete)."""
        target = self._path(key)
        if self.fs.exists(target):
            return False
        self.fs.put_file(str(path), target)
        return True

    def put_files(self, items: Sequence[tuple[str, str | Path | bytes]], *, move: bool = False) -> list[bool]:
        return [self.put(key, content) if isinstance(content, bytes)
                else self.put_file(key, content, move=move) for key, content in items]

    def get(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def open(self, key: str) -> BinaryIO:
        return self.fs.open(self._path(key), "rb")

    def local_path(self, key: str) -> Path | None:
        return None

    def staging_dir(self) -> Path | None:
        return None

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def keys(self, prefix: str) -> list[str]:
        root = self._path(prefix)
        try:
            found = self.fs.find(root)
        except FileNotFoundError:
            return []
        bare = self.base.split("://", 1)[-1]
        return sorted(p.split("://", 1)[-1][len(bare) + 1 :] for p in found)
