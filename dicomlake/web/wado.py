"""WADO-RS (PS3.18 10.4): retrieve studies, series, instances, metadata, frames, rendered images.

Instances go out as multipart/related; type="application/dicom", streamed from the blob files in
chunks. Transfer syntax by Accept: `transfer-syntax=*` gives the stored bytes unchanged; none, or
1.2.840.10008.1.2.1, gives Explicit VR Little Endian (the stored bytes when they already are, else
transcoded; 406 when the pixel data cannot be decoded). The core is dicomlake.retrieve.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from functools import wraps
from typing import BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from dicomlake.retrieve import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    InstanceLocator,
    InvalidRequest,
    NotAcceptable,
    NotFound,
    StoredInstance,
    bulk_value,
    check_transcodable,
    decoded_frames,
    frame_media_type,
    instance_url,
    metadata_json,
    needs_transcoding,
    parse_frame_numbers,
    render,
    stored_frames,
    transcoded,
    versions_tag,
)
from dicomlake.retrieve.pixels import NATIVE_TRANSFER_SYNTAXES, OCTET_STREAM
from dicomlake.retrieve.rendered import JPEG, PNG
from dicomlake.store.lakehouse import TenantStore
from dicomlake.web.context import tenant_of
from dicomlake.web.multipart import multipart_stream, new_boundary, parse_content_type

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
CHUNK = 1024 * 1024
_LOCATORS_LOCK = threading.Lock()
_STUDIES = re.compile(r"/studies(?=/|$)")


# -- shared helpers ----------------------------------------------------------------------------------
def base_url(request: Request) -> str:
    """The DICOMweb base this request came through, e.g. http://host/tenants/acme/dicomweb."""
    path = request.url.path
    match = _STUDIES.search(path)
    prefix = path[: match.start()] if match else path.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}{prefix}"


def locator(request: Request, tenant: TenantStore) -> InstanceLocator:
    """The app's long-lived InstanceLocator of a tenant (its instances table stays open)."""
    with _LOCATORS_LOCK:
        found: dict[str, InstanceLocator] | None = getattr(request.app.state, "instance_locators", None)
        if found is None:
            found = {}
            request.app.state.instance_locators = found
        if tenant.name not in found:
            found[tenant.name] = InstanceLocator(tenant)
        return found[tenant.name]


def _errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except InvalidRequest as exc:
            raise HTTPException(400, str(exc)) from None
        except NotAcceptable as exc:
            raise HTTPException(406, str(exc)) from None

    return wrapped


def accept_entries(request: Request) -> list[tuple[str, dict[str, str]]]:
    """The Accept header as (media type, parameters), highest q first (stable); '*/*' when absent."""
    header = request.headers.get("accept", "").strip()
    if not header:
        return [("*/*", {})]
    entries = []
    for piece in _split_commas(header):
        media, params = parse_content_type(piece)
        if media:
            try:
                q = float(params.get("q", "1"))
            except ValueError:
                q = 1.0
            entries.append((q, media, params))
    entries.sort(key=lambda e: -e[0])
    return [(media, params) for q, media, params in entries if q > 0]


def _split_commas(text: str) -> list[str]:
    pieces, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]


def _find(request: Request, tenant: TenantStore, with_json: bool = False) -> list[StoredInstance]:
    params = request.path_params
    return locator(request, tenant).find(params["study"], params.get("series"), params.get("instance"),
                                         with_json=with_json)


