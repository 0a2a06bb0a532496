"""Store instances uploaded over STOW-RS: the rules of file ingest, one request per commit.

The web layer spools each uploaded part to a local temp file (hashing it as it writes) and hands
the files here. For each part, in order:
  1. the header is parsed from an mmap of the file (pixel data is never read into memory);
  2. it is validated like any ingested file, plus the study UID of a STOW to /studies/{uid};
  3. its bytes go to the blob store (or, when refused, to quarantine with a code and a reason),
     durably, by renaming the temp file into place when it is on the same file system;
then the refused parts' quarantine rows are appended, the accepted versions are committed to the
change feed in ONE commit, `instances` is brought up to that commit and the extended query tags are
indexed for it. Only then does `store` return: a part reported stored is committed and searchable.

Per-part outcomes use the codes of PS3.18 Annex I and of Azure's DICOM service conformance
statement (FAILURE_* / WARNING_* below). Policy for an instance that already exists:
  - the same bytes: stored (nothing new is written; a resent request is idempotent);
  - bytes of a version that a newer one already replaced: stored, nothing changes (as file ingest:
    re-delivery never rolls an instance back);
  - other bytes: with `allow_replace` (the default, as file ingest) an `update` change; without it
    the part fails with 45070 and its bytes are quarantined (code `duplicate_instance`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import logging
import mmap
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomlake.dicom.parse import parse_instance
from dicomlake.errors import InvalidInstance
from dicomlake.store.blobs import blob_key, quarantine_key
from dicomlake.store.committer import CommitOutcome, Committer, record_quarantine
from dicomlake.store.lakehouse import TenantStore
from dicomlake.tags.indexer import index_after_commit

log = logging.getLogger(__name__)

# Failure Reason (0008,1197) values (PS3.18 Table I.2-2; Azure's codes in the A9xx/B0xx ranges).
FAILURE_PROCESSING = 272  # 0x0110 processing failure (an I/O or commit error on our side)
FAILURE_INVALID = 43264  # 0xA900 the part is not a valid, storable instance
FAILURE_STUDY_MISMATCH = 43265  # 0xA901 its StudyInstanceUID is not the one in the URL
FAILURE_DUPLICATE = 45070  # 0xB00E it exists with other bytes and replacing is not allowed
# Warning Reason (0008,1196): stored as sent, but some values do not conform (0xB007, "Data Set
# does not match SOP Class"; the reasons are the parser's warnings, kept on the version row).
WARNING_NONCONFORMANT = 45063

DICOM_MEDIA_TYPE = "application/dicom"
HASH_CHUNK = 1024 * 1024
# A part without the Part-10 prefix is classified (gzip, zip, bare dataset...) from at most this
# many leading bytes, so a huge non-DICOM upload is never read into memory.
CLASSIFY_PREFIX = 8 * 1024 * 1024


@dataclass(frozen=True)
class UploadedPart:
    """One uploaded object: its bytes in memory (`data`, small parts) or in a local file (`path`).
    `store` may rename the file into the blob store; whatever is left at `path` afterwards belongs
    to the caller (delete it)."""

    path: Path | None
    size: int
    sha256: str | None = None  # hashed while spooling; computed in chunks when None
    content_type: str | None = DICOM_MEDIA_TYPE
    data: bytes | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("an UploadedPart has either a path or data")

    @property
    def content(self) -> Path | bytes:
        """What the blob store takes: the bytes, or the file to rename into place."""
        return self.data if self.data is not None else self.path  # type: ignore[return-value]


@dataclass
class InstanceResult:
    """What happened to one part, in request order."""

    index: int
    stored: bool
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    action: str | None = None  # create | update | unchanged (stored parts)
    failure_code: int | None = None
    failure: str | None = None  # readable reason (also in the quarantine row when quarantined)
    error_code: str | None = None  # the quarantine code, e.g. 'truncated', 'study_uid_mismatch'
    warning_code: int | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class StoreOutcome:
    results: list[InstanceResult]
    commit: CommitOutcome | None = None
    # Where the request's time went, in ms (see STAGES); `queue`, `commit` and `project` are those
    # of the commit round that held its versions, which other requests may have shared.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def stored(self) -> list[InstanceResult]:
        return [r for r in self.results if r.stored]

    @property
    def failed(self) -> list[InstanceResult]:
        return [r for r in self.results if not r.stored]

    @property
    def http_status(self) -> int:
        """PS3.18 10.5.3: 200 all stored cleanly, 202 some failed or warned, 409 none stored."""
        if not self.results or not self.stored:
            return 409
        if self.failed or any(r.warning_code for r in self.results):
            return 202
        return 200


@dataclass
class _Prepared:
    result: InstanceResult
    part: UploadedPart
    sha256: str
    version: dict[str, Any] | None = None
    quarantine: dict[str, Any] | None = None


@dataclass
class _Ticket:
    """One request's accepted versions, waiting for (or done in) a commit round."""

    candidates: list[_Prepared]
    done: bool = False
    outcome: CommitOutcome | None = None  # the round's seqs; `actions` only this request's
    error: Exception | None = None
    timings: dict[str, float] = field(default_factory=dict)  # the round's commit / project, in ms


