"""Request ids and access logs (without PHI), and gzip for JSON only.

Access log: one JSON line per request on the `dicomlake.web.access` logger with time, request id,
method, the route TEMPLATE (`/tenants/{tenant}/dicomweb/studies/{study}`, never the concrete path:
UIDs and names can be PHI), status, bytes sent, duration in ms, the principal's name and the
tenant. Never a query string, never a UID, never a token.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomlake.store.lakehouse import DEFAULT_TENANT, check_tenant

ACCESS_LOGGER = "dicomlake.web.access"
access_log = logging.getLogger(ACCESS_LOGGER)
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Media types gzip leaves alone: DICOM bytes, pixel data and images are compressed already (or
# streamed); what is compressed is JSON (DICOM JSON, change feed, tags) and small text.
NOT_COMPRESSED = (
    "multipart/*", "application/dicom", "application/octet-stream", "image/*", "video/*",
    "application/pdf", "application/zip", "text/event-stream",
)  # fmt: skip


def json_gzip(app: ASGIApp, minimum_size: int = 1024) -> GZipMiddleware:
    return GZipMiddleware(
        app, minimum_size=minimum_size, compresslevel=5, exclude_content_types=NOT_COMPRESSED)


def route_template(scope: Scope) -> str | None:
    """The matched route as a template (mount prefix + route path), or None if nothing matched."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return None
    # Routes are mounted under one of the two bases; root_path grew by the mount's matched path.
    if scope.get("root_path", "") != scope.get("app_root_path", scope.get("root_path", "")):
        base = "/tenants/{tenant}/dicomweb" if "tenant" in scope.get("path_params", {}) else "/dicomweb"
        return base + path
    return path


def _tenant(scope: Scope, template: str | None) -> str | None:
    if template is None:
        return None
    name = scope.get("path_params", {}).get("tenant")
    if name is None:
        return DEFAULT_TENANT if template.startswith("/dicomweb") else None
    try:
        return check_tenant(name)
    except ValueError:
        return "(invalid)"


class RequestContextMiddleware:
    """Outermost: gives each request an id (X-Request-Id: a sane incoming one, else a new UUID),
    returns it as a header, and writes the access log line when the response is done."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        outcome: dict[str, Any] = {"status": 500, "bytes": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
            elif message["type"] == "http.response.body":
                outcome["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            template = route_template(scope)
            principal = state.get("principal")
            access_log.info(json.dumps({
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "request_id": request_id,
                "method": scope["method"],
                "route": template,
                "status": outcome["status"],
                "bytes": outcome["bytes"],
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "principal": getattr(principal, "name", None),
                "tenant": _tenant(scope, template),
            }))
