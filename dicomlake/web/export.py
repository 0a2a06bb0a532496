"""POST {base}/export: an export as a long-running operation, shaped as Azure's DICOM service export.

    {"source": {"type": "identifiers", "settings": {"values": ["<study>", "<study>/<series>",
                                                              "<study>/<series>/<sop>"]}},
     "destination": {"type": "folder", "settings": {"path": "cohort-a/run-1"}},
     "format": "dicom" | "parquet" | "nifti" | "png", "deid": false, "perFrame": false}
    -> 202 {"id", "href"}, Location: {base}/operations/{id}   (see dicomlake.web.operations)

Sources: "identifiers" (Azure's; a value may also be written as a DICOMweb path,
`<study>/series/<series>/instances/<sop>`), or our "query" ({"filters": {QIDO-RS instance
parameters}}). Destination: only a folder of the server, named relative to the tenant's export
root (`<export root>/<tenant>/<path>`; without a configured root, `<tenant>/exports/<path>` of a
local lakehouse); absolute paths, `..` and hidden names are refused. Without a destination the
folder is named after the operation id. Extensions: "format" (default dicom, as Azure; any format of
dicomlake.export), "deid" (de-identified copies, or de-identified UIDs, PatientID and dates beside
the pixels of the other formats; the server's key is $DICOMLAKE_EXPORT_DEID_KEY), "perFrame" (Parquet).
Posting the same export into the same folder again resumes it. Field names are matched
case-insensitively. Needs the export permission (or admin) in the tenant; only the tenant's own
instances can be selected, and only its own export folder written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomlake.export.run import FORMATS as EXPORT_FORMATS
from dicomlake.store.lakehouse import TenantStore
from dicomlake.web.context import dicomweb_base, json_body, tenant_of
from dicomlake.web.responses import json_bytes, json_response

ENV_DEID_KEY = "DICOMLAKE_EXPORT_DEID_KEY"
MAX_IDENTIFIERS = 10_000
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_DEPTH = 8
FORMATS = ("dicom", *(f for f in EXPORT_FORMATS if f != "dicom"))  # dicom first: Azure's default


def _fields(value: Any, what: str, allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HTTPException(400, f"{what} must be an object")
    fields = {str(k).lower(): v for k, v in value.items()}
    unknown = set(fields) - allowed
    if unknown:
        raise HTTPException(400, f"{what}: unknown field(s) {', '.join(sorted(unknown))}")
    missing = required - set(fields)
    if missing:
        raise HTTPException(400, f"{what}: {', '.join(sorted(missing))} is required")
    return fields


def _selection(source: Any) -> Any:
    from dicomlake.export import Selection, SelectionError
    from dicomlake.export.operation import parse_identifier

    fields = _fields(source, "source", {"type", "settings"}, {"type", "settings"})
    kind = str(fields["type"]).lower()
    if kind == "identifiers":
        settings = _fields(fields["settings"], "source.settings", {"values"}, {"values"})
        values = settings["values"]
        if not isinstance(values, list) or not values or len(values) > MAX_IDENTIFIERS:
            raise HTTPException(400, f"source.settings.values: a list of 1 to {MAX_IDENTIFIERS} identifiers")
        try:
            uids = tuple(dict.fromkeys(parse_identifier(v) for v in values))
        except SelectionError as exc:
            raise HTTPException(400, str(exc)) from None
        return Selection(uids=uids)
    if kind == "query":
        settings = _fields(fields["settings"], "source.settings", {"filters"}, {"filters"})
        filters = settings["filters"]
        if not isinstance(filters, dict) or not filters or not all(
                isinstance(v, str) for v in filters.values()):
            raise HTTPException(400, "source.settings.filters is an object of QIDO-RS parameters (strings)")
        return Selection(filters={str(k): v for k, v in filters.items()})
    raise HTTPException(400, f"source.type is identifiers or query, not {fields['type']!r}")


def destination_name(destination: Any, default: str) -> str:
    """The relative folder name of a destination; 400 for anything that could leave the export root."""
    if destination is None:
        return default
    fields = _fields(destination, "destination", {"type", "settings"}, {"type"})
    if str(fields["type"]).lower() != "folder":
        raise HTTPException(400, f"destination.type is folder, not {fields['type']!r}")
    settings = _fields(fields.get("settings") or {}, "destination.settings", {"path"})
    name = settings.get("path", default)
    if not isinstance(name, str) or not name:
        raise HTTPException(400, "destination.settings.path is a relative folder name")
    segments = name.split("/")
    if name.startswith("/") or "\\" in name or len(segments) > MAX_DEPTH or not all(
            _SEGMENT.match(s) and s != ".." for s in segments):
        raise HTTPException(400, "destination.settings.path must be a relative folder name: letters, "
                                 "digits, '.', '_', '-' in up to 8 segments, not starting with '.' or '/'")
    return name


def tenant_export_root(request: Request, tenant: TenantStore) -> Path:
    """Where this tenant's exports go: a folder of its own, never shared with another tenant."""
    root: str | None = getattr(request.app.state, "export_root", None)
    if root:
        return Path(root).resolve() / tenant.name
    if not tenant.lakehouse.is_local:
        raise HTTPException(409, "this server has no export root configured (its lakehouse is not local)")
    return Path(tenant.uri).resolve() / "exports"


