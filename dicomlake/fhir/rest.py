"""Target (b): a FHIR R4 server over REST, mirroring DICOMcast's Delta tables for the touched ids.

One transaction bundle per batch. Resources are matched on the server by identifier (our ids are
ours; the server assigns its own): a resource the server does not have is a conditional create
(POST with If-None-Exist: identifier=...), one it has with other content is an update of the
server's id with If-Match on the server's version (a concurrent writer makes it fail with 412 and
the whole batch is retried), one with the same content is left alone (no new version on a re-run),
and an ImagingStudy whose study is gone is deleted (If-Match too). References inside the batch use
the resources' fullUrl (urn:uuid:<our id>), which the server rewrites to its ids.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_CHUNK = 50  # identifiers per search request


class FhirServerError(RuntimeError):
    """The FHIR server refused a request or could not be reached (`status` None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def identifier_token(resource: Mapping[str, Any]) -> str:
    """The search token (system|value) of a resource's first identifier."""
    ident = (resource.get("identifier") or [None])[0]
    if not ident or not ident.get("value"):
        raise FhirServerError(f"{resource.get('resourceType')} {resource.get('id')} has no identifier")
    return f"{ident.get('system', '')}|{ident['value']}"


def _body(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("id", "meta")}


class FhirServerTarget:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    # -- HTTP ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/fhir+json"}
        if data is not None:
            headers["Content-Type"] = "application/fhir+json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(f"{self.base}/{path.lstrip('/')}", data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise FhirServerError(f"{method} {path}: HTTP {exc.code} {detail}", exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise FhirServerError(f"{method} {path}: {exc}") from exc
        return json.loads(text) if text else {}

    def search(self, kind: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        bundle = self.request("GET", f"{kind}?{urllib.parse.urlencode(params)}")
        return [entry["resource"] for entry in bundle.get("entry", []) if "resource" in entry]

    def find(self, kind: str, tokens: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The server's resources of `kind` by identifier token (system|value)."""
        wanted = sorted(set(tokens))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            params = {"identifier": ",".join(chunk), "_count": str(len(chunk) * 2)}
            for resource in self.search(kind, params):
                for ident in resource.get("identifier", []):
                    token = f"{ident.get('system', '')}|{ident.get('value')}"
                    if token in chunk:
                        found[token] = resource
        return found

    # -- a batch ------------------------------------------------------------------------------
    def apply(self, resources: Sequence[dict[str, Any]], deleted_studies: Iterable[str]) -> dict[str, int]:
        """Make the server hold `resources` (ours, by identifier) and not the ImagingStudy of any
        study UID in `deleted_studies`. Returns counts of created / updated / deleted / unchanged."""
        deleted = sorted(set(deleted_studies))
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for resource in resources:
            by_kind.setdefault(resource["resourceType"], []).append(resource)
        found: dict[str, dict[str, dict[str, Any]]] = {
            kind: self.find(kind, [identifier_token(r) for r in items]) for kind, items in by_kind.items()
        }
        gone = self.find("ImagingStudy", [f"urn:dicom:uid|urn:oid:{uid}" for uid in deleted])
        # Where our references point on the server: its id when it has the resource, else our fullUrl.
        target: dict[str, str] = {}
        for kind, items in by_kind.items():
            for resource in items:
                existing = found[kind].get(identifier_token(resource))
                ours = f"{kind}/{resource['id']}"
                target[ours] = f"{kind}/{existing['id']}" if existing else f"urn:uuid:{resource['id']}"

        entries: list[dict[str, Any]] = []
        counts = {"created": 0, "updated": 0, "deleted": 0, "unchanged": 0}
        for kind in ("Endpoint", "Patient", "ImagingStudy"):
            for resource in by_kind.get(kind, []):
                token = identifier_token(resource)
                body = _rewrite(_body(resource), target)
                existing = found[kind].get(token)
                if existing is None:
                    entries.append({
                        "fullUrl": f"urn:uuid:{resource['id']}",
                        "resource": body,
                        "request": {"method": "POST", "url": kind, "ifNoneExist": f"identifier={token}"},
                    })
                    counts["created"] += 1
                elif _body(existing) == body:
                    counts["unchanged"] += 1
                else:
                    entries.append({
                        "fullUrl": f"{self.base}/{kind}/{existing['id']}",
                        "resource": {**body, "id": existing["id"]},
                        "request": {"method": "PUT", "url": f"{kind}/{existing['id']}",
                                    "ifMatch": f'W/"{existing["meta"]["versionId"]}"'},
                    })
                    counts["updated"] += 1
        for resource in gone.values():
            entries.append({"request": {"method": "DELETE", "url": f"ImagingStudy/{resource['id']}",
                                        "ifMatch": f'W/"{resource["meta"]["versionId"]}"'}})
            counts["deleted"] += 1
        if entries:
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            answer = self.request("POST", "", bundle)
            failed = [e["response"] for e in answer.get("entry", [])
                      if not str(e.get("response", {}).get("status", "200")).startswith("2")]
            if answer.get("resourceType") != "Bundle" or failed:
                raise FhirServerError(f"transaction refused: {json.dumps(failed or answer)[:500]}")
        return counts


def _rewrite(value: Any, target: Mapping[str, str]) -> Any:
    """Our references (Patient/<our id>, Endpoint/<our id>) -> the server's ids or our fullUrls."""
    if isinstance(value, dict):
        return {k: (target.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, target))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, target) for v in value]
    return value
