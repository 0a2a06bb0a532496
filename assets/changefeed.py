"""The change feed as an observable source: its data version is the latest sequence number.

Downstream assets (DICOMcast, exports) depend on `change_feed` and react when its version moves;
they read the entries themselves through a consumer cursor (dicomlake.changefeed.ConsumerCursor).
"""

import warnings

import dagster as dg

from dicomlake.changefeed import ChangeFeed
from resources import LakehouseResource


def observe_change_feed(lakehouse: LakehouseResource) -> dg.ObserveResult:
    tenant = lakehouse.tenant_store()
    feed = ChangeFeed(tenant)
    latest = feed.latest()
    metadata: dict[str, dg.RawMetadataValue] = {"latest_sequence": latest.sequence if latest else 0}
    if latest:
        metadata["latest_timestamp"] = latest.timestamp.isoformat()
        metadata["latest_action"] = latest.action
    return dg.ObserveResult(data_version=dg.DataVersion(str(metadata["latest_sequence"])), metadata=metadata)


with warnings.catch_warnings():
    # observable_source_asset is marked beta in Dagster 1.13; it is the documented way to model
    # an external, versioned source, so the warning would only be noise for every user.
    warnings.simplefilter("ignore", dg.BetaWarning)
    change_feed = dg.observable_source_asset(
        name="change_feed",
        group_name="ingest",
        description="The tenant's ordered, immutable change feed (Delta table `changes`). "
        "Data version = latest sequence number.",
        automation_condition=dg.AutomationCondition.on_cron("* * * * *"),
    )(observe_change_feed)
