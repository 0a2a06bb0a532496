"""Values per VR family from DICOM JSON, and the errors that keep a value out of the index."""

from __future__ import annotations

import base64
import datetime as dt
import struct

import pytest

from dicomlake.tags import resolve
from dicomlake.tags.extract import Value, extract


def _one(keyword: str, element: dict, vr: str | None = None):
    tag = resolve({"tag": keyword, "vr": vr} if vr else keyword)
    return extract({tag.path: element}, tag)


@pytest.mark.parametrize(("keyword", "element", "expected"), [
    ("PatientWeight", {"vr": "DS", "Value": [72.5]}, [Value(float=72.5)]),
    ("PatientWeight", {"vr": "DS", "Value": ["72.5"]}, [Value(float=72.5)]),
    ("AcquisitionNumber", {"vr": "IS", "Value": [7]}, [Value(int=7)]),
    ("ImageType", {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]},
     [Value(string="ORIGINAL"), Value(string="PRIMARY"), Value(string="AXIAL")]),
    ("AcquisitionDate", {"vr": "DA", "Value": ["20240131"]}, [Value(date=dt.date(2024, 1, 31))]),
    ("AcquisitionTime", {"vr": "TM", "Value": ["101500.25"]}, [Value(string="101500.25")]),
    ("AcquisitionDateTime", {"vr": "DT", "Value": ["20240131101500+0100"]},
     [Value(string="20240131101500+0100")]),
    ("PerformingPhysicianName", {"vr": "PN", "Value": [{"Alphabetic": "Doe^John", "Ideographic": "X"}]},
     [Value(string="Doe^John")]),
    ("PlanarConfiguration", {"vr": "US", "Value": [1]}, [Value(int=1)]),
    ("ReferencedFrameNumber", {"vr": "IS", "Value": [1, 2]}, [Value(int=1), Value(int=2)]),
    ("ExposureTime", {"vr": "IS", "Value": [800]}, [Value(int=800)]),
    ("SpacingBetweenSlices", {"vr": "DS", "Value": [1.25]}, [Value(float=1.25)]),
    ("FrameOfReferenceUID", {"vr": "UI", "Value": ["1.2.3.4"]}, [Value(string="1.2.3.4")]),
    ("ImageComments", {"vr": "LT", "Value": ["a\\b kept whole"]}, [Value(string="a\\b kept whole")]),
    ("PatientWeight", {"vr": "DS"}, []),  # present, empty: nothing, no error
    ("TableHeight", {"vr": "DS", "Value": [None, 3.0]}, [Value(float=3.0)]),
])
def test_values_by_vr_family(keyword: str, element: dict, expected: list[Value]) -> None:
    values, problems = _one(keyword, element)
    assert problems == []
    assert values == expected


def test_float_vrs_fill_value_float() -> None:
    header = {"00189306": {"vr": "FD", "Value": [0.625]}}
    values, problems = extract(header, resolve("SingleCollimationWidth"))
    assert (values, problems) == ([Value(float=0.625)], [])


@pytest.mark.parametrize(("keyword", "element", "code"), [
    ("PatientWeight", {"vr": "DS", "Value": ["seventy"]}, "unparsable_number"),
    ("AcquisitionNumber", {"vr": "IS", "Value": ["1A"]}, "unparsable_number"),
    ("AcquisitionNumber", {"vr": "IS", "Value": [2**40]}, "value_out_of_range"),
    ("AcquisitionDate", {"vr": "DA", "Value": ["20241341"]}, "unparsable_date"),
    ("AcquisitionDate", {"vr": "DA", "Value": ["yesterday"]}, "value_too_long"),
    ("AcquisitionTime", {"vr": "TM", "Value": ["25"]}, "unparsable_time"),
    ("AcquisitionDateTime", {"vr": "DT", "Value": ["2024-01-31"]}, "unparsable_datetime"),
    ("ImageType", {"vr": "CS", "Value": ["original"]}, "invalid_characters"),
    ("ImageType", {"vr": "CS", "Value": ["X" * 17]}, "value_too_long"),
    ("StudyComments", {"vr": "LT", "Value": ["x" * 10241]}, "value_too_long"),
    ("DeviceSerialNumber", {"vr": "LO", "Value": ["x" * 65]}, "value_too_long"),
    ("PerformingPhysicianName", {"vr": "PN", "Value": [{"Alphabetic": "x" * 65}]}, "value_too_long"),
    ("FrameOfReferenceUID", {"vr": "UI", "Value": ["1.02.3"]}, "invalid_value"),
    ("PatientWeight", {"vr": "LO", "Value": ["72"]}, "wrong_vr"),
    ("AcquisitionNumber", {"vr": "IS", "Value": [1, 2]}, "multiple_values_not_allowed"),
])
def test_problems_have_codes(keyword: str, element: dict, code: str) -> None:
    values, problems = _one(keyword, element)
    assert values == []
    assert [p.code for p in problems] == [code]
    assert resolve(keyword).key in problems[0].message


def test_private_element_found_through_its_creator_in_any_block() -> None:
    tag = resolve({"tag": "00091010", "vr": "LO", "private_creator": "ACME 1.0"})
    header = {
        "00090010": {"vr": "LO", "Value": ["OTHER"]},
        "00091010": {"vr": "LO", "Value": ["not ours"]},
        "00090012": {"vr": "LO", "Value": ["ACME 1.0"]},
        "00091210": {"vr": "LO", "Value": ["ours"]},
    }
    assert extract(header, tag) == ([Value(string="ours")], [])
    assert extract({"00091010": {"vr": "LO", "Value": ["no creator"]}}, tag) == ([], [])


def test_un_elements_are_read_as_the_tags_vr() -> None:
    def un(data: bytes) -> dict:
        return {"vr": "UN", "InlineBinary": base64.b64encode(data).decode()}

    text = resolve({"tag": "00091010", "vr": "LO", "private_creator": "ACME"})
    header = {"00090010": {"vr": "LO", "Value": ["ACME"]}, "00091010": un(b"alpha\\beta ")}
    assert extract(header, text) == ([Value(string="alpha"), Value(string="beta")], [])
    number = resolve({"tag": "00091011", "vr": "UL", "private_creator": "ACME"})
    header["00091011"] = un(struct.pack("<2I", 7, 9))
    assert extract(header, number) == ([Value(int=7), Value(int=9)], [])
    header["00091011"] = un(b"\x01\x02\x03")
    assert [p.code for p in extract(header, number)[1]] == ["wrong_vr"]
    header["00091011"] = {"vr": "UN", "BulkDataURI": "bulkdata/00091011"}
    assert [p.code for p in extract(header, number)[1]] == ["value_not_available"]
