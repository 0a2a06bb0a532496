"""Extended query tags over HTTP: add -> operation (202 then 200) -> query -> errors -> disable -> delete."""

from __future__ import annotations

import time

import pytest
import requests

from tests.search.conftest import INSTANCES, SERIES, STUDY, sop_uid, write_instance


@pytest.fixture(scope="module")
def admin(server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tags-drop")
    for series, number in INSTANCES:
        # DeviceSerialNumber of series C1 is longer than LO allows: an indexing error.
        weight = {"A": "72", "B": "61.5", "C": "80"}[series[0]]
        model = "X" * 65 if series == "C1" else f"M-{series}"
        write_instance(folder, series, number, PatientWeight=weight, DeviceSerialNumber=model)
    server.ingest([folder], tenant="tags")
    headers = server.auth("tags", ["admin"])
    base = server.url("/tenants/tags/dicomweb")

    def call(method: str, path: str, **kwargs):
        return requests.request(method, base + path, **{"headers": headers, **kwargs})

    call.base = base
    call.headers = headers
    return call


def wait_for(admin, href: str) -> dict:
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        response = admin("GET", href.split("/dicomweb", 1)[1])
        seen.append(response.status_code)
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 202, response.text
        assert response.headers["Location"] == href and response.json()["status"] == "Running"
        time.sleep(0.05)
    raise AssertionError(f"operation still running: {seen[-5:]}")


def test_lifecycle(admin):
    added = admin("POST", "/extendedquerytags", json=[
        {"Path": "PatientWeight", "Level": "Study"},
        {"path": "00181000", "vr": "LO", "level": "series"},  # DeviceSerialNumber, any case
    ])
    assert added.status_code == 202, added.text
    reference = added.json()
    assert set(reference) == {"id", "href"}
    assert reference["href"] == f"{admin.base}/operations/{reference['id']}"
    assert added.headers["Location"] == reference["href"]

    done = wait_for(admin, reference["href"])
    assert done["operationId"] == reference["id"] and done["type"] == "Reindex"
    assert done["status"] == "Completed" and done["percentComplete"] == 100
    assert sorted(done["resources"]) == [f"{admin.base}/extendedquerytags/00101030",
                                         f"{admin.base}/extendedquerytags/00181000"]
    assert done["createdTime"] <= done["lastUpdatedTime"]

    listed = admin("GET", "/extendedquerytags").json()
    assert [t["path"] for t in listed] == ["00101030", "00181000"]
    weight = listed[0]
    assert weight == admin("GET", "/extendedquerytags/PatientWeight").json()
    assert weight["vr"] == "DS" and weight["level"] == "Study" and weight["status"] == "Ready"
    assert weight["queryStatus"] == "Enabled" and "errors" not in weight
    model = admin("GET", "/extendedquerytags/DeviceSerialNumber").json()
    assert model == admin("GET", "/extendedquerytags/00181000").json() == listed[1]
    # Series C1's value could not be indexed: an error, and querying is disabled until an admin says so.
    assert model["status"] == "Ready" and model["queryStatus"] == "Disabled" and model["level"] == "Series"
    assert model["errors"] == {"count": 1, "href": f"{admin.base}/extendedquerytags/00181000/errors"}
    errors = admin("GET", "/extendedquerytags/DeviceSerialNumber/errors").json()
    assert len(errors) == 1 and errors[0]["studyInstanceUid"] == STUDY["C"]
    assert errors[0]["seriesInstanceUid"] == SERIES["C1"] and errors[0]["sopInstanceUid"] == sop_uid("C1", 1)
    assert errors[0]["errorCode"] == "value_too_long" and errors[0]["createdTime"].endswith("Z")

    # Query on the ready, enabled tag (admin implies read): QIDO sees it.
    studies = admin("GET", "/studies", params={"PatientWeight": "72"})
    assert studies.status_code == 200 and [s["0020000D"]["Value"] for s in studies.json()] == [[STUDY["A"]]]
    refused = admin("GET", "/series", params={"DeviceSerialNumber": "M-A2"})
    assert refused.status_code == 400 and refused.json()["parameter"] == "DeviceSerialNumber"

    enabled = admin("PATCH", "/extendedquerytags/00181000", json={"QueryStatus": "Enabled"})
    assert enabled.status_code == 200 and enabled.json()["queryStatus"] == "Enabled"
    found = admin("GET", "/series", params={"DeviceSerialNumber": "M-A2"})
    assert [s["00181000"]["Value"] for s in found.json()] == [["M-A2"]]
    disabled = admin("PATCH", "/extendedquerytags/PatientWeight", json={"querystatus": "disabled"})
    assert disabled.json()["queryStatus"] == "Disabled"
    assert admin("GET", "/studies", params={"PatientWeight": "72"}).status_code == 400

    assert admin("DELETE", "/extendedquerytags/00181000").status_code == 204
    assert admin("GET", "/extendedquerytags/00181000").status_code == 404
    assert admin("DELETE", "/extendedquerytags/00181000").status_code == 404
    assert [t["path"] for t in admin("GET", "/extendedquerytags").json()] == ["00101030"]


def test_paging_a_private_tag_and_refusals(admin):
    private = admin("POST", "/extendedquerytags", json=[
        {"Path": "00091010", "VR": "LO", "PrivateCreator": "ACME 1.0", "Level": "Instance"}])
    assert private.status_code == 202
    wait_for(admin, private.json()["href"])
    got = admin("GET", "/extendedquerytags/00091010%3AACME%201.0").json()
    assert got["privateCreator"] == "ACME 1.0" and got["key"] == "00091010:ACME 1.0"
    assert got["level"] == "Instance"
    everything = admin("GET", "/extendedquerytags").json()
    assert admin("GET", "/extendedquerytags", params={"limit": 1, "offset": 1}).json() == everything[1:2]

    duplicate = admin("POST", "/extendedquerytags", json=[{"Path": "00091010", "VR": "LO",
                                                          "PrivateCreator": "ACME 1.0"}])
    assert duplicate.status_code == 409 and "exists" in duplicate.json()["detail"]
    assert admin("POST", "/extendedquerytags", json=[{"Path": "PatientID"}]).status_code == 409  # built in
    for body, words in (([{"Path": "NoSuchKeyword"}], "neither"),
                        ([{"Path": "PixelData"}], "cannot be indexed"),
                        ([{"Path": "00091011", "VR": "LO"}], "private creator"), ([], "non-empty"),
                        ({"Path": "PatientAge"}, "non-empty"),
                        ([{"Path": "PatientAge", "Colour": "x"}], "Colour"),
                        ([{"Path": "PatientAge", "Level": "Patient"}], "level")):
        refused = admin("POST", "/extendedquerytags", json=body)
        assert refused.status_code == 400 and words in refused.json()["detail"], (body, refused.text)
    broken = admin("POST", "/extendedquerytags", data="[", headers={**admin.headers,
                                                                   "Content-Type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["detail"]
    not_json = admin("POST", "/extendedquerytags", data="x")
    assert not_json.status_code == 415
    maybe = admin("PATCH", "/extendedquerytags/PatientWeight", json={"QueryStatus": "Maybe"})
    assert maybe.status_code == 400
    assert admin("PATCH", "/extendedquerytags/NoSuchTag", json={"QueryStatus": "Enabled"}).status_code == 404
    assert admin("GET", "/extendedquerytags/NoSuchTag/errors").status_code == 404
    assert admin("GET", "/operations/0123abcd").status_code == 404
    assert admin("GET", "/operations/not-hex").status_code == 404
