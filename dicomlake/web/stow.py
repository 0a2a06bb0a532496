"""STOW-RS (PS3.18 10.5): POST {base}/studies[/{study}] stores instances; see dicomlake.ingest.stow.

Bodies: multipart/related; type="application/dicom" (each part one Part-10 instance) or a single
application/dicom instance. The body is streamed: small parts are kept in memory within a
per-request budget, the others go to temp files (see dicomlake.web.multipart); then they are
stored on the thread pool; the response (application/dicom+json, PS3.18 Annex I) is sent only once
the instances are committed and searchable.
"""

from __future__ import annotations

import threading
import time
import uuid

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from dicomlake.ingest.stow import DICOM_MEDIA_TYPE, InstanceResult, InstanceStore, StoreOutcome, UploadedPart
from dicomlake.retrieve.instances import InvalidRequest, check_uid
from dicomlake.store.lakehouse import TenantStore
from dicomlake.web.context import tenant_of
from dicomlake.web.multipart import (
    MalformedMultipart,
    parse_content_type,
    remove_files,
    spool_directory,
    spool_multipart,
    spool_single,
)
from dicomlake.web.wado import base_url

DICOM_JSON = "application/dicom+json"
_STORES_LOCK = threading.Lock()


def instance_store(request: Request, tenant: TenantStore) -> InstanceStore:
    """The app's long-lived InstanceStore of a tenant (its committer caches the feed's state)."""
    with _STORES_LOCK:
        stores: dict[str, InstanceStore] | None = getattr(request.app.state, "instance_stores", None)
        if stores is None:
            stores = {}
            request.app.state.instance_stores = stores
        store = stores.get(tenant.name)
        if store is None:
            store = stores[tenant.name] = InstanceStore(tenant)
        return store


def _element(vr: str, *values: object) -> dict[str, object]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _reference(result: InstanceResult) -> dict[str, object]:
    item: dict[str, object] = {}
    item["00081150"] = _element("UI", result.sop_class_uid) if result.sop_class_uid else {"vr": "UI"}
    item["00081155"] = _element("UI", result.sop_instance_uid) if result.sop_instance_uid else {"vr": "UI"}
    return item


def response_body(outcome: StoreOutcome, base: str, study: str | None) -> dict[str, object]:
    """The Store Instances Response Module (PS3.18 Table I.1-1) as DICOM JSON."""
    body: dict[str, object] = {}
    studies = {r.study_instance_uid for r in outcome.stored}
    retrieve_study = study or (next(iter(studies)) if len(studies) == 1 else None)
    body["00081190"] = _element("UR", f"{base}/studies/{retrieve_study}") if retrieve_study else {"vr": "UR"}
    failed = []
    for result in outcome.failed:
        item = _reference(result)
        item["00081197"] = _element("US", result.failure_code)
        # Not in the standard module: the readable reason, as Azure's service does in a comment.
        failed.append(item)
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    stored = []
    for result in outcome.stored:
        item = _reference(result)
        item["00081190"] = _element(
            "UR",
            f"{base}/studies/{result.study_instance_uid}/series/{result.series_instance_uid}"
            f"/instances/{result.sop_instance_uid}",
        )
        if result.warning_code:
            item["00081196"] = _element("US", result.warning_code)
        stored.append(item)
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    return body


def _warning_header(outcome: StoreOutcome) -> str | None:
    """Readable reasons of failures and warnings (RFC 7234 Warning, 299), for people and logs."""
    notes = []
    for result in outcome.results:
        if result.failure:
            code = f"{result.failure_code} {result.error_code}"
            notes.append(f"part {result.index + 1}: {code}: {result.failure}")
        elif result.warnings:
            notes.append(f"part {result.index + 1}: {result.warning_code}: {result.warnings[0]}")
    if not notes:
        return None
    text = "; ".join(notes)[:2000].replace('"', "'")
    return f'299 dicomlake "{text.encode("ascii", "replace").decode()}"'


def server_timing(timings: dict[str, float]) -> str:
    """The W3C Server-Timing header: where the request's time went, stage by stage, in ms."""
    return ", ".join(f"{name};dur={ms:.1f}" for name, ms in timings.items())


async def store(request: Request) -> Response:
    """Store instances (STOW-RS).
    ---
    description: multipart/related; type="application/dicom" or application/dicom. 200 all stored,
      202 some failed or have warnings, 409 none stored, 400 malformed multipart, 415 other media.
    responses:
      200: {description: Store Instances Response Module (application/dicom+json)}
    """
    tenant = tenant_of(request, "write")
    study = request.path_params.get("study")
    if study is not None:
        try:
            check_uid("StudyInstanceUID", study)
        except InvalidRequest as exc:
            raise HTTPException(400, str(exc)) from None
    spool_started = time.perf_counter()
    media, params = parse_content_type(request.headers.get("content-type"))
    directory = spool_directory(tenant.blobs.staging_dir())
    parts: list[UploadedPart] = []
    try:
        if media == "multipart/related":
            kind = params.get("type", DICOM_MEDIA_TYPE).lower()
            if kind != DICOM_MEDIA_TYPE:
                raise HTTPException(415, f'multipart/related of type "{kind}" is not supported; '
                                         f'send type="{DICOM_MEDIA_TYPE}"')
            if "boundary" not in params:
                raise HTTPException(400, "multipart/related without a boundary parameter")
            parts = await spool_multipart(request.stream(), params["boundary"], directory)
        elif media == DICOM_MEDIA_TYPE:
            parts = [await spool_single(request.stream(), directory, DICOM_MEDIA_TYPE)]
        else:
            raise HTTPException(415, f'send multipart/related; type="{DICOM_MEDIA_TYPE}" or '
                                     f"{DICOM_MEDIA_TYPE}, not {media or 'no Content-Type'}")
        receive_ms = (time.perf_counter() - spool_started) * 1000
        source = f"stow:{getattr(request.state, 'request_id', None) or uuid.uuid4().hex}"
        outcome = await run_in_threadpool(instance_store(request, tenant).store, parts, study, source=source)
    except MalformedMultipart as exc:
        raise HTTPException(400, f"malformed multipart/related body: {exc}") from None
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is listening; nothing was stored
    finally:
        remove_files(parts)
    timings = {"receive": receive_ms, **outcome.timings}
    request.state.timings = timings  # for the access log line
    headers = {"Server-Timing": server_timing(timings)}
    warning = _warning_header(outcome)
    if warning:
        headers["Warning"] = warning
    body = orjson.dumps(response_body(outcome, base_url(request), study))
    return Response(body, status_code=outcome.http_status, media_type=DICOM_JSON, headers=headers)


ROUTES = [
    Route("/studies", store, methods=["POST"]),
    Route("/studies/{study}", store, methods=["POST"]),
]
