"""QIDO-RS (search) and the non-standard DELETE of studies, series and instances.

Search answers `application/dicom+json`: 200 with an array of matches, or 204 No Content with an
empty body when nothing matches, as PS3.18 §8.3.4.4.1 (Search Transaction response) specifies and
as Azure's DICOM service answers (CP-2473 proposes 200 with an empty payload; clients such as
dicomweb-client accept both). Every match carries RetrieveURL (0008,1190), the absolute URL of that
study, series or instance on this server under the base the request used.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomlake.errors import InvalidQuery
from dicomlake.web.context import Principal, dicomweb_base, search_index, tenant_of
from dicomlake.web.responses import dicom_json_response, json_bytes

RETRIEVE_URL = "00081190"
_UID_TAGS = {"study": "0020000D", "series": "0020000E", "instance": "00080018"}
_ACCEPTED = ("application/dicom+json", "application/json", "application/*", "*/*")


def _accepts_json(request: Request) -> bool:
    accept = request.headers.get("accept")
    if not accept:
        return True
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return any(t in _ACCEPTED for t in types)


def _params(request: Request, path_keys: dict[str, str]) -> dict[str, Any]:
    """Query parameters as SearchIndex takes them (repeated keys -> lists), plus the path's UIDs."""
    params: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key == "":
            continue  # '?&limit=1' (Weasis sends it): an empty key is no parameter
        if key in params:
            existing = params[key]
            params[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            params[key] = value
    for keyword, uid in path_keys.items():
        if keyword in params:
            raise InvalidQuery(keyword, "is already given in the path")
        params[keyword] = uid
    return params


def _retrieve_url(base: str, level: str, match: dict[str, Any]) -> str | None:
    def uid(level_name: str) -> str | None:
        values = (match.get(_UID_TAGS[level_name]) or {}).get("Value") or []
        return values[0] if values else None

    study = uid("study")
    if not study:
        return None
    url = f"{base}/studies/{study}"
    if level in ("series", "instance"):
        series = uid("series")
        if not series:
            return None
        url += f"/series/{series}"
    if level == "instance":
        instance = uid("instance")
        if not instance:
            return None
        url += f"/instances/{instance}"
    return url


def _search(request: Request, level: str, path_keys: dict[str, str]) -> tuple[int, bytes]:
    """The blocking part (runs on the thread pool): authorize, search, add RetrieveURL, encode."""
    tenant = tenant_of(request, "read")
    params = _params(request, path_keys)
    matches = search_index(request, tenant).search(level, params)
    if not matches:
        return 204, b""
    base = dicomweb_base(request)
    singular = {"studies": "study", "series": "series", "instances": "instance"}[level]
    for match in matches:
        url = _retrieve_url(base, singular, match)
        if url:
            match[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
    return 200, json_bytes(matches)


async def _qido(request: Request, level: str, path_keys: dict[str, str]) -> Response:
    from starlette.concurrency import run_in_threadpool

    if not _accepts_json(request):
        raise HTTPException(406, "search results are available as application/dicom+json only")
    status, body = await run_in_threadpool(_search, request, level, path_keys)
    if status == 204:
        return Response(status_code=204)
    return dicom_json_response(body)


_QIDO_DOC = """
    ---
    parameters:
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 10000, default: 100}}
      - {name: offset, in: query, schema: {type: integer, minimum: 0, default: 0}}
      - {name: includefield, in: query, schema: {type: string},
         description: attribute keywords or tags (comma-separated or repeated), or 'all'}
      - {name: fuzzymatching, in: query, schema: {type: boolean, default: false}}
    responses:
      200: {description: matches as a DICOM JSON array (application/dicom+json), each with RetrieveURL}
      204: {description: no match}
      400: {description: 'a bad parameter: {"error": "invalid_query", "parameter": ..., "detail": ...}'}
      401: {description: no or bad bearer token}
      403: {description: the token may not read this tenant}
    """


async def search_studies(request: Request) -> Response:
    return await _qido(request, "studies", {})


async def search_series(request: Request) -> Response:
    return await _qido(request, "series", {})


async def search_instances(request: Request) -> Response:
    return await _qido(request, "instances", {})


async def search_study_series(request: Request) -> Response:
    return await _qido(request, "series", {"StudyInstanceUID": request.path_params["study"]})


async def search_study_instances(request: Request) -> Response:
    return await _qido(request, "instances", {"StudyInstanceUID": request.path_params["study"]})


async def search_series_instances(request: Request) -> Response:
    path = request.path_params
    keys = {"StudyInstanceUID": path["study"], "SeriesInstanceUID": path["series"]}
    return await _qido(request, "instances", keys)


for _handler, _summary in (
    (search_studies, "QIDO-RS: search studies (any study attribute, e.g. PatientID, StudyDate=20200101-)"),
    (search_series, "QIDO-RS: search series (series and study attributes)"),
    (search_instances, "QIDO-RS: search instances (instance, series and study attributes)"),
    (search_study_series, "QIDO-RS: search the series of a study"),
    (search_study_instances, "QIDO-RS: search the instances of a study"),
    (search_series_instances, "QIDO-RS: search the instances of a series"),
):
    _handler.__doc__ = _summary + _QIDO_DOC


# -- delete -----------------------------------------------------------------------------------------


def _delete(request: Request) -> int:
    from dicomlake.lifecycle import NotFound, delete_instances

    tenant = tenant_of(request, "delete")
    principal: Principal = request.state.principal
    p = request.path_params
    try:
        delete_instances(
            tenant, p["study"], p.get("series"), p.get("instance"), source=f"web:{principal.name}")
    except NotFound:
        raise HTTPException(404, "no current instance matches") from None
    except ValueError as exc:  # a malformed UID
        raise HTTPException(400, str(exc)) from None
    return 204


async def delete(request: Request) -> Response:
    """Delete a study, a series or an instance (a delete entry per instance in the change feed).
    ---
    responses:
      204: {description: deleted}
      400: {description: a malformed UID}
      403: {description: the token may not delete in this tenant}
      404: {description: nothing current matches}
    """
    from starlette.concurrency import run_in_threadpool

    return Response(status_code=await run_in_threadpool(_delete, request))


ROUTES = [
    Route("/studies", search_studies, methods=["GET"]),
    Route("/series", search_series, methods=["GET"]),
    Route("/instances", search_instances, methods=["GET"]),
    Route("/studies/{study}/series", search_study_series, methods=["GET"]),
    Route("/studies/{study}/instances", search_study_instances, methods=["GET"]),
    Route("/studies/{study}/series/{series}/instances", search_series_instances, methods=["GET"]),
    Route("/studies/{study}", delete, methods=["DELETE"]),
    Route("/studies/{study}/series/{series}", delete, methods=["DELETE"]),
    Route("/studies/{study}/series/{series}/instances/{instance}", delete, methods=["DELETE"]),
]
