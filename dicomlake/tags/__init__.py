"""Extended query tags: admins add any standard or private tag to the search index.

    add_query_tags -> (status adding) -> reindex -> (ready) -> indexed at every ingest
    list_query_tags, get_query_tag, set_query_status, delete_query_tag, tag_errors
    queryable_tags (for search): spelling -> tag, ready and enabled
    start_reindex / operation_status / resume_reindex: reindex as a background operation

Tables: `query_tags` (the catalog), `tag_values` (one row per value), `tag_errors`.
See model (keys and validation), extract (values per VR), indexer (watermarks, crash safety).
"""

from dicomlake.tags.indexer import IndexSummary, Progress, index_after_commit, index_query_tags, reindex
from dicomlake.tags.model import LEVELS, QueryTag, TagSpec, resolve
from dicomlake.tags.operations import (
    OperationNotFound,
    list_operations,
    operation_status,
    resume_reindex,
    start_reindex,
    wait,
)
from dicomlake.tags.service import (
    add_query_tags,
    delete_query_tag,
    get_query_tag,
    list_query_tags,
    queryable_tags,
    set_query_status,
    tag_errors,
)

__all__ = [
    "LEVELS",
    "IndexSummary",
    "OperationNotFound",
    "Progress",
    "QueryTag",
    "TagSpec",
    "add_query_tags",
    "delete_query_tag",
    "get_query_tag",
    "index_after_commit",
    "index_query_tags",
    "list_operations",
    "list_query_tags",
    "operation_status",
    "queryable_tags",
    "reindex",
    "resolve",
    "resume_reindex",
    "set_query_status",
    "start_reindex",
    "tag_errors",
    "wait",
]
