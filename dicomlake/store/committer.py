"""The one way rows enter the change feed: a dense, gapless `seq`, safe under concurrent writers.

Each commit to `changes` carries a Delta app-transaction action (`txn`, app id CHANGES_APP) whose
version is the last seq in the commit. Two writers that read the same table version both carry that
app id, so Delta's conflict checker lets exactly one commit win; the loser re-reads the feed,
re-decides create/update/unchanged against what the winner wrote, and tries again. The same
`txn` version tells any reader the latest seq without scanning data. Measured here: three processes
appending at once never duplicate or skip a seq (tests/store/test_concurrency.py).

`instances` is a projection of `changes`, tagged with the seq it reflects (app id PROJECTION_APP). It
is brought up to date after each write and before each read; if a process dies between the two
commits, the next writer or reader catches it up: `changes` is the source of truth.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from dicomlake.errors import DicomlakeError
from dicomlake.store.blobs import fsync_path
from dicomlake.store.compaction import FileCountGuard
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.log import app_version, remember_app_version, update_if_moved
from dicomlake.store.read import scan
from dicomlake.store.schemas import CHANGES, INSTANCES, QUARANTINE

CHANGES_APP = "dicomlake.changes"
PROJECTION_APP = "dicomlake.instances"
MAX_ATTEMPTS = 200


class CommitConflict(DicomlakeError):
    """Gave up after too many optimistic-concurrency conflicts (only under extreme contention)."""


@dataclass
class CommitOutcome:
    """What one commit did; `actions` has one entry per input version, in input order."""

    actions: list[str] = field(default_factory=list)  # create | update | unchanged
    first_seq: int | None = None
    last_seq: int | None = None
    rows: pa.Table | None = None  # exactly what was appended to `changes`

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a == action)


def _backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.005 * 2 ** min(attempt, 7)) * random.uniform(0.5, 1.5))


def make_durable(table: DeltaTable, version: int | None = None) -> None:
    """fsync the table's commit `version` (default: the latest): its log entry, the data files it
    adds, their folders.

    delta-rs's local store renames files into place without fsync; the feed promises that a change
    it reported is on disk, and drop files are removed on that promise. Object stores need nothing.
    """
    uri = table.table_uri
    if not uri.startswith("file://"):
        return
    root = Path(unquote(uri.removeprefix("file://")))
    entry = root / "_delta_log" / f"{table.version() if version is None else version:020d}.json"
    touched = [entry]
    for line in entry.read_text().splitlines():
        add = json.loads(line).get("add")
        if add:
            touched.append(root / unquote(add["path"]))
    for path in touched:
        fsync_path(path)
    for folder in {path.parent for path in touched}:
        fsync_path(folder)


def latest_seq(table: DeltaTable) -> int:
    return app_version(table, CHANGES_APP)


class Committer:
    """Writes instance versions and deletions to one tenant's change feed.

    Keeps an in-memory map SOP Instance UID -> sha256 of the current version (None when deleted),
    refreshed incrementally from the feed, so deciding create/update/unchanged costs no table scan.

    Bytes equal to a version that a newer one already replaced are 'unchanged' too: re-delivering
    an old file (a rerun of a drop, a resent STOW) must never roll an instance back, and this makes
    every rerun idempotent whatever order its files arrive in.
    """

    def __init__(self, tenant: TenantStore) -> None:
        self.tenant = tenant
        self._changes = tenant.table("changes")
        self._instances: DeltaTable | None = None  # opened on the first sync_instances
        # Many small commits from a long-lived committer (a STOW server): compact as it goes.
        self._compaction = {"changes": FileCountGuard(), "instances": FileCountGuard()}
        self._current: dict[str, tuple[str, int] | None] = {}  # UID -> (sha256, seq) of current version
        self._replaced: dict[str, set[str]] = {}  # only for UIDs that had more than one version
        self._state_seq = 0
        self._last_changed_at: dt.datetime | None = None

    # -- state -----------------------------------------------------------------------------
    def _refresh(self) -> int:
        update_if_moved(self._changes)
        last = latest_seq(self._changes)
        if last > self._state_seq:
            seen = scan(
                self._changes,
                ["seq", "action", "sop_instance_uid", "sha256", "changed_at"],
                where=f"seq > {int(self._state_seq)} AND seq <= {int(last)}",
                order_by="seq",
            )
            for seq, action, sop, sha in zip(
                seen.column("seq").to_pylist(),
                seen.column("action").to_pylist(),
                seen.column("sop_instance_uid").to_pylist(),
                seen.column("sha256").to_pylist(),
                strict=True,
            ):
                self._apply(sop, action, sha, seq)
            if seen.num_rows:
                newest = seen.column("changed_at")[-1].as_py()
                self._last_changed_at = max(filter(None, [self._last_changed_at, newest]))
            self._state_seq = last
        return last

    def _apply(self, sop: str, action: str, sha: str | None, seq: int) -> None:
        previous = self._current.get(sop)
        if action == "update" and previous:
            self._replaced.setdefault(sop, set()).add(previous[0])
        self._current[sop] = None if action == "delete" else (sha, seq)  # type: ignore[assignment]

    def sync_instances(self, just_committed: CommitOutcome | None = None) -> int:
        """`sync_instances` for this committer's tenant, on tables it keeps open between calls."""
        if self._instances is None:
            self._instances = self.tenant.table("instances")
        before = self._instances.version()
        seq = sync_instances(self.tenant, just_committed, changes=self._changes, instances=self._instances)
        moved = self._instances.version() != before
        if moved and (compacted := self._compaction["instances"].after_commit(self._instances)) is not None:
            make_durable(self._instances, compacted)
        return seq

    def current_sha256(self, sop_instance_uid: str) -> str | None:
        self._refresh()
        current = self._current.get(sop_instance_uid)
        return current[0] if current else None

    def _now(self) -> dt.datetime:
        # Timestamps never go backwards along seq, even across processes with skewed clocks.
        now = dt.datetime.now(dt.UTC)
        if self._last_changed_at and now <= self._last_changed_at:
            now = self._last_changed_at + dt.timedelta(microseconds=1)
        return now

    # -- writes ----------------------------------------------------------------------------
    def commit_versions(self, versions: Sequence[dict[str, Any]], operation: str = "ingest") -> CommitOutcome:
        """Append a create/update change for each version whose bytes are new for its SOP UID.

        Each version is a row of the instances schema minus seq/changed_at (see ingest.worker).
        """
        return self._commit(lambda current: _plan_versions(versions, current, self._replaced), operation)

    def commit_deletes(self, identities: Sequence[dict[str, Any]], source: str) -> CommitOutcome:
        """Append a delete change for each listed instance that still exists ('unchanged' if not).

        Each identity holds the study/series/SOP instance UIDs and the SOP class UID of the instance.
        """
        return self._commit(lambda current: _plan_deletes(identities, source, current), "delete")

    def _commit(self, plan, operation: str) -> CommitOutcome:
        for attempt in range(MAX_ATTEMPTS):
            last = self._refresh()
            actions, rows = plan(self._current)
            outcome = CommitOutcome(actions=actions)
            if not rows:
                return outcome
            changed_at = self._now()
            for offset, row in enumerate(rows, start=1):
                row["seq"] = last + offset
                row["changed_at"] = changed_at
            for row in rows:  # supersessions inside this commit: plan index -> the seq just given
                if row["previous_seq"] is not None and row["previous_seq"] < 0:
                    row["previous_seq"] = last - row["previous_seq"]
            table = pa.Table.from_pylist(rows, schema=CHANGES)
            new_last = last + len(rows)
            try:
                write_deltalake(
                    self._changes,
                    table,
                    mode="append",
                    commit_properties=CommitProperties(
                        app_transactions=[Transaction(app_id=CHANGES_APP, version=new_last)],
                        custom_metadata={
                            "dicomlake.operation": operation,
                            "dicomlake.seq": f"{last + 1}-{new_last}",
                        },
                    ),
                )
            except CommitFailedError:
                _backoff(attempt)
                continue
            make_durable(self._changes)  # the table object now stands at exactly our commit
            remember_app_version(self._changes, CHANGES_APP, new_last)
            if (compacted := self._compaction["changes"].after_commit(self._changes)) is not None:
                make_durable(self._changes, compacted)
            for row in rows:
                self._apply(row["sop_instance_uid"], row["action"], row["sha256"], row["seq"])
            self._state_seq = new_last
            self._last_changed_at = changed_at
            outcome.first_seq, outcome.last_seq, outcome.rows = last + 1, new_last, table
            return outcome
        raise CommitConflict(f"{self.tenant.name}: no commit after {MAX_ATTEMPTS} attempts")


