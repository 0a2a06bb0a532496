"""Streaming multipart/related (RFC 2387 / RFC 2046 §5.1) for STOW-RS requests and WADO-RS responses.

Reading: `spool_multipart` consumes the request body chunk by chunk. Small parts are kept in
memory up to a per-request budget; any other part is written to its own temp file, hashing it on
the way (SHA-256: the blob key), so memory stays bounded whatever the upload size. A delimiter
split across chunks, a preamble, an epilogue, transport padding after a delimiter and parts
without headers are handled; a body that ends before the close delimiter (`--boundary--`), or
part headers that never end, are malformed.

Writing: `multipart_stream` yields a multipart/related body part by part, each part's content
from an iterator of chunks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from starlette.concurrency import run_in_threadpool

from dicomlake.ingest.stow import UploadedPart

MAX_HEADER_BYTES = 16 * 1024  # all the header lines of one part
MAX_PARTS = 10_000
FLUSH_BYTES = 1024 * 1024  # buffered part bytes handed to a thread for hashing and writing
MEMORY_BUDGET = 32 * 1024 * 1024  # small parts kept in memory per request (the rest go to files)
_TOKEN = re.compile(r'\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*')


class MalformedMultipart(ValueError):
    """The body is not a well-formed multipart/related message (-> 400)."""


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """'multipart/related; type="application/dicom"; boundary=X' -> ('multipart/related', {...}).

    Parameter names are lowercased; quoted values are unquoted. Media type lowercased."""
    if not value:
        return "", {}
    media, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for piece in _split_params(rest):
        match = _TOKEN.fullmatch(piece)
        if not match:
            continue
        name, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
    return media.strip().lower(), params


def _split_params(text: str) -> list[str]:
    """Split on ';' outside quotes."""
    pieces, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    if "".join(current).strip():
        pieces.append("".join(current))
    return [p for p in pieces if p.strip()]


@dataclass
class _Part:
    headers: dict[str, str]
    path: Path | None = None  # set once the part goes to a file
    handle: BinaryIO | None = None
    digest: object = field(default_factory=hashlib.sha256)
    size: int = 0
    pending: bytearray = field(default_factory=bytearray)

    def write_now(self, data: bytes | bytearray) -> None:
        """Append to the part's file (opened on first use): in a worker thread, never on the loop."""
        if self.handle is None:
            assert self.path is not None, "a part's file is named before it is written"
            # Kept open across calls (one part, many blocks); closed by finish() or _Spooler.discard().
            self.handle = open(self.path, "wb")  # noqa: SIM115
        self.digest.update(data)  # type: ignore[attr-defined]
        self.handle.write(data)
        self.size += len(data)

    def finish(self, block: bytes | bytearray) -> None:
        self.write_now(block)
        assert self.handle is not None
        self.handle.close()


class _Spooler:
    """Collects the parts of one body. A part that ends within FLUSH_BYTES (the usual instance),
    while the request holds less than `memory_budget` of such parts, stays in memory: no file is
    written on the event loop (a create can wait behind another thread's fsync), and the store
    writes it once, straight into the blob store. Anything larger streams to its own file in
    `directory`, written in FLUSH_BYTES blocks by a worker thread."""

    def __init__(self, directory: Path, memory_budget: int = MEMORY_BUDGET) -> None:
        self.directory = directory
        self.parts: list[tuple[_Part, UploadedPart | None]] = []
        self.current: _Part | None = None
        self.memory_left = memory_budget

    async def open(self, headers: dict[str, str]) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise MalformedMultipart(f"more than {MAX_PARTS} parts")
        self.current = _Part(headers)
        self.parts.append((self.current, None))

    async def write(self, data: bytes | bytearray) -> None:
        part = self.current
        assert part is not None
        part.pending += data
        if len(part.pending) >= FLUSH_BYTES:
            block, part.pending = part.pending, bytearray()
            await self._to_file(part, block, last=False)

    async def _to_file(self, part: _Part, block: bytes | bytearray, *, last: bool) -> None:
        if part.path is None:
            part.path = self.directory / f"stow-{uuid.uuid4().hex}.part"
        await run_in_threadpool(part.finish if last else part.write_now, block)

    async def close(self) -> None:
        part = self.current
        assert part is not None
        block, part.pending = part.pending, bytearray()
        content_type = part.headers.get("content-type")
        if part.path is None and len(block) <= self.memory_left:
            self.memory_left -= len(block)
            data = bytes(block)
            # Hashed by the store, on its worker thread: the loop only moves bytes.
            uploaded = UploadedPart(path=None, size=len(data), content_type=content_type, data=data)
        else:
            await self._to_file(part, block, last=True)
            uploaded = UploadedPart(path=part.path, size=part.size,
                                    sha256=part.digest.hexdigest(),  # type: ignore[attr-defined]
                                    content_type=content_type)
        self.parts[-1] = (part, uploaded)
        self.current = None

    def discard(self) -> None:
        for part, _ in self.parts:
            if part.handle is not None:
                with contextlib.suppress(Exception):
                    part.handle.close()
            if part.path is not None:
                part.path.unlink(missing_ok=True)
        self.parts.clear()


