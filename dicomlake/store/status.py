"""A tenant at a glance: table versions, row counts, the latest seq and projection lag."""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from dicomlake.store.committer import CHANGES_APP, PROJECTION_APP, sync_instances
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.read import scan


def tenant_status(tenant: TenantStore) -> dict[str, Any]:
    sync_instances(tenant)
    changes, instances, quarantine = (tenant.table(n) for n in ("changes", "instances", "quarantine"))
    return {
        "tenant": tenant.name,
        "uri": tenant.uri,
        "latest_seq": changes.transaction_version(CHANGES_APP) or 0,
        "instances_reflect_seq": instances.transaction_version(PROJECTION_APP) or 0,
        "instances": instances.count(),
        "studies": pc.count_distinct(scan(instances, ["study_instance_uid"]).column(0)).as_py(),
        "quarantined": quarantine.count(),
        "changes_version": changes.version(),
        "instances_version": instances.version(),
    }
