"""The API description: /openapi.json (generated from the handlers' docstrings) and /docs (Swagger UI).

A handler documents itself in its docstring: a summary line, then after `---` the OpenAPI
operation in YAML (parameters, responses). Both pages are public: they describe, they hold no data.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

import dicomlake

_GENERATOR = SchemaGenerator({
    "openapi": "3.0.3",
    "info": {
        "title": "dicomlake DICOMweb service",
        "version": getattr(dicomlake, "__version__", "0"),
        "description": "QIDO-RS, STOW-RS, WADO-RS, delete, change feed and extended query tags over a "
                       "per-tenant Delta lakehouse. Every path exists under /tenants/{tenant}/dicomweb "
                       "and, for the default tenant, under /dicomweb.",
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
})

_DOCS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dicomlake DICOMweb API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
"""


async def openapi_schema(request: Request) -> Response:
    """The OpenAPI document of this service.
    ---
    security: []
    responses:
      200: {description: the OpenAPI 3 document}
    """
    schema = _GENERATOR.get_schema(routes=request.app.routes)
    return JSONResponse(schema)


async def docs(request: Request) -> Response:
    """Swagger UI over /openapi.json.
    ---
    security: []
    responses:
      200: {description: an HTML page}
    """
    return HTMLResponse(_DOCS)


ROUTES = [
    Route("/openapi.json", openapi_schema, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
