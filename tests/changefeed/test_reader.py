"""Reading the feed: pages by sequence, time windows, latest, states, metadata, bad parameters."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from dicomlake.changefeed import MAX_LIMIT, ChangeFeed
from dicomlake.cli import main as cli
from dicomlake.ingest import IngestOptions, ingest
from dicomlake.lifecycle import delete_instances
from dicomlake.samples import SampleSummary
from dicomlake.store import TenantStore
from tests.ingest.conftest import rewrite

KEYS = {
    "sequence",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "sop_class_uid",
    "action",
    "timestamp",
    "state",
    "tenant",
    "blob",
    "metadata",
}


def test_pages_by_sequence(tenant: TenantStore, drop: SampleSummary) -> None:
    ingest([drop.dest], tenant)
    feed = ChangeFeed(tenant)
    assert feed.latest_sequence() == 30
    first = feed.read(offset=0, limit=10)
    assert [e.sequence for e in first] == list(range(1, 11))
    assert [e.sequence for e in feed.read(offset=25, limit=10)] == [26, 27, 28, 29, 30]
    assert feed.read(offset=30, limit=10) == []
    entry = first[0]
    assert set(entry.as_json()) == KEYS
    assert (entry.action, entry.state, entry.tenant) == ("create", "current", "feed")
    assert entry.timestamp.utcoffset() == dt.timedelta(0)
    assert entry.blob and tenant.blobs.exists(entry.blob)
    assert entry.metadata is None


def test_metadata_is_the_dicom_json_of_that_version(tenant: TenantStore, drop: SampleSummary) -> None:
    ingest([drop.dest], tenant)
    entry = ChangeFeed(tenant).read(0, 1, include_metadata=True)[0]
    assert entry.metadata["00080018"]["Value"] == [entry.sop_instance_uid]
    assert entry.metadata["0020000D"]["Value"] == [entry.study_instance_uid]


def _source_of(tenant: TenantStore, sequence: int) -> Path:
    from dicomlake.store.read import scan

    return Path(scan(tenant.table("changes"), ["source"], where=f"seq = {sequence}").column(0)[0].as_py())


def test_states_follow_update_and_delete(tenant: TenantStore, drop: SampleSummary, tmp_path: Path) -> None:
    ingest([drop.dest], tenant)
    feed = ChangeFeed(tenant)
    created = feed.read(0, 1)[0]
    original = _source_of(tenant, created.sequence)
    ingest([rewrite(original, tmp_path / "v2.dcm", SeriesDescription="V2")], tenant)
    created = feed.read(0, 1)[0]
    assert created.state == "replaced"
    update = feed.latest()
    assert (update.action, update.state, update.sequence) == ("update", "current", 31)
    delete_instances(
        tenant, created.study_instance_uid, created.series_instance_uid, created.sop_instance_uid
    )
    deleted = feed.latest()
    assert (deleted.action, deleted.state, deleted.blob) == ("delete", "deleted", None)
    assert [e.state for e in feed.read(0, 1) + feed.read(30, 1)] == ["replaced", "deleted"]
    assert sum(e.state == "current" for e in feed.read(0, 100)) == 29


def test_time_window_is_start_inclusive_end_exclusive(tenant: TenantStore, drop: SampleSummary) -> None:
    ingest(drop.files[:10], tenant)
    ingest(drop.files[10:], tenant)
    feed = ChangeFeed(tenant)
    t1, t2 = feed.read(0, 1)[0].timestamp, feed.read(10, 1)[0].timestamp
    assert t1 < t2
    in_first = feed.read_window(t1, t2, limit=100)
    assert [e.sequence for e in in_first] == list(range(1, 11))
    at_second = feed.read_window(t2, t2 + dt.timedelta(microseconds=1), limit=100)
    assert [e.sequence for e in at_second] == list(range(11, 31))
    page = feed.read_window(t1, t2 + dt.timedelta(seconds=1), offset=5, limit=3)
    assert [e.sequence for e in page] == [6, 7, 8]
    other_zone = dt.timezone(dt.timedelta(hours=5))
    assert feed.read_window(t1.astimezone(other_zone), t2.astimezone(other_zone), limit=100) == in_first


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f: f.read(-1, 10), "offset"),
        (lambda f: f.read(0, 0), "limit"),
        (lambda f: f.read(0, MAX_LIMIT + 1), "limit"),
        (
            lambda f: f.read_window(dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)),
            "time zone",
        ),
        (
            lambda f: f.read_window(
                dt.datetime(2026, 1, 2, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
            ),
            "after",
        ),
    ],
)
def test_bad_parameters_are_named(tenant: TenantStore, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(ChangeFeed(tenant))


def test_empty_feed(tenant: TenantStore) -> None:
    feed = ChangeFeed(tenant)
    assert (feed.latest_sequence(), feed.latest(), feed.read()) == (0, None, [])
    assert feed.read_arrow().num_rows == 0


def test_read_arrow_is_columnar_and_matches_entries(tenant: TenantStore, drop: SampleSummary) -> None:
    ingest([drop.dest], tenant, IngestOptions(batch_size=7))
    feed = ChangeFeed(tenant)
    page = feed.read_arrow(3, 12)
    assert isinstance(page, pa.Table) and page.num_rows == 12
    assert page.column("seq").to_pylist() == [e.sequence for e in feed.read(3, 12)]


def test_cli_changefeed_and_delete(
    tmp_path: Path, drop: SampleSummary, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path / "cli-lake")
    cli(["ingest", str(drop.dest), "--root", root, "--json"])
    capsys.readouterr()
    assert cli(["changefeed", "--root", root, "--offset", "2", "--limit", "3", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["sequence"] for e in entries] == [3, 4, 5] and set(entries[0]) == KEYS
    study = entries[0]["study_instance_uid"]
    assert cli(["delete", study, "--root", root, "--json"]) == 0
    deleted = json.loads(capsys.readouterr().out)["deleted"]
    assert deleted >= 1
    assert cli(["changefeed", "latest", "--root", root, "--json"]) == 0
    latest = json.loads(capsys.readouterr().out)
    assert (latest["sequence"], latest["action"], latest["state"]) == (30 + deleted, "delete", "deleted")
    assert cli(["delete", study, "--root", root]) == 1  # nothing current left there
    assert "no current instance" in capsys.readouterr().err
    assert (
        cli(
            [
                "changefeed",
                "--root",
                root,
                "--start-time",
                "2026-01-01T00:00:00",
                "--end-time",
                "2027-01-01T00:00:00Z",
            ]
        )
        == 2
    )
    assert "time zone" in capsys.readouterr().err
