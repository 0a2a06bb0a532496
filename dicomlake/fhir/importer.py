"""Import clinical FHIR R4 data: Bulk Data NDJSON (files, folders, .gz) and Bundles (JSON).

Each resource is validated with `fhir.resources.R4B`; one that fails (bad JSON, unknown or
unsupported type, no id, invalid content) goes to `fhir_import_quarantine` with the reason and its
original text. Valid ones are upserted into `fhir_resources` by (resource_type, id):
- a resource not seen before is inserted;
- one whose content (without `meta`) equals the stored one is left alone (a re-import is a no-op);
- otherwise the newer one wins: the later `meta.lastUpdated`, then the higher `meta.versionId`
  (numeric when both are); without either (or with equal ones) the later import wins;
- an older version never replaces a newer one (counted as `stale`).
After the upsert the flattened views (`fhir_view_<name>`, one per ViewDefinition in `views/`) of the
changed resource types are rebuilt from `fhir_resources`, then the links are recomputed.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import itertools
import json
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from dicomlake.fhir.views import shipped_views, to_arrow
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.read import scan
from dicomlake.store.schemas import FHIR_IMPORT_QUARANTINE, FHIR_RESOURCES

SUPPORTED_TYPES = (
    "Patient", "Encounter", "Condition", "Procedure", "MedicationRequest", "MedicationStatement",
    "DiagnosticReport", "Observation", "ImagingStudy", "DocumentReference",
)
_SUFFIXES = (".ndjson", ".jsonl", ".json", ".ndjson.gz", ".jsonl.gz", ".json.gz")


@dataclass
class ImportOptions:
    relink: bool = True
    patient_identifier_system: str | None = None  # narrows patient linking (links.relink)


@dataclass
class ImportSummary:
    sources: int = 0
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    quarantined: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    view_rows: dict[str, int] = field(default_factory=dict)
    links: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Item:
    source: str
    line: int | None
    raw: str
    resource: dict[str, Any] | None = None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(resource: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in resource.items() if k != "meta"}).encode()).hexdigest()


def _files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(_SUFFIXES)
                          and not p.name.startswith("."))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return out


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8-sig")


def _expand(value: Any, item: _Item) -> Iterator[_Item]:
    """A parsed JSON value as resources: a Bundle gives its entries' resources."""
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        for entry in value.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if resource is not None:
                yield _Item(item.source, item.line, json.dumps(resource, ensure_ascii=False), resource)
    else:
        item.resource = value
        yield item


def read_items(path: Path) -> Iterator[_Item]:
    """The resources of one file: NDJSON (one per line) or a JSON resource / Bundle."""
    source = str(path)
    try:
        text = _read_text(path)
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        yield _Item(source, None, "", {"__error__": f"unreadable file: {exc}"})
        return
    stripped = text.lstrip()
    whole: Any = None
    if stripped.startswith("{"):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # not one JSON document: NDJSON
    if isinstance(whole, dict):
        yield from _expand(whole, _Item(source, None, text))
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield _Item(source, number, line, {"__error__": f"invalid JSON: {exc}"})
            continue
        yield from _expand(value, _Item(source, number, line))


def validate(resource: Any) -> str | None:
    """None when `resource` is a valid R4 resource of a supported type with an id, else the reason."""
    if not isinstance(resource, dict):
        return "not a JSON object"
    if "__error__" in resource:
        return str(resource["__error__"])
    kind = resource.get("resourceType")
    if kind not in SUPPORTED_TYPES:
        return f"unsupported resourceType {kind!r} (supported: {', '.join(SUPPORTED_TYPES)})"
    if not resource.get("id"):
        return f"{kind} has no id (an import needs ids to be idempotent)"
    from fhir.resources.R4B import get_fhir_model_class

    try:
        get_fhir_model_class(kind).model_validate(resource)
    except Exception as exc:
        errors = getattr(exc, "errors", None)
        if callable(errors):
            parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors()[:5]]
            return f"invalid {kind}: " + "; ".join(parts)
        return f"invalid {kind}: {exc}"
    return None


def _parse_instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _order_key(version_id: str | None, last_updated: dt.datetime | None) -> tuple[Any, ...]:
    version: tuple[int, Any] = (0, 0)
    if version_id is not None:
        version = (2, int(version_id)) if version_id.isdigit() else (1, version_id)
    return (last_updated or dt.datetime.min.replace(tzinfo=dt.UTC), version)