def spool_directory(preferred: Path | None) -> Path:
    """Where uploads are spooled: the blob store's staging folder when it is local (parts are then
    renamed into place, never copied), else the system temp folder."""
    directory = preferred or Path(tempfile.gettempdir())
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    name = None
    for line in block.decode("latin-1").split("\r\n"):
        if not line:
            continue
        if line[0] in " \t" and name:  # obsolete line folding
            headers[name] += " " + line.strip()
            continue
        if ":" not in line:
            raise MalformedMultipart(f"part header line without a colon: {line[:80]!r}")
        name, _, value = line.partition(":")
        name = name.strip().lower()
        headers[name] = value.strip()
    return headers


async def spool_multipart(chunks: AsyncIterator[bytes], boundary: str, directory: Path, *,
                          memory_budget: int = MEMORY_BUDGET) -> list[UploadedPart]:
    """Each part of a multipart body, in memory or in a temp file in `directory`; see the module
    docstring and _Spooler.

    On any error (malformed body, client gone) every temp file written so far is removed."""
    if not boundary or len(boundary) > 200:
        raise MalformedMultipart("the boundary parameter is missing or longer than 200 characters")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    keep = len(delimiter) - 1  # bytes that might begin a delimiter split across chunks
    spooler = _Spooler(directory, memory_budget)
    # A leading CRLF lets the first delimiter (at the very start of the body) match like the others.
    buffer = bytearray(b"\r\n")
    state = "preamble"
    try:
        async for chunk in chunks:
            buffer += chunk
            while True:
                if state == "preamble":
                    found = buffer.find(delimiter)
                    if found < 0:
                        del buffer[: max(0, len(buffer) - keep)]
                        break
                    del buffer[: found + len(delimiter)]
                    state = "after_delimiter"
                elif state == "after_delimiter":
                    # "--" closes; else optional transport padding (LWSP) then CRLF
                    if len(buffer) < 2:
                        break
                    if buffer[:2] == b"--":
                        state = "epilogue"
                        continue
                    stripped = buffer.lstrip(b" \t")
                    if len(stripped) < 2:
                        if len(buffer) > 1024:
                            raise MalformedMultipart("too much padding after a delimiter")
                        break
                    if stripped[:2] != b"\r\n":
                        raise MalformedMultipart("a delimiter is not followed by CRLF or '--'")
                    del buffer[: len(buffer) - len(stripped) + 2]
                    state = "headers"
                elif state == "headers":
                    if buffer[:2] == b"\r\n":  # no header lines at all
                        del buffer[:2]
                        await spooler.open({})
                        state = "body"
                        continue
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buffer) > MAX_HEADER_BYTES:
                            raise MalformedMultipart(f"part headers longer than {MAX_HEADER_BYTES} bytes")
                        break
                    headers = _parse_headers(bytes(buffer[:end]))
                    del buffer[: end + 4]
                    await spooler.open(headers)
                    state = "body"
                elif state == "body":
                    found = buffer.find(delimiter)
                    if found < 0:
                        if len(buffer) > keep:
                            await spooler.write(buffer[: len(buffer) - keep])
                            del buffer[: len(buffer) - keep]
                        break
                    await spooler.write(buffer[:found])
                    await spooler.close()
                    del buffer[: found + len(delimiter)]
                    state = "after_delimiter"
                else:  # epilogue: ignored
                    buffer.clear()
                    break
        if state != "epilogue":
            raise MalformedMultipart("the body ends before the close delimiter (--boundary--)")
        if not spooler.parts:
            raise MalformedMultipart("the body has no parts")
        return [uploaded for _, uploaded in spooler.parts if uploaded is not None]
    except BaseException:
        spooler.discard()
        raise


async def spool_single(chunks: AsyncIterator[bytes], directory: Path, content_type: str) -> UploadedPart:
    """A single-part body (Content-Type application/dicom) to one temp file."""
    spooler = _Spooler(directory)
    try:
        await spooler.open({"content-type": content_type})
        async for chunk in chunks:
            await spooler.write(chunk)
        await spooler.close()
        uploaded = spooler.parts[0][1]
        assert uploaded is not None
        return uploaded
    except BaseException:
        spooler.discard()
        raise


def remove_files(parts: Iterable[UploadedPart]) -> None:
    """Delete what is left of spooled parts (those moved into the blob store are gone already)."""
    for part in parts:
        if part.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(part.path)


def new_boundary() -> str:
    return uuid.uuid4().hex


def multipart_stream(
    parts: Iterable[tuple[dict[str, str], Iterable[bytes]]], boundary: str, *, min_chunk: int = 0
) -> Iterator[bytes]:
    """A multipart/related body: for each (headers, chunks), the delimiter, headers and content.

    With `min_chunk`, pieces are gathered until at least that many bytes are ready (the last may
    be shorter): a server that takes each piece from a worker thread and writes it to the socket
    then pays that once per ~min_chunk bytes instead of four times per part (many small parts)."""
    pieces = _multipart_pieces(parts, boundary)
    if min_chunk <= 0:
        yield from pieces
        return
    gathered: list[bytes] = []
    size = 0
    for piece in pieces:
        gathered.append(piece)
        size += len(piece)
        if size >= min_chunk:
            yield b"".join(gathered)  # one copy of each byte
            gathered, size = [], 0
    if gathered:
        yield b"".join(gathered)


def _multipart_pieces(
    parts: Iterable[tuple[dict[str, str], Iterable[bytes]]], boundary: str
) -> Iterator[bytes]:
    for headers, chunks in parts:
        head = f"--{boundary}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        yield head.encode("latin-1")
        yield from chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")
