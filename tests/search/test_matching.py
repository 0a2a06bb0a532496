"""Every QIDO-RS matching rule against hand-checked answers (see conftest for the archive)."""

from __future__ import annotations

import pytest

from dicomlake.errors import InvalidQuery
from tests.search.conftest import SERIES, STUDY, Archive, sop_uid

A, B, C = STUDY["A"], STUDY["B"], STUDY["C"]


def test_all_studies_newest_first(archive: Archive) -> None:
    assert archive.uids("studies") == [B, A, C]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"PatientID": "P1"}, [A, C]),
        ({"00100020": "P2"}, [B]),  # a tag instead of the keyword
        ({"(0010,0020)": "P2"}, [B]),
        ({"PatientID": "p1"}, []),  # single value matching is case-sensitive for LO
        ({"PatientID": ""}, [B, A, C]),  # universal matching
        ({"PatientID": "*"}, [B, A, C]),
        ({"AccessionNumber": "ACC*"}, [B, A, C]),
        ({"AccessionNumber": "AC?2"}, [B]),
        ({"AccessionNumber": "*3"}, [C]),
        ({"StudyDescription": "*CHEST"}, [A, C]),
        ({"StudyID": "S1\\S3"}, [A, C]),  # a list of values matches any
        ({"PatientSex": "F"}, [B]),
        ({"PatientBirthDate": "19700101"}, [A, C]),
        ({"PatientBirthDate": "19800101-"}, [B]),
    ],
)
def test_single_value_wildcards_and_lists(archive: Archive, params: dict, expected: list[str]) -> None:
    assert archive.uids("studies", params) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20200115", [A]),
        ("20200101-20201231", [A]),
        ("20200115-20200115", [A]),
        ("20200116-20210531", []),
        ("-20191231", [C]),
        ("20210101-", [B]),
        ("19000101-", [B, A, C]),
    ],
)
def test_date_ranges(archive: Archive, value: str, expected: list[str]) -> None:
    assert archive.uids("studies", {"StudyDate": value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("101500", [A]),
        ("10", [A]),  # a partial time covers its whole hour
        ("10-11", [A]),
        ("1016-", [C]),  # 10:16 onwards: only 23:59:59.5
        ("-0830", [B]),  # up to the end of 08:30
        ("2359", [C]),
        ("235959.5", [C]),
        ("23:59:59", [C]),  # the retired colon form
        ("0000-0829", []),
    ],
)
def test_time_ranges(archive: Archive, value: str, expected: list[str]) -> None:
    assert archive.uids("studies", {"StudyTime": value}) == expected


def test_combined_date_and_time_keys(archive: Archive) -> None:
    assert archive.uids("studies", {"StudyDate": "20190101-", "StudyTime": "08-11"}) == [B, A]


@pytest.mark.parametrize(
    ("params", "fuzzy", "expected"),
    [
        ({"PatientName": "MÜLLER^JÜRGEN"}, False, [A]),  # case- and accent-insensitive
        ({"PatientName": "muller^jurgen"}, False, [A]),
        ({"PatientName": "muller"}, False, []),  # not fuzzy: the whole name
        ({"PatientName": "müller*"}, False, [B, A]),
        ({"PatientName": "muller"}, True, [B, A]),  # fuzzy: a word begins a component
        ({"PatientName": "jur"}, True, [A]),
        ({"PatientName": "anna mul"}, True, [B]),  # every word must match
        ({"PatientName": "anna jur"}, True, []),
        ({"PatientName": "sean"}, True, [C]),
        ({"PatientName": "brien"}, True, []),  # a prefix of a component, not any substring
        ({"PatientName": "o'b"}, True, [C]),
        ({"ReferringPhysicianName": "john"}, True, [A, C]),
        ({"ReferringPhysicianName": "Smith^John"}, False, [A]),
        ({"ReferringPhysicianName": "SMITH*"}, False, [A, C]),
    ],
)
def test_person_names(archive: Archive, params: dict, fuzzy: bool, expected: list[str]) -> None:
    assert archive.uids("studies", params, fuzzy=fuzzy) == expected


def test_fuzzymatching_as_a_query_parameter(archive: Archive) -> None:
    assert archive.uids("studies", {"PatientName": "jur", "fuzzymatching": "true"}) == [A]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"StudyInstanceUID": f"{A}\\{B}"}, [B, A]),  # list of UIDs, backslash
        ({"StudyInstanceUID": f"{C},{A}"}, [A, C]),  # or comma
        ({"ModalitiesInStudy": "MR"}, [B, A]),
        ({"ModalitiesInStudy": "CT\\CR"}, [A, C]),
        ({"ModalitiesInStudy": "C*"}, [A, C]),
    ],
)
def test_uid_lists_and_modalities_in_study(archive: Archive, params: dict, expected: list[str]) -> None:
    assert archive.uids("studies", params) == expected


def test_series_level(archive: Archive) -> None:
    assert archive.uids("series", {"StudyInstanceUID": A}) == [SERIES["A1"], SERIES["A2"]]
    assert archive.uids("series", {"Modality": "MR"}) == [SERIES["A2"], SERIES["B1"]]
    assert archive.uids("series", {"SeriesNumber": "3"}) == [SERIES["C1"]]
    assert archive.uids("series", {"PatientID": "P2"}) == [SERIES["B1"]]  # a study key in a series search
    assert archive.uids("series", {"PerformedProcedureStepStartDate": "20200115",
                                    "PerformedProcedureStepStartTime": "1020-"}) == [SERIES["A2"]]
    assert archive.uids("series", {"BodyPartExamined": "CHEST", "PatientName": "sean"}, fuzzy=True) == [
        SERIES["C1"]
    ]