def _start(request: Request, tenant: TenantStore, body: Any) -> tuple[str, str]:
    import uuid

    from dicomlake.export.operation import ExportConflict, start_export

    fields = _fields(body, "the body", {"source", "destination", "format", "deid", "perframe"}, {"source"})
    selection = _selection(fields["source"])
    fmt = str(fields.get("format") or "dicom").lower()
    if fmt not in FORMATS:
        raise HTTPException(400, f"format is one of {', '.join(FORMATS)}, not {fields['format']!r}")
    deid, per_frame = fields.get("deid", False), fields.get("perframe", False)
    if not isinstance(deid, bool) or not isinstance(per_frame, bool):
        raise HTTPException(400, "deid and perFrame are true or false")
    if per_frame and fmt != "parquet":
        raise HTTPException(400, "perFrame is for the parquet format")
    deid_options = None
    if deid:
        key = os.environ.get(ENV_DEID_KEY)
        if not key:
            raise HTTPException(409, f"de-identification is not configured on this server (${ENV_DEID_KEY})")
        from dicomlake.deid import DeidOptions

        deid_options = DeidOptions(project_key=key)
    operation_id = uuid.uuid4().hex
    name = destination_name(fields.get("destination"), operation_id)
    root = tenant_export_root(request, tenant)
    out = (root / name).resolve()
    if not out.is_relative_to(root) or out == root:  # a symlink pointing out of the root
        raise HTTPException(400, "destination.settings.path leaves the export root")
    workers = int(getattr(request.app.state, "export_workers", 1) or 1)
    try:
        start_export(tenant, selection, out, fmt, operation_id=operation_id, per_frame=per_frame,
                     deid_options=deid_options, workers=workers, destination=name)  # fmt: skip
    except ExportConflict as exc:
        raise HTTPException(409, str(exc)) from None
    return operation_id, f"{dicomweb_base(request)}/operations/{operation_id}"


async def start(request: Request) -> Response:
    """Export studies, series or instances to a folder of the server, as a long-running operation.
    ---
    requestBody:
      content:
        application/json:
          schema:
            type: object
            properties:
              source: {type: object, description: '{type: identifiers, settings: {values:
                       [study[/series[/sop]]]}} or {type: query, settings: {filters: {QIDO-RS parameters}}}'}
              destination: {type: object, description: '{type: folder, settings: {path: relative name}}'}
              format: {type: string, enum: [dicom, parquet, nifti, png], default: dicom}
              deid: {type: boolean, default: false}
              perFrame: {type: boolean, default: false}
    responses:
      202: {description: '{"id": operation id, "href": URL of the operation}'}
      400: {description: a bad body (source, identifiers, destination path, format)}
      403: {description: no export permission in this tenant}
      409: {description: another export is writing into that folder, or no export root / de-id key}
    """
    tenant = tenant_of(request, "export")  # 401/403 before anything of the body is looked at
    body = await json_body(request)
    operation_id, href = await run_in_threadpool(_start, request, tenant, body)
    reference = json_bytes({"id": operation_id, "href": href})
    return json_response(reference, status=202, headers={"Location": href})


ROUTES = [Route("/export", start, methods=["POST"])]
