"""Reindex as a background operation whose status any process can read (dicomlake.operations).

The status document of a reindex (kind 'reindex') also holds its keys, processed, total, errors
and indexed_through. Resuming an interrupted one (`resume_reindex`, or `start_reindex` again) is
safe: the tags' watermarks say what was indexed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dicomlake import operations
from dicomlake.errors import DicomlakeError
from dicomlake.operations import OperationNotFound, operation_status, wait
from dicomlake.operations import path as _path
from dicomlake.tags.indexer import Progress, reindex

if TYPE_CHECKING:
    from dicomlake.store.lakehouse import TenantStore

KIND = "reindex"
__all__ = ["KIND", "OperationNotFound", "_path", "list_operations", "operation_status", "resume_reindex",
           "start_reindex", "wait"]


def list_operations(tenant: TenantStore) -> list[dict[str, Any]]:
    """The tenant's reindex operations, oldest first."""
    return operations.list_operations(tenant, KIND)


def _launch(tenant: TenantStore, status: dict[str, Any], window: int | None) -> str:
    def work(update: operations.Update) -> dict[str, Any]:
        def progress(p: Progress) -> None:
            update(percent=p.percent, processed=p.processed, total=p.total, errors=p.errors,
                   indexed_through=p.indexed_through)

        kwargs = {"window": window} if window else {}
        return reindex(tenant, status["keys"], progress, **kwargs).as_dict()

    return operations.launch(tenant, status, work)


def start_reindex(tenant: TenantStore, keys: Iterable[str] | None = None, window: int | None = None) -> str:
    """Start a reindex on a thread of this process; return its operation id."""
    status = operations.new_operation(tenant, KIND, keys=list(keys) if keys is not None else None,
                                      processed=0, total=0, errors=0, resumed=0)
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
