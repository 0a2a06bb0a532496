"""Online compaction: keep the number of data files of a table that is appended to often small.

Every commit of delta-rs costs time in proportion to the table's live data files (measured here:
13 ms at 25 files, 53 ms at 275), so a table fed by many small commits (STOW requests, ingest
batches) slows down commit by commit. A committer calls `FileCountGuard.after_commit` after each
append; every `every` appends it compacts the small files into files of up to `target_size` bytes.
Bounded work: files already near the target are left alone, so a round rewrites at most about
`target_size` plus what arrived since the last round. Compaction never adds, removes or reorders a
row (insertion = seq order is kept; see dicomlake.maintenance), so readers see the same data.
"""

from __future__ import annotations

import logging

from deltalake import DeltaTable, WriterProperties
from deltalake.exceptions import CommitFailedError

log = logging.getLogger(__name__)

# Compacted files keep row groups small enough that a reader seeking one page of the feed decodes
# one row group (~tens of ms), never a whole compacted file.
ROW_GROUP_ROWS = 32_768
ONLINE_TARGET_SIZE = 16 * 1024 * 1024
ONLINE_EVERY = 64


def compact(table: DeltaTable, target_size: int | None = None) -> dict:
    """One compaction of `table` (delta-rs optimize), rows in seq order, bounded row groups."""
    return table.optimize.compact(target_size=target_size,
                                  writer_properties=WriterProperties(max_row_group_size=ROW_GROUP_ROWS))


class FileCountGuard:
    """Counts the appends a process made to one table and compacts it every `every` of them."""

    def __init__(self, every: int = ONLINE_EVERY, target_size: int = ONLINE_TARGET_SIZE) -> None:
        self.every = every
        self.target_size = target_size
        self._appends = 0

    def after_commit(self, table: DeltaTable) -> bool:
        """Count one append; True when this call compacted (the table object is at that commit)."""
        self._appends += 1
        if self._appends < self.every:
            return False
        self._appends = 0
        try:
            metrics = compact(table, self.target_size)
        except CommitFailedError:  # another writer's optimize or rewrite won; the next round retries
            log.info("%s: online compaction lost a commit race; retried later", table.table_uri)
            return False
        return bool(metrics.get("numFilesAdded"))