# A STOW request's stages, in order: what the `Server-Timing` response header reports (web.stow).
# parse: hash, parse and validate every part; blobs: write the bytes and quarantine rows durably;
# queue: wait for the commit round that takes the request's versions; commit: that round's change
# feed commit; project: that round's `instances` projection and extended query tags.
STAGES = ("parse", "blobs", "queue", "commit", "project")


class _Stopwatch:
    """Milliseconds between laps, by name."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + (now - self._last) * 1000
        self._last = now
        return self.laps[name]


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_part(part: UploadedPart) -> str:
    """SHA-256 of a part's bytes, in memory or in its file (read in chunks)."""
    if part.data is not None:
        return hashlib.sha256(part.data).hexdigest()
    assert part.path is not None
    return hash_file(part.path)


@contextlib.contextmanager
def _mapped(part: UploadedPart) -> Iterator[Any]:
    """The part's bytes: in memory when the caller kept them, else an mmap of its file."""
    if part.data is not None or part.size == 0:
        yield part.data or b""
        return
    assert part.path is not None
    with open(part.path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
        yield view


def _identity(view: Any) -> dict[str, str]:
    """Best-effort UIDs of a part that failed validation, for the FailedSOPSequence."""
    found: dict[str, str] = {}
    try:
        import pydicom

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(view[:CLASSIFY_PREFIX]), force=True, stop_before_pixels=True,
                                 specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
                                                "SeriesInstanceUID"])
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            value = str(ds.get(keyword, "") or "").strip()
            if value and len(value) <= 64:
                found[keyword] = value
    except Exception:  # the bytes are not readable as a dataset at all
        pass
    return found


