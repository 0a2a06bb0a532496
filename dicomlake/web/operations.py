"""Long-running operations over HTTP, shaped as Azure's DICOM service shapes them (dicomlake.operations).

    GET {base}/operations/{id}          202 + Location while running, 200 once done
    GET {base}/operations/{id}/errors   an export's errors, JSON lines (application/x-ndjson)

A reindex (kind 'reindex'): {operationId, type "Reindex", createdTime, lastUpdatedTime, status
(Running | Completed | Failed), percentComplete, resources (the tags' URLs)}, as before.
An export: {operationId, type "export", createdTime, lastUpdatedTime, status (running |
succeeded | failed), percentComplete, destination, results {exported, skipped, failed, notFound,
errors, errorHref} once done, error when it failed}.
Who may read them: admin every operation of the tenant; export the tenant's export operations.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomlake import operations
from dicomlake.store.lakehouse import TenantStore
from dicomlake.web.context import dicomweb_base, tenant_of
from dicomlake.web.responses import json_bytes, json_response

_REINDEX_STATES = {"running": "Running", "succeeded": "Completed", "failed": "Failed",
                   "interrupted": "Failed"}
INTERRUPTED = "the process running the operation stopped"


def _authorized(request: Request) -> tuple[TenantStore, dict[str, Any]]:
    """The operation, when the caller may see it: admin any; export permission, export operations."""
    try:
        tenant, kinds = tenant_of(request, "admin"), None
    except HTTPException as refused:
        if refused.status_code != 403:
            raise
        tenant, kinds = tenant_of(request, "export"), {"export"}
    try:
        status = operations.operation_status(tenant, request.path_params["operation_id"])
    except operations.OperationNotFound:
        raise HTTPException(404, "no such operation") from None
    if kinds is not None and status.get("kind") not in kinds:
        raise HTTPException(403, "not allowed to admin in this tenant")
    return tenant, status


def _reindex_body(base: str, status: dict[str, Any]) -> dict[str, Any]:
    keys = status.get("keys")
    body = {
        "operationId": status["id"],
        "type": "Reindex",
        "createdTime": status["started_at"],
        "lastUpdatedTime": status.get("updated_at") or status["started_at"],
        "status": _REINDEX_STATES.get(status["state"], "Failed"),
        "percentComplete": int(status.get("percent") or 0),
        "resources": [f"{base}/extendedquerytags/{quote(k, safe='')}" for k in keys] if keys else [],
    }
    if status.get("error"):
        body["error"] = status["error"]
    elif status["state"] == "interrupted":
        body["error"] = f"{INTERRUPTED}; add the tags' reindex again"
    return body


def export_body(base: str, status: dict[str, Any]) -> dict[str, Any]:
    state = status["state"]
    body: dict[str, Any] = {
        "operationId": status["id"],
        "type": "export",
        "createdTime": status["started_at"],
        "lastUpdatedTime": status.get("updated_at") or status["started_at"],
        "status": "failed" if state == "interrupted" else state,
        "percentComplete": int(status.get("percent") or 0),
        "destination": status.get("destination"),
        "format": status.get("format"),
        "progress": {"processed": status.get("processed", 0), "total": status.get("total", 0)},
    }
    summary = status.get("summary")
    if summary:
        not_found = len(summary.get("not_found", []))
        body["results"] = {
            "exported": summary["exported"],
            "skipped": summary["skipped"],
            "failed": summary["failed"],
            "notFound": not_found,
            "errors": summary["skipped"] + summary["failed"] + not_found,
            "errorHref": f"{base}/operations/{status['id']}/errors",
        }
    if status.get("error"):
        body["error"] = status["error"]
    elif state == "interrupted":
        body["error"] = f"{INTERRUPTED}; post the same export again to resume it"
    return body


def _operation(request: Request) -> tuple[int, bytes, str]:
    _, status = _authorized(request)
    base = dicomweb_base(request)
    body = export_body(base, status) if status.get("kind") == "export" else _reindex_body(base, status)
    href = f"{base}/operations/{status['id']}"
    return (202 if status["state"] == "running" else 200), json_bytes(body), href


async def get_operation(request: Request) -> Response:
    """A long-running operation (a reindex, an export): 202 with Location while it runs, 200 once done.
    ---
    responses:
      200: {description: 'reindex {operationId, type Reindex, status Completed | Failed, percentComplete,
            resources}; export {operationId, type export, status succeeded | failed, percentComplete,
            results {exported, skipped, failed, notFound, errors, errorHref}}'}
      202: {description: the operation is running}
      403: {description: neither admin nor (for an export) export permission}
      404: {description: no such operation}
    """
    code, body, href = await run_in_threadpool(_operation, request)
    headers = {"Location": href} if code == 202 else None
    return json_response(body, status=code, headers=headers)


def _errors(request: Request) -> bytes:
    from dicomlake.export.operation import error_entries

    _, status = _authorized(request)
    if status.get("kind") != "export":
        raise HTTPException(404, "only exports have an errors log here (see the tag's errors)")
    return b"".join(json_bytes(entry) + b"\n" for entry in error_entries(status))


async def get_operation_errors(request: Request) -> Response:
    """An export's errors log: one JSON object per line {identifier, status, error}.
    ---
    responses:
      200: {description: application/x-ndjson}
      404: {description: no such export operation}
    """
    body = await run_in_threadpool(_errors, request)
    return Response(body, media_type="application/x-ndjson")


ROUTES = [
    Route("/operations/{operation_id}", get_operation, methods=["GET"]),
    Route("/operations/{operation_id}/errors", get_operation_errors, methods=["GET"]),
]