def _is_newer(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether the incoming row should replace the stored one (their contents differ)."""
    new_key = _order_key(new["version_id"], new["last_updated"])
    old_key = _order_key(old["version_id"], old["last_updated"])
    # Version ids of different kinds (numeric vs text) are not comparable: then lastUpdated decides.
    if new_key[1][0] != old_key[1][0] and new_key[0] == old_key[0]:
        return True
    return new_key >= old_key


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


class Importer:
    def __init__(self, tenant: TenantStore, options: ImportOptions | None = None) -> None:
        self.tenant = tenant
        self.options = options or ImportOptions()

    def run(self, items: Iterable[_Item], sources: int) -> ImportSummary:
        started = time.perf_counter()
        summary = ImportSummary(sources=sources)
        now = dt.datetime.now(dt.UTC)
        best: dict[tuple[str, str], dict[str, Any]] = {}
        bad: list[dict[str, Any]] = []
        for item in items:
            summary.read += 1
            resource = item.resource
            reason = validate(resource)
            if reason is not None:
                kind = resource.get("resourceType") if isinstance(resource, dict) else None
                rid = resource.get("id") if isinstance(resource, dict) else None
                bad.append({"source": item.source, "line": item.line,
                            "resource_type": kind if isinstance(kind, str) else None,
                            "id": rid if isinstance(rid, str) else None, "reason": reason[:2000],
                            "raw": item.raw, "quarantined_at": now})
                continue
            assert resource is not None
            meta = resource.get("meta") or {}
            version = meta.get("versionId")
            row = {"resource_type": resource["resourceType"], "id": resource["id"],
                   "version_id": str(version) if version is not None else None,
                   "last_updated": _parse_instant(meta.get("lastUpdated")),
                   "content_sha256": content_hash(resource), "resource_json": _canonical(resource),
                   "source": item.source, "imported_at": now}
            key = (row["resource_type"], row["id"])
            old = best.get(key)
            if old is None or old["content_sha256"] == row["content_sha256"] or _is_newer(row, old):
                if old is None or old["content_sha256"] != row["content_sha256"]:
                    best[key] = row
            else:
                summary.stale += 1
        summary.quarantined = self._quarantine(bad)
        changed_types = self._upsert(list(best.values()), summary)
        summary.by_type = dict(sorted(Counter(k for k, _ in best).items()))
        if changed_types:
            summary.view_rows = rebuild_views(self.tenant, changed_types)
        if self.options.relink:
            from dicomlake.fhir.links import relink

            summary.links = relink(self.tenant, self.options.patient_identifier_system).as_json()
        summary.seconds = round(time.perf_counter() - started, 3)
        return summary

    def _quarantine(self, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        table = self.tenant.table("fhir_import_quarantine")
        def key(r: dict[str, Any]) -> tuple[Any, ...]:
            return (r["source"], r["line"], hashlib.sha256(r["raw"].encode()).hexdigest())
        sources = sorted({r["source"] for r in rows})
        seen = {key(r) for r in scan(table, ["source", "line", "raw"],
                                     where=f"source IN ({_sql_list(sources)})").to_pylist()}
        fresh = [r for r in rows if key(r) not in seen]  # the same bad line again: already kept
        if fresh:
            from deltalake import write_deltalake

            write_deltalake(table, pa.Table.from_pylist(fresh, schema=FHIR_IMPORT_QUARANTINE), mode="append")
        return len(rows)

    def _upsert(self, rows: list[dict[str, Any]], summary: ImportSummary) -> set[str]:
        if not rows:
            return set()
        table = self.tenant.table("fhir_resources")
        existing: dict[tuple[str, str], dict[str, Any]] = {}
        by_type: dict[str, list[str]] = {}
        for row in rows:
            by_type.setdefault(row["resource_type"], []).append(row["id"])
        for kind, ids in by_type.items():
            for start in range(0, len(ids), 1000):
                chunk = ids[start:start + 1000]
                cols = ["resource_type", "id", "version_id", "last_updated", "content_sha256"]
                for old in scan(table, cols,
                                where=f"resource_type = '{kind}' AND id IN ({_sql_list(chunk)})").to_pylist():
                    existing[(old["resource_type"], old["id"])] = old
        writes = []
        for row in rows:
            old = existing.get((row["resource_type"], row["id"]))
            if old is None:
                summary.inserted += 1
            elif old["content_sha256"] == row["content_sha256"]:
                summary.unchanged += 1
                continue
            elif _is_newer(row, old):
                summary.updated += 1
            else:
                summary.stale += 1
                continue
            writes.append(row)
        if not writes:
            return set()
        source = pa.Table.from_pylist(writes, schema=FHIR_RESOURCES)
        (
            table.merge(source, predicate="t.resource_type = s.resource_type AND t.id = s.id",
                        source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        return {row["resource_type"] for row in writes}


def rebuild_views(tenant: TenantStore, resource_types: Iterable[str] | None = None) -> dict[str, int]:
    """Rebuild every shipped view over the given resource types (all when None) from
    `fhir_resources`; returns rows per view table."""
    from deltalake import write_deltalake

    wanted = set(resource_types) if resource_types is not None else set(SUPPORTED_TYPES)
    views = [v for v in shipped_views().values() if v.resource in wanted]
    out: dict[str, int] = {}
    resources = tenant.table("fhir_resources")
    for kind in sorted({v.resource for v in views}):
        texts = scan(resources, ["resource_json"], where=f"resource_type = '{kind}'",
                     order_by="id").column(0).to_pylist()
        parsed = [json.loads(t) for t in texts]
        for view in (v for v in views if v.resource == kind):
            rows = [row for resource in parsed for row in view.rows(resource)]
            name = f"fhir_view_{view.name}"
            write_deltalake(tenant.table(name), to_arrow(view, rows), mode="overwrite")
            out[name] = len(rows)
    return out


def import_paths(tenant: TenantStore, paths: Sequence[str | Path],
                 options: ImportOptions | None = None) -> ImportSummary:
    """Import files and folders (NDJSON, .gz, Bundles) into the tenant (see the module docstring)."""
    files = _files(paths)
    items = (item for path in files for item in read_items(path))
    return Importer(tenant, options).run(items, len(files))


def import_server(tenant: TenantStore, base_url: str, token: str | None = None,
                  resource_types: Sequence[str] = SUPPORTED_TYPES, page_size: int = 200,
                  options: ImportOptions | None = None, timeout: float = 30.0) -> ImportSummary:
    """Pull every resource of `resource_types` from a FHIR server's search API and import them
    (source: the page URL); see `server_items` for the paging."""
    items = server_items(base_url, token, resource_types, page_size, timeout)
    return Importer(tenant, options).run(items, len(resource_types))


def import_sources(tenant: TenantStore, paths: Sequence[str | Path] = (), base_url: str | None = None,
                   token: str | None = None, resource_types: Sequence[str] = SUPPORTED_TYPES,
                   page_size: int = 200, options: ImportOptions | None = None,
                   timeout: float = 30.0) -> ImportSummary:
    """Files/folders and a FHIR server in one import: one upsert, one view rebuild, one relink
    (`sources` counts the files plus one per resource type pulled)."""
    files = _files(paths)
    items: Iterable[_Item] = (item for path in files for item in read_items(path))
    sources = len(files)
    if base_url:
        items = itertools.chain(items, server_items(base_url, token, resource_types, page_size, timeout))
        sources += len(resource_types)
    return Importer(tenant, options).run(items, sources)


def server_items(base_url: str, token: str | None = None, resource_types: Sequence[str] = SUPPORTED_TYPES,
                 page_size: int = 200, timeout: float = 30.0) -> Iterator[_Item]:
    """The resources of a FHIR server's search API, type by type. Pages follow the Bundle's
    `link[next]`; a server that sends no next link but reports more matches (`total`) is paged with
    `_offset`, as Medplum and others accept. A page that repeats what was already read (a server
    ignoring `_offset`) is an error, not a loop."""
    from dicomlake.fhir.rest import FhirServerTarget

    client = FhirServerTarget(base_url, token, timeout)
    base = client.base
    for kind in resource_types:
        query = {"_count": page_size}
        url: str | None = f"{base}/{kind}?{urllib.parse.urlencode(query)}"
        seen: set[str] = set()
        while url:
            if not url.startswith(base):
                raise ValueError(f"next link {url!r} leaves the server {base!r}")
            bundle = client.request("GET", url[len(base):])
            item = _Item(url, None, "")
            ids: list[str] = []
            for entry in _expand(bundle, item):
                if entry.resource is bundle:
                    continue
                if isinstance(entry.resource, dict):
                    if entry.resource.get("resourceType") == "OperationOutcome":
                        continue  # search.mode "outcome": the server's remarks, not data
                    ids.append(f"{entry.resource.get('resourceType')}/{entry.resource.get('id')}")
                yield entry
            url = next((link.get("url") for link in bundle.get("link", [])
                        if link.get("relation") == "next"), None)
            if url is None and ids:
                if seen.issuperset(ids):
                    raise ValueError(f"{kind} search at {base} repeats page {item.source!r}: the server "
                                     "ignores _offset and sends no next link")
                total = bundle.get("total")
                if isinstance(total, int) and len(seen | set(ids)) < total:
                    offset = {"_offset": len(seen | set(ids))}
                    url = f"{base}/{kind}?{urllib.parse.urlencode(query | offset)}"
            seen.update(ids)
