"""Every row of PS3.15 Table E.1-1, under the Basic Profile and under each option.

For each row: a CT dataset carrying the attribute (a representative element for the pattern rows),
de-identified; the outcome must be what the row's code says. The expected action is worked out here
from the table's raw columns and the attribute's Type (the de-identifier's own resolution is not
reused), then checked on the output element.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydicom import config
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pydicom.valuerep import validate_value

from dicomlake.deid import Deidentifier, DeidOptions, profile
from dicomlake.deid.iod_types import IodContext, attribute_type
from dicomlake.dicom.uid import is_valid_uid

KEY = "table-test-key"
PATIENT = "PAT-TABLE-0001"
SOURCE_SOP = "1.2.826.0.1.3680043.10.999.1.1"

MODES: dict[str, dict[str, bool]] = {
    "basic": {},
    "retain_long_modified_dates": {"retain_longitudinal_modified_dates": True},
    "retain_patient_characteristics": {"retain_patient_characteristics": True},
    "clean_descriptors": {"clean_descriptors": True},
}

# (code, Type) -> action, straight from PS3.15 E.3's wording of the combined codes.
COMBINED = {
    ("X/Z", 3): "X", ("X/Z", 2): "Z", ("X/Z", 1): "Z",
    ("X/D", 3): "X", ("X/D", 2): "D", ("X/D", 1): "D",
    ("Z/D", 3): "Z", ("Z/D", 2): "Z", ("Z/D", 1): "D",
    ("X/Z/D", 3): "X", ("X/Z/D", 2): "Z", ("X/Z/D", 1): "D",
    ("X/Z/U*", 3): "X", ("X/Z/U*", 2): "Z", ("X/Z/U*", 1): "U",
}  # fmt: skip

SOURCE_VALUES: dict[str, Any] = {
    "AE": "SRCAE01",
    "AS": "042Y",
    "CS": "SRCVAL",
    "DA": "20210315",
    "DT": "20210315101112",
    "TM": "101112",
    "LO": "Source Smith value",
    "LT": "Source Smith text",
    "PN": "Smith^John",
    "SH": "SRC SMITH",
    "ST": "Source Smith text",
    "UC": "Source Smith UC",
    "UT": "Source Smith text",
    "UR": "http://example.org/smith",
    "DS": "12.5",
    "IS": "42",
    "FL": 1.5,
    "FD": 2.5,
    "SL": -5,
    "SS": -3,
    "SV": -11,
    "UL": 7,
    "US": 9,
    "UV": 11,
    "AT": 0x00100010,
    "OB": b"SRCBYTES",
    "OW": b"SRCWORDS",
    "OD": b"SRCDOUBL",
    "OF": b"SRCF",
    "OL": b"SRCL",
    "OV": b"SRCVERYL",
    "UN": b"SRCUNKNO",
}


def representative_tag(row: profile.ProfileRow) -> int:
    if row.tag_value is not None:
        return row.tag_value
    return {
        profile.CURVE_ROW: 0x50003000,
        profile.OVERLAY_DATA_ROW: 0x60003000,
        profile.OVERLAY_COMMENTS_ROW: 0x60024000,
        profile.PRIVATE_ROW: 0x00091001,
    }[row.tag]


def vr_for(tag: int, name: str) -> str:
    try:
        vr = dictionary_VR(tag)
    except KeyError:  # newer than pydicom's dictionary: choose by the table's name
        if name.endswith("Sequence"):
            return "SQ"
        if name.endswith(("DateTime", "Time")):
            return "DT"
        return "UR" if name.endswith("URI") else "LO"
    if tag == 0x50003000:
        return "OB"
    return vr.split(" or ")[0]


def code_item(index: int) -> Dataset:
    item = Dataset()
    item.CodeValue = "T-12345"
    item.CodingSchemeDesignator = "99TEST"
    item.CodeMeaning = "Source Smith meaning"
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.999.3.{index}"
    return item


def source_dataset(row: profile.ProfileRow, index: int, text: str | None = None) -> tuple[Dataset, int, str]:
    tag = representative_tag(row)
    vr = vr_for(tag, row.name)
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOURCE_SOP
    ds.PatientID = PATIENT
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = SOURCE_SOP
    if tag in (0x00080018, 0x00100020, 0x00020003):
        return ds, tag, vr  # carried by every dataset already
    if vr == "SQ":
        value: Any = Sequence([code_item(index)])
    elif vr == "UI":
        value = f"1.2.826.0.1.3680043.10.999.2.{index}"
    else:
        value = text if text is not None else SOURCE_VALUES[vr]
    if tag == 0x00091001:
        ds.add(DataElement(0x00090010, "LO", "ACME PRIVATE"))
    if tag == 0x60003000:  # an overlay plane, so the data row has its module around it
        ds.add(DataElement(0x60000010, "US", 2))
        ds.add(DataElement(0x60000011, "US", 8))
        ds.add(DataElement(0x60000040, "CS", "G"))
        ds.add(DataElement(0x60000050, "SS", [1, 1]))
        ds.add(DataElement(0x60000100, "US", 1))
        value = b"\x01\x02"
    ds.add(DataElement(tag, vr, value))
    return ds, tag, vr


def expected_action(row: profile.ProfileRow, mode: str, vr: str, keyword: str, nested: bool = False) -> str:
    code = row.options.get(mode, "") if mode != "basic" else ""
    if code not in ("K", "C"):
        code = row.basic
    if "/" in code:
        context = IodContext(sop_class_uid=CTImageStorage, enhanced=False)
        code = COMBINED[(code, attribute_type(keyword, context, nested=nested))]
    return code


def basic_action(row: profile.ProfileRow, keyword: str) -> str:
    return expected_action(row, "basic", "", keyword)


def check(action: str, src: Dataset, out: Dataset, tag: int, vr: str, deid: Deidentifier, mode: str) -> None:
    source_elem = src.get(tag)
    if tag == 0x00020003:  # file meta: always the new SOP Instance UID
        assert out.file_meta.MediaStorageSOPInstanceUID == deid.map_uid(SOURCE_SOP)
        return
    if tag == 0x00100020:  # Z/D: the keyed pseudonym is the dummy
        assert out.PatientID == deid.pseudonym(PATIENT)
        return
    if tag == 0x00100010:  # Z: the pseudonym again (Z allows a dummy value)
        assert str(out.PatientName) == deid.pseudonym(PATIENT) + "^"
        return
    if action == "X":
        assert tag not in out, f"{tag:08X} should be removed"
        if tag == 0x60003000:
            assert not [e for e in out if e.tag.group == 0x6000], "the whole overlay group goes"
        return
    assert tag in out, f"{tag:08X} should be present ({action})"
    new = out[tag]
    assert new.VR == source_elem.VR
    if action == "Z":
        assert new.is_empty, f"{tag:08X} should be zero length, got {new.value!r}"
    elif action == "K":
        assert_same(source_elem, new, deid)
    elif action == "D":
        assert not new.is_empty
        if vr == "SQ":
            assert len(new.value) == 1
            item = new.value[0]
            assert item.CodeMeaning != "Source Smith meaning"  # text inside a D sequence is a dummy
            source_uid = source_elem.value[0].ReferencedSOPInstanceUID
            assert item.ReferencedSOPInstanceUID == deid.map_uid(source_uid)
        elif vr == "UI":
            assert new.value == deid.map_uid(source_elem.value)
        else:
            assert new.value != source_elem.value
            validate_value(vr, new.value, config.RAISE)
    elif action == "U":
        if vr == "SQ":
            assert new.value[0].ReferencedSOPInstanceUID == deid.map_uid(
                source_elem.value[0].ReferencedSOPInstanceUID
            )
        else:
            assert new.value == deid.map_uid(source_elem.value)
            assert is_valid_uid(new.value)
    elif action == "C":
        check_clean(src, out, tag, vr, deid, mode)
    else:  # pragma: no cover - the table holds no other code
        raise AssertionError(action)


def assert_same(source_elem: DataElement, new: DataElement, deid: Deidentifier) -> None:
    if source_elem.VR == "SQ":
        assert len(new.value) == len(source_elem.value)
        assert new.value[0].CodeValue == source_elem.value[0].CodeValue
    else:
        assert new.value == source_elem.value


def check_clean(src: Dataset, out: Dataset, tag: int, vr: str, deid: Deidentifier, mode: str) -> None:
    source_elem, new = src[tag], out[tag]
    if vr == "SQ":  # coded descriptors stay, with the profile applied inside
        assert new.value[0].CodeValue == "T-12345"
        source_uid = source_elem.value[0].ReferencedSOPInstanceUID
        assert new.value[0].ReferencedSOPInstanceUID == deid.map_uid(source_uid)
    elif mode == "retain_long_modified_dates" and vr in ("DA", "DT"):
        days = deid.date_shift_days(PATIENT)
        moved = dt.datetime.strptime(source_elem.value[:8], "%Y%m%d") + dt.timedelta(days=days)
        assert new.value == moved.strftime("%Y%m%d") + source_elem.value[8:]
    elif mode == "retain_long_modified_dates" and vr == "TM":
        assert new.value == source_elem.value  # whole-day shifts leave the time of day
    elif tag == 0x00080201:
        assert new.value == source_elem.value  # the timezone, to read the kept times
    else:  # a descriptor made only of safe terms is kept
        assert new.value == source_elem.value


ROWS = profile.rows()


def test_the_table_is_the_whole_2026c_table() -> None:
    assert len(ROWS) == 656
    assert len({row.tag for row in ROWS}) == 656
    codes = {row.basic for row in ROWS}
    assert codes == {"D", "Z", "X", "U", "X/Z", "X/D", "X/Z/D", "X/Z/U*", "Z/D"}
    assert {row.option_source for row in ROWS} == {"earlier", "none"}
    assert sum(row.option_source == "earlier" for row in ROWS) == 460


@pytest.mark.parametrize("index", range(len(ROWS)), ids=[row.tag for row in ROWS])
def test_every_row_under_every_option(index: int) -> None:
    row = ROWS[index]
    for mode, flags in MODES.items():
        deid = Deidentifier(DeidOptions(project_key=KEY, **flags))
        src, tag, vr = source_dataset(row, index)
        keyword = keyword_for_tag(tag) or ""
        action = expected_action(row, mode, vr, keyword)
        if action == "C" and vr not in ("SQ", "DA", "DT", "TM") and tag != 0x00080201:
            # cleaning: a descriptor that could name someone falls back to the Basic action ...
            out = deid.deidentify(src)
            fallback = basic_action(row, keyword)
            if vr in ("LO", "LT", "SH", "ST", "UC", "UT", "PN", "CS"):
                check(fallback, src, out, tag, vr, deid, mode)
                # ... and one of safe terms is kept
                src, tag, vr = source_dataset(row, index, text="CT CHEST WITH CONTRAST")
                out = deid.deidentify(src)
                check("C", src, out, tag, vr, deid, mode)
            else:  # a non-text value cannot be cleaned: the Basic action
                check(fallback, src, out, tag, vr, deid, mode)
            continue
        out = deid.deidentify(src)
        check(action, src, out, tag, vr, deid, mode)


NESTED_SKIPPED = {0x00020003, 0x00080018, 0x00100010, 0x00100020}  # top-level by nature
NESTED_ROWS = [
    i for i, row in enumerate(ROWS) if row.tag_value is not None and row.tag_value not in NESTED_SKIPPED
]


@pytest.mark.parametrize("index", NESTED_ROWS, ids=[ROWS[i].tag for i in NESTED_ROWS])
def test_every_row_inside_a_sequence(index: int) -> None:
    """The same actions hold for the attribute inside an item of a sequence the table does not list."""
    row = ROWS[index]
    for mode in ("basic", "retain_long_modified_dates"):
        deid = Deidentifier(DeidOptions(project_key=KEY, **MODES[mode]))
        carrier, tag, vr = source_dataset(row, index)
        item = Dataset()
        item.add(carrier[tag])
        src = Dataset()
        src.SOPClassUID = CTImageStorage
        src.SOPInstanceUID = SOURCE_SOP
        src.PatientID = PATIENT
        src.ProcedureCodeSequence = Sequence([item])
        out = deid.deidentify(src)
        assert len(out.ProcedureCodeSequence) == 1
        keyword = keyword_for_tag(tag) or ""
        action = expected_action(row, mode, vr, keyword, nested=True)
        if action == "C" and vr not in ("SQ", "DA", "DT", "TM") and tag != 0x00080201:
            action = expected_action(row, "basic", vr, keyword, nested=True)
        check(action, item, out.ProcedureCodeSequence[0], tag, vr, deid, mode)
