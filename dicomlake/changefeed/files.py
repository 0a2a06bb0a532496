"""Sequential pages straight from the feed's data files, cached: the fast path for paging readers.

Delta data files never change once written, and the feed never changes the entry at a seq once it is
committed, so decoded rows can be cached for as long as the files they came from are in the table.
The cache holds *blocks*: decoded rows holding every entry with lo < seq <= hi for some range
(lo, hi], in seq order, one chunk per column, with the entries' derived `state`. A page "after offset
N" is then a zero-copy slice of a block (or two slices copied into one chunk, where it straddles
two blocks); the previous page's block is checked first, so paging costs no lookup at all.

A block is built from the files whose seq statistics (from the Delta log, re-read only when the table
version moves) overlap its range, and inside large files from the row groups whose parquet
statistics do. A reader paging forward gets the following files too (READ_AHEAD_ROWS), and local
files are decoded in one native multi-threaded call (polars) per block: that is what makes paging
through a log of thousands of small commit files about as fast as one columnar read of the table. A
reader seeking one page decodes only the file or row group holding it, however large the table. A
reader paging forward frees each block once it has read past it: the cache (cache_bytes, least
recently used first) keeps what seeks and re-reads may want, not the whole history read.

`state` needs the changes superseding an entry (updates/deletes pointing back at it through their
`previous_seq`). Those are found through the `previous_seq` statistics: files without any (most of
them) are never opened for that. A block keeps its states until the set of superseding files changes
(a new update or delete, or a compaction), then derives them again on its next use.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

import fsspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from dicomlake.store.committer import CHANGES_APP
from dicomlake.store.log import LogFollower

DEFAULT_CACHE_BYTES = 512 * 1024 * 1024
# A sequential reader will want the next files too: decoding them together amortises the per-file
# cost (opening, parquet footers) that dominates small files, and makes each page a cheap slice.
READ_AHEAD_ROWS = 65_536  # about two compacted row groups, or dozens of small commit files
# Files this small have a single row group (writers start a new one far later): no footer needed.
SINGLE_GROUP_ROWS = 32_768
_READERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dicomlake-feed")
STATE = pa.field("state", pa.string())  # as read_window_arrow and earlier versions give it


@dataclass(frozen=True)
class _DataFile:
    path: str
    min_seq: int
    max_seq: int
    num_records: int
    has_successors: bool  # some row has a previous_seq
    min_previous: int | None
    max_previous: int | None


@dataclass(frozen=True)
class _Group:
    """A row group of a data file (index -1: the whole file) and its seq range."""

    path: str
    index: int
    low: int
    high: int


class _Block:
    """Decoded rows in seq order, one chunk, with `state`: every row with lower < seq <= upper (and,
    when read a row group at a time, maybe some around it, which this block never serves)."""

    __slots__ = ("columns", "epoch", "key", "lower", "nbytes", "paths", "seqs", "table", "upper")

    def __init__(
        self, lower: int, upper: int, columns: tuple[str, ...], table: pa.Table, paths: frozenset[str]
    ) -> None:
        self.lower, self.upper, self.columns, self.table, self.paths = lower, upper, columns, table, paths
        self.key = ("block", lower, upper, columns)
        self.seqs = table.column("seq").to_numpy()
        self.epoch = -1  # of the superseding files the `state` column was derived from
        self.nbytes = table.nbytes

    def slice(self, lower: int, upper: int) -> pa.Table:
        start = int(self.seqs.searchsorted(lower, side="right"))
        stop = int(self.seqs.searchsorted(upper, side="right"))
        return self.table.slice(start, stop - start)


def states(seqs: pa.ChunkedArray, actions: pa.ChunkedArray, successors: pa.Table) -> pa.Array:
    """Each entry's state: `deleted` for a delete, else what supersedes it (update/delete) or `current`."""
    deletes = len(actions) and pc.any(pc.equal(actions, "delete")).as_py()
    if successors.num_rows == 0 and not deletes:
        return pa.repeat("current", len(seqs)).cast(pa.string())  # the common case
    position = pc.index_in(seqs, value_set=successors.column("previous_seq"))
    superseded_by = pc.take(successors.column("action"), position)
    state = pc.if_else(
        pc.equal(actions, "delete"),
        "deleted",
        pc.if_else(
            pc.is_null(superseded_by),
            "current",
            pc.if_else(pc.equal(superseded_by, "update"), "replaced", "deleted"),
        ),
    )
    return state.combine_chunks() if isinstance(state, pa.ChunkedArray) else state


