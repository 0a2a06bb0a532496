"""A real DICOMweb server for the web tests: uvicorn on 127.0.0.1, an OS-chosen port, a thread.

    def test_something(server):
        headers = server.auth("default", ["read"])          # mints a token, returns the header
        requests.get(server.url("/dicomweb/studies"), headers=headers)
        server.ingest([folder], tenant="a")                # put data in directly
        server.lakehouse, server.app                       # the lakehouse and the Starlette app

`server` is module-scoped (one lakehouse per test module); `start_server(lakehouse, ...)` starts
another one with other settings (CORS origins, auth disabled) as a context manager.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from dicomlake.ingest import IngestOptions, IngestSummary, ingest
from dicomlake.store import Lakehouse
from dicomlake.web.app import build_app
from dicomlake.web.auth import AuthConfig, TokenStore
from dicomlake.web.middleware import ACCESS_LOGGER

START_TIMEOUT_S = 20.0
_names = itertools.count(1)


@dataclass
class Server:
    base: str  # http://127.0.0.1:PORT
    lakehouse: Lakehouse
    app: Starlette
    tokens: TokenStore = field(init=False)

    def __post_init__(self) -> None:
        # The app's own store: a token it mints is known to the server at once (no cache delay).
        self.tokens = self.app.state.auth.tokens or TokenStore(self.lakehouse)

    def url(self, path: str) -> str:
        return self.base + path

    def token(self, tenant: str | Sequence[str] = "default", permissions: Iterable[str] = ("read",)) -> str:
        """A new token for these tenants ("*" for all) and permissions."""
        tenants = [tenant] if isinstance(tenant, str) else list(tenant)
        token, _ = self.tokens.create(f"test-{next(_names)}", tenants, list(permissions))
        return token

    def auth(
        self, tenant: str | Sequence[str] = "default", permissions: Iterable[str] = ("read",)
    ) -> dict[str, str]:
        """The Authorization header of a new token."""
        return {"Authorization": f"Bearer {self.token(tenant, permissions)}"}

    def ingest(self, paths: Sequence[Path | str], tenant: str = "default") -> IngestSummary:
        return ingest([Path(p) for p in paths], self.lakehouse.tenant(tenant), IngestOptions(workers=1))


@contextmanager
def start_server(lakehouse: Lakehouse, auth: AuthConfig | None = None, cors_origins: Sequence[str] = ()
                 ) -> Iterator[Server]:
    app = build_app(lakehouse, auth, cors_origins=cors_origins)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Server(f"http://127.0.0.1:{port}", lakehouse, app)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    lakehouse = Lakehouse(tmp_path_factory.mktemp("web") / "lake")
    with start_server(lakehouse) as running:
        yield running


class AccessLog(logging.Handler):
    """The access log lines written while it is attached (as the strings logged)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    handler = AccessLog()
    logger = logging.getLogger(ACCESS_LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- Orthanc, a real DICOMweb peer (Debian packages orthanc + orthanc-dicomweb) -----------------

SKIP_INTEROP = "DICOMLAKE_SKIP_INTEROP"


def require_orthanc() -> None:
    """Fail (not skip) when Orthanc or its DICOMweb plugin is missing, unless DICOMLAKE_SKIP_INTEROP=1."""
    from bench.dicomweb import orthanc_missing

    problem = orthanc_missing()
    if problem is None:
        return
    if os.environ.get(SKIP_INTEROP) == "1":
        pytest.skip(f"{problem}; skipped because {SKIP_INTEROP}=1")
    pytest.fail(f"{problem}. Set {SKIP_INTEROP}=1 to skip the Orthanc interop tests explicitly.",
                pytrace=False)


@pytest.fixture(scope="module")
def orthanc_peer(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """Orthanc (its own config in a temp dir, HTTP on a free port, loopback only, no DICOM port,
    storage in tmp) with `server` as its DICOMweb remote "dicomlake" (a read+write token of the
    default tenant). Yields (the running Orthanc, that token's Authorization header value)."""
    require_orthanc()
    from bench.dicomweb import start_orthanc

    authorization = f"Bearer {server.token('default', ['read', 'write'])}"
    remote = {"Url": server.url("/dicomweb/"), "HttpHeaders": {"Authorization": authorization}}
    servers = {"dicomlake": remote}
    with start_orthanc(tmp_path_factory.mktemp("orthanc"), servers) as orthanc:
        yield orthanc, authorization
