"""The DICOMweb ASGI app: feature routes mounted under both bases, behind auth and the middlewares.

    /tenants/{tenant}/dicomweb/...   a tenant's DICOMweb base
    /dicomweb/...                    the default tenant's
    /health                          liveness (no auth, no data)
    /openapi.json, /docs             the API description (no auth, no data)

Each feature module exposes `ROUTES: list[starlette.routing.Route]` with paths relative to the base;
adding a feature is one entry in FEATURES. Middlewares, outermost first: request id + access log,
CORS (only when origins are configured), gzip for JSON, authentication. Handlers authorize with
`dicomlake.web.context.tenant_of`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from dicomlake.errors import InvalidQuery
from dicomlake.store.lakehouse import Lakehouse
from dicomlake.web import changefeed, export, openapi, operations, qido, stow, tags, wado
from dicomlake.web.auth import AuthConfig, AuthMiddleware
from dicomlake.web.middleware import RequestContextMiddleware, json_gzip
from dicomlake.web.responses import error_response

# One entry per feature module (each has ROUTES, relative to the DICOMweb base); a new feature is
# one import and one entry here. Routes of the same path and other methods coexist (GET QIDO and
# POST STOW on /studies; GET WADO and DELETE on /studies/{study}).
FEATURES = [qido, changefeed, tags, operations, export, stow, wado]

ENV_NO_AUTH = "DICOMLAKE_WEB_NO_AUTH"  # set by `dicomlake serve --no-auth` for its workers
ENV_CORS = "DICOMLAKE_WEB_CORS_ORIGINS"  # space-separated origins
ENV_EXPORT_ROOT = "DICOMLAKE_WEB_EXPORT_ROOT"  # local folder of POST /export outputs (a subfolder per tenant)
ENV_EXPORT_WORKERS = "DICOMLAKE_WEB_EXPORT_WORKERS"  # decoder processes of one export (default 1)
TENANT_BASE = "/tenants/{tenant}/dicomweb"
DEFAULT_BASE = "/dicomweb"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    phrase = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
              415: "unsupported_media_type"}.get(exc.status_code, "error")
    return error_response(exc.status_code, phrase, str(exc.detail), dict(exc.headers or {}))


async def _invalid_query(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidQuery)
    body = {"error": "invalid_query", "parameter": exc.parameter, "detail": str(exc)}
    return JSONResponse(body, status_code=400)


async def health(request: Request) -> Response:
    """Liveness: the process serves requests. No authentication, no data.
    ---
    responses:
      200: {description: '{"status": "ok"}'}
    """
    return JSONResponse({"status": "ok"})


def dicomweb_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for feature in FEATURES:
        routes.extend(feature.ROUTES)
    return routes


def build_app(
    lakehouse: Lakehouse,
    auth: AuthConfig | None = None,
    cors_origins: Sequence[str] = (),
    gzip_minimum_size: int = 1024,
    export_root: str | Path | None = None,
    export_workers: int = 1,
) -> Starlette:
    """The app over `lakehouse`. `auth=None` means tokens from the lakehouse (the secure default);
    only `AuthConfig(disabled=True)` turns authentication off (local development). POST /export
    writes under `export_root`/<tenant>/ (default: <tenant>/exports/ of a local lakehouse)."""
    auth = auth if auth is not None else AuthConfig.for_lakehouse(lakehouse)
    dicomweb = dicomweb_routes()
    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Mount(TENANT_BASE, routes=dicomweb),
        Mount(DEFAULT_BASE, routes=dicomweb),
        *openapi.ROUTES,
    ]
    middleware = [Middleware(RequestContextMiddleware)]
    if cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept", "If-None-Match", "X-Request-Id"],
            expose_headers=["X-Request-Id", "Location", "ETag", "Content-Location", "Warning"], max_age=600,
        ))
    middleware += [
        Middleware(json_gzip, minimum_size=gzip_minimum_size),
        Middleware(AuthMiddleware, config=auth),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, InvalidQuery: _invalid_query},
    )
    app.state.lakehouse = lakehouse
    app.state.search_indexes = {}
    app.state.auth = auth
    app.state.export_root = str(export_root) if export_root else None
    app.state.export_workers = max(1, int(export_workers))
    return app



def app_from_environment() -> Starlette:
    """The app `dicomlake serve` runs in each worker: root from DICOMLAKE_ROOT, settings from the CLI."""
    auth = AuthConfig(disabled=True) if os.environ.get(ENV_NO_AUTH) == "1" else None
    origins = os.environ.get(ENV_CORS, "").split()
    return build_app(Lakehouse(), auth, cors_origins=origins,
                     export_root=os.environ.get(ENV_EXPORT_ROOT) or None,
                     export_workers=int(os.environ.get(ENV_EXPORT_WORKERS) or 1))
