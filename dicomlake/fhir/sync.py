"""DICOMcast: keep a tenant's FHIR resources in step with its change feed.

How a batch is applied (at least once, idempotent):
1. read the next entries after the consumer cursor `dicomcast` (a page of the feed, up to seq U);
2. for every study they touch, fold the feed up to U into that study's current instances (the
   `changes` table is the source of truth, so the result depends only on U, never on when it runs);
3. map each study to its ImagingStudy (none when it has no instance left) and its Patient;
4. write them to the target with retries and exponential backoff: Delta tables `fhir_patient`,
   `fhir_imagingstudy`, `fhir_endpoint` (a merge by id that skips unchanged content and never
   rolls a resource back to an older seq), then the Bulk Data NDJSON files;
5. entries of a study that cannot be mapped, or whose write keeps failing, go to
   `fhir_dead_letters` with the reason (`replay_dead_letters` applies them again later);
6. only then commit the cursor to U.
A crash anywhere before 6 re-delivers the same entries, and applying them again gives the same
tables and files: ids come from UIDs, versions move only when content changes, `lastUpdated` is the
timestamp of the feed entry the version reflects.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dicomlake.changefeed import ConsumerCursor
from dicomlake.fhir import mapping
from dicomlake.fhir.rest import FhirServerTarget
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.read import scan
from dicomlake.store.schemas import FHIR_DEAD_LETTERS, SCHEMAS

CONSUMER = "dicomcast"
TABLES = {"Patient": "fhir_patient", "ImagingStudy": "fhir_imagingstudy", "Endpoint": "fhir_endpoint"}
DEFAULT_DICOMWEB_URL = "http://127.0.0.1:8042"
_FOLD_COLUMNS = ["seq", "action", "changed_at", "study_instance_uid", "series_instance_uid",
                 "sop_instance_uid", "dicom_json"]


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def content_hash(resource: Mapping[str, Any]) -> str:
    body = {k: v for k, v in resource.items() if k != "meta"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class StudyState:
    """One study as of a feed position: its current instances (DICOM JSON, oldest version first)."""

    study_uid: str
    source_seq: int  # the last change of this study up to the position
    changed_at: dt.datetime
    instances: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StudyResult:
    """What one study maps to: its ImagingStudy (None: delete it) and Patient (kept on delete)."""

    state: StudyState
    study: dict[str, Any] | None
    patient: dict[str, Any] | None


@dataclass
class SyncReport:
    batches: int = 0
    entries: int = 0
    studies_written: int = 0
    studies_deleted: int = 0
    dead_lettered: int = 0
    position: int = 0
    lag: int = 0

    def as_json(self) -> dict[str, int]:
        return dict(self.__dict__)


class TargetError(RuntimeError):
    """Writing to the FHIR target failed (after its retries)."""


def fold_studies(tenant: TenantStore, study_uids: Iterable[str], upper: int) -> dict[str, StudyState]:
    """Each study's current instances after the feed up to seq `upper` (deleted ones left out)."""
    uids = sorted(set(study_uids))
    if not uids:
        return {}
    rows = scan(
        tenant.table("changes"),
        _FOLD_COLUMNS,
        where=f"seq <= {int(upper)} AND study_instance_uid IN ({_sql_list(uids)})",
        order_by="seq",
    ).to_pylist()
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    states: dict[str, StudyState] = {}
    for row in rows:
        uid = row["study_instance_uid"]
        state = states.setdefault(uid, StudyState(uid, row["seq"], row["changed_at"]))
        state.source_seq, state.changed_at = row["seq"], row["changed_at"]
        latest.pop((uid, row["sop_instance_uid"]), None)  # re-insert: keeps "latest version last"
        latest[(uid, row["sop_instance_uid"])] = row
    for (uid, _sop), row in sorted(latest.items(), key=lambda kv: kv[1]["seq"]):
        if row["action"] != "delete":
            states[uid].instances.append(json.loads(row["dicom_json"]))
    return states


