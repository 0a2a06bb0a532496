"""Indexing extended query tags: header values -> `tag_values`, problems -> `tag_errors`.

Per tag, the window (watermark, hi] of seqs is read from `instances` (the current versions: a
version that was replaced or deleted before its tag got to it is skipped, and records no errors).
Tags at the same watermark share one read and one commit per window. Order of effects per window:

  1. new errors: the tags concerned are disabled for querying in the catalog (auto), then the
     errors are appended to `tag_errors`, whose app transaction per tag marks the seq through
     which errors are recorded (errors at or below it are never written again);
  2. values are appended to `tag_values` in ONE commit that also moves each tag's watermark
     (app transaction per tag, as sync_instances does for `instances`);
  3. the catalog records progress: indexed_through, the error count, adding -> ready at the end.

A crash anywhere reruns cleanly: the watermark says what was committed; two indexers of the same
tag (an ingest and a reindex) conflict on its app transaction and the loser re-reads.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from dicomlake.errors import QueryTagNotFound
from dicomlake.store.committer import PROJECTION_APP, sync_instances
from dicomlake.store.read import scan
from dicomlake.store.schemas import TAG_ERRORS, TAG_VALUES
from dicomlake.tags.catalog import (
    MAX_ATTEMPTS,
    CatalogConflict,
    backoff,
    count_errors,
    find,
    load_catalog,
    mutate,
    watermark_app,
)
from dicomlake.tags.extract import extract
from dicomlake.tags.model import QueryTag

if TYPE_CHECKING:
    from dicomlake.store.committer import CommitOutcome
    from dicomlake.store.lakehouse import TenantStore

log = logging.getLogger(__name__)
DEFAULT_WINDOW = 5000
_ROW_COLUMNS = ["seq", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "dicom_json"]


@dataclass
class Progress:
    """Where an indexing run stands: `percent` of the seqs to cover, instance versions read."""

    percent: float
    processed: int
    total: int
    errors: int
    indexed_through: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[Progress], None]


@dataclass
class IndexSummary:
    latest_seq: int = 0
    tags: list[str] = field(default_factory=list)
    processed: int = 0
    values: int = 0
    errors: int = 0
    commits: int = 0
    ready: list[str] = field(default_factory=list)  # tags that became ready in this run
    disabled: list[str] = field(default_factory=list)  # tags auto-disabled for querying by errors
    indexed_through: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _select(tenant: TenantStore, keys: Iterable[str] | None, statuses: Iterable[str]) -> list[QueryTag]:
    catalog = load_catalog(tenant)
    statuses = tuple(statuses)
    if keys is None:
        return [tag for tag in catalog.values() if tag.status in statuses]
    chosen: dict[str, QueryTag] = {}
    for name in keys:
        tag = find(catalog, name)
        if tag.status == "deleting":
            raise QueryTagNotFound(f"extended query tag {tag.key!r} is being deleted")
        chosen[tag.key] = tag
    return [tag for tag in chosen.values() if tag.status in statuses]


def index_query_tags(
    tenant: TenantStore,
    keys: Iterable[str] | None = None,
    statuses: Iterable[str] = ("ready",),
    window: int = DEFAULT_WINDOW,
    progress: ProgressCallback | None = None,
    just_committed: CommitOutcome | None = None,
) -> IndexSummary:
    """Index the chosen tags (by key, keyword or path; default all in `statuses`) up to the latest seq.

    `just_committed` (an ingest's last commit) lets the common case skip reading the rows back.
    """
    if window < 1:
        raise ValueError("window must be at least 1")
    tags = _select(tenant, keys, statuses)
    summary = IndexSummary(tags=[tag.key for tag in tags])
    if not tags:
        return summary
    latest = sync_instances(tenant)
    summary.latest_seq = latest
    return _Indexer(tenant, tags, latest, window, progress, summary, just_committed).run()


class _Indexer:
    def __init__(self, tenant, tags, latest, window, progress, summary, just_committed) -> None:
        self.tenant: TenantStore = tenant
        self.tags: list[QueryTag] = tags
        self.latest: int = latest
        self.window: int = window
        self.progress: ProgressCallback | None = progress
        self.summary: IndexSummary = summary
        self.just_committed = just_committed
        self.values_table = tenant.table("tag_values")
        self.errors_table = tenant.table("tag_errors")
        self.start: dict[str, int] = {}
        self.total = 0

    def marks(self) -> dict[str, int]:
        self.values_table.update_incremental()
        return {t.key: self.values_table.transaction_version(watermark_app(t)) or 0 for t in self.tags}

    def run(self) -> IndexSummary:
        marks = self.marks()
        self.start = dict(marks)
        self._reconcile(marks)
        if self.progress:
            lowest = min(marks.values())
            if lowest < self.latest:
                instances = self.tenant.table("instances")
                where = f"seq > {int(lowest)} AND seq <= {int(self.latest)}"
                self.total = scan(instances, ["seq"], where=where).num_rows
            self._report(marks)
        conflicts = 0
        while True:
            marks = self.marks()
            pending = [t for t in self.tags if marks[t.key] < self.latest]
            if not pending:
                break
            low = min(marks[t.key] for t in pending)
            group = [t for t in pending if marks[t.key] == low]
            high = min(self.latest, low + self.window)
            try:
                self._window(group, low, high)
            except CommitFailedError:
                conflicts += 1
                if conflicts >= MAX_ATTEMPTS:
                    raise CatalogConflict(f"{self.tenant.name}: tag index did not commit") from None
                backoff(conflicts)
                continue
            if self.progress:
                self._report(self.marks())
        final = self.marks()
        self._finish(final)
        self.summary.indexed_through = {k: v for k, v in final.items() if v <= self.latest}
        return self.summary

    # -- one window --------------------------------------------------------------------------

    def _rows(self, low: int, high: int) -> list[tuple[int, str, str, str, str]]:
        done = self.just_committed
        if (done is not None and done.rows is not None and done.first_seq == low + 1
                and done.last_seq == high):
            table = done.rows
            keep: dict[str, int] = {}  # a SOP twice in one commit: only its last version is current
            for index, (sop, action) in enumerate(zip(table.column("sop_instance_uid").to_pylist(),
                                                      table.column("action").to_pylist(), strict=True)):
                if action == "delete":
                    keep.pop(sop, None)
                else:
                    keep[sop] = index
            picked = table.take(sorted(keep.values())).select(_ROW_COLUMNS)
        else:
            instances = self.tenant.table("instances")
            if (instances.transaction_version(PROJECTION_APP) or 0) < high:
                sync_instances(self.tenant)
                instances = self.tenant.table("instances")
            picked = scan(instances, _ROW_COLUMNS, where=f"seq > {int(low)} AND seq <= {int(high)}",
                          order_by="seq")
        return list(zip(*(picked.column(c).to_pylist() for c in _ROW_COLUMNS), strict=True))

    def _window(self, group: list[QueryTag], low: int, high: int) -> None:
        rows = self._rows(low, high)
        values: dict[str, list[Any]] = {name: [] for name in TAG_VALUES.names}
        problems: list[dict[str, Any]] = []
        now = dt.datetime.now(dt.UTC)
        for seq, study, series, sop, text in rows:
            if not text:
                continue
            header = orjson.loads(text)
            for tag in group:
                found, errors = extract(header, tag)
                for value in found:
                    values["tag_key"].append(tag.key)
                    values["seq"].append(seq)
                    values["study_instance_uid"].append(study)
                    values["series_instance_uid"].append(series)
                    values["sop_instance_uid"].append(sop)
                    values["value_string"].append(value.string)
                    values["value_int"].append(value.int)
                    values["value_float"].append(value.float)
                    values["value_date"].append(value.date)
                for problem in errors:
                    problems.append({"tag_key": tag.key, "seq": seq, "sop_instance_uid": sop,
                                     "error_code": problem.code, "message": problem.message,
                                     "recorded_at": now})
        txns = [Transaction(app_id=watermark_app(tag), version=high) for tag in group]
        metadata = {"dicomlake.operation": "index_tags", "dicomlake.seq": f"{low + 1}-{high}"}
        if problems:
            self.errors_table.update_incremental()
            recorded = {t.key: self.errors_table.transaction_version(watermark_app(t)) or 0 for t in group}
            problems = [p for p in problems if p["seq"] > recorded[p["tag_key"]]]
        if problems:
            failing = sorted({p["tag_key"] for p in problems})
            self._disable(failing)
            write_deltalake(self.errors_table, pa.Table.from_pylist(problems, schema=TAG_ERRORS),
                            mode="append", commit_properties=CommitProperties(app_transactions=txns,
                                                                              custom_metadata=metadata))
        write_deltalake(self.values_table, pa.Table.from_pydict(values, schema=TAG_VALUES), mode="append",
                        commit_properties=CommitProperties(app_transactions=txns, custom_metadata=metadata))
        self.summary.commits += 1
        self.summary.processed += len(rows)
        self.summary.values += len(values["seq"])
        self.summary.errors += len(problems)
        if problems or any(tag.status == "adding" for tag in group):
            self._record({tag.key: high for tag in group}, {p["tag_key"] for p in problems})

    # -- the catalog -------------------------------------------------------------------------

    def _disable(self, keys: list[str]) -> None:
        ids = {t.key: t.id for t in self.tags}

        def change(catalog: dict[str, QueryTag]):
            targets = [k for k in keys if k in catalog and catalog[k].id == ids[k]
                       and catalog[k].query_status != "disabled"]
            if not targets:
                return None, None
            stamp = dt.datetime.now(dt.UTC)
            for key in targets:
                catalog[key] = catalog[key].with_(query_status="disabled", updated_at=stamp)
            return catalog, None

        mutate(self.tenant, change, "disable_tags")
        for key in keys:
            if key not in self.summary.disabled:
                self.summary.disabled.append(key)

    def _record(self, through: dict[str, int], with_errors: set[str]) -> None:
        """Persist progress: indexed_through, exact error counts, and adding -> ready at the end."""
        ids = {t.key: t.id for t in self.tags}
        counts = count_errors(self.tenant, sorted(with_errors))
        became_ready: list[str] = []

        def change(catalog: dict[str, QueryTag]):
            became_ready.clear()
            stamp = dt.datetime.now(dt.UTC)
            changed = False
            for key, seq in through.items():
                tag = catalog.get(key)
                if tag is None or tag.id != ids[key] or tag.status == "deleting":
                    continue
                updates: dict[str, Any] = {}
                if seq > tag.indexed_through:
                    updates["indexed_through"] = seq
                if key in counts and counts[key] != tag.error_count:
                    updates["error_count"] = counts[key]
                if key in with_errors and tag.query_status != "disabled":
                    updates["query_status"] = "disabled"
                if tag.status == "adding" and seq >= self.latest:
                    updates["status"] = "ready"
                    became_ready.append(key)
                if updates:
                    catalog[key] = tag.with_(updated_at=stamp, **updates)
                    changed = True
            return (catalog if changed else None), None

        mutate(self.tenant, change, "index_tags")
        self.summary.ready += [k for k in became_ready if k not in self.summary.ready]

    def _reconcile(self, marks: dict[str, int]) -> None:
        """After a crash between recording errors and updating the catalog: catch the catalog up."""
        self.errors_table.update_incremental()
        behind = {}
        for tag in self.tags:
            recorded = self.errors_table.transaction_version(watermark_app(tag)) or 0
            if tag.indexed_through < recorded <= self.latest:
                behind[tag.key] = marks[tag.key]
        if behind:
            self._record(behind, set(behind))

    def _finish(self, marks: dict[str, int]) -> None:
        """Tags whose watermark reached the latest seq in an earlier, interrupted run become ready."""
        catalog = load_catalog(self.tenant)
        late = {t.key: marks[t.key] for t in self.tags
                if t.key in catalog and catalog[t.key].status == "adding" and self.latest <= marks[t.key]
                and catalog[t.key].id == t.id}
        if late:
            self._record(late, set())

    def _report(self, marks: dict[str, int]) -> None:
        assert self.progress is not None
        span = sum(max(0, self.latest - self.start[t.key]) for t in self.tags)
        done = sum(max(0, min(marks[t.key], self.latest) - self.start[t.key]) for t in self.tags)
        percent = 100.0 if span == 0 else round(100.0 * done / span, 1)
        self.progress(Progress(percent=percent, processed=self.summary.processed, total=self.total,
                               errors=self.summary.errors,
                               indexed_through={k: v for k, v in marks.items() if v <= self.latest}))


def reindex(
    tenant: TenantStore,
    keys: Iterable[str] | None = None,
    progress: ProgressCallback | None = None,
    window: int = DEFAULT_WINDOW,
) -> IndexSummary:
    """Index adding tags (and ready ones that lag) up to the latest seq, window by window.

    Progress is persisted as each tag's watermark (and indexed_through in the catalog): a rerun
    after an interruption resumes where it stopped. Tags become ready at the end.
    """
    return index_query_tags(tenant, keys, ("adding", "ready"), window, progress)


def index_after_commit(tenant: TenantStore, outcome: CommitOutcome) -> IndexSummary | None:
    """Ingest's hook: index ready tags for what a batch just committed. Costs one (cached) catalog
    read when the tenant has no ready tags. A failure here never fails the ingest (the batch is
    committed): it is logged, and the tags catch up at the next batch or `dicomlake tags reindex`.
    """
    if outcome.last_seq is None:
        return None
    if not any(tag.status == "ready" for tag in load_catalog(tenant).values()):
        return None
    try:
        return index_query_tags(tenant, statuses=("ready",), just_committed=outcome)
    except Exception:
        log.exception("%s: extended query tags not indexed for seq %s-%s; they catch up on the next batch "
                      "or reindex", tenant.name, outcome.first_seq, outcome.last_seq)
        return None
