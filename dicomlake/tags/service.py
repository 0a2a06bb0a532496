"""What admins and the search engine do with extended query tags (the catalog's operations)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError

from dicomlake.errors import InvalidQueryTag, QueryTagNotFound
from dicomlake.store.read import scan
from dicomlake.store.schemas import SCHEMAS
from dicomlake.tags.catalog import (
    MAX_ATTEMPTS,
    TOMBSTONE,
    CatalogConflict,
    backoff,
    find,
    load_catalog,
    mutate,
    open_existing,
    sql_string,
    watermark_app,
    watermarks,
)
from dicomlake.tags.model import QUERY_STATUSES, QueryTag, TagSpec, resolve

if TYPE_CHECKING:
    from dicomlake.store.lakehouse import TenantStore


def add_query_tags(tenant: TenantStore, specs: Iterable[TagSpec | str | dict[str, Any]]) -> list[QueryTag]:
    """Add tags (status adding, querying enabled) in one catalog commit: all or none.

    Each spec is a keyword or hex path, a dict (tag, vr, level, private_creator) or a TagSpec.
    Raises InvalidQueryTag naming the problem (unknown, not indexable, built in, duplicate).
    """
    now = dt.datetime.now(dt.UTC)
    tags: list[QueryTag] = []
    for spec in specs:
        tag = resolve(spec, now)
        if any(t.key == tag.key for t in tags):
            raise InvalidQueryTag(f"{tag.key} is listed twice")
        tags.append(tag.with_(id=uuid.uuid4().hex))
    if not tags:
        raise InvalidQueryTag("no query tag given")

    def change(catalog: dict[str, QueryTag]):
        for tag in tags:
            existing = catalog.get(tag.key)
            if existing is not None:
                state = "is being deleted" if existing.status == "deleting" else f"exists ({existing.status})"
                raise InvalidQueryTag(f"extended query tag {tag.key} {state}")
            catalog[tag.key] = tag
        return catalog, tags

    return mutate(tenant, change, "add_tags")


def _current(tenant: TenantStore, tags: list[QueryTag]) -> list[QueryTag]:
    """Tags with indexed_through from their watermark (the catalog's copy can lag behind it)."""
    marks = watermarks(tenant, tags)
    return [tag.with_(indexed_through=max(tag.indexed_through, marks[tag.key]))
            if marks[tag.key] < TOMBSTONE else tag for tag in tags]


def list_query_tags(tenant: TenantStore) -> list[QueryTag]:
    return _current(tenant, sorted(load_catalog(tenant).values(), key=lambda t: t.key))


def get_query_tag(tenant: TenantStore, name: str) -> QueryTag:
    """A tag by key, keyword or 8-hex path; QueryTagNotFound if there is none."""
    return _current(tenant, [find(load_catalog(tenant), name)])[0]


def set_query_status(tenant: TenantStore, name: str, query_status: str) -> QueryTag:
    """Enable or disable querying on a tag (re-enabling after errors is an admin's decision)."""
    if query_status not in QUERY_STATUSES:
        raise ValueError(f"query status must be one of {', '.join(QUERY_STATUSES)}, not {query_status!r}")

    def change(catalog: dict[str, QueryTag]):
        tag = find(catalog, name)
        if tag.status == "deleting":
            raise QueryTagNotFound(f"extended query tag {tag.key!r} is being deleted")
        if tag.query_status == query_status:
            return None, tag
        catalog[tag.key] = tag.with_(query_status=query_status, updated_at=dt.datetime.now(dt.UTC))
        return catalog, catalog[tag.key]

    return _current(tenant, [mutate(tenant, change, f"{query_status[:-1]}_tag")])[0]


def delete_query_tag(tenant: TenantStore, name: str) -> QueryTag:
    """Delete a tag: status deleting, then its values and errors, then its catalog row.

    Safe to run again after an interruption (a tag left 'deleting' is finished by deleting it again).
    """

    def mark(catalog: dict[str, QueryTag]):
        tag = find(catalog, name)
        if tag.status == "deleting":
            return None, tag
        catalog[tag.key] = tag.with_(status="deleting", updated_at=dt.datetime.now(dt.UTC))
        return catalog, catalog[tag.key]

    tag = mutate(tenant, mark, "delete_tag")
    for table_name in ("tag_values", "tag_errors"):
        _purge(tenant, table_name, tag)

    def remove(catalog: dict[str, QueryTag]):
        if catalog.get(tag.key) is None or catalog[tag.key].id != tag.id:
            return None, None
        del catalog[tag.key]
        return catalog, None

    mutate(tenant, remove, "delete_tag")
    return tag


def _purge(tenant: TenantStore, table_name: str, tag: QueryTag) -> None:
    """Tombstone the tag's watermark (an indexer that raced us now conflicts), then delete its rows."""
    txn = CommitProperties(app_transactions=[Transaction(app_id=watermark_app(tag), version=TOMBSTONE)],
                           custom_metadata={"dicomlake.operation": "delete_tag"})
    for attempt in range(MAX_ATTEMPTS):
        table = tenant.table(table_name)
        try:
            if (table.transaction_version(watermark_app(tag)) or 0) < TOMBSTONE:
                empty = SCHEMAS[table_name].empty_table()
                write_deltalake(table, empty, mode="append", commit_properties=txn)
                table.update_incremental()
            table.delete(f"tag_key = {sql_string(tag.key)}")
            return
        except CommitFailedError:
            backoff(attempt)
    raise CatalogConflict(f"{tenant.name}: rows of {tag.key} not deleted from {table_name}")


def tag_errors(tenant: TenantStore, name: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Errors recorded for a tag, in seq order (paged)."""
    tag = find(load_catalog(tenant), name)
    table = open_existing(tenant, "tag_errors")
    if table is None:
        return []
    rows = scan(table, where=f"tag_key = {sql_string(tag.key)}", order_by="seq, sop_instance_uid, error_code",
                limit=limit, offset=offset)
    return rows.to_pylist()


def queryable_tags(tenant: TenantStore) -> dict[str, QueryTag]:
    """Every accepted query-parameter spelling -> tag, for tags ready AND enabled for querying.

    Spellings: the key; for standard tags their keyword and 8-hex path (upper case); for private
    tags the 8-hex path too when no other queryable private tag shares it. Cached by Delta version.
    """
    tags = [tag for tag in load_catalog(tenant).values() if tag.queryable]
    spellings: dict[str, QueryTag] = {}
    path_counts: dict[str, int] = {}
    for tag in tags:
        path_counts[tag.path] = path_counts.get(tag.path, 0) + 1
    for tag in tags:
        spellings[tag.key] = tag
        if tag.keyword:
            spellings[tag.keyword] = tag
        if path_counts[tag.path] == 1:
            spellings[tag.path] = tag
    return spellings


def tag_values_table(tenant: TenantStore) -> pa.Table:
    """All indexed values (tests and small tenants; search reads the table itself)."""
    table = open_existing(tenant, "tag_values")
    if table is None:
        return SCHEMAS["tag_values"].empty_table()
    return scan(table, order_by="tag_key, seq")