Current = dict[str, "tuple[str, int] | None"]


def _plan_versions(versions: Sequence[dict[str, Any]], current: Current, replaced: dict[str, set[str]]):
    """Decide each version's action; rows carry `previous_seq` as an index into this plan (-n-1)
    when they supersede a row of the same plan, resolved to a real seq by _commit."""
    actions: list[str] = []
    rows: list[dict[str, Any]] = []
    pending: dict[str, tuple[str, int]] = {}  # UID -> (sha, -(row index) - 1) within this plan
    pending_replaced: dict[str, set[str]] = {}
    for version in versions:
        sop, sha = version["sop_instance_uid"], version["sha256"]
        existing = pending[sop] if sop in pending else current.get(sop)
        old = replaced.get(sop, set()) | pending_replaced.get(sop, set())
        if existing is not None and (existing[0] == sha or sha in old):
            actions.append("unchanged")
            continue
        action = "create" if existing is None else "update"
        actions.append(action)
        rows.append({**version, "action": action, "previous_seq": existing[1] if existing else None})
        if existing is not None:
            pending_replaced.setdefault(sop, set()).add(existing[0])
        pending[sop] = (sha, -len(rows))
    return actions, rows


IDENTITY = ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid")


def _plan_deletes(identities: Sequence[dict[str, Any]], source: str, current: Current):
    actions: list[str] = []
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for identity in identities:
        sop = identity["sop_instance_uid"]
        existing = current.get(sop)
        if existing is None or sop in seen:
            actions.append("unchanged")
            continue
        seen.add(sop)
        actions.append("delete")
        rows.append(
            {
                **{k: identity[k] for k in IDENTITY},
                "action": "delete",
                "source": source,
                "sha256": None,
                "previous_seq": existing[1],
            }
        )
    return actions, rows


