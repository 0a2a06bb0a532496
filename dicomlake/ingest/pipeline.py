"""Ingest: many sources -> parallel parse -> batched commits through one committer per tenant.

Order of effects per batch (each step durable before the next):
  1. workers stage blob / quarantine bytes; the batch's are published at once (made durable, then
     renamed into place: content-addressed, idempotent);
  2. quarantine rows are appended (deduplicated by bytes + source);
  3. one Delta commit appends the batch's changes with dense seqs;
  4. drop files whose every item is committed get their disposition (keep | delete | move).
A crash anywhere re-runs cleanly: identical bytes become 'unchanged', nothing is lost or doubled.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dicomlake.ingest.sources import SourceItem, dispose, expand_sources
from dicomlake.ingest.worker import ChunkResult, ItemResult, TenantSpec, container_state, process_items
from dicomlake.store.blobs import Staged
from dicomlake.store.committer import Committer, record_quarantine
from dicomlake.store.lakehouse import TenantStore
from dicomlake.tags.indexer import index_after_commit

DISPOSITIONS = ("keep", "delete", "move")
# Below this many items, worker start-up (~0.5 s per spawned process) costs more than it saves.
MIN_ITEMS_FOR_WORKERS = 64
CHUNK = 32


@dataclass
class IngestSummary:
    tenant: str
    received: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    unreadable: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    seconds: float = 0.0
    instances_per_second: float = 0.0
    errors: list[dict[str, str]] = field(default_factory=list)
    # Drop files not disposed of because they changed while being ingested (their new bytes were not
    # read) or could not be read: they stay where they are for the next run.
    left_in_place: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


ProgressCallback = Callable[[int, int], None]


@dataclass
class IngestOptions:
    workers: int | None = None  # None: one per core
    batch_size: int = 1000
    disposition: str = "keep"
    move_to: str | None = None
    # Moved files keep their path relative to this folder (default: the folder that was given).
    move_relative_to: str | None = None
    # How to reach s3:// sources when they are not in the lakehouse's own store (delta-rs style
    # AWS_* keys); default: the lakehouse's options, else the AWS_* environment variables.
    source_storage_options: dict[str, str] | None = None
    max_errors_listed: int = 100


def ingest(
    paths: Sequence[str | Path],
    tenant: TenantStore,
    options: IngestOptions | None = None,
    progress: ProgressCallback | None = None,
) -> IngestSummary:
    """Ingest every DICOM object under `paths` into `tenant`; see the module docstring."""
    options = options or IngestOptions()
    if options.disposition not in DISPOSITIONS:
        raise ValueError(f"disposition must be one of {DISPOSITIONS}, not {options.disposition!r}")
    if options.disposition == "move" and not options.move_to:
        raise ValueError("disposition 'move' needs move_to")
    started = time.perf_counter()
    source_options = options.source_storage_options or tenant.storage_options or None
    items = expand_sources(paths, source_options)
    summary = IngestSummary(tenant=tenant.name)
    base = {str(Path(p)) if "://" not in str(p) else str(p) for p in paths}
    run = _Run(tenant, options, summary, items, base, progress, source_options)
    run.execute()
    summary.seconds = round(time.perf_counter() - started, 3)
    summary.instances_per_second = round(summary.received / summary.seconds, 1) if summary.seconds else 0.0
    return summary


class _Run:
    def __init__(self, tenant, options, summary, items, bases, progress, source_options) -> None:
        self.tenant: TenantStore = tenant
        self.options: IngestOptions = options
        self.summary: IngestSummary = summary
        self.items: list[SourceItem] = items
        if options.move_relative_to:
            bases = {options.move_relative_to}
        self.bases = sorted(bases, key=len, reverse=True)
        self.progress = progress
        self.committer = Committer(tenant)
        self.spec = TenantSpec.of(tenant)
        self.source_options = tuple(sorted((source_options or {}).items()))
        # A container (file or zip) is disposed of once all of its items are committed.
        self.remaining: dict[str, int] = defaultdict(int)
        for item in items:
            self.remaining[item.container] += 1
        self.failed_containers: set[str] = set()
        self.observed: dict[str, tuple[int, int] | None] = {}  # container -> state when first read
        self.done = 0

    def execute(self) -> None:
        batch: list[ItemResult] = []
        staged: list[Staged] = []
        for chunk in self._results():
            batch.extend(chunk.results)
            staged.append(chunk.staged)
            if len(batch) >= self.options.batch_size:
                self._commit(batch, staged)
                batch, staged = [], []
        if batch:
            self._commit(batch, staged)
        self.committer.sync_instances()

    def _results(self) -> Iterator[ChunkResult]:
        chunks = [self.items[i : i + CHUNK] for i in range(0, len(self.items), CHUNK)]
        workers = self.options.workers or os.cpu_count() or 1
        if workers <= 1 or len(self.items) < MIN_ITEMS_FOR_WORKERS:
            for chunk in chunks:
                yield process_items(self.spec, chunk, self.source_options)
            return
        # Spawn, not fork: the parent holds delta-rs (tokio) threads, which fork does not copy safely.
        context = multiprocessing.get_context("spawn")
        # Enough chunks in flight that workers keep parsing while a whole batch is published and
        # committed (the main process waits on the disk then).
        window = max(workers * 4, 2 * self.options.batch_size // CHUNK)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            pending: list[Future] = []
            next_chunk = 0
            while next_chunk < len(chunks) or pending:
                while next_chunk < len(chunks) and len(pending) < window:
                    chunk = chunks[next_chunk]
                    pending.append(pool.submit(process_items, self.spec, chunk, self.source_options))
                    next_chunk += 1
                yield pending.pop(0).result()

    def _commit(self, batch: list[ItemResult], staged: list[Staged]) -> None:
        # Every byte of the batch durable and in place before anything refers to it.
        self.tenant.blobs.publish(staged)
        summary = self.summary
        quarantine = [r.quarantine for r in batch if r.quarantine]
        record_quarantine(self.tenant, quarantine)
        versions = [r.version for r in batch if r.version]
        outcome = self.committer.commit_versions(versions)
        summary.received += len(batch)
        summary.created += outcome.count("create")
        summary.updated += outcome.count("update")
        summary.unchanged += outcome.count("unchanged")
        summary.quarantined += len(quarantine)
        if outcome.first_seq is not None:
            summary.first_seq = summary.first_seq or outcome.first_seq
            summary.last_seq = outcome.last_seq
        for result in batch:
            problem = result.problem
            if problem and len(summary.errors) < self.options.max_errors_listed:
                code, reason = problem
                summary.errors.append({"source": result.item.source, "code": code, "reason": reason})
            container = result.item.container
            self.observed.setdefault(container, result.observed)
            if result.error:
                summary.unreadable += 1
                self.failed_containers.add(container)
            self.remaining[container] -= 1
            if self.remaining[container] == 0 and self.options.disposition != "keep":
                changed = container_state(container) != self.observed[container]
                if container in self.failed_containers or changed:
                    summary.left_in_place.append(container)
                    continue
                dispose(
                    container,
                    self.options.disposition,
                    self.options.move_to,
                    self._base_of(container),
                    dict(self.source_options) or None,
                )
        self.done += len(batch)
        if self.progress:
            self.progress(self.done, len(self.items))
        # Keep `instances` current batch by batch: cheap (it appends what was just committed) and
        # memory stays flat however long the ingest runs.
        self.committer.sync_instances(outcome)
        index_after_commit(self.tenant, outcome)  # extended query tags (ready ones) for the new seqs

    def _base_of(self, container: str) -> str | None:
        for base in self.bases:
            if container == base or container.startswith(base.rstrip("/") + "/"):
                return base
        return None