def test_instance_level(archive: Archive) -> None:
    a1 = SERIES["A1"]
    assert archive.uids("instances", {"SeriesInstanceUID": a1}) == [sop_uid("A1", 1), sop_uid("A1", 2)]
    assert archive.uids("instances", {"StudyInstanceUID": A, "InstanceNumber": "2"}) == [sop_uid("A1", 2)]
    assert archive.uids("instances", {"Modality": "MR", "PatientSex": "M"}) == [sop_uid("A2", 1)]
    sop_class = archive.index.search("instances", {"SOPInstanceUID": sop_uid("B1", 1)})[0]["00080016"]
    assert archive.uids("instances", {"SOPClassUID": sop_class["Value"][0]}) == [
        sop_uid(s, n) for s, n in [("A1", 1), ("A1", 2), ("A2", 1), ("B1", 1), ("C1", 1)]
    ]


def test_computed_attributes(archive: Archive) -> None:
    study = archive.index.search("studies", {"StudyInstanceUID": A})[0]
    assert study["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}  # ModalitiesInStudy
    assert study["00201206"] == {"vr": "IS", "Value": [2]}  # NumberOfStudyRelatedSeries
    assert study["00201208"] == {"vr": "IS", "Value": [3]}  # NumberOfStudyRelatedInstances
    series = archive.index.search("series", {"SeriesInstanceUID": SERIES["A1"]})[0]
    assert series["00201209"] == {"vr": "IS", "Value": [2]}  # NumberOfSeriesRelatedInstances


def test_study_response_is_dicom_json(archive: Archive) -> None:
    study = archive.index.search("studies", {"StudyInstanceUID": C})[0]
    assert study["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "O'Brien^Seán"}]}
    assert study["00100030"] == {"vr": "DA", "Value": ["19700101"]}
    assert study["00080030"] == {"vr": "TM", "Value": ["235959.5"]}
    assert study["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}  # InstanceAvailability
    assert study["00080201"] == {"vr": "SH"}  # returned, without a value
    assert list(study) == sorted(study)  # tags in order, as PS3.18 F.2 requires


def test_includefield(archive: Archive) -> None:
    one = {"SOPInstanceUID": sop_uid("A1", 1)}
    plain = archive.index.search("instances", one)[0]
    assert "00180050" not in plain
    # A tag that is not indexed comes from the stored header; keywords, tags and comma lists work.
    extra = archive.index.search("instances", {**one, "includefield": "SliceThickness,00280030"})[0]
    assert extra["00180050"] == {"vr": "DS", "Value": [2.5]}
    assert extra["00280030"]["vr"] == "DS" and len(extra["00280030"]["Value"]) == 2
    everything = archive.index.search("instances", one, include=["all"])[0]
    assert everything["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]  # study level, too
    assert everything["00180015"] == {"vr": "CS", "Value": ["CHEST"]}
    study = archive.index.search("studies", {"StudyInstanceUID": A}, include=["InstitutionName"])[0]
    assert "00080080" in study
    # The matching keys are always returned.
    assert "00101010" in archive.index.search("studies", {"PatientAge": "*"})[0]


def test_limit_and_offset(archive: Archive) -> None:
    assert archive.uids("studies", limit=1) == [B]
    assert archive.uids("studies", limit=1, offset=1) == [A]
    assert archive.uids("studies", {"limit": "2", "offset": "1"}) == [A, C]
    assert archive.uids("studies", offset=5) == []


@pytest.mark.parametrize(
    ("level", "params", "parameter", "message"),
    [
        ("studies", {"Foo": "1"}, "Foo", "not a DICOM keyword"),
        ("studies", {"PatientWeight": "70"}, "PatientWeight", "not a searchable attribute"),
        ("studies", {"Modality": "CT"}, "Modality", "series-level attribute"),
        ("series", {"SOPInstanceUID": "1.2"}, "SOPInstanceUID", "instance-level attribute"),
        ("studies", {"StudyDate": "2020-2021-01"}, "StudyDate", "not a range"),
        ("studies", {"StudyDate": "20211301"}, "StudyDate", "not a date"),
        ("studies", {"StudyDate": "20211231-20210101"}, "StudyDate", "ends before it starts"),
        ("studies", {"StudyDate": "2021*"}, "StudyDate", "wildcards are not allowed"),
        ("studies", {"StudyTime": "2500"}, "StudyTime", "not a time of day"),
        ("studies", {"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID", "UID"),
        ("studies", {"StudyInstanceUID": "1.2.*"}, "StudyInstanceUID", "wildcards are not allowed"),
        ("series", {"SeriesNumber": "two"}, "SeriesNumber", "not a number"),
        ("studies", {"NumberOfStudyRelatedSeries": "2"}, "NumberOfStudyRelatedSeries", "computed"),
        ("studies", {"limit": "0"}, "limit", "between"),
        ("studies", {"offset": "-1"}, "offset", "between"),
        ("studies", {"fuzzymatching": "maybe"}, "fuzzymatching", "true or false"),
        ("studies", {"includefield": "NoSuchKeyword"}, "NoSuchKeyword", "not a DICOM keyword"),
        ("studies", {"StudyDate": ["20200101", "20210101"]}, "StudyDate", "more than once"),
        ("patients", {}, "level", "not one of"),
    ],
)
def test_bad_parameters_are_named(
    archive: Archive, level: str, params: dict, parameter: str, message: str
) -> None:
    with pytest.raises(InvalidQuery, match=message) as caught:
        archive.index.search(level, params)
    assert caught.value.parameter == parameter


def test_same_attribute_twice_by_keyword_and_tag(archive: Archive) -> None:
    with pytest.raises(InvalidQuery, match="more than once"):
        archive.index.search("studies", {"PatientID": "P1", "00100020": "P1"})
