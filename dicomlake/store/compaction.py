"""Online compaction: keep the number of data files of a table that is appended to often small.

Every commit of delta-rs costs time in proportion to the table's live data files (measured here:
13 ms at 25 files, 53 ms at 275), so a table fed by many small commits (STOW requests, ingest
batches) slows down commit by commit. A committer calls `FileCountGuard.after_commit` after each
append; every `every` appends it compacts the small files into files of up to `target_size` bytes.
Bounded work: files already near the target are left alone, so a round rewrites at most about
`target_size` plus what arrived since the last round. Compaction never adds, removes or reorders a
row (insertion = seq order is kept; see dicomlake.maintenance), so readers see the same data.

One compaction of a table at a time, across processes and machines: delta-rs (1.6) lets two
concurrent removes of the same file pass its conflict check when both are `dataChange: false`, so
two processes compacting the same small files would each add a copy of their rows (measured here:
two servers compacting one table turned 3,001 rows into 59,194). A compaction first takes a lease, a
commit of a Delta app transaction (LEASE_APP) whose version is the lease's expiry in microseconds;
two processes taking it at once both carry that app id, so Delta's conflict checker commits exactly
one (the way the change feed's writers get a gapless seq). Whoever finds an unexpired lease skips
the round. Merges and appends need no lease: a merge over a compacted file still conflicts.
"""

from __future__ import annotations

import logging
import time

from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties
from deltalake.exceptions import CommitFailedError

log = logging.getLogger(__name__)

# Compacted files keep row groups small enough that a reader seeking one page of the feed decodes
# one row group (~tens of ms), never a whole compacted file.
ROW_GROUP_ROWS = 32_768
ONLINE_TARGET_SIZE = 16 * 1024 * 1024
ONLINE_EVERY = 64
LEASE_APP = "dicomlake.compaction"
# Far longer than a compaction takes (an online round rewrites ~16 MB; `maintain` a whole table).
# A process that dies holding the lease delays compaction by this much, never corrupts it.
LEASE_S = 3600


class CompactionBusy(Exception):
    """Another process holds the table's compaction lease."""


def compact(table: DeltaTable, target_size: int | None = None) -> dict:
    """One compaction of `table` under its lease: rows in seq order, bounded row groups.

    CompactionBusy when another compaction holds the lease (or took it just now). The metrics
    carry `version`, the compaction's own commit (the lease's release commits after it).
    """
    lease = _take_lease(table)
    try:
        metrics = table.optimize.compact(target_size=target_size,
                                         writer_properties=WriterProperties(max_row_group_size=ROW_GROUP_ROWS))
        return {**metrics, "version": table.version()}
    finally:
        _release_lease(table, lease)


def lease_holder_until(table: DeltaTable) -> float | None:
    """When the current compaction lease expires (epoch seconds), or None if it has."""
    expiry = table.transaction_version(LEASE_APP)
    return expiry / 1e6 if expiry and expiry / 1e6 > time.time() else None


def _commit_lease(table: DeltaTable, version: int) -> None:
    table.create_write_transaction(
        [], mode="append", schema=table.schema(), partition_by=[],
        commit_properties=CommitProperties(
            app_transactions=[Transaction(app_id=LEASE_APP, version=version)],
            custom_metadata={"dicomlake.operation": "compaction-lease"},
        ),
    )
    table.update_incremental()


def _take_lease(table: DeltaTable) -> int:
    table.update_incremental()
    until = lease_holder_until(table)
    if until is not None:
        raise CompactionBusy(f"{table.table_uri}: compaction lease held until {time.ctime(until)}")
    lease = time.time_ns() // 1000 + LEASE_S * 1_000_000
    try:
        _commit_lease(table, lease)
    except CommitFailedError as exc:  # another process took it in the same instant
        raise CompactionBusy(f"{table.table_uri}: another process took the compaction lease") from exc
    return lease


def _release_lease(table: DeltaTable, lease: int) -> None:
    try:
        table.update_incremental()
        if table.transaction_version(LEASE_APP) == lease:
            _commit_lease(table, time.time_ns() // 1000)  # expired now: the next round may compact
    except CommitFailedError:  # a concurrent lease commit won; the lease is theirs, nothing to release
        pass
    except Exception:  # the lease then expires on its own; the compaction itself is done
        log.exception("%s: releasing the compaction lease failed", table.table_uri)


class FileCountGuard:
    """Counts the appends a process made to one table and compacts it every `every` of them."""

    def __init__(self, every: int = ONLINE_EVERY, target_size: int = ONLINE_TARGET_SIZE) -> None:
        self.every = every
        self.target_size = target_size
        self._appends = 0

    def after_commit(self, table: DeltaTable) -> int | None:
        """Count one append; the version of the compaction's commit when this call compacted."""
        self._appends += 1
        if self._appends < self.every:
            return None
        self._appends = 0
        try:
            metrics = compact(table, self.target_size)
        except (CompactionBusy, CommitFailedError) as exc:  # another writer compacts; retried later
            log.info("%s: online compaction skipped: %s", table.table_uri, exc)
            return None
        return metrics["version"] if metrics.get("numFilesAdded") else None
