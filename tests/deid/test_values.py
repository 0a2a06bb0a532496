"""Replacement values: date shifts, descriptor cleaning, dummies; and structured content (a D
sequence) keeps its structure with every text in it replaced."""

from __future__ import annotations

import pydicom
import pytest
from pydicom import config
from pydicom.valuerep import validate_value

from dicomlake.deid import Deidentifier, DeidOptions
from dicomlake.deid.values import clean_text, dummy_value, shift_date_value
from dicomlake.samples import TEST_FILES
from tests.deid.realfiles import walk


@pytest.mark.parametrize(
    ("vr", "value", "days", "expected"),
    [
        ("DA", "20240301", -1, "20240229"),  # leap day
        ("DA", "20000101", -366, "19981231"),
        ("DT", "20210315101112.123456+0100", -10, "20210305101112.123456+0100"),
        ("DT", "20210315", -1, "20210314"),
        ("DA", "20210101-20210131", -1, "20201231-20210130"),
        ("DA", "-20210131", -1, "-20210130"),
        ("TM", "101112", -400, "101112"),
        ("DA", "2021", -1, None),  # not a full date: the caller falls back
        ("DT", "2021", -1, None),
        ("DA", "20211340", -1, None),
    ],
)
def test_shift_date_value(vr: str, value: str, days: int, expected: str | None) -> None:
    assert shift_date_value(vr, value, days) == expected


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("CT CHEST WITH CONTRAST", True),
        ("T1 AX POST", True),
        ("Brain MRI", True),
        ("5MM AXIAL", True),
        ("Dr Smith protocol", False),
        ("CHEST 2019", False),
        ("follow-up 03/04/19", False),
        ("ST MARY HOSPITAL", False),
        ("", True),
    ],
)
def test_clean_text(text: str, kept: bool) -> None:
    assert (clean_text(text) == text) is kept


@pytest.mark.parametrize("vr", ["AE", "AS", "CS", "DA", "DT", "TM", "LO", "LT", "PN", "SH", "ST", "UC", "UT",
                                "UR", "DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "OB", "OW"])
def test_dummies_are_valid_and_not_empty(vr: str) -> None:
    value = dummy_value(vr)
    assert value not in (None, "", b"")
    validate_value(vr, value, config.RAISE)


def test_dummies_for_ambiguous_vrs() -> None:
    assert dummy_value("US or SS") == 0 and dummy_value("OB or OW") == b"\x00\x00"


def test_structured_report_content_keeps_structure_not_text() -> None:
    source = pydicom.dcmread(TEST_FILES / "test-SR.dcm")
    out = Deidentifier(DeidOptions(project_key="structured-report-key")).deidentify(source)
    texts = [str(e.value) for e, _ in walk(source) if e.keyword in ("TextValue", "PersonName") and e.value]
    assert texts
    out_texts = [str(e.value) for e, _ in walk(out) if e.keyword in ("TextValue", "PersonName") and e.value]
    assert len(out_texts) == len(texts), "every content item is still there"
    assert not set(texts) & set(out_texts)
    source_items = sum(1 for e, _ in walk(source) if e.keyword == "ValueType")
    assert sum(1 for e, _ in walk(out) if e.keyword == "ValueType") == source_items
