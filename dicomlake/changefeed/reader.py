"""Reading the change feed: by sequence, by time window, or the latest entry.

The feed is the `changes` Delta table. Its seq is dense from 1, so a page "after offset N, up to
limit L" is exactly the rows with N < seq <= N + L: the engine reads only the files whose seq
statistics overlap that range. Timestamps never decrease along seq, so a time window is a seq range
too. An entry's `state` is derived from the feed alone: a later change whose `previous_seq` points at
the entry replaced (update) or deleted (delete) it; otherwise it is current.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from dicomlake.changefeed.files import FeedFiles, states
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.read import scan

MAX_LIMIT = 10_000
ENTRY_COLUMNS = [
    "seq",
    "action",
    "changed_at",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "sop_class_uid",
    "blob_key",
]


@dataclass(frozen=True)
class ChangeFeedEntry:
    sequence: int
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str | None
    action: str  # create | update | delete
    timestamp: dt.datetime  # UTC
    state: str  # current | replaced | deleted
    tenant: str
    blob: str | None  # tenant-relative blob key of this version; None for a delete
    metadata: dict[str, Any] | None = None  # DICOM JSON of this version, when asked for

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["timestamp"] = self.timestamp.isoformat()
        return data


def _check_page(offset: int, limit: int) -> None:
    if offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")


def _utc_literal(moment: dt.datetime, name: str) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} needs a time zone (e.g. 2026-11-28T10:00:00+00:00)")
    return "'" + moment.astimezone(dt.UTC).isoformat() + "'"


class ChangeFeed:
    """A read-only view of one tenant's change feed. Cheap to create; safe to share per thread."""

    def __init__(self, tenant: TenantStore) -> None:
        self.tenant = tenant
        self._table = tenant.table("changes")
        self._files = FeedFiles(self._table, tenant.lakehouse.filesystem())
        self._schema = pa.schema(self._table.schema().to_arrow())
        self._schemas = {  # the page columns' schema, with and without metadata
            flag: pa.schema([self._schema.field(c) for c in self._columns(flag)]) for flag in (False, True)
        }
        self._tenants = pa.array([], pa.string())  # the tenant column of the longest page so far

    def latest_sequence(self) -> int:
        self._files.refresh()  # one log check per call; the file list moves only with the version
        return self._files.latest_seq

    # -- columnar pages (the fast path; entries are built from these) ----------------------------
    def read_arrow(self, offset: int = 0, limit: int = 100, include_metadata: bool = False) -> pa.Table:
        """Entries with offset < sequence <= offset + limit, in order, as an Arrow table."""
        _check_page(offset, limit)
        upper = min(offset + limit, self.latest_sequence())
        if upper <= offset:
            return self._with_states(self._empty(include_metadata))
        # Entries with their state, a slice of the reader's cache of decoded blocks.
        columns = self._columns(include_metadata)
        page = self._files.page(offset, upper, columns, self._schemas[include_metadata])
        return page.append_column("tenant", self._tenant_column(page.num_rows))

    def read_window_arrow(
        self,
        start_time: dt.datetime,
        end_time: dt.datetime,
        offset: int = 0,
        limit: int = 100,
        include_metadata: bool = False,
    ) -> pa.Table:
        """Entries with start_time <= timestamp < end_time, skipping `offset` of them, in order."""
        _check_page(offset, limit)
        start, end = _utc_literal(start_time, "start_time"), _utc_literal(end_time, "end_time")
        if end_time <= start_time:
            raise ValueError("end_time must be after start_time")
        self._table.update_incremental()
        page = scan(
            self._table,
            self._columns(include_metadata),
            where=f"changed_at >= {start} AND changed_at < {end}",
            order_by="seq",
            limit=limit,
            offset=offset,
        )
        return self._with_states(page)

    # -- entries ---------------------------------------------------------------------------------
    def read(
        self, offset: int = 0, limit: int = 100, include_metadata: bool = False
    ) -> list[ChangeFeedEntry]:
        return self._entries(self.read_arrow(offset, limit, include_metadata))

    def read_window(
        self,
        start_time: dt.datetime,
        end_time: dt.datetime,
        offset: int = 0,
        limit: int = 100,
        include_metadata: bool = False,
    ) -> list[ChangeFeedEntry]:
        return self._entries(self.read_window_arrow(start_time, end_time, offset, limit, include_metadata))

    def latest(self, include_metadata: bool = False) -> ChangeFeedEntry | None:
        last = self.latest_sequence()
        entries = self.read(last - 1, 1, include_metadata) if last else []
        return entries[0] if entries else None

    # -- internals -------------------------------------------------------------------------------
    def _columns(self, include_metadata: bool) -> list[str]:
        return ENTRY_COLUMNS + (["dicom_json"] if include_metadata else [])

    def _empty(self, include_metadata: bool) -> pa.Table:
        return self._schemas[include_metadata].empty_table()

    def _tenant_column(self, rows: int) -> pa.Array:
        if len(self._tenants) < rows:
            self._tenants = pa.repeat(self.tenant.name, rows).cast(pa.string())
        return self._tenants.slice(0, rows)

    def _with_states(self, page: pa.Table) -> pa.Table:
        """Add `state` (and `tenant`): look up the changes that supersede the page's entries."""
        rows = page.num_rows
        state = pa.array([], pa.string())
        if rows:
            self._files.refresh()
            seqs = page.column("seq")
            successors = self._files.successors(seqs[0].as_py(), seqs[rows - 1].as_py())
            state = states(seqs, page.column("action"), successors)
        page = page.append_column("state", state)
        return page.append_column("tenant", self._tenant_column(rows))

    def _entries(self, page: pa.Table) -> list[ChangeFeedEntry]:
        rows = page.to_pylist()
        return [
            ChangeFeedEntry(
                sequence=row["seq"],
                study_instance_uid=row["study_instance_uid"],
                series_instance_uid=row["series_instance_uid"],
                sop_instance_uid=row["sop_instance_uid"],
                sop_class_uid=row["sop_class_uid"],
                action=row["action"],
                timestamp=row["changed_at"],
                state=row["state"],
                tenant=row["tenant"],
                blob=row["blob_key"],
                metadata=json.loads(row["dicom_json"]) if row.get("dicom_json") else None,
            )
            for row in rows
        ]
