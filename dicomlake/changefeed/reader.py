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
import pyarrow.compute as pc

from dicomlake.store.committer import latest_seq
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.read import scan

MAX_LIMIT = 10_000
_ENTRY_COLUMNS = [
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

    def latest_sequence(self) -> int:
        self._table.update_incremental()
        return latest_seq(self._table)

    # -- columnar pages (the fast path; entries are built from these) ----------------------------
    def read_arrow(self, offset: int = 0, limit: int = 100, include_metadata: bool = False) -> pa.Table:
        """Entries with offset < sequence <= offset + limit, in order, as an Arrow table."""
        _check_page(offset, limit)
        upper = min(offset + limit, self.latest_sequence())
        if upper <= offset:
            return self._with_states(self._empty(include_metadata))
        page = scan(
            self._table,
            self._columns(include_metadata),
            where=f"seq > {int(offset)} AND seq <= {int(upper)}",
            order_by="seq",
        )
        return self._with_states(page)

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
            order_by=f"seq LIMIT {int(limit)} OFFSET {int(offset)}",
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
        return _ENTRY_COLUMNS + (["dicom_json"] if include_metadata else [])

    def _empty(self, include_metadata: bool) -> pa.Table:
        schema = pa.schema(self._table.schema().to_arrow())
        return pa.schema([schema.field(c) for c in self._columns(include_metadata)]).empty_table()

    def _with_states(self, page: pa.Table) -> pa.Table:
        """Add `state` (and `tenant`): look up the changes that supersede the page's entries."""
        states = pa.array([], pa.string())
        if page.num_rows:
            seqs = page.column("seq")
            lowest, highest = pc.min(seqs).as_py(), pc.max(seqs).as_py()
            successors = scan(
                self._table,
                ["previous_seq", "action"],
                where=f"previous_seq >= {int(lowest)} AND previous_seq <= {int(highest)}",
            )
            by_previous = dict(
                zip(
                    successors.column("previous_seq").to_pylist(),
                    successors.column("action").to_pylist(),
                    strict=True,
                )
            )
            states = pa.array(
                [
                    "deleted"
                    if action == "delete"
                    else {"update": "replaced", "delete": "deleted"}.get(by_previous.get(seq, ""), "current")
                    for seq, action in zip(seqs.to_pylist(), page.column("action").to_pylist(), strict=True)
                ],
                pa.string(),
            )
        page = page.append_column("state", states)
        return page.append_column("tenant", pa.array([self.tenant.name] * page.num_rows, pa.string()))

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
