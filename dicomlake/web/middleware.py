"""Request ids and access logs (without PHI), and gzip for JSON only.

Access log: one JSON line per request on the `dicomlake.web.access` logger with time, request id,
method, the route TEMPLATE (`/tenants/{tenant}/dicomweb/studies/{study}`, never the concrete path:
UIDs and names can be PHI), status, bytes sent, duration in ms, the principal's name and the
tenant, and for a STOW the time of each of its stages. Never a query string, never a UID, never a
token.
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
from starlette.routing import BaseRoute, Match, Mount
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


def _match(routes: list[BaseRoute], scope: Scope) -> tuple[str, dict[str, Any]] | None:
    partial = None
    for route in routes:
        match, child = route.matches(scope)
        if match == Match.NONE:
            continue
        if isinstance(route, Mount):
            inner = _match(route.routes, {**scope, **child})
            if inner is None:
                continue
            found = (route.path + inner[0], {**child.get("path_params", {}), **inner[1]})
        else:
            found = (getattr(route, "path", ""), child.get("path_params", {}))
        if match == Match.FULL:
            return found
        partial = partial or found
    return partial


def route_template(scope: Scope) -> tuple[str | None, dict[str, Any]]:
    """The route a request matches as a template (`/tenants/{tenant}/dicomweb/studies/{study}`) and
    its path parameters; (None, {}) when no route matches. Also for requests refused before routing."""
    app = scope.get("app")
    router = getattr(app, "router", None)
    if router is None:
        return None, {}
    # Routing moves root_path down into the mount it matched: start again from the app's.
    root = scope.get("app_root_path", scope.get("root_path", ""))
    found = _match(router.routes, {**scope, "root_path": root})
    return found if found else (None, {})


def _tenant(template: str | None, params: dict[str, Any]) -> str | None:
    if template is None:
        return None
    name = params.get("tenant")
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
            template, params = route_template(scope)
            principal = state.get("principal")
            line = {
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "request_id": request_id,
                "method": scope["method"],
                "route": template,
                "status": outcome["status"],
                "bytes": outcome["bytes"],
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "principal": getattr(principal, "name", None),
                "tenant": _tenant(template, params),
            }
            if state.get("timings"):  # a STOW's stages (ms), as in its Server-Timing header
                line["timings"] = {name: round(ms, 2) for name, ms in state["timings"].items()}
            access_log.info(json.dumps(line))
