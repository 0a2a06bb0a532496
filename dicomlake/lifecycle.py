"""The end of an instance's life: delete (a change in the feed), then, after retention, its bytes.

A delete is a `delete` change per instance; the instance leaves `instances` (so search and retrieve)
before the call returns. Bytes are not touched then: a feed reader may still be working through the
entries before the delete, and replaced versions stay readable too. Only once the superseding change
(the update or delete) is older than the retention period does `purge_expired_blobs` remove a
version's blob, recording each removal in the `purged_blobs` table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

from dicomlake.dicom.uid import uid_problem
from dicomlake.errors import DicomlakeError
from dicomlake.store.committer import IDENTITY, Committer, sync_instances
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.read import scan
from dicomlake.store.schemas import PURGED_BLOBS

DEFAULT_RETENTION = dt.timedelta(days=7)


class NotFound(DicomlakeError, LookupError):
    """Nothing current matches the given UIDs."""


@dataclass(frozen=True)
class DeleteOutcome:
    deleted: int
    first_seq: int | None
    last_seq: int | None


def _uid_clause(column: str, value: str) -> str:
    if problem := uid_problem(value):
        raise ValueError(f"{column} {problem}")
    return f"{column} = '{value}'"  # a valid UID is digits and dots only: safe to inline


def delete_instances(
    tenant: TenantStore,
    study_instance_uid: str,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    source: str = "api",
) -> DeleteOutcome:
    """Delete a study, a series of it, or one instance of that series; NotFound if none is current."""
    if sop_instance_uid and not series_instance_uid:
        raise ValueError("an instance is addressed as study, series, instance")
    clauses = [_uid_clause("study_instance_uid", study_instance_uid)]
    if series_instance_uid:
        clauses.append(_uid_clause("series_instance_uid", series_instance_uid))
    if sop_instance_uid:
        clauses.append(_uid_clause("sop_instance_uid", sop_instance_uid))
    sync_instances(tenant)
    targets = scan(tenant.table("instances"), list(IDENTITY), where=" AND ".join(clauses), order_by="seq")
    if targets.num_rows == 0:
        raise NotFound("no current instance matches " + ", ".join(clauses))
    outcome = Committer(tenant).commit_deletes(targets.to_pylist(), source=source)
    sync_instances(tenant)
    return DeleteOutcome(outcome.count("delete"), outcome.first_seq, outcome.last_seq)


@dataclass(frozen=True)
class PurgeSummary:
    purged: int
    bytes_freed: int
    waiting_for_retention: int


def purge_expired_blobs(
    tenant: TenantStore, retention: dt.timedelta = DEFAULT_RETENTION, now: dt.datetime | None = None
) -> PurgeSummary:
    """Remove the blobs of versions superseded (replaced or deleted) longer ago than `retention`."""
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - retention
    feed = pl.from_arrow(
        scan(tenant.table("changes"), ["seq", "sha256", "blob_key", "previous_seq", "changed_at"])
    )
    versions = feed.filter(pl.col("sha256").is_not_null()).select("seq", "sha256", "blob_key")
    successors = feed.filter(pl.col("previous_seq").is_not_null()).select(
        pl.col("previous_seq").alias("seq"),
        pl.col("seq").alias("superseded_by_seq"),
        pl.col("changed_at").alias("superseded_at"),
    )
    superseded = versions.join(successors, on="seq", how="inner")
    sync_instances(tenant)
    current = set(scan(tenant.table("instances"), ["sha256"]).column("sha256").to_pylist())
    already = set(scan(tenant.table("purged_blobs"), ["sha256"]).column("sha256").to_pylist())
    superseded = superseded.filter(~pl.col("sha256").is_in(list(current | already)))
    due = superseded.filter(pl.col("superseded_at") < cutoff)
    rows, freed = [], 0
    for row in due.unique("sha256", keep="first").iter_rows(named=True):
        if tenant.blobs.exists(row["blob_key"]):
            freed += len(tenant.blobs.get(row["blob_key"]))
            tenant.blobs.delete(row["blob_key"])
        rows.append({**row, "purged_at": now})
    if rows:
        write_deltalake(
            tenant.table("purged_blobs"), pa.Table.from_pylist(rows, schema=PURGED_BLOBS), mode="append"
        )
    return PurgeSummary(len(rows), freed, superseded.height - due.height)
