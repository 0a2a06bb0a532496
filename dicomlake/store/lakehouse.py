"""The lakehouse root and its tenants: one subtree, one set of tables, per tenant.

    <root>/tenants/<tenant>/blobs/..        content-addressed Part-10 bytes
    <root>/tenants/<tenant>/quarantine/..   bytes that failed to ingest
    <root>/tenants/<tenant>/tables/<name>   Delta tables

The root is a local folder (the embedded default) or s3://bucket/prefix. Nothing here reads across
tenants: a TenantStore only ever builds paths below its own folder.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec

from dicomlake.errors import InvalidName
from dicomlake.store.blobs import BlobStore, FsspecBlobStore, LocalBlobStore

if TYPE_CHECKING:
    from deltalake import DeltaTable

DEFAULT_TENANT = "default"
DEFAULT_ROOT = "./lakehouse"
_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Per-file statistics (min/max/null count) only for the columns readers filter on: the feed's
# order and time, and the identities and keys of QIDO, export and cohorts. Delta's default is the
# first 32 of ~64 columns, and every commit pays for them: measured here, a 50-row append cost
# 12.8 / 20.8 / 28.1 ms (p50) at 1-20 / 20-80 / 80-140 live files with the default, 9.5 / 14.9 /
# 20.3 ms with these. Filters on other columns stay correct; they just prune no files.
_STATS_COLUMNS = ("seq", "changed_at", "patient_id", "study_instance_uid", "study_date",
                  "series_instance_uid", "modality", "sop_instance_uid", "sop_class_uid")
STATS_COLUMNS = {
    "changes": ("seq", "previous_seq", "action", *_STATS_COLUMNS[1:]),
    "instances": _STATS_COLUMNS,
}
# Append-only is enforced by Delta itself on the change feed: no update or delete can be committed.
_TABLE_CONFIG: dict[str, dict[str, str]] = {
    "changes": {"delta.appendOnly": "true", "delta.checkpointInterval": "50",
                "delta.dataSkippingStatsColumns": ",".join(STATS_COLUMNS["changes"])},
    "instances": {"delta.dataSkippingStatsColumns": ",".join(STATS_COLUMNS["instances"])},
    "quarantine": {"delta.appendOnly": "true"},
    "cursors": {"delta.appendOnly": "true"},
    "purged_blobs": {"delta.appendOnly": "true"},
}


def table_configuration(name: str) -> dict[str, str]:
    """The Delta table properties dicomlake creates table `name` with (none for most tables)."""
    return dict(_TABLE_CONFIG.get(name, {}))


def default_root() -> str:
    return os.environ.get("DICOMLAKE_ROOT", DEFAULT_ROOT)


def check_tenant(name: str) -> str:
    if not _TENANT.match(name):
        raise InvalidName(
            f"tenant {name!r} must be 1-63 lowercase letters, digits or '-', starting with a letter or digit"
        )
    return name


def s3_options_from_env() -> dict[str, str]:
    """delta-rs style storage options from the usual AWS_* variables (for s3:// roots)."""
    keys = (
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_SESSION_TOKEN",
        "AWS_ALLOW_HTTP",
    )
    return {k: os.environ[k] for k in keys if os.environ.get(k)}


class Lakehouse:
    """A root URI plus the storage options needed to reach it."""

    def __init__(self, root: str | Path | None = None, storage_options: Mapping[str, str] | None = None):
        root = str(root if root is not None else default_root())
        self.is_local = "://" not in root or root.startswith("file://")
        if self.is_local:
            root = str(Path(root.removeprefix("file://")).expanduser().resolve())
            self.storage_options: dict[str, str] = {}
        else:
            self.storage_options = safe_s3_options(storage_options or s3_options_from_env())
        self.root = root.rstrip("/")

    def __repr__(self) -> str:
        return f"Lakehouse({self.root!r})"

    def tenant(self, name: str = DEFAULT_TENANT) -> TenantStore:
        return TenantStore(self, check_tenant(name))

    def filesystem(self) -> fsspec.AbstractFileSystem:
        if self.is_local:
            return fsspec.filesystem("file")
        return fsspec.filesystem("s3", **fsspec_s3_kwargs(self.storage_options))

    def tenants(self) -> list[str]:
        fs = self.filesystem()
        base = f"{self.root}/tenants"
        if not fs.exists(base):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False))


