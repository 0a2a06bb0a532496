"""The change feed over HTTP: Azure's field names, paging, time windows, latest, 400s."""

from __future__ import annotations

import datetime as dt

import pytest
import requests

from dicomlake.changefeed import ChangeFeed
from tests.search.conftest import INSTANCES, SERIES, STUDY, sop_uid, write_instance

FIELDS = {"Sequence", "StudyInstanceUid", "SeriesInstanceUid", "SopInstanceUid", "SopClassUid", "Action",
          "Timestamp", "State"}


@pytest.fixture(scope="module")
def feed(server, tmp_path_factory):
    """Five creates, an update of A1-1 (other bytes), a delete of series B1: 7 entries."""
    folder = tmp_path_factory.mktemp("feed-drop")
    for series, number in INSTANCES:
        write_instance(folder, series, number)
    server.ingest([folder], tenant="feed")
    update = write_instance(tmp_path_factory.mktemp("feed-update"), "A1", 1, StudyID="S1b")
    server.ingest([update], tenant="feed")
    headers = server.auth("feed", ["read", "delete"])
    base = server.url("/tenants/feed/dicomweb")
    gone = requests.delete(f"{base}/studies/{STUDY['B']}/series/{SERIES['B1']}", headers=headers)
    assert gone.status_code == 204

    def get(path: str = "/changefeed", params=None):
        return requests.get(base + path, params=params, headers=headers)

    return get


def test_entries_have_azures_fields_and_states(server, feed):
    response = feed(params={"limit": 100})
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    entries = response.json()
    assert [e["Sequence"] for e in entries] == list(range(1, 8))
    assert all(set(e) == FIELDS | {"Metadata"} for e in entries)  # includeMetadata defaults to true
    by_seq = {e["Sequence"]: e for e in entries}
    assert [e["Action"] for e in entries] == ["create"] * 5 + ["update", "delete"]
    first_a11 = next(e for e in entries if e["SopInstanceUid"] == sop_uid("A1", 1))
    assert first_a11["State"] == "replaced" and by_seq[6]["State"] == "current"
    assert by_seq[7]["SopInstanceUid"] == sop_uid("B1", 1) and by_seq[7]["State"] == "deleted"
    b1 = next(e for e in entries[:5] if e["SopInstanceUid"] == sop_uid("B1", 1))
    assert b1["State"] == "deleted"
    assert by_seq[6]["Metadata"]["00200010"]["Value"] == ["S1b"]  # that version's header
    assert by_seq[7]["Metadata"] is None
    assert by_seq[1]["SopClassUid"] == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    stamp = dt.datetime.fromisoformat(by_seq[1]["Timestamp"].replace("Z", "+00:00"))
    assert by_seq[1]["Timestamp"].endswith("Z") and stamp.tzinfo is not None
    # The same entries as the library reads.
    core = ChangeFeed(server.lakehouse.tenant("feed")).read(0, 100)
    assert [(e.sequence, e.action, e.state, e.sop_instance_uid) for e in core] == [
        (e["Sequence"], e["Action"], e["State"], e["SopInstanceUid"]) for e in entries]


def test_paging_by_offset_and_default_limit(feed):
    assert [e["Sequence"] for e in feed(params={"offset": 2, "limit": 3}).json()] == [3, 4, 5]
    assert [e["Sequence"] for e in feed(params={"offset": 5}).json()] == [6, 7]
    assert feed(params={"offset": 7}).json() == []
    no_metadata = feed(params={"includeMetadata": "false", "limit": 1}).json()[0]
    assert set(no_metadata) == FIELDS
    assert feed(params={"INCLUDEMETADATA": "False", "Limit": 1}).json() == [no_metadata]  # any case


def test_time_window(feed):
    entries = feed(params={"limit": 100}).json()
    sixth = entries[5]["Timestamp"]
    window = feed(params={"startTime": sixth, "endTime": "2200-01-01T00:00:00Z", "includeMetadata": "false"})
    assert [e["Sequence"] for e in window.json()] == [6, 7]  # seq 6 and 7 are later commits than 1-5
    assert [e["Sequence"] for e in feed(params={"startTime": sixth, "offset": 1}).json()] == [7]
    before = feed(params={"endTime": "2000-01-01T00:00:00+00:00"})
    assert before.status_code == 200 and before.json() == []


def test_latest(server, feed):
    latest = feed("/changefeed/latest")
    assert latest.status_code == 200 and latest.json()["Sequence"] == 7 and "Metadata" in latest.json()
    assert set(feed("/changefeed/latest", {"includeMetadata": "false"}).json()) == FIELDS
    empty = requests.get(server.url("/tenants/empty-feed/dicomweb/changefeed/latest"),
                         headers=server.auth("empty-feed", ["read"]))
    assert empty.status_code == 204 and empty.content == b""


@pytest.mark.parametrize(("params", "words"), [
    ({"offset": "-1"}, "offset"),
    ({"limit": "0"}, "limit"),
    ({"limit": "10001"}, "limit"),
    ({"limit": "x"}, "not an integer"),
    ({"includeMetadata": "maybe"}, "true or false"),
    ({"startTime": "yesterday"}, "ISO 8601"),
    ({"startTime": "2026-01-01T00:00:00"}, "time zone"),
    ({"startTime": "2026-01-02T00:00:00Z", "endTime": "2026-01-01T00:00:00Z"}, "after"),
    ({"since": "1"}, "unknown parameter"),
])
def test_bad_parameters_are_400(feed, params, words):
    response = feed(params=params)
    assert response.status_code == 400 and words in response.json()["detail"]
