"""The change feed over HTTP, shaped as Azure's DICOM service shapes it.

    GET {base}/changefeed?offset=&limit=&startTime=&endTime=&includeMetadata=   -> JSON array
    GET {base}/changefeed/latest?includeMetadata=                               -> JSON object

Fields: Sequence, StudyInstanceUid, SeriesInstanceUid, SopInstanceUid, SopClassUid, Action
(create | update | delete), Timestamp (UTC, ISO 8601 with Z), State (current | replaced | deleted),
and Metadata (that version's DICOM JSON; null for a delete) when includeMetadata is true, which it is
by default, as in Azure. Parameter names are matched case-insensitively. `limit` defaults to 10
(Azure's default) and goes up to 10,000; `offset` is the sequence to read after, or, with a time
window, the number of entries of the window to skip. startTime alone reads to the end of the feed;
endTime alone from its start. `latest` of an empty feed is 204 No Content.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dicomlake.changefeed import MAX_LIMIT, ChangeFeed, ChangeFeedEntry
from dicomlake.web.context import tenant_of
from dicomlake.web.responses import json_bytes, json_response

DEFAULT_LIMIT = 10
# Our spellings are Azure's (lower case); kept as explicit maps so that a change on either side shows.
ACTIONS = {"create": "create", "update": "update", "delete": "delete"}
STATES = {"current": "current", "replaced": "replaced", "deleted": "deleted"}
_PARAMETERS = {"offset", "limit", "starttime", "endtime", "includemetadata"}
_OPEN_START = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_OPEN_END = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


def entry_json(entry: ChangeFeedEntry, include_metadata: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Sequence": entry.sequence,
        "StudyInstanceUid": entry.study_instance_uid,
        "SeriesInstanceUid": entry.series_instance_uid,
        "SopInstanceUid": entry.sop_instance_uid,
        "SopClassUid": entry.sop_class_uid,
        "Action": ACTIONS[entry.action],
        "Timestamp": entry.timestamp.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "State": STATES[entry.state],
    }
    if include_metadata:
        out["Metadata"] = entry.metadata
    return out


def _query(request: Request) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        name = key.lower()
        if name not in _PARAMETERS:
            raise HTTPException(
                400, f"{key}: unknown parameter (offset, limit, startTime, endTime, includeMetadata)")
        if name in query:
            raise HTTPException(400, f"{key}: given more than once")
        query[name] = value
    return query


def _integer(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HTTPException(400, f"{name}: {text!r} is not an integer") from None
    if not low <= value <= high:
        raise HTTPException(400, f"{name}: must be between {low} and {high}, not {value}")
    return value


def _flag(query: dict[str, str], name: str, default: bool) -> bool:
    text = query.get(name)
    if text is None:
        return default
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise HTTPException(400, f"{name}: {text!r} is not true or false")


def _moment(query: dict[str, str], name: str) -> dt.datetime | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace(" ", "+"))  # a '+' left unescaped arrives as ' '
    except ValueError:
        raise HTTPException(400, f"{name}: {text!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise HTTPException(400, f"{name}: {text!r} needs a time zone (Z or +hh:mm)")
    return moment


def _read(request: Request) -> bytes:
    tenant = tenant_of(request, "read")
    query = _query(request)
    offset = _integer(query, "offset", 0, 0, 2**62)
    limit = _integer(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    metadata = _flag(query, "includemetadata", True)
    start, end = _moment(query, "starttime"), _moment(query, "endtime")
    feed = ChangeFeed(tenant)
    if start or end:
        start, end = start or _OPEN_START, end or _OPEN_END
        if end <= start:
            raise HTTPException(400, "endTime must be after startTime")
        entries = feed.read_window(start, end, offset, limit, metadata)
    else:
        entries = feed.read(offset, limit, metadata)
    return json_bytes([entry_json(e, metadata) for e in entries])


def _latest(request: Request) -> bytes | None:
    tenant = tenant_of(request, "read")
    query = _query(request)
    if set(query) - {"includemetadata"}:
        raise HTTPException(400, "latest takes only includeMetadata")
    metadata = _flag(query, "includemetadata", True)
    entry = ChangeFeed(tenant).latest(metadata)
    return json_bytes(entry_json(entry, metadata)) if entry else None


async def read_changefeed(request: Request) -> Response:
    """Read the change feed: entries after `offset` (a sequence), or those of a time window.
    ---
    parameters:
      - {name: offset, in: query, schema: {type: integer, minimum: 0, default: 0}}
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 10000, default: 10}}
      - {name: startTime, in: query, schema: {type: string, format: date-time}}
      - {name: endTime, in: query, schema: {type: string, format: date-time}}
      - {name: includeMetadata, in: query, schema: {type: boolean, default: true}}
    responses:
      200: {description: 'JSON array of {Sequence, StudyInstanceUid, SeriesInstanceUid, SopInstanceUid,
            SopClassUid, Action, Timestamp, State, Metadata}'}
      400: {description: a bad parameter}
    """
    return json_response(await run_in_threadpool(_read, request))


async def latest_change(request: Request) -> Response:
    """The latest entry of the change feed (204 when the feed is empty).
    ---
    parameters:
      - {name: includeMetadata, in: query, schema: {type: boolean, default: true}}
    responses:
      200: {description: one change feed entry}
      204: {description: the feed is empty}
    """
    body = await run_in_threadpool(_latest, request)
    return Response(status_code=204) if body is None else json_response(body)


ROUTES = [
    Route("/changefeed", read_changefeed, methods=["GET"]),
    Route("/changefeed/latest", latest_change, methods=["GET"]),
]