def safe_s3_options(options: Mapping[str, str]) -> dict[str, str]:
    """Storage options under which concurrent Delta commits on S3 can never overwrite each other.

    Commits must be put-if-absent: delta-rs does that with `conditional_put` (the S3 If-None-Match
    header, honoured by AWS S3 and SeaweedFS). The "unsafe rename" mode can silently lose commits
    when two writers race, so it is refused rather than passed on.
    """
    safe = dict(options)
    unsafe = {k for k, v in safe.items() if k.upper() == "AWS_S3_ALLOW_UNSAFE_RENAME" and v.lower() == "true"}
    if unsafe:
        raise ValueError("AWS_S3_ALLOW_UNSAFE_RENAME can lose concurrent commits; dicomlake refuses it")
    if not any(k.lower() in ("conditional_put", "aws_conditional_put") for k in safe):
        safe["conditional_put"] = "etag"
    return safe


def fsspec_s3_kwargs(options: Mapping[str, str]) -> dict[str, object]:
    """Translate delta-rs storage options into s3fs constructor arguments (one config, two clients)."""
    kwargs: dict[str, object] = {}
    client: dict[str, str] = {}
    if "AWS_ACCESS_KEY_ID" in options:
        kwargs["key"] = options["AWS_ACCESS_KEY_ID"]
    if "AWS_SECRET_ACCESS_KEY" in options:
        kwargs["secret"] = options["AWS_SECRET_ACCESS_KEY"]
    if "AWS_SESSION_TOKEN" in options:
        kwargs["token"] = options["AWS_SESSION_TOKEN"]
    if "AWS_ENDPOINT_URL" in options:
        client["endpoint_url"] = options["AWS_ENDPOINT_URL"]
    if "AWS_REGION" in options:
        client["region_name"] = options["AWS_REGION"]
    if client:
        kwargs["client_kwargs"] = client
    return kwargs


class TenantStore:
    """Everything one tenant owns. Built only through Lakehouse.tenant()."""

    def __init__(self, lakehouse: Lakehouse, name: str) -> None:
        self.lakehouse = lakehouse
        self.name = name
        self.uri = f"{lakehouse.root}/tenants/{name}"
        self.storage_options = lakehouse.storage_options
        if lakehouse.is_local:
            self.blobs: BlobStore = LocalBlobStore(Path(self.uri))
        else:
            self.blobs = FsspecBlobStore(self.uri, lakehouse.filesystem())

    def __repr__(self) -> str:
        return f"TenantStore({self.uri!r})"

    def table_uri(self, name: str) -> str:
        return f"{self.uri}/tables/{name}"

    def table(self, name: str) -> DeltaTable:
        """The Delta table `name`, created empty with its schema on first use."""
        # Imported here: ingest workers hold a TenantStore only for its blobs, and start faster
        # without the table engine.
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        from dicomlake.store.schemas import SCHEMAS

        uri = self.table_uri(name)
        for attempt in range(5):
            try:
                return DeltaTable(uri, storage_options=self.storage_options or None)
            except TableNotFoundError:
                pass
            try:
                return DeltaTable.create(
                    uri,
                    SCHEMAS[name],
                    mode="ignore",
                    name=name,
                    configuration=_TABLE_CONFIG.get(name),
                    storage_options=self.storage_options or None,
                )
            except Exception:  # another process created it at the same moment: open theirs
                time.sleep(0.05 * (attempt + 1))
        return DeltaTable(uri, storage_options=self.storage_options or None)
