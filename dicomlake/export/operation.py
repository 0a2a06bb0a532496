"""An export as a background operation (dicomlake.operations, kind 'export'), as the web service runs it.

    operation_id = start_export(tenant, Selection(uids=...), out, "dicom")
    operation_status(tenant, operation_id)  # percent, processed/total; then summary + not_found

Identifiers that select nothing in this tenant (a typo, a study of another tenant) are not an
error of the run: they are listed as `not_found` in the summary and in `error_entries`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dicomlake import operations
from dicomlake.export.run import ERRORS, ExportError, export
from dicomlake.export.selection import Selection, SelectionError, _check_uid, resolve
from dicomlake.store.lakehouse import TenantStore

KIND = "export"


class ExportConflict(ExportError):
    """The destination is being written by another running export."""


def parse_identifier(spec: str) -> str:
    """'study[/series[/sop]]' as Azure's export takes it, also written as a DICOMweb path
    ('study/series/S/instances/I'); SelectionError unless it is 1 to 3 valid UIDs."""
    parts = spec.strip("/").split("/") if isinstance(spec, str) else []
    if len(parts) in (3, 5) and parts[1] == "series" and (len(parts) == 3 or parts[3] == "instances"):
        parts = parts[0::2]
    if not 1 <= len(parts) <= 3:
        raise SelectionError(f"an identifier is study[/series[/instance]], not {spec!r}")
    return "/".join(_check_uid(p) for p in parts)


def unmatched(tenant: TenantStore, uids: tuple[str, ...], version: int) -> list[str]:
    """The identifiers ('study[/series[/sop]]') with no current instance at `version` of `instances`."""
    found = resolve(tenant, Selection(uids=uids), version=version).instances
    columns = ("study_instance_uid", "series_instance_uid", "sop_instance_uid")
    rows = list(zip(*(found.column(c).to_pylist() for c in columns), strict=True))
    prefixes = {row[:n] for row in rows for n in (1, 2, 3)}
    return [spec for spec in uids if tuple(spec.strip("/").split("/")) not in prefixes]


def start_export(
    tenant: TenantStore,
    selection: Selection,
    out: str | Path,
    fmt: str,
    *,
    operation_id: str | None = None,
    per_frame: bool = False,
    deid_options: Any = None,
    workers: int = 1,
    destination: str | None = None,
) -> str:
    """Start `export(...)` on a thread of this process; return the operation id.

    `destination` is how callers name `out` (the web service's relative folder name); it is kept
    in the status. ExportConflict when a running export of this tenant writes into `out`.
    """
    out = Path(out)
    for running in operations.list_operations(tenant, KIND):
        if running["state"] == "running" and running.get("out") == str(out):
            raise ExportConflict(f"export {running['id']} is writing into that destination")
    status = operations.new_operation(
        tenant, KIND, operation_id, selection=selection.describe(), format=fmt, per_frame=per_frame,
        deid=deid_options is not None, out=str(out), destination=destination, processed=0, total=0,
    )  # fmt: skip

    def work(update: operations.Update) -> dict[str, Any]:
        def progress(done: int, total: int) -> None:
            update(processed=done, total=total, percent=round(100.0 * done / total, 1) if total else 0.0)

        summary = export(tenant, selection, out, fmt, per_frame=per_frame, deid_options=deid_options,
                         workers=workers, progress=progress)  # fmt: skip
        manifest = json.loads(Path(summary.manifest).read_text(encoding="utf-8"))
        missing = []
        if selection.uids:
            missing = unmatched(tenant, selection.uids, manifest["delta_versions"]["instances"])
        return {**summary.as_dict(), "not_found": missing, "change_feed_seq": manifest["change_feed_seq"],
                "files": len(manifest["files"])}  # fmt: skip

    return operations.launch(tenant, status, work)


def error_entries(status: dict[str, Any]) -> list[dict[str, Any]]:
    """An export operation's errors: its errors.jsonl lines, then the identifiers that found nothing."""
    entries: list[dict[str, Any]] = []
    path = Path(status["out"]) / ERRORS
    if path.exists():
        entries += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    for spec in (status.get("summary") or {}).get("not_found", []):
        entries.append({"identifier": spec, "status": "not_found", "error": "nothing matches in this tenant"})
    return entries