# -- the instances projection ----------------------------------------------------------------


PROJECTION_WINDOW = 5000  # seqs per projection commit: bounds memory however far behind it is


def sync_instances(tenant: TenantStore, just_committed: CommitOutcome | None = None, *,
                   changes: DeltaTable | None = None, instances: DeltaTable | None = None) -> int:
    """Bring `instances` up to the latest seq of `changes`; return the seq it now reflects.

    `just_committed` (the outcome of the commit that just happened) lets the common case, a batch
    of creates right after the seq the projection reflects, append those rows without reading them
    back from the feed. A long-lived caller passes its own open `changes` / `instances` tables:
    they are brought up to date incrementally instead of being opened (the whole log read) again.
    """
    changes = changes if changes is not None else tenant.table("changes")
    instances = instances if instances is not None else tenant.table("instances")
    conflicts = 0
    while True:  # one window per pass; only conflicts count against the retry budget
        update_if_moved(instances)
        applied = app_version(instances, PROJECTION_APP)
        update_if_moved(changes)
        latest = latest_seq(changes)
        if applied >= latest:
            return applied
        rows = just_committed.rows if just_committed else None
        if (rows is not None and just_committed.first_seq == applied + 1
                and pc.all(pc.equal(rows.column("action"), "create")).as_py()):
            upper, window = just_committed.last_seq, None
        else:
            upper = min(latest, applied + PROJECTION_WINDOW)
            window = pl.from_arrow(
                scan(changes, where=f"seq > {int(applied)} AND seq <= {int(upper)}", order_by="seq")
            )
        txn = CommitProperties(
            app_transactions=[Transaction(app_id=PROJECTION_APP, version=upper)],
            custom_metadata={"dicomlake.operation": "project", "dicomlake.seq": str(upper)},
        )
        try:
            if window is None:
                write_deltalake(instances, rows.select(INSTANCES.names).cast(INSTANCES), mode="append",
                                commit_properties=txn)
            else:
                _project_window(instances, window, txn)
        except CommitFailedError as exc:
            conflicts += 1
            if conflicts >= MAX_ATTEMPTS:
                raise CommitConflict(f"{tenant.name}: instances projection did not commit") from exc
            _backoff(conflicts)
            continue
        remember_app_version(instances, PROJECTION_APP, upper)
        just_committed = None  # used once; anything further comes from the feed


def _project_window(instances: DeltaTable, window: pl.DataFrame, txn: CommitProperties) -> None:
    first_actions = window.group_by("sop_instance_uid", maintain_order=True).agg(pl.col("action").first())
    last_rows = window.group_by("sop_instance_uid", maintain_order=True).last().sort("seq")
    if (first_actions["action"] == "create").all():
        # Every UID in the window starts with a create, so none is in the projection yet.
        upserts = last_rows.filter(pl.col("action") != "delete")
        write_deltalake(instances, _as_instances(upserts), mode="append", commit_properties=txn)
        return
    (
        instances.merge(
            _as_instances(last_rows, keep_action=True),
            predicate="t.sop_instance_uid = s.sop_instance_uid",
            source_alias="s",
            target_alias="t",
            commit_properties=txn,
        )
        .when_matched_delete(predicate="s.action = 'delete'")
        .when_matched_update_all(predicate="s.action <> 'delete'", except_cols=["action"])
        .when_not_matched_insert_all(predicate="s.action <> 'delete'", except_cols=["action"])
        .execute()
    )


def _as_instances(frame: pl.DataFrame, keep_action: bool = False) -> pa.Table:
    schema = INSTANCES
    if keep_action:
        schema = schema.append(pa.field("action", pa.string()))
    return frame.select(schema.names).to_arrow().cast(schema)


def record_quarantine(tenant: TenantStore, entries: Sequence[dict[str, Any]]) -> int:
    """Append quarantine rows not already recorded for the same bytes and source; return how many."""
    if not entries:
        return 0
    table = tenant.table("quarantine")
    known = scan(table, ["sha256", "source"])
    seen = set(zip(known.column("sha256").to_pylist(), known.column("source").to_pylist(), strict=True))
    fresh, keys = [], set()
    for entry in entries:
        key = (entry["sha256"], entry["source"])
        if key in seen or key in keys:
            continue
        keys.add(key)
        fresh.append(entry)
    if fresh:
        write_deltalake(table, pa.Table.from_pylist(fresh, schema=QUARANTINE), mode="append")
    return len(fresh)
