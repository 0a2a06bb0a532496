"""QIDO-RS over HTTP: every URL form, parameters, RetrieveURL, 204 and 400; DELETE 204/404."""

from __future__ import annotations

import pytest
import requests

from tests.search.conftest import INSTANCES, SERIES, STUDY, sop_uid, write_instance

UID = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}
RETRIEVE_URL = "00081190"


@pytest.fixture(scope="module")
def qido(server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("qido-drop")
    for series, number in INSTANCES:
        write_instance(folder, series, number)
    assert server.ingest([folder], tenant="qido").created == len(INSTANCES)
    headers = server.auth("qido", ["read"])

    def get(path: str, params=None, **kwargs):
        return requests.get(server.url(f"/tenants/qido/dicomweb{path}"), params=params,
                            headers={**headers, **kwargs.pop("headers", {})}, **kwargs)

    return get


def uids(response, level: str) -> list[str]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/dicom+json"
    return [match[UID[level]]["Value"][0] for match in response.json()]


def test_every_url_form(qido):
    a, a1 = STUDY["A"], SERIES["A1"]
    assert uids(qido("/studies"), "studies") == [STUDY["B"], STUDY["A"], STUDY["C"]]  # newest first
    assert sorted(uids(qido("/series"), "series")) == sorted(SERIES.values())
    assert sorted(uids(qido("/instances"), "instances")) == sorted(sop_uid(s, n) for s, n in INSTANCES)
    assert uids(qido(f"/studies/{a}/series"), "series") == [SERIES["A1"], SERIES["A2"]]
    assert uids(qido(f"/studies/{a}/instances"), "instances") == [sop_uid("A1", 1), sop_uid("A1", 2),
                                                                  sop_uid("A2", 1)]
    assert uids(qido(f"/studies/{a}/series/{a1}/instances"), "instances") == [sop_uid("A1", 1),
                                                                               sop_uid("A1", 2)]


def test_matching_parameters_go_to_search(qido):
    assert uids(qido("/studies", {"PatientID": "P1"}), "studies") == [STUDY["A"], STUDY["C"]]
    assert uids(qido("/studies", {"StudyDate": "20200101-20211231"}), "studies") == [STUDY["B"], STUDY["A"]]
    assert uids(qido("/studies", {"PatientName": "muller", "fuzzymatching": "true"}), "studies") == [
        STUDY["B"], STUDY["A"]]
    assert sorted(uids(qido("/series", {"Modality": "MR"}), "series")) == sorted([SERIES["A2"], SERIES["B1"]])
    # A list of UIDs, and the study level keys at the instance level:
    both = f"{SERIES['A2']},{SERIES['B1']}"
    assert sorted(uids(qido("/instances", {"SeriesInstanceUID": both}), "instances")) == sorted(
        [sop_uid("A2", 1), sop_uid("B1", 1)])


def test_limit_offset_and_includefield(qido):
    first = uids(qido("/studies", {"limit": "2"}), "studies")
    rest = uids(qido("/studies", {"limit": "2", "offset": "2"}), "studies")
    assert first == [STUDY["B"], STUDY["A"]] and rest == [STUDY["C"]]
    sop = sop_uid("B1", 1)
    plain = qido("/instances", {"SOPInstanceUID": sop}).json()[0]
    assert "00100020" not in plain and "00180050" not in plain  # not returned by default
    included = qido("/instances", [("SOPInstanceUID", sop), ("includefield", "PatientID"),
                                   ("includefield", "00180050")]).json()[0]
    assert included["00100020"]["Value"] == ["P2"] and included["00180050"]["Value"] == [2.5]
    everything = qido("/instances", {"SOPInstanceUID": sop, "includefield": "all"}).json()[0]
    assert everything["00100020"]["Value"] == ["P2"] and everything["00081030"]["Value"] == ["MR BRAIN"]


def test_retrieve_url_is_absolute_under_the_base_used(server, qido, tmp_path):
    a, a1, sop = STUDY["A"], SERIES["A1"], sop_uid("A1", 1)
    base = server.url("/tenants/qido/dicomweb")
    study = qido("/studies", {"StudyInstanceUID": a}).json()[0]
    assert study[RETRIEVE_URL] == {"vr": "UR", "Value": [f"{base}/studies/{a}"]}
    series = qido(f"/studies/{a}/series", {"SeriesInstanceUID": a1}).json()[0]
    assert series[RETRIEVE_URL]["Value"] == [f"{base}/studies/{a}/series/{a1}"]
    instance = qido("/instances", {"SOPInstanceUID": sop}).json()[0]
    assert instance[RETRIEVE_URL]["Value"] == [f"{base}/studies/{a}/series/{a1}/instances/{sop}"]
    # Through the default tenant's base, the URL follows that base.
    default = server.auth("default", ["read"])
    server.ingest([write_instance(tmp_path, "C1", 1)], tenant="default")
    got = requests.get(server.url("/dicomweb/studies"), headers=default).json()[0]
    assert got[RETRIEVE_URL]["Value"][0].startswith(server.url("/dicomweb/studies/"))


def test_no_match_is_204_with_an_empty_body(qido):
    response = qido("/studies", {"PatientID": "nobody"})
    assert response.status_code == 204 and response.content == b""
    assert qido(f"/studies/{STUDY['A']}/series", {"Modality": "US"}).status_code == 204


@pytest.mark.parametrize(("params", "parameter", "words"), [
    ({"NotAnAttribute": "x"}, "NotAnAttribute", "not a DICOM keyword"),
    ({"PatientWeight": "70"}, "PatientWeight", "not a searchable attribute"),
    ({"StudyDate": "2020-01-01"}, "StudyDate", ""),
    ({"limit": "0"}, "limit", "between"),
    ({"limit": "ten"}, "limit", "not an integer"),
    ({"offset": "-1"}, "offset", ""),
    ({"fuzzymatching": "perhaps"}, "fuzzymatching", "true or false"),
    ({"SOPInstanceUID": "1.2.3"}, "SOPInstanceUID", "instance-level"),
    ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID", ""),
])
def test_bad_parameters_are_400_naming_the_parameter(qido, params, parameter, words):
    response = qido("/studies", params)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_query" and body["parameter"] == parameter
    assert parameter in body["detail"] and words in body["detail"]


def test_a_path_uid_cannot_be_given_again(qido):
    response = qido(f"/studies/{STUDY['A']}/series", {"StudyInstanceUID": STUDY["B"]})
    assert response.status_code == 400 and response.json()["parameter"] == "StudyInstanceUID"


def test_only_dicom_json_is_offered(qido):
    assert qido("/studies", headers={"Accept": "application/dicom+xml"}).status_code == 406
    assert qido("/studies", headers={"Accept": "application/dicom+json"}).status_code == 200


def test_delete_instance_series_study_then_404(server, tmp_path):
    for series, number in INSTANCES:
        write_instance(tmp_path, series, number)
    server.ingest([tmp_path], tenant="del")
    deleter = server.auth("del", ["read", "delete"])
    base = server.url("/tenants/del/dicomweb")
    a, a1, a2 = STUDY["A"], SERIES["A1"], SERIES["A2"]

    def instances(path: str = "/instances") -> list[str]:
        response = requests.get(base + path, headers=deleter)
        return [] if response.status_code == 204 else uids(response, "instances")

    assert requests.delete(f"{base}/studies/{a}/series/{a1}/instances/{sop_uid('A1', 1)}",
                           headers=deleter).status_code == 204
    assert sop_uid("A1", 1) not in instances() and sop_uid("A1", 2) in instances()
    assert requests.delete(f"{base}/studies/{a}/series/{a1}", headers=deleter).status_code == 204
    assert instances(f"/studies/{a}/instances") == [sop_uid("A2", 1)]
    assert requests.delete(f"{base}/studies/{a}", headers=deleter).status_code == 204
    assert instances(f"/studies/{a}/instances") == []
    assert requests.delete(f"{base}/studies/{a}", headers=deleter).status_code == 404
    assert requests.delete(f"{base}/studies/{a}/series/{a2}", headers=deleter).status_code == 404
    assert requests.delete(f"{base}/studies/1.2.x", headers=deleter).status_code == 400
    assert sorted(instances()) == sorted([sop_uid("B1", 1), sop_uid("C1", 1)])
    # Each deleted instance is a delete entry in the feed.
    feed = requests.get(f"{base}/changefeed", params={"offset": 5, "includeMetadata": "false"},
                        headers=deleter).json()
    assert [(e["Action"], e["SopInstanceUid"]) for e in feed] == [
        ("delete", sop_uid("A1", 1)), ("delete", sop_uid("A1", 2)), ("delete", sop_uid("A2", 1))]
