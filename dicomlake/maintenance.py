"""Table housekeeping that keeps reads fast and never changes what a reader sees.

Compaction rewrites small files into larger ones in insertion (= seq) order, a checkpoint spares
readers from replaying the whole log, and vacuum deletes only files no current version references
(after `vacuum_retention_hours`, so readers of recent versions are safe). None of them adds, removes
or reorders a row: reading any range of the feed before and after gives the same bytes (tested).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from deltalake import DeltaTable

from dicomlake.lifecycle import DEFAULT_RETENTION, PurgeSummary, purge_expired_blobs
from dicomlake.store.compaction import CompactionBusy, compact
from dicomlake.store.lakehouse import TenantStore, table_configuration

TABLES = (
    "changes", "instances", "quarantine", "cursors", "purged_blobs", "query_tags", "tag_values", "tag_errors"
)
DEFAULT_VACUUM_RETENTION_HOURS = 168  # Delta's own safe default: one week
# Staged blob files older than this were left by a crash (a live ingest publishes within seconds).
STAGING_GRACE_S = 24 * 3600


@dataclass
class TableMaintenance:
    table: str
    version_before: int
    files_removed: int
    files_added: int
    vacuumed: int
    busy: str | None = None  # why compaction was skipped: another process held the table's lease


def upgrade_table_properties(table: DeltaTable, name: str) -> dict[str, str]:
    """Give a table made by an older dicomlake the properties new ones are created with (e.g. the
    statistics columns); the files written or compacted from now on follow them. Returns what
    changed. A commit racing this one fails and retries, as for any metadata change."""
    current = table.metadata().configuration
    missing = {k: v for k, v in table_configuration(name).items() if current.get(k) != v}
    if missing:
        table.alter.set_table_properties(missing)
    return missing


def maintain_tables(
    tenant: TenantStore,
    vacuum_retention_hours: int = DEFAULT_VACUUM_RETENTION_HOURS,
) -> list[TableMaintenance]:
    results = []
    for name in TABLES:
        table = tenant.table(name)
        version = table.version()
        upgrade_table_properties(table, name)
        busy = None
        try:
            metrics = compact(table)
        except CompactionBusy as exc:  # an online compaction runs: it leaves the same result
            metrics, busy = {"numFilesRemoved": 0, "numFilesAdded": 0}, str(exc)
        table.create_checkpoint()
        vacuumed = table.vacuum(
            retention_hours=vacuum_retention_hours, dry_run=False, enforce_retention_duration=False
        )
        table.cleanup_metadata()
        results.append(
            TableMaintenance(
                name, version, metrics["numFilesRemoved"], metrics["numFilesAdded"], len(vacuumed), busy
            )
        )
    return results


def maintain(
    tenant: TenantStore,
    blob_retention: dt.timedelta = DEFAULT_RETENTION,
    vacuum_retention_hours: int = DEFAULT_VACUUM_RETENTION_HOURS,
) -> dict:
    """Everything the maintenance schedule runs, for one tenant; returns what it did."""
    tables = maintain_tables(tenant, vacuum_retention_hours)
    purge: PurgeSummary = purge_expired_blobs(tenant, blob_retention)
    sweep = getattr(tenant.blobs, "sweep_staging", None)  # object stores stage nothing
    swept = sweep(STAGING_GRACE_S) if sweep else 0
    return {"tables": [asdict(t) for t in tables], "purge": asdict(purge), "staging_files_removed": swept}