# -- instances -------------------------------------------------------------------------------------
def dicom_transfer_syntax(request: Request) -> str:
    """'*' (as stored) or the transfer syntax UID the client asks for; 406 when it accepts no DICOM."""
    for media, params in accept_entries(request):
        kind = params.get("type", DICOM).lower() if media == "multipart/related" else media
        if kind in (DICOM, "application/*", "*/*", "*"):
            return params.get("transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN)
    raise NotAcceptable('instances are sent as multipart/related; type="application/dicom"')


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := handle.read(CHUNK):
            yield chunk
    finally:
        handle.close()


@_errors
async def retrieve(request: Request) -> Response:
    """Retrieve a study, series or instance (WADO-RS) as multipart/related application/dicom.
    ---
    responses:
      200: {description: 'multipart/related; type="application/dicom"'}
      406: {description: the transfer syntax asked for cannot be produced}
    """
    tenant = tenant_of(request, "read")
    syntax = dicom_transfer_syntax(request)
    instances = await run_in_threadpool(_find, request, tenant)
    first: BinaryIO | None = None
    if syntax != "*":
        for instance in instances:
            check_transcodable(instance, syntax)  # 406 before anything is sent
        if len(instances) == 1 and needs_transcoding(instances[0], syntax):
            first = await run_in_threadpool(transcoded, tenant, instances[0], syntax)  # decode errors: 406

    base = base_url(request)

    def parts() -> Iterator[tuple[dict[str, str], Iterator[bytes]]]:
        for index, instance in enumerate(instances):
            if syntax == "*" or not needs_transcoding(instance, syntax):
                handle, actual = tenant.blobs.open(instance.blob_key), instance.transfer_syntax_uid
            else:
                handle = first if index == 0 and first is not None else transcoded(tenant, instance, syntax)
                actual = syntax
            headers = {"Content-Type": f"{DICOM}; transfer-syntax={actual}",
                       "Content-Location": instance_url(base, instance)}
            yield headers, _chunks(handle)

    boundary = new_boundary()
    return StreamingResponse(
        multipart_stream(parts(), boundary, min_chunk=CHUNK),
        media_type=f'multipart/related; type="{DICOM}"; boundary={boundary}',
    )


# -- metadata -------------------------------------------------------------------------------------
@_errors
async def metadata(request: Request) -> Response:
    """Metadata of a study, series or instance: a DICOM JSON array, bulk data as BulkDataURIs.
    ---
    responses:
      200: {description: application/dicom+json, with an ETag}
      304: {description: If-None-Match matched the ETag}
    """
    tenant = tenant_of(request, "read")
    instances = await run_in_threadpool(_find, request, tenant, True)
    base = base_url(request)
    etag = versions_tag(instances, base)
    wanted = request.headers.get("if-none-match", "")
    if wanted.strip() == "*" or etag in {tag.strip().removeprefix("W/") for tag in wanted.split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    body = await run_in_threadpool(metadata_json, instances, base)
    return Response(body, media_type=DICOM_JSON, headers={"ETag": etag})


# -- frames and bulk data -------------------------------------------------------------------------
def frames_mode(request: Request, instance: StoredInstance) -> tuple[str, str]:
    """('stored' | 'decoded', response part media type) from Accept; NotAcceptable when none fits."""
    syntax = instance.transfer_syntax_uid
    native = syntax in NATIVE_TRANSFER_SYNTAXES
    stored_media = frame_media_type(syntax)
    for media, params in accept_entries(request):
        kind = params.get("type", "*/*").lower() if media == "multipart/related" else media
        wanted = params.get("transfer-syntax")
        if kind in ("*/*", "*"):
            return "stored", stored_media
        if kind == OCTET_STREAM:
            if native and wanted in (None, "*", EXPLICIT_VR_LITTLE_ENDIAN, syntax):
                return "stored", OCTET_STREAM
            if wanted == "*":
                return "stored", OCTET_STREAM
            if wanted in (None, EXPLICIT_VR_LITTLE_ENDIAN):
                return "decoded", OCTET_STREAM
            continue
        same_family = kind.endswith("/*") and stored_media.split("/")[0] == kind.split("/")[0]
        if (kind == stored_media or same_family) and wanted in (None, "*", syntax):
            return "stored", stored_media
    raise NotAcceptable(
        f"the frames are stored as {stored_media} ({syntax}); accept that, */* or application/octet-stream"
    )


@_errors
async def frames(request: Request) -> Response:
    """Frames of an instance (1-based list), as stored or decoded to application/octet-stream.
    ---
    responses:
      200: {description: multipart/related, one part per frame}
    """
    tenant = tenant_of(request, "read")
    numbers = parse_frame_numbers(request.path_params["frames"])
    (instance,) = await run_in_threadpool(_find, request, tenant)
    mode, media = frames_mode(request, instance)
    fetch = stored_frames if mode == "stored" else decoded_frames
    found = await run_in_threadpool(fetch, tenant, instance, numbers)
    boundary = new_boundary()
    parts = [({"Content-Type": f"{media}; transfer-syntax={frame.transfer_syntax_uid}"}, [frame.data])
             for frame in found]
    body = b"".join(multipart_stream(parts, boundary))
    return Response(body, media_type=f'multipart/related; type="{media}"; boundary={boundary}')


@_errors
async def bulkdata(request: Request) -> Response:
    """A bulk data value named by a metadata BulkDataURI.
    ---
    responses:
      200: {description: 'multipart/related; type="application/octet-stream"'}
    """
    tenant = tenant_of(request, "read")
    (instance,) = await run_in_threadpool(_find, request, tenant)
    value = await run_in_threadpool(bulk_value, tenant, instance, request.path_params["tag"])
    boundary = new_boundary()
    body = b"".join(multipart_stream([({"Content-Type": OCTET_STREAM}, [value])], boundary))
    return Response(body, media_type=f'multipart/related; type="{OCTET_STREAM}"; boundary={boundary}')


# -- rendered -------------------------------------------------------------------------------------
def rendered_media_type(request: Request) -> str:
    for media, _ in accept_entries(request):
        if media in (PNG, JPEG):
            return media
        if media in ("*/*", "image/*", "*"):
            return PNG
    raise NotAcceptable("rendered frames are image/png or image/jpeg")


@_errors
async def rendered(request: Request) -> Response:
    """An instance's first frame, or frame {frame}, rendered as image/png (default) or image/jpeg.
    ---
    description: window from the header (else min/max), 8 bits; `quality` 1-100 for JPEG.
    responses:
      200: {description: image/png or image/jpeg}
    """
    tenant = tenant_of(request, "read")
    media = rendered_media_type(request)
    frame_text = request.path_params.get("frame", "1")
    numbers = parse_frame_numbers(frame_text)
    if len(numbers) != 1:
        raise InvalidRequest("one frame is rendered at a time")
    quality_text = request.query_params.get("quality")
    if quality_text is not None and not quality_text.isdigit():
        raise InvalidRequest(f"quality is an integer from 1 to 100, not {quality_text!r}")
    quality = int(quality_text) if quality_text is not None else None
    (instance,) = await run_in_threadpool(_find, request, tenant)
    image = await run_in_threadpool(render, tenant, instance, numbers[0], media, quality)
    return Response(image, media_type=media)


_STUDY = "/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"
ROUTES = [
    Route(_STUDY, retrieve, methods=["GET"]),
    Route(_SERIES, retrieve, methods=["GET"]),
    Route(_INSTANCE, retrieve, methods=["GET"]),
    Route(_STUDY + "/metadata", metadata, methods=["GET"]),
    Route(_SERIES + "/metadata", metadata, methods=["GET"]),
    Route(_INSTANCE + "/metadata", metadata, methods=["GET"]),
    Route(_INSTANCE + "/frames/{frames}", frames, methods=["GET"]),
    Route(_INSTANCE + "/rendered", rendered, methods=["GET"]),
    Route(_INSTANCE + "/frames/{frame}/rendered", rendered, methods=["GET"]),
    Route(_INSTANCE + "/bulkdata/{tag}", bulkdata, methods=["GET"]),
]
