"""The extended query tag catalog (`query_tags` table) and the tags' watermarks.

Every change to the catalog is one overwrite commit carrying the app transaction CATALOG_APP at
version revision + 1. Two writers that read the same revision both carry that version, so Delta's
conflict checker lets one win; the other re-reads the catalog, re-applies its change and tries
again. Nothing one writer changes can be silently undone by another.

A tag's watermark (the seq up to which its values are indexed) is the version of app transaction
`watermark_app(tag)` in `tag_values`: it moves in the same commit that appends the values. A
deleted tag's watermark is set to TOMBSTONE first, so an indexer that raced the delete conflicts
and stops instead of writing values for a tag that is going away.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from dicomlake.errors import DicomlakeError, QueryTagNotFound
from dicomlake.store.log import has_newer_version
from dicomlake.store.read import scan
from dicomlake.store.schemas import QUERY_TAGS
from dicomlake.tags.model import QueryTag

if TYPE_CHECKING:
    from dicomlake.store.lakehouse import TenantStore

CATALOG_APP = "dicomlake.query_tags"
TOMBSTONE = 2**62  # the watermark of a tag being deleted: above any seq
MAX_ATTEMPTS = 200
T = TypeVar("T")


class CatalogConflict(DicomlakeError):
    """Gave up after too many concurrent changes to the catalog (only under extreme contention)."""


def watermark_app(tag: QueryTag) -> str:
    """App id of a tag's watermark; per addition, so a deleted and re-added tag starts from 0."""
    return f"dicomlake.tag.{tag.id}"


def backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.005 * 2 ** min(attempt, 7)) * random.uniform(0.5, 1.5))


def open_existing(tenant: TenantStore, name: str) -> DeltaTable | None:
    """The table if it exists; reading never creates tables (a tenant without tags has none)."""
    try:
        return DeltaTable(tenant.table_uri(name), storage_options=tenant.storage_options or None)
    except TableNotFoundError:
        return None


def _rows(table: DeltaTable) -> dict[str, QueryTag]:
    return {row["key"]: QueryTag.from_row(row) for row in scan(table, order_by="key").to_pylist()}


class _Cache:
    """The catalog per table URI, re-read only when the table's version moved (one stat locally)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[DeltaTable, int, dict[str, QueryTag]]] = {}

    def get(self, tenant: TenantStore) -> dict[str, QueryTag]:
        uri = tenant.table_uri("query_tags")
        with self.lock:
            entry = self.entries.get(uri)
            if entry is not None:
                table, version, tags = entry
                if not has_newer_version(table, version):
                    return tags
                table.update_incremental()
                if table.version() == version:
                    return tags
            else:
                table = open_existing(tenant, "query_tags")
                if table is None:
                    return {}
            tags = _rows(table)
            self.entries[uri] = (table, table.version(), tags)
            return tags


_cache = _Cache()


def load_catalog(tenant: TenantStore) -> dict[str, QueryTag]:
    """Every tag in the catalog by key (cached by Delta version: cheap to call per batch)."""
    return dict(_cache.get(tenant))


def mutate(
    tenant: TenantStore,
    change: Callable[[dict[str, QueryTag]], tuple[dict[str, QueryTag] | None, T]],
    operation: str,
) -> T:
    """Apply `change` (current catalog -> (new catalog or None for no change, result)) atomically."""
    for attempt in range(MAX_ATTEMPTS):
        table = tenant.table("query_tags")
        revision = table.transaction_version(CATALOG_APP) or 0
        updated, result = change(_rows(table))
        if updated is None:
            return result
        rows = pa.Table.from_pylist([tag.row() for tag in updated.values()], schema=QUERY_TAGS)
        try:
            write_deltalake(
                table,
                rows,
                mode="overwrite",
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(app_id=CATALOG_APP, version=revision + 1)],
                    custom_metadata={"dicomlake.operation": operation},
                ),
            )
        except CommitFailedError:
            backoff(attempt)
            continue
        return result
    raise CatalogConflict(f"{tenant.name}: the query tag catalog did not commit in {MAX_ATTEMPTS} attempts")


def watermarks(tenant: TenantStore, tags: list[QueryTag], table: DeltaTable | None = None) -> dict[str, int]:
    """Each tag's watermark in `tag_values` (0 before its first commit; TOMBSTONE when deleted)."""
    table = table if table is not None else open_existing(tenant, "tag_values")
    if table is None:
        return {tag.key: 0 for tag in tags}
    return {tag.key: table.transaction_version(watermark_app(tag)) or 0 for tag in tags}


def find(catalog: dict[str, QueryTag], name: str) -> QueryTag:
    """A tag by key, keyword or 8-hex path (a path must name one tag)."""
    if name in catalog:
        return catalog[name]
    text = name.strip()
    for tag in catalog.values():
        if tag.keyword and tag.keyword == text:
            return tag
    upper = text.upper().replace("(", "").replace(")", "").replace(",", "")
    by_path = [tag for tag in catalog.values() if tag.path == upper]
    if len(by_path) == 1:
        return by_path[0]
    if len(by_path) > 1:
        keys = ", ".join(sorted(tag.key for tag in by_path))
        raise QueryTagNotFound(f"{name!r} is the path of several private tags ({keys}); give the key")
    raise QueryTagNotFound(f"no extended query tag {name!r}")


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def count_errors(tenant: TenantStore, keys: list[str]) -> dict[str, int]:
    table = open_existing(tenant, "tag_errors")
    counts = dict.fromkeys(keys, 0)
    if table is None or not keys:
        return counts
    where = "tag_key IN (" + ", ".join(sql_string(k) for k in keys) + ")"
    for key in scan(table, ["tag_key"], where=where).column("tag_key").to_pylist():
        counts[key] += 1
    return counts