class InstanceStore:
    """STOW-RS storage for one tenant. Keep one per tenant and process (e.g. per web app): its
    Committer caches the feed's state, and commits from this process are serialized by a lock
    (other processes are handled by the committer's optimistic concurrency)."""

    def __init__(self, tenant: TenantStore) -> None:
        self.tenant = tenant
        self.committer = Committer(tenant)
        self._commit_lock = threading.Lock()  # one commit round at a time
        self._queue_lock = threading.Lock()
        self._queue: list[_Ticket] = []  # requests waiting for the next round

    def store(
        self,
        parts: Iterable[UploadedPart],
        expected_study: str | None = None,
        *,
        allow_replace: bool = True,
        source: str = "stow",
    ) -> StoreOutcome:
        """Store every part; see the module docstring. `source` prefixes each row's source (no PHI)."""
        clock = _Stopwatch()
        prepared = [self._prepare(i, part, expected_study, f"{source}/{i}") for i, part in enumerate(parts)]
        if not allow_replace:
            self._refuse_duplicates(prepared)
        clock.lap("parse")
        self._write_bytes(prepared)
        record_quarantine(self.tenant, [p.quarantine for p in prepared if p.quarantine])
        clock.lap("blobs")
        commit = self._commit(prepared, clock)
        return StoreOutcome([p.result for p in prepared], commit, clock.laps)

    # -- per part --------------------------------------------------------------------------------
    def _prepare(self, index: int, part: UploadedPart, expected_study: str | None, source: str) -> _Prepared:
        result = InstanceResult(index=index, stored=False)
        sha = part.sha256 or hash_part(part)
        prepared = _Prepared(result, part, sha)
        media = (part.content_type or DICOM_MEDIA_TYPE).split(";", 1)[0].strip().lower()
        if media != DICOM_MEDIA_TYPE:
            self._refuse(prepared, source, "unsupported_media_type",
                         f"the part's Content-Type is {media!r}, not {DICOM_MEDIA_TYPE}")
            return prepared
        with _mapped(part) as view:
            data = view
            if len(view) >= 132 and view[128:132] != b"DICM" and len(view) > CLASSIFY_PREFIX:
                data = view[:CLASSIFY_PREFIX]  # only to name what it is: bounded memory
            try:
                parsed = parse_instance(data, sha256=sha)
            except InvalidInstance as exc:
                ids = _identity(view) if part.size else {}
                result.sop_class_uid = ids.get("SOPClassUID")
                result.sop_instance_uid = ids.get("SOPInstanceUID")
                result.study_instance_uid = ids.get("StudyInstanceUID")
                result.series_instance_uid = ids.get("SeriesInstanceUID")
                self._refuse(prepared, source, exc.code, exc.reason)
                return prepared
        record = parsed.record
        result.sop_class_uid = record["sop_class_uid"]
        result.sop_instance_uid = record["sop_instance_uid"]
        result.study_instance_uid = record["study_instance_uid"]
        result.series_instance_uid = record["series_instance_uid"]
        if expected_study is not None and record["study_instance_uid"] != expected_study:
            self._refuse(
                prepared, source, "study_uid_mismatch",
                f"StudyInstanceUID {record['study_instance_uid']} is not the study of the request "
                f"({expected_study})",
                FAILURE_STUDY_MISMATCH,
            )
            return prepared
        version = dict(record)
        version.setdefault("warnings", [])
        version.update(sha256=sha, blob_key=blob_key(sha), size_bytes=part.size, source=source)
        prepared.version = version
        result.warnings = list(version["warnings"] or [])
        if result.warnings:
            result.warning_code = WARNING_NONCONFORMANT
        return prepared

    def _refuse(self, prepared: _Prepared, source: str, code: str, reason: str,
                failure_code: int = FAILURE_INVALID) -> None:
        prepared.quarantine = {
            "sha256": prepared.sha256,
            "quarantine_key": quarantine_key(prepared.sha256),
            "size_bytes": prepared.part.size,
            "source": source,
            "error_code": code,
            "reason": reason,
            "quarantined_at": dt.datetime.now(dt.UTC),
        }
        prepared.result.failure_code = failure_code
        prepared.result.failure = reason
        prepared.result.error_code = code

    def _write_bytes(self, prepared: list[_Prepared]) -> None:
        """Blobs and quarantined bytes, all durable (one batched sync) before anything refers to them."""
        items = [p for p in prepared if p.version or p.quarantine]
        keys = [p.version["blob_key"] if p.version else p.quarantine["quarantine_key"] for p in items]  # type: ignore[index]
        try:
            self.tenant.blobs.put_files([(key, p.part.content) for key, p in zip(keys, items, strict=True)],
                                        move=True)
        except OSError as exc:
            log.exception("%s: could not write %d blobs", self.tenant.name, len(items))
            for item in items:
                item.version = item.quarantine = None
                item.result.failure_code = FAILURE_PROCESSING
                item.result.failure = f"the bytes could not be written ({type(exc).__name__})"
                item.result.error_code = "write_failed"

    # -- the commit ------------------------------------------------------------------------------
    def _commit(self, prepared: list[_Prepared], clock: _Stopwatch) -> CommitOutcome | None:
        """Group commit: requests that wait while another commits go into the next commit together.

        Each request queues its accepted versions, then takes the commit lock; whoever holds it
        commits everything queued so far (its own and any waiting requests') in one change-feed
        commit, brings `instances` and the tag index up to it, and hands each request its part.
        A request whose versions a previous holder already committed just returns. So concurrent
        STOWs cost one commit per round instead of one each, and a 200 still means committed and
        searchable: nobody returns before the round that holds their versions is fully done."""
        candidates = [p for p in prepared if p.version]
        if not candidates:
            return None
        ticket = _Ticket(candidates)
        with self._queue_lock:
            self._queue.append(ticket)
        with self._commit_lock:
            clock.lap("queue")
            if not ticket.done:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._commit_group(group)
        if ticket.timings:  # the round's own split; the waiting before it was queueing too
            queued = clock.laps["queue"] + clock.lap("round") - sum(ticket.timings.values())
            clock.laps["queue"] = max(0.0, queued)
            del clock.laps["round"]
            clock.laps.update(ticket.timings)
        if ticket.error is not None:
            raise ticket.error
        return ticket.outcome

    def _commit_group(self, group: list[_Ticket]) -> None:
        clock = _Stopwatch()
        for ticket in group:
            ticket.timings = clock.laps  # filled in below; read once the round is done
        try:
            outcome = self.committer.commit_versions(
                [p.version for ticket in group for p in ticket.candidates], operation="stow")  # type: ignore[misc]
        except Exception as exc:
            clock.lap("commit")
            log.exception("%s: STOW commit failed", self.tenant.name)
            for ticket in group:
                for item in ticket.candidates:
                    item.result.failure_code = FAILURE_PROCESSING
                    item.result.failure = f"the change could not be committed ({type(exc).__name__})"
                    item.result.error_code = "commit_failed"
                ticket.done = True
            return
        clock.lap("commit")
        actions = iter(outcome.actions)
        for ticket in group:
            ticket.outcome = CommitOutcome([next(actions) for _ in ticket.candidates], outcome.first_seq,
                                           outcome.last_seq, outcome.rows)
            for item, action in zip(ticket.candidates, ticket.outcome.actions, strict=True):
                item.result.stored = True
                item.result.action = action
        try:
            if outcome.last_seq is not None:
                # A 200 promises "searchable": the projection and the tag index follow the commit now.
                self.committer.sync_instances(outcome)
                index_after_commit(self.tenant, outcome)
        except Exception as exc:  # committed, but not yet searchable: every request of the round fails
            for ticket in group:
                ticket.error = exc
            raise
        finally:
            clock.lap("project")
            for ticket in group:
                ticket.done = True

    def _refuse_duplicates(self, prepared: list[_Prepared]) -> None:
        """Without replace: a part whose SOP instance exists with other bytes fails with 45070.

        Decided against the feed as of now, before any bytes are written; a writer in another
        process committing the same SOP instance before our commit still makes it an update."""
        with self._commit_lock:  # the committer's state is not shared across threads unguarded
            for item in prepared:
                version = item.version
                if version is None:
                    continue
                current = self.committer.current_sha256(version["sop_instance_uid"])
                if current is None or current == version["sha256"]:
                    continue
                item.version = None
                self._refuse(item, version["source"], "duplicate_instance",
                             f"SOP instance {version['sop_instance_uid']} already exists with other "
                             "bytes and replacing is not allowed", FAILURE_DUPLICATE)


def store_instances(
    tenant: TenantStore,
    parts: Iterable[UploadedPart],
    expected_study: str | None = None,
    *,
    allow_replace: bool = True,
    source: str = "stow",
) -> StoreOutcome:
    """One-off STOW-RS store (a fresh committer); long-lived callers keep an InstanceStore."""
    return InstanceStore(tenant).store(parts, expected_study, allow_replace=allow_replace, source=source)
