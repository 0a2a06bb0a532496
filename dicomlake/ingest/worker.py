"""The per-item work, run in worker processes: read, hash, parse, store the bytes.

Workers stage the bytes (blob or quarantine) in temp files; the main process publishes a batch's
blobs (made durable, renamed into place, the renames made durable) before it commits that batch, so
a commit never points at a blob that is not durable. A crash before the commit leaves staged temp
files or an unreferenced blob, which a rerun reuses (same content, same key).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

from dicomlake.dicom.parse import parse_instance, sha256_hex
from dicomlake.errors import InvalidInstance
from dicomlake.ingest.sources import SourceItem, read_item
from dicomlake.store.blobs import Staged, blob_key, quarantine_key
from dicomlake.store.lakehouse import Lakehouse, TenantStore


@dataclass(frozen=True)
class TenantSpec:
    """Picklable address of a tenant, for worker processes."""

    root: str
    tenant: str
    storage_options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, store: TenantStore) -> TenantSpec:
        return cls(store.lakehouse.root, store.name, tuple(sorted(store.storage_options.items())))

    def open(self) -> TenantStore:
        return Lakehouse(self.root, dict(self.storage_options) or None).tenant(self.tenant)


@dataclass(frozen=True)
class ItemResult:
    item: SourceItem
    version: dict[str, Any] | None = None  # a row for Committer.commit_versions
    quarantine: dict[str, Any] | None = None  # a row for record_quarantine
    error: str | None = None  # the item could not even be read (vanished, permissions)
    # (size, mtime_ns) of a local container just before it was read: disposal checks it is unchanged.
    observed: tuple[int, int] | None = None

    @property
    def problem(self) -> tuple[str, str] | None:
        """(code, reason) when the item was not stored, else None."""
        if self.quarantine:
            return self.quarantine["error_code"], self.quarantine["reason"]
        if self.error:
            return "unreadable", self.error
        return None


_STORES: dict[TenantSpec, TenantStore] = {}


def container_state(container: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a local file, None for remote objects or a file that is gone."""
    if "://" in container:
        return None
    try:
        stat = os.stat(container)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _store(spec: TenantSpec) -> TenantStore:
    if spec not in _STORES:
        _STORES[spec] = spec.open()
    return _STORES[spec]


def prepare(source: str, data: bytes) -> tuple[dict | None, dict | None, str]:
    """Parse one object: (version row, None, blob key) or (None, quarantine row, quarantine key)."""
    try:
        parsed = parse_instance(data)
    except InvalidInstance as exc:
        sha = sha256_hex(data)
        key = quarantine_key(sha)
        return None, {
            "sha256": sha,
            "quarantine_key": key,
            "size_bytes": len(data),
            "source": source,
            "error_code": exc.code,
            "reason": exc.reason,
            "quarantined_at": dt.datetime.now(dt.UTC),
        }, key
    key = blob_key(parsed.sha256)
    version = dict(parsed.record)
    version.setdefault("warnings", [])
    version.update(sha256=parsed.sha256, blob_key=key, size_bytes=parsed.size, source=source)
    return version, None, key


@dataclass(frozen=True)
class ChunkResult:
    results: list[ItemResult]
    staged: Staged  # the chunk's new blobs: the committer publishes them before its commit


def process_items(
    spec: TenantSpec, items: list[SourceItem], source_options: tuple[tuple[str, str], ...] = ()
) -> ChunkResult:
    """Parse a chunk and stage its bytes (written, not yet durable: see Committer's caller)."""
    store = _store(spec)
    options = dict(source_options) or None
    results, writes = [], []
    for item in items:
        observed = container_state(item.container)
        try:
            data = read_item(item, options)
        except OSError as exc:  # vanished or unreadable: nothing to keep, report it
            results.append(ItemResult(item, error=f"{type(exc).__name__}: {exc}"))
            continue
        version, quarantine, key = prepare(item.source, data)
        writes.append((key, data))
        results.append(ItemResult(item, version, quarantine, observed=observed))
    # Durability is the main process's job, once per commit batch: workers never wait on the disk.
    return ChunkResult(results, store.blobs.stage(writes))
