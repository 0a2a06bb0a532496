"""Long-running operations (a tag reindex, an export) run in the background; any process reads their status.

Each operation is a JSON document `<tenant>/operations/<id>.json` written through the lakehouse's
filesystem (a local folder or S3): id, kind (reindex | export), state (running | succeeded |
failed), percent, timestamps, the host and pid running it, plus the kind's own fields (keys and
counts of a reindex; selection, destination and counts of an export). It is rewritten at every
progress report by a whole-file replace (rename locally, a single PUT on S3).

A process that dies leaves the document 'running'; `operation_status` reports it 'interrupted'
when that process is gone (same host) or its heartbeat is older than STALE_AFTER.

    status = new_operation(tenant, "export", destination="x")
    launch(tenant, status, work)   # work(update) -> summary dict; update(**fields) records progress
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dicomlake.errors import DicomlakeError

if TYPE_CHECKING:
    from dicomlake.store.lakehouse import TenantStore

STALE_AFTER = dt.timedelta(minutes=10)
Update = Callable[..., None]
Work = Callable[[Update], dict[str, Any]]
_threads: dict[str, threading.Thread] = {}


class OperationNotFound(DicomlakeError, LookupError):
    """No operation with that id in this tenant."""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def path(tenant: TenantStore, operation_id: str) -> str:
    if not operation_id or not all(c in "0123456789abcdef" for c in operation_id):
        raise OperationNotFound(f"{operation_id!r} is not an operation id")
    return f"{tenant.uri}/operations/{operation_id}.json"


def write(tenant: TenantStore, status: dict[str, Any]) -> None:
    fs = tenant.lakehouse.filesystem()
    target = path(tenant, status["id"])
    data = json.dumps(status, indent=2, default=str).encode()
    if tenant.lakehouse.is_local:
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        temp = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    else:
        fs.pipe_file(target, data)


def _read(tenant: TenantStore, operation_id: str) -> dict[str, Any]:
    fs = tenant.lakehouse.filesystem()
    try:
        return json.loads(fs.cat_file(path(tenant, operation_id)))
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


def list_operations(tenant: TenantStore, kind: str | None = None) -> list[dict[str, Any]]:
    """The tenant's operations (of one kind), oldest first."""
    fs = tenant.lakehouse.filesystem()
    base = f"{tenant.uri}/operations"
    if not fs.exists(base):
        return []
    ids = sorted(p.rsplit("/", 1)[-1].removesuffix(".json") for p in fs.ls(base, detail=False)
                 if p.endswith(".json"))  # fmt: skip
    statuses = [operation_status(tenant, i) for i in ids]
    chosen = [s for s in statuses if kind is None or s.get("kind") == kind]
    return sorted(chosen, key=lambda s: s["started_at"])


def new_operation(
    tenant: TenantStore, kind: str, operation_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A status document for a new operation (not written yet: `launch` writes it); a new id unless
    `operation_id` (32 hex digits, e.g. chosen by the caller to name an output after it) is given."""
    operation_id = operation_id or uuid.uuid4().hex
    path(tenant, operation_id)  # a valid id
    return {"id": operation_id, "kind": kind, "tenant": tenant.name, "percent": 0.0, "started_at": now(),
            "finished_at": None, **fields}  # fmt: skip


def _run(tenant: TenantStore, status: dict[str, Any], work: Work) -> None:
    lock = threading.Lock()

    def update(**fields: Any) -> None:
        with lock:
            status.update(fields, updated_at=now())
            write(tenant, status)

    try:
        summary = work(update)
    except BaseException as exc:
        status.update(state="failed", error=f"{type(exc).__name__}: {exc}", updated_at=now(),
                      finished_at=now())
        write(tenant, status)
        if not isinstance(exc, Exception):
            raise
        return
    status.update(state="succeeded", percent=100.0, updated_at=now(), finished_at=now(), summary=summary,
                  error=None)  # fmt: skip
    write(tenant, status)


def launch(tenant: TenantStore, status: dict[str, Any], work: Work) -> str:
    """Record `status` as running in this process and run `work` on a thread; return the id.

    `work(update)` does the job, calling `update(**fields)` to record progress, and returns a
    summary (stored as `summary` when it succeeds); an exception marks the operation failed.
    """
    status.update(state="running", host=socket.gethostname(), pid=os.getpid(), updated_at=now(), error=None)
    write(tenant, status)
    name = f"{status['kind']}-{status['id']}"
    thread = threading.Thread(target=_run, args=(tenant, status, work), name=name)
    _threads[status["id"]] = thread
    thread.start()
    return status["id"]


def wait(operation_id: str, timeout: float | None = None) -> bool:
    """Wait for an operation started by this process; True when it has finished."""
    thread = _threads.get(operation_id)
    if thread is None:
        return True
    thread.join(timeout)
    return not thread.is_alive()
