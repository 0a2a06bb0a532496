"""Reindex as a background operation whose status any process can read.

Each operation is a JSON document `<tenant>/operations/<id>.json` written through the lakehouse's
filesystem (a local folder or S3): kind, keys, state (running | succeeded | failed), percent,
processed, total, errors, error, timestamps, and the host and pid running it. It is rewritten
after every window, by a whole-file replace (rename locally, a single PUT on S3).

A process that dies leaves the document 'running'; `operation_status` reports it 'interrupted'
when that process is gone (same host) or its heartbeat is older than STALE_AFTER. Resuming it
(`resume_reindex`, or `start_reindex` again) is safe: the tags' watermarks say what was indexed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dicomlake.errors import DicomlakeError
from dicomlake.tags.indexer import Progress, reindex

if TYPE_CHECKING:
    from dicomlake.store.lakehouse import TenantStore

STALE_AFTER = dt.timedelta(minutes=10)
_threads: dict[str, threading.Thread] = {}


class OperationNotFound(DicomlakeError, LookupError):
    """No operation with that id in this tenant."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _path(tenant: TenantStore, operation_id: str) -> str:
    if not operation_id or not all(c in "0123456789abcdef" for c in operation_id):
        raise OperationNotFound(f"{operation_id!r} is not an operation id")
    return f"{tenant.uri}/operations/{operation_id}.json"


def _write(tenant: TenantStore, status: dict[str, Any]) -> None:
    fs = tenant.lakehouse.filesystem()
    path = _path(tenant, status["id"])
    data = json.dumps(status, indent=2, default=str).encode()
    if tenant.lakehouse.is_local:
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        temp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    else:
        fs.pipe_file(path, data)


def _read(tenant: TenantStore, operation_id: str) -> dict[str, Any]:
    fs = tenant.lakehouse.filesystem()
    path = _path(tenant, operation_id)
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        raise OperationNotFound(f"no operation {operation_id} in tenant {tenant.name}") from None


def _alive(status: dict[str, Any]) -> bool:
    if status.get("host") == socket.gethostname():
        try:
            os.kill(int(status["pid"]), 0)
        except (ProcessLookupError, ValueError, TypeError):
            return False
        except PermissionError:
            return True
    beat = dt.datetime.fromisoformat(status["updated_at"])
    return dt.datetime.now(dt.UTC) - beat < STALE_AFTER


def operation_status(tenant: TenantStore, operation_id: str) -> dict[str, Any]:
    """The operation's status document; state 'interrupted' when its process is gone."""
    status = _read(tenant, operation_id)
    if status["state"] == "running" and not _alive(status):
        status["state"] = "interrupted"
    return status


def list_operations(tenant: TenantStore) -> list[dict[str, Any]]:
    fs = tenant.lakehouse.filesystem()
    base = f"{tenant.uri}/operations"
    if not fs.exists(base):
        return []
    ids = sorted(p.rsplit("/", 1)[-1].removesuffix(".json") for p in fs.ls(base, detail=False)
                 if p.endswith(".json"))
    statuses = [operation_status(tenant, i) for i in ids]
    return sorted(statuses, key=lambda s: s["started_at"])


def _run(tenant: TenantStore, status: dict[str, Any], window: int | None) -> None:
    def progress(p: Progress) -> None:
        status.update(percent=p.percent, processed=p.processed, total=p.total, errors=p.errors,
                      indexed_through=p.indexed_through, updated_at=_now())
        _write(tenant, status)

    try:
        kwargs = {"window": window} if window else {}
        summary = reindex(tenant, status["keys"], progress, **kwargs)
    except BaseException as exc:
        status.update(state="failed", error=f"{type(exc).__name__}: {exc}", updated_at=_now(),
                      finished_at=_now())
        _write(tenant, status)
        if not isinstance(exc, Exception):
            raise
        return
    status.update(state="succeeded", percent=100.0, updated_at=_now(), finished_at=_now(),
                  summary=summary.as_dict(), error=None)
    _write(tenant, status)


def _launch(tenant: TenantStore, status: dict[str, Any], window: int | None) -> str:
    status.update(state="running", host=socket.gethostname(), pid=os.getpid(), updated_at=_now(), error=None)
    _write(tenant, status)
    thread = threading.Thread(target=_run, args=(tenant, status, window), name=f"reindex-{status['id']}")
    _threads[status["id"]] = thread
    thread.start()
    return status["id"]


def start_reindex(tenant: TenantStore, keys: Iterable[str] | None = None, window: int | None = None) -> str:
    """Start a reindex on a thread of this process; return its operation id."""
    operation_id = uuid.uuid4().hex
    status = {"id": operation_id, "kind": "reindex", "tenant": tenant.name,
              "keys": list(keys) if keys is not None else None, "percent": 0.0, "processed": 0,
              "total": 0, "errors": 0, "started_at": _now(), "finished_at": None, "resumed": 0}
    return _launch(tenant, status, window)


def resume_reindex(tenant: TenantStore, operation_id: str, window: int | None = None) -> str:
    """Continue an interrupted (or failed) reindex under the same id, from the tags' watermarks."""
    status = operation_status(tenant, operation_id)
    if status["state"] == "running":
        raise DicomlakeError(f"operation {operation_id} is still running (pid {status.get('pid')})")
    if status["state"] == "succeeded":
        return operation_id
    status["resumed"] = int(status.get("resumed", 0)) + 1
    status.pop("finished_at", None)
    return _launch(tenant, status, window)


def wait(operation_id: str, timeout: float | None = None) -> bool:
    """Wait for an operation started by this process; True when it has finished."""
    thread = _threads.get(operation_id)
    if thread is None:
        return True
    thread.join(timeout)
    return not thread.is_alive()
