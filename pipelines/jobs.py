"""Jobs: `ingest_job` (one drop batch), `levels_job` (series + studies and their checks) and
`observe_change_feed_job` (records the feed's latest seq as the data version of `change_feed`)."""

from __future__ import annotations

import dagster as dg

from assets import dicom_instances

# Selecting assets selects their checks too: the quality checks run in the same run as the write.
# ingest_job is partitioned like dicom_instances (drop_batches): one run per drop batch.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(dicom_instances),
    description="Ingest one drop batch (a partition) into the tenant tables, then check them.",
)

levels_job = dg.define_asset_job(
    "levels_job",
    selection=dg.AssetSelection.assets("series", "studies"),
    description="Rebuild the series and studies tables from instances, then check them.",
)

observe_change_feed_job = dg.define_asset_job(
    "observe_change_feed_job",
    selection=dg.AssetSelection.assets("change_feed"),
    description="Observe the change feed: its data version becomes the latest sequence number.",
)
