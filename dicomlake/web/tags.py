"""Extended query tags and their operations over HTTP, shaped as Azure's DICOM service shapes them.

    POST   {base}/extendedquerytags                  [{Path, VR, PrivateCreator, Level}, ...] -> 202
           {"id": ..., "href": ".../operations/{id}"}; the reindex runs as a background operation
    GET    {base}/extendedquerytags?limit=&offset=   [tag, ...]
    GET    {base}/extendedquerytags/{tagPath}        tag
    PATCH  {base}/extendedquerytags/{tagPath}        {"QueryStatus": "Enabled" | "Disabled"} -> tag
    DELETE {base}/extendedquerytags/{tagPath}        204
    GET    {base}/extendedquerytags/{tagPath}/errors [error, ...]
    GET    {base}/operations/{id}                    202 + Location while running, 200 when done
                                                     (dicomlake.web.operations)

A tag: {"path", "vr", "privateCreator" (private tags), "level" (Study | Series | Instance),
"status" (Adding | Ready | Deleting), "queryStatus" (Enabled | Disabled), "errors": {"count",
"href"} when it has errors, "operation": {"id", "href"} while a reindex of it runs}, plus our
"key" (the path, or "path:creator" for a private tag) and "keyword". {tagPath} is a key, keyword
or 8-hex path. Request bodies' field names and values are matched case-insensitively. Every
endpoint here needs the admin permission.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomlake import tags
from dicomlake.errors import InvalidQueryTag, QueryTagNotFound
from dicomlake.store.lakehouse import TenantStore
from dicomlake.web.context import dicomweb_base, json_body, tenant_of
from dicomlake.web.responses import json_bytes, json_response

_ADD_FIELDS = {"path": "tag", "vr": "vr", "privatecreator": "private_creator", "level": "level"}


def _tag_href(base: str, tag: tags.QueryTag) -> str:
    return f"{base}/extendedquerytags/{quote(tag.key, safe='')}"


def tag_json(base: str, tag: tags.QueryTag, operation: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"key": tag.key, "path": tag.path, "keyword": tag.keyword, "vr": tag.vr}
    if tag.private_creator:
        out["privateCreator"] = tag.private_creator
    out.update(level=tag.level.capitalize(), status=tag.status.capitalize(),
               queryStatus=tag.query_status.capitalize())
    if tag.error_count:
        out["errors"] = {"count": tag.error_count, "href": _tag_href(base, tag) + "/errors"}
    if operation:
        out["operation"] = {"id": operation, "href": f"{base}/operations/{operation}"}
    return out


def _running_operations(tenant: TenantStore) -> dict[str, str]:
    """Tag key -> id of a running reindex covering it (None keys: every adding tag)."""
    covering: dict[str, str] = {}
    for status in tags.list_operations(tenant):
        if status["state"] != "running":
            continue
        for key in status.get("keys") or ["*"]:
            covering[key] = status["id"]
    return covering


def _with_operation(
    tenant: TenantStore, tag: tags.QueryTag, running: dict[str, str] | None = None
) -> str | None:
    if tag.status != "adding":
        return None
    running = running if running is not None else _running_operations(tenant)
    return running.get(tag.key) or running.get("*")


def _spec(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise HTTPException(400, "each extended query tag is an object {Path, VR, PrivateCreator, Level}")
    spec: dict[str, Any] = {}
    for name, value in item.items():
        field = _ADD_FIELDS.get(str(name).lower())
        if field is None:
            raise HTTPException(400, f"unknown field {name!r} (Path, VR, PrivateCreator, Level)")
        if value is not None and not isinstance(value, str):
            raise HTTPException(400, f"{name} must be a string")
        spec[field] = value
    if not spec.get("tag"):
        raise HTTPException(400, "Path is required")
    return spec


def _conflict(message: str) -> bool:
    return " exists (" in message or "is being deleted" in message or "already searchable" in message


def _add(request: Request, items: Any) -> tuple[str, str]:
    tenant = tenant_of(request, "admin")
    if not isinstance(items, list) or not items:
        raise HTTPException(400, "the body is a non-empty JSON array of extended query tags")
    specs = [_spec(item) for item in items]
    try:
        added = tags.add_query_tags(tenant, specs)
    except InvalidQueryTag as exc:
        raise HTTPException(409 if _conflict(str(exc)) else 400, str(exc)) from None
    operation = tags.start_reindex(tenant, [t.key for t in added])
    return operation, f"{dicomweb_base(request)}/operations/{operation}"


async def add_tags(request: Request) -> Response:
    """Add extended query tags and start reindexing existing instances on them.
    ---
    requestBody:
      content:
        application/json:
          schema:
            type: array
            items:
              type: object
              properties:
                Path: {type: string, description: 'keyword or 8-hex tag, e.g. 00101030'}
                VR: {type: string, description: required for private tags}
                PrivateCreator: {type: string, description: private tags only}
                Level: {type: string, enum: [Study, Series, Instance]}
    responses:
      202: {description: '{"id": operation id, "href": URL of the operation}'}
      400: {description: an invalid tag}
      409: {description: a tag that exists already or is built in}
    """
    items = await json_body(request)
    operation, href = await run_in_threadpool(_add, request, items)
    return json_response(json_bytes({"id": operation, "href": href}), status=202, headers={"Location": href})


def _paging(request: Request, default: int, high: int) -> tuple[int, int]:
    values = []
    for name, fallback, low, top in (("limit", default, 1, high), ("offset", 0, 0, 2**62)):
        text = request.query_params.get(name)
        try:
            value = fallback if text is None else int(text)
        except ValueError:
            raise HTTPException(400, f"{name}: {text!r} is not an integer") from None
        if not low <= value <= top:
            raise HTTPException(400, f"{name}: must be between {low} and {top}, not {value}")
        values.append(value)
    return values[0], values[1]


def _list(request: Request) -> bytes:
    tenant = tenant_of(request, "admin")
    limit, offset = _paging(request, 100, 200)
    page = tags.list_query_tags(tenant)[offset:offset + limit]
    base = dicomweb_base(request)
    running = _running_operations(tenant) if any(t.status == "adding" for t in page) else {}
    return json_bytes([tag_json(base, t, _with_operation(tenant, t, running)) for t in page])


async def list_tags(request: Request) -> Response:
    """List the extended query tags.
    ---
    parameters:
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 200, default: 100}}
      - {name: offset, in: query, schema: {type: integer, minimum: 0, default: 0}}
    responses:
      200: {description: JSON array of tags}
    """
    return json_response(await run_in_threadpool(_list, request))


def _one(request: Request, action: str, body: Any = None) -> bytes | None:
    tenant = tenant_of(request, "admin")
    name = request.path_params["tag_path"]
    base = dicomweb_base(request)
    try:
        if action == "get":
            tag = tags.get_query_tag(tenant, name)
        elif action == "patch":
            if not isinstance(body, dict) or {k.lower() for k in body} != {"querystatus"}:
                raise HTTPException(400, 'the body is {"QueryStatus": "Enabled" | "Disabled"}')
            value = next(iter(body.values()))
            if not isinstance(value, str) or value.lower() not in ("enabled", "disabled"):
                raise HTTPException(400, f"QueryStatus must be Enabled or Disabled, not {value!r}")
            tag = tags.set_query_status(tenant, name, value.lower())
        elif action == "delete":
            tags.delete_query_tag(tenant, name)
            return None
        else:  # errors
            return _errors(request, tenant, name)
    except QueryTagNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return json_bytes(tag_json(base, tag, _with_operation(tenant, tag)))


def _errors(request: Request, tenant: TenantStore, name: str) -> bytes:
    from dicomlake.store.read import scan

    limit, offset = _paging(request, 100, 200)
    rows = tags.tag_errors(tenant, name, limit, offset)
    uids: dict[int, dict[str, Any]] = {}
    if rows:
        seqs = ", ".join(str(int(r["seq"])) for r in rows)
        found = scan(tenant.table("changes"), ["seq", "study_instance_uid", "series_instance_uid"],
                     where=f"seq IN ({seqs})")
        uids = {r["seq"]: r for r in found.to_pylist()}
    return json_bytes([{
        "studyInstanceUid": uids.get(r["seq"], {}).get("study_instance_uid"),
        "seriesInstanceUid": uids.get(r["seq"], {}).get("series_instance_uid"),
        "sopInstanceUid": r["sop_instance_uid"],
        "sequence": r["seq"],
        "createdTime": r["recorded_at"].isoformat().replace("+00:00", "Z"),
        "errorCode": r["error_code"],
        "errorMessage": r["message"],
    } for r in rows])


async def get_tag(request: Request) -> Response:
    """One extended query tag by key, keyword or 8-hex path.
    ---
    responses:
      200: {description: the tag}
      404: {description: no such tag}
    """
    return json_response(await run_in_threadpool(_one, request, "get"))


async def update_tag(request: Request) -> Response:
    """Enable or disable querying on a tag: {"QueryStatus": "Enabled" | "Disabled"}.
    ---
    responses:
      200: {description: the updated tag}
      400: {description: a bad body}
      404: {description: no such tag}
    """
    body = await json_body(request)
    return json_response(await run_in_threadpool(_one, request, "patch", body))


async def delete_tag(request: Request) -> Response:
    """Delete a tag, its indexed values and its errors.
    ---
    responses:
      204: {description: deleted}
      404: {description: no such tag}
    """
    await run_in_threadpool(_one, request, "delete")
    return Response(status_code=204)


async def tag_errors(request: Request) -> Response:
    """Values of a tag that could not be indexed, and why.
    ---
    parameters:
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 200, default: 100}}
      - {name: offset, in: query, schema: {type: integer, minimum: 0, default: 0}}
    responses:
      200: {description: 'JSON array of {studyInstanceUid, seriesInstanceUid, sopInstanceUid,
            createdTime, errorMessage}'}
      404: {description: no such tag}
    """
    return json_response(await run_in_threadpool(_one, request, "errors"))


ROUTES = [
    Route("/extendedquerytags", add_tags, methods=["POST"]),
    Route("/extendedquerytags", list_tags, methods=["GET"]),
    Route("/extendedquerytags/{tag_path}/errors", tag_errors, methods=["GET"]),
    Route("/extendedquerytags/{tag_path}", get_tag, methods=["GET"]),
    Route("/extendedquerytags/{tag_path}", update_tag, methods=["PATCH"]),
    Route("/extendedquerytags/{tag_path}", delete_tag, methods=["DELETE"]),
]
