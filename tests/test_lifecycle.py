"""Delete study / series / instance, and the retention purge of superseded bytes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from dicomlake.changefeed import ChangeFeed
from dicomlake.ingest import ingest
from dicomlake.lifecycle import NotFound, delete_instances, purge_expired_blobs
from dicomlake.samples import generate_sample_drop
from dicomlake.store import Lakehouse, TenantStore
from dicomlake.store.read import scan
from tests.ingest.conftest import rewrite


@pytest.fixture
def tenant(tmp_path: Path) -> TenantStore:
    tenant = Lakehouse(tmp_path / "lake").tenant()
    ingest([generate_sample_drop(tmp_path / "drop", n_instances=40, seed=17).dest], tenant)
    return tenant


def instances(tenant: TenantStore) -> pl.DataFrame:
    return pl.from_arrow(scan(tenant.table("instances")))


def test_delete_at_each_level(tenant: TenantStore) -> None:
    before = instances(tenant)
    row = before.row(0, named=True)
    study, series, sop = row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"]
    one = delete_instances(tenant, study, series, sop)
    assert one.deleted == 1 and sop not in instances(tenant)["sop_instance_uid"].to_list()
    in_series = before.filter(pl.col("series_instance_uid") == series).height
    assert delete_instances(tenant, study, series).deleted == in_series - 1
    in_study = before.filter(pl.col("study_instance_uid") == study).height
    assert delete_instances(tenant, study).deleted == in_study - in_series
    assert instances(tenant).height == before.height - in_study  # gone at once
    deletes = [e for e in ChangeFeed(tenant).read(40, 100)]
    assert len(deletes) == in_study and {e.action for e in deletes} == {"delete"}
    with pytest.raises(NotFound):
        delete_instances(tenant, study)
    with pytest.raises(ValueError, match="study_instance_uid"):
        delete_instances(tenant, "1.2.03")
    with pytest.raises(ValueError, match="study, series, instance"):
        delete_instances(tenant, study, None, sop)


def test_a_deleted_instance_can_be_stored_again(tenant: TenantStore, tmp_path: Path) -> None:
    row = instances(tenant).row(0, named=True)
    delete_instances(tenant, row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"])
    source = tmp_path / "again.dcm"
    source.write_bytes(tenant.blobs.get(row["blob_key"]))  # bytes still there: within retention
    assert ingest([source], tenant).created == 1
    assert row["sop_instance_uid"] in instances(tenant)["sop_instance_uid"].to_list()


def test_purge_waits_for_retention_and_never_touches_current_bytes(
    tenant: TenantStore, tmp_path: Path
) -> None:
    rows = instances(tenant).sort("seq").rows(named=True)
    replaced, deleted = rows[0], rows[1]
    ingest([rewrite(Path(replaced["source"]), tmp_path / "v2.dcm", SeriesDescription="V2")], tenant)
    delete_instances(
        tenant, deleted["study_instance_uid"], deleted["series_instance_uid"], deleted["sop_instance_uid"]
    )
    now = dt.datetime.now(dt.UTC)
    early = purge_expired_blobs(tenant, dt.timedelta(days=7), now=now)
    assert (early.purged, early.waiting_for_retention) == (0, 2)
    assert tenant.blobs.exists(replaced["blob_key"]) and tenant.blobs.exists(deleted["blob_key"])
    later = purge_expired_blobs(tenant, dt.timedelta(days=7), now=now + dt.timedelta(days=8))
    assert later.purged == 2 and later.bytes_freed > 0
    assert not tenant.blobs.exists(replaced["blob_key"]) and not tenant.blobs.exists(deleted["blob_key"])
    for current in instances(tenant).rows(named=True):
        assert tenant.blobs.exists(current["blob_key"])
    purged = pl.from_arrow(scan(tenant.table("purged_blobs")))
    assert sorted(purged["sha256"]) == sorted([replaced["sha256"], deleted["sha256"]])
    again = purge_expired_blobs(tenant, dt.timedelta(days=7), now=now + dt.timedelta(days=9))
    assert again.purged == 0  # idempotent
