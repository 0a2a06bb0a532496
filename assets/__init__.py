"""Dagster assets, grouped by domain: `ingest` (drop batches -> instances) and `index` (levels).

Thin by design: each asset resolves its resources, calls one core function and reports metadata.
The asset and sensor modules do not use `from __future__ import annotations`: Dagster inspects the
`context` annotation when the decorator runs, and a string annotation fails that check.
"""

from assets.changefeed import change_feed
from assets.checks import change_feed_is_dense, instances_are_valid, studies_are_consistent
from assets.index import levels
from assets.ingest import COMMITTER_POOL, QUARANTINE_CHECK, dicom_instances, drop_batches

ALL_ASSETS = [change_feed, dicom_instances, levels]
ALL_CHECKS = [instances_are_valid, change_feed_is_dense, studies_are_consistent]

__all__ = [
    "ALL_ASSETS",
    "ALL_CHECKS",
    "COMMITTER_POOL",
    "QUARANTINE_CHECK",
    "change_feed",
    "dicom_instances",
    "drop_batches",
    "levels",
]