def _typed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table's declared types (polars hands out string views, pyarrow what the file says)."""
    return table if table.schema.equals(schema) else table.cast(schema)


def _in_seq_order(table: pa.Table) -> pa.Table:
    """`table` ordered by seq. Commits write in seq order; a compaction may write its inputs in
    another order (delta-rs: roughly newest first), i.e. runs of consecutive seqs out of order:
    then whole runs are put in order (slices, one copy) rather than every row sorted (a gather)."""
    seqs = table.column("seq").to_numpy()
    if not np.any(seqs[1:] < seqs[:-1]):
        return table
    breaks = np.flatnonzero(seqs[1:] != seqs[:-1] + 1) + 1
    starts, ends = np.r_[0, breaks], np.r_[breaks, len(seqs)]
    order = np.argsort(seqs[starts], kind="stable")
    starts, ends = starts[order], ends[order]
    if np.any(seqs[starts[1:]] < seqs[ends[:-1] - 1]):  # runs interleave: a real sort
        return table.sort_by("seq")
    return pa.concat_tables([table.slice(a, b - a) for a, b in zip(starts, ends, strict=True)])


class FeedFiles:
    """The data files of one `changes` table with an LRU cache of decoded blocks."""

    def __init__(
        self, table: DeltaTable, filesystem: fsspec.AbstractFileSystem, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        self.table = table
        self.filesystem = filesystem
        self.cache_bytes = cache_bytes
        self._version = -1
        self.log = LogFollower(table, filesystem, stats_columns=("seq", "previous_seq"), apps=(CHANGES_APP,))
        self.latest_seq = 0  # the feed's last seq at the version we hold
        self._files: list[_DataFile] = []
        self._superseding: list[_DataFile] = []
        self._epoch = 0  # moves whenever the superseding files do: block states are then stale
        self._reach = np.empty(0, dtype=np.int64)  # the highest max seq of each file and those before it
        # Blocks and (for successors) whole-file tables, least recently used first.
        self._cache: OrderedDict[tuple, _Block | pa.Table] = OrderedDict()
        self._hot: _Block | None = None  # the block of the previous page: checked first
        self._footers: dict[str, list[tuple[int, int, int]]] = {}
        self._last_upper = 0  # where the previous page ended: a page starting there is sequential
        self._cached_bytes = 0
        self._root = table.table_uri.rstrip("/")
        self._local = self._root.startswith("file://")

    def refresh(self) -> None:
        """Catch up with the table: one log entry read per new commit (store.log.LogFollower)."""
        if not self.log.refresh() and self._version >= 0:
            return
        files = []
        for data_file in self.log.files.values():
            low, high = data_file.min.get("seq"), data_file.max.get("seq")
            if data_file.num_records == 0 or low is None or high is None:
                continue
            nulls = data_file.null_count.get("previous_seq")
            files.append(
                _DataFile(
                    path=data_file.path,
                    min_seq=int(low),
                    max_seq=int(high),
                    num_records=data_file.num_records,
                    has_successors=nulls is None or nulls < data_file.num_records,
                    min_previous=data_file.min.get("previous_seq"),
                    max_previous=data_file.max.get("previous_seq"),
                )
            )
        files.sort(key=lambda f: f.min_seq)
        superseding = [f for f in files if f.has_successors]  # few: only updates and deletes
        if [f.path for f in superseding] != [f.path for f in self._superseding]:
            self._epoch += 1
        self._files = files
        self._superseding = superseding
        self._reach = np.maximum.accumulate(np.array([f.max_seq for f in files], dtype=np.int64))
        self.latest_seq = self.log.app_versions.get(CHANGES_APP) or 0
        self._forget_removed({f.path for f in files})
        self._version = self.log.version

    def _forget_removed(self, paths: set[str]) -> None:
        """Drop what was decoded from files no longer in the table (compacted): serve only live files."""
        for key, value in list(self._cache.items()):
            held = value.paths if isinstance(value, _Block) else {key[1]}
            if not held <= paths:
                self._drop(key)

    # -- pages -----------------------------------------------------------------------------------
    def page(self, lower: int, upper: int, columns: list[str], schema: pa.Schema) -> pa.Table:
        """Rows with lower < seq <= upper, ordered by seq, with exactly `columns` (typed as in
        `schema`) and `state`, as one chunk."""
        hot = self._hot
        forward = lower == self._last_upper
        self._last_upper = upper
        if (
            hot is not None
            and hot.lower <= lower
            and upper <= hot.upper
            and hot.epoch == self._epoch
            and hot.columns == tuple(columns)
        ):
            return hot.slice(lower, upper)  # the common case when paging: no lookups at all
        try:
            return self._page(lower, upper, columns, schema, forward)
        except FileNotFoundError:
            # Our file list predates a compaction + vacuum: the rows now live in other files.
            self.log.version = -1  # a full reload of the file list
            self.refresh()
            return self._page(lower, upper, columns, schema, forward)

    def _page(self, lower: int, upper: int, columns: list[str], schema: pa.Schema, forward: bool) -> pa.Table:
        parts = []
        position = lower
        key = tuple(columns)
        while position < upper:
            block = self._find(position, key)
            if block is None:
                passed = self._hot
                if forward and passed is not None and passed.upper == position and passed.columns == key:
                    # A reader paging forward has read all of it and will not come back: free it
                    # before decoding the next block, rather than fill the cache with history.
                    self._drop(passed.key)
                ahead = READ_AHEAD_ROWS if forward else 0  # a seek decodes only what it asked for
                block = self._build(position, upper, ahead, key, schema)
            if block.epoch != self._epoch:
                self._derive_states(block)
            self._hot = block
            stop = min(upper, block.upper)
            part = block.slice(position, stop)
            if part.num_rows:
                parts.append(part)
            position = stop
        if not parts:
            return pa.schema([*schema, STATE]).empty_table()
        # One chunk whatever the file layout, so a page's bytes do not change with compaction.
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts).combine_chunks()

    def _find(self, position: int, columns: tuple[str, ...]) -> _Block | None:
        """The cached block holding seq position + 1 (the first row of a page after `position`)."""
        for key in reversed(self._cache):  # most recently used first
            block = self._cache[key]
            if (
                isinstance(block, _Block)
                and block.columns == columns
                and block.lower <= position < block.upper
            ):
                self._cache.move_to_end(key)
                return block
        return None

    def _build(
        self, lower: int, upper: int, ahead: int, columns: tuple[str, ...], schema: pa.Schema
    ) -> _Block:
        """Decode the row groups holding (lower, upper + ahead]: a block that serves that range."""
        high = max(upper, min(upper + ahead, self.latest_seq))
        groups = self._groups_between(lower, high)
        # Serve up to the end of what was decoded, short of any row group left out (a compacted file's
        # row groups may interleave their seqs): the next block starts where this one can't answer.
        reach = max([high] + [g.high for g in groups])
        if reach > high:
            chosen = set(groups)
            others = [g for g in self._groups_between(high, reach) if g not in chosen]
            high = min([reach] + [g.low - 1 for g in others])
        table = self._decode_groups(groups, list(columns), schema, lower, high)
        table = table.append_column(STATE, pa.nulls(table.num_rows, pa.string()))
        block = _Block(lower, high, columns, table.combine_chunks(), frozenset(g.path for g in groups))
        self._derive_states(block)
        block.nbytes = block.table.nbytes
        self._remember(block.key, block)
        return block

    def _derive_states(self, block: _Block) -> None:
        """(Re)compute the block's `state` column from the superseding files we now know of."""
        table = block.table
        seqs = block.seqs  # may reach beyond the block's range, at the ends of its row groups
        successors = self.successors(int(seqs[0]), int(seqs[-1])) if len(seqs) else _NO_SUCCESSORS
        state = states(table.column("seq"), table.column("action"), successors)
        block.table = table.set_column(table.num_columns - 1, STATE, state)
        block.epoch = self._epoch

    def _groups_between(self, lower: int, upper: int) -> list[_Group]:
        """Every row group holding a seq in (lower, upper], in file order."""
        groups = []
        first = int(np.searchsorted(self._reach, lower, side="right"))  # files before end at or below lower
        for data_file in self._files[first:]:
            if data_file.min_seq > upper:
                break
            if data_file.max_seq <= lower:
                continue
            for index, low, high in self._row_groups(data_file):
                if low <= upper and high > lower:
                    groups.append(_Group(data_file.path, index, low, high))
        return groups

    def _row_groups(self, data_file: _DataFile) -> list[tuple[int, int, int]]:
        """(index, min seq, max seq) of each row group of a file, from its parquet footer.

        Index -1 stands for the whole file, used for files too small to have several groups.
        """
        if data_file.num_records <= SINGLE_GROUP_ROWS:
            return [(-1, data_file.min_seq, data_file.max_seq)]
        path = data_file.path
        known = self._footers.get(path)
        if known is None:
            metadata = self._open(path).metadata
            column = metadata.schema.names.index("seq")
            known = []
            for index in range(metadata.num_row_groups):
                stats = metadata.row_group(index).column(column).statistics
                known.append((index, stats.min, stats.max))
            self._footers[path] = known
        return known

    # -- supersessions ---------------------------------------------------------------------------
    def successors(self, lower: int, upper: int) -> pa.Table:
        """(previous_seq, action) of every change superseding a seq in [lower, upper]."""
        parts = []
        for data_file in self._superseding:
            if data_file.max_seq <= lower:
                continue
            if data_file.min_previous is not None and (
                data_file.min_previous > upper or (data_file.max_previous or 0) < lower
            ):
                continue
            table = self._whole_file(data_file.path, ["previous_seq", "action"])
            previous = table.column("previous_seq")
            keep = pc.and_(pc.greater_equal(previous, lower), pc.less_equal(previous, upper))
            parts.append(table.filter(pc.fill_null(keep, False)))
        if not parts:
            return _NO_SUCCESSORS
        return pa.concat_tables(parts)

    def _whole_file(self, path: str, columns: list[str]) -> pa.Table:
        key = ("file", path, tuple(columns))
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        table = self._decode(_Group(path, -1, 0, 0), columns)
        self._remember(key, table)
        return table

    # -- decoding --------------------------------------------------------------------------------
    def _decode_groups(
        self, groups: list[_Group], columns: list[str], schema: pa.Schema, lower: int, upper: int
    ) -> pa.Table:
        """The rows of `groups` (at least those with lower < seq <= upper), by seq, typed as `schema`.

        Local files are decoded in one native multi-threaded call (polars, which skips row groups
        by their statistics): per small file it costs a fraction of opening each with pyarrow, and
        it reads a long log of small commits about as fast as one columnar read of the table.
        Files on object stores go through pyarrow (fsspec), a row group at a time, two at a time.
        """
        if not groups:
            return schema.empty_table()
        if self._local:
            paths = list(dict.fromkeys(self._local_path(g.path) for g in groups))
            seq = pl.col("seq")
            frame = pl.scan_parquet(paths, glob=False, hive_partitioning=False, extra_columns="ignore")
            decoded = frame.select(columns).filter((seq > lower) & (seq <= upper)).collect()
            if not decoded.get_column("seq").is_sorted():
                decoded = decoded.sort("seq")  # commits write in seq order; a compaction may not
            # String views straight out of polars (no copy); the cast copies the strings once.
            table = decoded.rechunk().to_arrow(compat_level=pl.CompatLevel.newest())
        else:
            parts = list(_READERS.map(lambda g: self._decode(g, columns), groups))
            table = _in_seq_order(pa.concat_tables([_typed(p, schema) for p in parts]))
        return _typed(table, schema)

    def _local_path(self, path: str) -> str:
        uri = path if "://" in path else f"{unquote(self._root)}/{path}"  # log paths come decoded
        return uri.removeprefix("file://")

    def _open(self, path: str) -> pq.ParquetFile:
        uri = path if "://" in path else f"{self._root}/{path}"
        if uri.startswith("file://"):
            return pq.ParquetFile(uri.removeprefix("file://"))  # arrow's own local reader
        return pq.ParquetFile(self.filesystem.open(uri, "rb"))

    def _decode(self, group: _Group, columns: list[str]) -> pa.Table:
        """One row group (or, for index -1, the whole file) of `columns`."""
        # ParquetFile skips the dataset machinery of read_table: 3x cheaper on small files.
        reader = self._open(group.path)
        if group.index < 0:
            return reader.read(columns=columns, use_threads=False)
        return reader.read_row_group(group.index, columns=columns, use_threads=False)

    # -- the cache -------------------------------------------------------------------------------
    def _remember(self, key: tuple, value: _Block | pa.Table) -> None:
        self._cache[key] = value
        self._cached_bytes += value.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            self._drop(next(iter(self._cache)))

    def _drop(self, key: tuple) -> None:
        value = self._cache.pop(key, None)
        if value is None:
            return
        self._cached_bytes -= value.nbytes
        if value is self._hot:
            self._hot = None


_NO_SUCCESSORS = pa.table({"previous_seq": pa.array([], pa.int64()), "action": pa.array([], pa.string())})
