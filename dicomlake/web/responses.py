"""Response helpers shared by the handlers: JSON errors and DICOM JSON bodies."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    """The JSON error body every handler uses: {"error": <short code>, "detail": <readable reason>}."""
    if status in (204, 304):
        return Response(status_code=status, headers=headers)
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def dicom_json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """DICOM JSON (PS3.18 F.2) already encoded (encode with json_bytes on the thread pool)."""
    return Response(body, status_code=status, media_type="application/dicom+json", headers=headers)


def json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)