class DeltaTarget:
    """Target (a): Delta tables of the resources plus FHIR Bulk Data NDJSON files, one per type."""

    def __init__(self, tenant: TenantStore, export_dir: str | None = None) -> None:
        self.tenant = tenant
        self.export_dir = export_dir or f"{tenant.uri}/fhir/export"

    # -- tables ------------------------------------------------------------------------------
    def write(self, kind: str, resources: list[tuple[dict[str, Any], int, dt.datetime]]) -> int:
        """Upsert (resource, source_seq, changed_at) rows; returns how many versions were written."""
        if not resources:
            return 0
        name = TABLES[kind]
        table = self.tenant.table(name)
        ids = [r["id"] for r, _, _ in resources]
        existing = {
            row["id"]: row
            for row in scan(table, ["id", "version_id", "source_seq", "content_sha256"],
                            where=f"id IN ({_sql_list(ids)})").to_pylist()
        }
        rows = []
        for resource, source_seq, changed_at in resources:
            sha = content_hash(resource)
            old = existing.get(resource["id"])
            if old is not None and (old["content_sha256"] == sha or old["source_seq"] > source_seq):
                continue  # unchanged, or a newer version is already there: never roll back
            version = (old["version_id"] + 1) if old else 1
            stamped = {**resource, "meta": {"versionId": str(version),
                                            "lastUpdated": changed_at.astimezone(dt.UTC).isoformat()}}
            rows.append(_row(kind, stamped, version, changed_at, source_seq, sha))
        if not rows:
            return 0
        source = pa.Table.from_pylist(rows, schema=SCHEMAS[name])
        (
            table.merge(source, predicate="t.id = s.id", source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        return len(rows)

    def delete(self, kind: str, ids_at: Mapping[str, int]) -> int:
        """Delete resources by id unless the stored version is newer than the delete's seq."""
        if not ids_at:
            return 0
        table = self.tenant.table(TABLES[kind])
        stored = scan(table, ["id", "source_seq"], where=f"id IN ({_sql_list(ids_at)})").to_pylist()
        gone = [row["id"] for row in stored if row["source_seq"] <= ids_at[row["id"]]]
        if gone:
            table.delete(f"id IN ({_sql_list(gone)})")
        return len(gone)

    # -- NDJSON ------------------------------------------------------------------------------
    def export(self, kinds: Iterable[str]) -> None:
        """Rewrite `<export_dir>/<Type>.ndjson` from the table (sorted by id), atomically."""
        fs = self.tenant.lakehouse.filesystem()
        fs.makedirs(self.export_dir, exist_ok=True)
        for kind in sorted(set(kinds)):
            rows = scan(self.tenant.table(TABLES[kind]), ["id", "resource_json"], order_by="id")
            body = "".join(text + "\n" for text in rows.column("resource_json").to_pylist())
            final = f"{self.export_dir}/{kind}.ndjson"
            temp = f"{self.export_dir}/.{kind}.ndjson.{os.getpid()}.tmp"
            with fs.open(temp, "wb") as out:
                out.write(body.encode())
            fs.mv(temp, final)


def _row(kind: str, resource: dict[str, Any], version: int, changed_at: dt.datetime, source_seq: int,
         sha: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": resource["id"],
        "version_id": version,
        "last_updated": changed_at,
        "source_seq": source_seq,
        "content_sha256": sha,
        "resource_json": json.dumps(resource, separators=(",", ":"), ensure_ascii=False),
    }
    if kind == "Patient":
        ident = (resource.get("identifier") or [{}])[0]
        name = (resource.get("name") or [{}])[0]
        birth = resource.get("birthDate")
        row.update(
            identifier_system=ident.get("system"),
            identifier_value=ident.get("value"),
            family=name.get("family"),
            given=" ".join(name.get("given") or []) or None,
            gender=resource.get("gender"),
            birth_date=dt.date.fromisoformat(birth) if birth else None,
        )
    elif kind == "ImagingStudy":
        accession = [i["value"] for i in resource["identifier"] if "type" in i]
        row.update(
            study_instance_uid=resource["identifier"][0]["value"].removeprefix("urn:oid:"),
            accession_number=accession[0] if accession else None,
            subject=resource["subject"]["reference"],
            patient_identifier=resource["subject"].get("identifier", {}).get("value"),
            started=resource.get("started"),
            modalities=[c["code"] for c in resource.get("modality", [])],
            number_of_series=resource["numberOfSeries"],
            number_of_instances=resource["numberOfInstances"],
            description=resource.get("description"),
        )
    else:
        row["address"] = resource["address"]
    return row


class DicomCast:
    """Incremental DICOM -> FHIR sync of one tenant (see the module docstring for the guarantees)."""

    def __init__(
        self,
        tenant: TenantStore,
        *,
        consumer: str = CONSUMER,
        patient_id_system: str | None = None,
        dicomweb_url: str | None = None,
        export_dir: str | None = None,
        batch_size: int = 500,
        attempts: int = 4,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        before_commit: Callable[[int], None] | None = None,
        fhir_server: FhirServerTarget | None = None,
    ) -> None:
        self.tenant = tenant
        self.cursor = ConsumerCursor(tenant, consumer)
        self.patient_id_system = patient_id_system or f"urn:dicomlake:{tenant.name}:patient-id"
        base = (dicomweb_url or os.environ.get("DICOMLAKE_DICOMWEB_URL") or DEFAULT_DICOMWEB_URL).rstrip("/")
        self.dicomweb_base = f"{base}/tenants/{tenant.name}/dicomweb"
        self.target = DeltaTarget(tenant, export_dir)
        self.server = fhir_server  # target (b), optional: mirrors the tables' touched resources
        self.batch_size = batch_size
        self.attempts = max(1, attempts)
        self.backoff = backoff_seconds
        self.max_backoff = max_backoff_seconds
        self.sleep = sleep
        self.before_commit = before_commit  # a test hook: runs after the writes, before the commit
        self.endpoint = mapping.endpoint(self.dicomweb_base, tenant.name)

    # -- the public operations ----------------------------------------------------------------
    def sync(self, max_batches: int | None = None) -> SyncReport:
        """Apply batches until the cursor reaches the end of the feed (or `max_batches`)."""
        report = SyncReport()
        while max_batches is None or report.batches < max_batches:
            entries = self.cursor.read(limit=self.batch_size)
            if not entries:
                break
            upper = entries[-1].sequence
            by_study: dict[str, list[Any]] = {}
            for entry in entries:
                by_study.setdefault(entry.study_instance_uid, []).append(entry)
            written, deleted, failed = self._apply(by_study, upper)
            if self.before_commit is not None:
                self.before_commit(upper)
            self.cursor.commit(upper)
            report.batches += 1
            report.entries += len(entries)
            report.studies_written += written
            report.studies_deleted += deleted
            report.dead_lettered += sum(len(by_study[uid]) for uid in failed)
        report.position = self.cursor.position()
        report.lag = self.cursor.lag()
        return report

    def replay_dead_letters(self) -> SyncReport:
        """Apply the studies of every dead letter not yet replayed, at the current position."""
        table = self.tenant.table("fhir_dead_letters")
        pending = scan(table, where="replayed_at IS NULL", order_by="seq").to_pylist()
        report = SyncReport(position=self.cursor.position())
        if not pending:
            report.lag = self.cursor.lag()
            return report
        upper = max(report.position, max(row["seq"] for row in pending))
        by_study: dict[str, list[Any]] = {}
        for row in pending:
            by_study.setdefault(row["study_instance_uid"], []).append(_DeadLetterEntry(row))
        written, deleted, failed = self._apply(by_study, upper)
        done = [row["seq"] for row in pending if row["study_instance_uid"] not in failed]
        if done:
            table.update(new_values={"replayed_at": _now()},
                         predicate=f"seq IN ({', '.join(str(s) for s in done)})")
        report.entries = len(done)
        report.studies_written, report.studies_deleted = written, deleted
        report.dead_lettered = sum(len(by_study[uid]) for uid in failed)
        report.lag = self.cursor.lag()
        return report

    def pending_dead_letters(self) -> int:
        return scan(self.tenant.table("fhir_dead_letters"), ["seq"], where="replayed_at IS NULL").num_rows

    # -- internals ----------------------------------------------------------------------------
    def _apply(self, by_study: dict[str, list[Any]], upper: int) -> tuple[int, int, dict[str, str]]:
        """Map and write the given studies as of `upper`: (written, deleted, {dead study: reason})."""
        states = fold_studies(self.tenant, by_study, upper)
        results: list[StudyResult] = []
        dead: dict[str, str] = {}
        for uid in sorted(by_study):
            state = states.get(uid) or StudyState(uid, upper, _now())
            try:
                results.append(self._map(state))
            except mapping.MappingError as exc:
                dead[uid] = f"mapping: {exc}"
        if results:
            try:
                self._with_retries(lambda: self._write(results))
            except TargetError as batch_error:
                # Write the studies one by one, so one that keeps failing does not hold the others.
                for result in results:
                    try:
                        self._write([result])
                    except Exception as exc:
                        dead[result.state.study_uid] = f"target: {exc or batch_error}"
        if dead:
            self._dead_letter(by_study, dead)
        ok = [r for r in results if r.state.study_uid not in dead]
        return sum(r.study is not None for r in ok), sum(r.study is None for r in ok), dead

    def _map(self, state: StudyState) -> StudyResult:
        if not state.instances:
            return StudyResult(state, None, None)
        latest = state.instances[-1]
        patient = mapping.patient(latest, self.patient_id_system)
        study = mapping.imaging_study(
            state.instances, f"Patient/{patient['id']}", f"Endpoint/{self.endpoint['id']}"
        )
        key = mapping.patient_key(latest, self.patient_id_system)
        if key.value is not None:  # a logical identifier too, so targets can resolve it without our ids
            study["subject"]["identifier"] = {"system": key.system, "value": key.value}
            mapping.validate(study)
        return StudyResult(state, study, patient)

    def _write(self, results: list[StudyResult]) -> None:
        try:
            patients: dict[str, tuple[dict[str, Any], int, dt.datetime]] = {}
            for r in sorted((r for r in results if r.patient), key=lambda r: r.state.source_seq):
                assert r.patient is not None
                patients[r.patient["id"]] = (r.patient, r.state.source_seq, r.state.changed_at)  # newest wins
            studies = [(r.study, r.state.source_seq, r.state.changed_at) for r in results if r.study]
            gone = {mapping.resource_id("ImagingStudy", r.state.study_uid): r.state.source_seq
                    for r in results if r.study is None}
            first = min(r.state.changed_at for r in results)
            self.target.write("Endpoint", [(self.endpoint, 0, first)])
            self.target.write("Patient", list(patients.values()))
            self.target.write("ImagingStudy", studies)  # type: ignore[arg-type]
            self.target.delete("ImagingStudy", gone)
            self.target.export(TABLES)
            if self.server is not None:
                self._push(list(patients), results)
        except Exception as exc:
            raise TargetError(f"{type(exc).__name__}: {exc}") from exc

    def _push(self, patient_ids: list[str], results: list[StudyResult]) -> None:
        """Send the tables' current versions of the touched resources to the FHIR server, and
        delete there the ImagingStudy of every touched study the tables no longer have."""
        assert self.server is not None
        study_ids = [mapping.resource_id("ImagingStudy", r.state.study_uid) for r in results]
        def load(kind: str, ids: Iterable[str]) -> list[dict[str, Any]]:
            if not (ids := list(ids)):
                return []
            rows = scan(self.tenant.table(TABLES[kind]), ["resource_json"],
                        where=f"id IN ({_sql_list(ids)})", order_by="id")
            return [json.loads(text) for text in rows.column(0).to_pylist()]

        studies = load("ImagingStudy", study_ids)
        subjects = {s["subject"]["reference"].removeprefix("Patient/") for s in studies}
        resources = [self.endpoint, *load("Patient", sorted(set(patient_ids) | subjects)), *studies]
        present = {r["id"] for r in resources}
        deleted = [r.state.study_uid for r in results
                   if mapping.resource_id("ImagingStudy", r.state.study_uid) not in present]
        self.server.apply(resources, deleted)

    def _with_retries(self, action: Callable[[], None]) -> None:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                action()
                return
            except TargetError:
                if attempt == self.attempts:
                    raise
                self.sleep(delay)
                delay = min(delay * 2, self.max_backoff)

    def _dead_letter(self, by_study: dict[str, list[Any]], reasons: dict[str, str]) -> None:
        now = _now()
        rows = [
            {
                "seq": entry.sequence,
                "action": entry.action,
                "study_instance_uid": uid,
                "series_instance_uid": entry.series_instance_uid,
                "sop_instance_uid": entry.sop_instance_uid,
                "reason": reason[:2000],
                "attempts": getattr(entry, "attempts", 0) + 1,
                "failed_at": now,
                "replayed_at": None,
            }
            for uid, reason in sorted(reasons.items())
            for entry in by_study[uid]
        ]
        source = pa.Table.from_pylist(rows, schema=FHIR_DEAD_LETTERS)
        (
            self.tenant.table("fhir_dead_letters")
            .merge(source, predicate="t.seq = s.seq", source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )


class _DeadLetterEntry:
    """A dead-letter row seen as the feed entry it stands for."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.sequence = row["seq"]
        self.action = row["action"]
        self.series_instance_uid = row["series_instance_uid"]
        self.sop_instance_uid = row["sop_instance_uid"]
        self.attempts = row["attempts"]


def check_imaging_studies(tenant: TenantStore, consumer: str = CONSUMER) -> dict[str, Any]:
    """Compare `fhir_imagingstudy` with the feed at the cursor's position: every current study has an
    ImagingStudy with the same series and instance counts, and no other ImagingStudy exists."""
    position = ConsumerCursor(tenant, consumer).position()
    rows = scan(tenant.table("changes"), ["seq", "action", "study_instance_uid", "series_instance_uid",
                                          "sop_instance_uid"], where=f"seq <= {position}",
                order_by="seq").to_pylist()
    current: dict[str, dict[str, Any]] = {}
    for row in rows:
        current[row["sop_instance_uid"]] = row
    expected: dict[str, tuple[int, int]] = {}
    series: dict[str, set[str]] = {}
    for row in current.values():
        if row["action"] == "delete":
            continue
        uid = row["study_instance_uid"]
        series.setdefault(uid, set()).add(row["series_instance_uid"])
        expected[uid] = (len(series[uid]), expected.get(uid, (0, 0))[1] + 1)
    got = {
        row["study_instance_uid"]: (row["number_of_series"], row["number_of_instances"])
        for row in scan(tenant.table("fhir_imagingstudy"),
                        ["study_instance_uid", "number_of_series", "number_of_instances"]).to_pylist()
    }
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(uid for uid in set(expected) & set(got) if expected[uid] != got[uid])
    return {
        "position": position,
        "studies": len(expected),
        "imaging_studies": len(got),
        "missing": missing[:20],
        "extra": extra[:20],
        "count_mismatch": wrong[:20],
        "passed": not (missing or extra or wrong),
    }
