"""fastjson.header_to_json against pydicom as the oracle.

Every file pydicom ships (that pydicom itself can read) and many random datasets written by
pydicom must give exactly the DICOM JSON of `dcmread(stop_before_pixels=True).to_json_dict(...)`,
apart from the short allow-list below, each entry with its reason.
"""

from __future__ import annotations

import io
import math
import struct
import time
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomlake.dicom import parse_instance
from dicomlake.dicom.fastjson import header_to_json, read_file_meta
from dicomlake.dicom.structure import check_structure, file_meta_end
from dicomlake.errors import InvalidInstance

PYDICOM_DATA = Path(pydicom.__file__).parent / "data"
THRESHOLD = 1024
PIXEL_KEYS = {"7FE00010", "7FE00008", "7FE00009"}

# (file under pydicom's data folder, DICOM JSON key) -> (what we emit, why it is not pydicom's).
ALLOWED_DIFFERENCES: dict[tuple[str, str], tuple[dict[str, Any], str]] = {
    ("test_files/badVR.dcm", "00280008"): (
        {"vr": "IS", "Value": ["1A"]},
        "NumberOfFrames is the IS '1A': pydicom's to_json_dict raises ValueError (int('1A')); "
        "we keep the text and add a warning",
    ),
}
# Files pydicom reads although their bytes stop inside an element (it quietly keeps what it
# got); header_to_json raises InvalidInstance("truncated"), as check_structure does first.
TRUNCATED = {"test_files/rtplan_truncated.dcm"}
# The only shipped files that give warnings, with a piece of each warning.
EXPECTED_WARNINGS = {
    "test_files/badVR.dcm": ["(0028,0008) NumberOfFrames: IS value '1A' is not a number"],
    # The file meta says explicit VR, the dataset is implicit VR (pydicom reads it the same way).
    "test_files/SC_rgb_jpeg.dcm": ["says explicit VR but the dataset is encoded in implicit VR"],
    "test_files/meta_missing_tsyntax.dcm": ["encoded in implicit VR"],
    # The last item of the directory record sequence declares more bytes than the sequence has.
    "test_files/dicomdirtests/DICOMDIR-nooffset": ["an item declares 248 bytes"],
}


def _bulk_data_uri(element: DataElement) -> str:
    return f"bulkdata/{element.tag:08X}"


def _pydicom_json(ds: Dataset) -> tuple[dict[str, Any], dict[str, str]]:
    """`ds.to_json_dict(THRESHOLD, handler)` element by element, keeping what pydicom fails on."""
    header: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for tag in list(ds.keys()):
        key = f"{tag:08X}"
        if key.startswith("0002") or key in PIXEL_KEYS:
            continue
        try:
            header[key] = ds[tag].to_json_dict(_bulk_data_uri, THRESHOLD)
        except Exception as exc:  # pydicom raises many types on bad values
            failures[key] = f"{type(exc).__name__}: {exc}"
    return header, failures


def _same(ours: Any, theirs: Any) -> bool:
    """Equal JSON values of the same types (an int is not a float), where NaN equals NaN."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(_same(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(map(_same, ours, theirs))
    if isinstance(ours, float) and isinstance(theirs, float):
        return ours == theirs or (math.isnan(ours) and math.isnan(theirs))
    if isinstance(ours, str) and isinstance(theirs, str):  # pydicom gives str subclasses
        return ours == theirs
    return type(ours) is type(theirs) and ours == theirs


def _ours(data: bytes) -> Any:
    meta = read_file_meta(data)
    transfer_syntax = meta.get("TransferSyntaxUID", "")
    return header_to_json(data, file_meta_end(data), transfer_syntax, THRESHOLD)


def _readable_by_pydicom(path: Path) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return False
    return True


def _shipped_files() -> list[Path]:
    """Every file pydicom ships that pydicom itself can read (the others have no reference)."""
    found = [p for p in (PYDICOM_DATA / "test_files").rglob("*") if p.is_file()]
    found += [p for p in (PYDICOM_DATA / "charset_files").glob("*") if p.is_file()]
    found += [p for p in (PYDICOM_DATA / "palettes").glob("*") if p.is_file()]
    return sorted(p for p in found if p.suffix not in {".py", ".pyc"} and _readable_by_pydicom(p))


def _relative(path: Path) -> str:
    return path.relative_to(PYDICOM_DATA).as_posix()


@pytest.mark.parametrize("path", _shipped_files(), ids=_relative)
def test_shipped_file_matches_pydicom(path: Path) -> None:
    relative = _relative(path)
    data = path.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        reference, failures = _pydicom_json(ds)
    if relative in TRUNCATED:
        with pytest.raises(InvalidInstance) as caught:
            _ours(data)
        assert caught.value.code == "truncated"
        transfer_syntax = ds.file_meta.TransferSyntaxUID
        with pytest.raises(InvalidInstance):
            check_structure(data, file_meta_end(data), transfer_syntax)
        return
    result = _ours(data)
    ours = dict(result.header)
    for (name, key), (expected, _reason) in ALLOWED_DIFFERENCES.items():
        if name == relative:
            assert ours.pop(key) == expected
            reference.pop(key, None)
            failures.pop(key, None)
    assert not failures, f"pydicom fails on elements not in the allow-list: {failures}"
    assert ours.keys() == reference.keys()
    for key in ours:
        assert _same(ours[key], reference[key]), (key, ours[key], reference[key])
    expected_warnings = EXPECTED_WARNINGS.get(relative, [])
    assert len(result.warnings) == len(expected_warnings), result.warnings
    for sentence, piece in zip(result.warnings, expected_warnings, strict=True):
        assert piece in sentence


def test_allow_list_is_small_and_explained() -> None:
    assert len(ALLOWED_DIFFERENCES) <= 3
    for (name, key), (_expected, reason) in ALLOWED_DIFFERENCES.items():
        assert (PYDICOM_DATA / name).is_file() and len(key) == 8 and reason


def test_shipped_files_were_compared() -> None:
    """The differential test above must cover nearly every file pydicom ships."""
    assert len(_shipped_files()) > 180


# --- random datasets written by pydicom ------------------------------------------------------

_SKIP_GROUPS = {0x0000, 0x0002, 0x0004, 0x7FE0, 0xFFFE, 0xFFFC}
# Attributes generated on purpose elsewhere (charset, pixel representation and what depends on
# it) or whose meaning changes how the dataset is read.
_SKIP_TAGS = {0x00080005, 0x00280103, 0x00280100, 0x003A021A, 0x00283002, 0x00283006}


def _tags_by_vr() -> dict[str, list[int]]:
    by_vr: dict[str, list[int]] = {}
    for tag, (vr, _vm, _name, retired, _keyword) in DicomDictionary.items():
        if retired or tag >> 16 in _SKIP_GROUPS or tag in _SKIP_TAGS or " or " in vr:
            continue
        by_vr.setdefault(vr, []).append(tag)
    for tags in by_vr.values():
        tags.sort()
    return by_vr


TAGS_BY_VR = _tags_by_vr()
_US_OR_SS_TAGS = [0x00280106, 0x00280107, 0x00280120, 0x00189810]
_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_LATIN1 = st.characters(
    codec="latin-1", exclude_categories=("Cc",), exclude_characters="\x7f"
)
_UNICODE = st.characters(exclude_categories=("Cs", "Cc", "Co", "Cn", "Zl", "Zp"))
_CHARSETS = {None: _ASCII, "ISO_IR 100": _LATIN1, "ISO_IR 192": _UNICODE}


def _text(alphabet: st.SearchStrategy[str], max_size: int, exclude: str = "\\") -> Any:
    return st.text(alphabet.filter(lambda c: c not in exclude), max_size=max_size)


def _multi(values: st.SearchStrategy[str]) -> Any:
    return st.lists(values, min_size=1, max_size=3).map(lambda v: v[0] if len(v) == 1 else v)


def _value_for(vr: str, alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """A value pydicom can write for `vr`; text uses `alphabet` (the charset's repertoire)."""
    digits = st.sampled_from("0123456789")
    if vr in ("LO", "SH", "UC"):
        return _multi(_text(alphabet, 20))
    if vr in ("LT", "ST", "UT"):
        return st.text(st.one_of(alphabet, st.sampled_from("\\\r\n\t")), max_size=60)
    if vr == "PN":
        group = _text(alphabet, 8, exclude="\\^=")
        component = st.lists(group, min_size=1, max_size=3).map("^".join)
        name = st.lists(component, min_size=1, max_size=3).map("=".join)
        return _multi(name.filter(lambda n: n.replace("=", "") != ""))
    if vr in ("CS", "AS", "DA", "TM", "DT", "AE"):
        chars = st.sampled_from("ABCXYZ0123456789 _.+-")
        return _multi(st.text(chars, max_size=14))
    if vr == "UI":
        return _multi(st.lists(st.integers(0, 99999), min_size=1, max_size=6).map(
            lambda parts: ".".join(map(str, parts))
        ))
    if vr == "UR":
        return st.text(st.sampled_from("abc:/.?=&%20 "), max_size=30)
    if vr == "DS":
        number = st.one_of(
            st.floats(-1e9, 1e9, allow_nan=False).map(lambda x: f"{x:.6g}"),
            st.integers(-99999, 99999).map(str),
            st.tuples(st.sampled_from(["", " "]), st.integers(0, 999), digits).map(
                lambda t: f"{t[0]}{t[1]}.{t[2]}"
            ),
        )
        return _multi(number)
    if vr == "IS":
        return _multi(st.integers(-(2**31), 2**31 - 1).map(str) | st.sampled_from([" 7", "+3"]))
    ranges = {
        "US": (0, 0xFFFF),
        "SS": (-0x8000, 0x7FFF),
        "UL": (0, 2**32 - 1),
        "SL": (-(2**31), 2**31 - 1),
        "UV": (0, 2**64 - 1),
        "SV": (-(2**63), 2**63 - 1),
    }
    if vr in ranges:
        low, high = ranges[vr]
        return _multi(st.integers(low, high))
    if vr == "FL":
        return _multi(st.floats(width=32, allow_nan=False))
    if vr == "FD":
        return _multi(st.floats(allow_nan=False))
    if vr == "AT":
        return _multi(st.integers(0, 2**32 - 1))
    unit = {"OB": 1, "UN": 1, "OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}[vr]
    # Short values go inline, long ones (over 768 bytes) become BulkDataURIs.
    count = st.integers(0, 40 // unit) | st.integers(700 // unit, 1100 // unit)
    return count.flatmap(lambda n: st.binary(min_size=n * unit, max_size=n * unit))


_SIMPLE_VRS = sorted(
    vr for vr in TAGS_BY_VR if vr in {
        "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD",
        "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SS", "ST", "SV", "TM", "UC", "UI", "UL",
        "UN", "UR", "US", "UT", "UV",
    }
)  # fmt: skip


@st.composite
def _dataset(draw: st.DrawFn, depth: int = 0, charset: str | None = None) -> Dataset:
    ds = Dataset()
    if depth == 0 or draw(st.integers(0, 3)) == 0:  # items sometimes override the charset
        charset = draw(st.sampled_from(list(_CHARSETS)))
        if charset is not None:
            ds.SpecificCharacterSet = charset
    alphabet = _CHARSETS[charset]
    for _ in range(draw(st.integers(0, 10))):
        vr = draw(st.sampled_from(_SIMPLE_VRS))
        tag = draw(st.sampled_from(TAGS_BY_VR[vr]))
        empty = draw(st.integers(0, 9)) == 0  # an element with no value at all
        ds.add(DataElement(tag, vr, None if empty else draw(_value_for(vr, alphabet))))
    # An attribute whose VR is "US or SS": resolved from PixelRepresentation in implicit VR.
    if draw(st.booleans()):
        if draw(st.booleans()):
            ds.PixelRepresentation = draw(st.integers(0, 1))
        signed = draw(st.booleans())
        value = draw(st.integers(-0x8000, 0x7FFF) if signed else st.integers(0, 0xFFFF))
        ds.add(DataElement(draw(st.sampled_from(_US_OR_SS_TAGS)), "SS" if signed else "US", value))
    # A standard text attribute stored as UN (explicit VR readers recover the dictionary VR).
    if draw(st.booleans()):
        text = draw(_text(_ASCII, 12))
        element = DataElement(0x00181030, "LO", (text + " " * (len(text) % 2)).encode("ascii"))
        element.VR = "UN"  # after construction: DataElement() itself would look the VR up
        ds.add(element)
    # Private blocks: one unknown creator, one that pydicom's private dictionary knows.
    if draw(st.booleans()):
        ds.add(DataElement(0x00090010, "LO", "DICOMLAKE TEST"))
        ds.add(DataElement(0x00091001, "LO", draw(_text(alphabet, 10))))
        ds.add(DataElement(0x00091002, "US", draw(st.integers(0, 0xFFFF))))
        ds.add(DataElement(0x00230010, "LO", "AMICAS0"))
        ds.add(DataElement(0x00231008, "US", draw(st.integers(0, 0xFFFF))))
    if depth < 2:
        for _ in range(draw(st.integers(0, 2))):
            tag = draw(st.sampled_from(TAGS_BY_VR["SQ"]))
            items = draw(st.lists(_dataset(depth + 1, charset), max_size=3))
            for item in items:
                item.is_undefined_length_sequence_item = draw(st.booleans())
            element = DataElement(tag, "SQ", Sequence(items))
            element.is_undefined_length = draw(st.booleans())
            ds.add(element)
    return ds


_SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ds=_dataset(), transfer_syntax=st.sampled_from(_SYNTAXES))
def test_random_datasets_match_pydicom(ds: Dataset, transfer_syntax: str) -> None:
    _check_round_trip(ds, transfer_syntax)


def _check_round_trip(ds: Dataset, transfer_syntax: str) -> None:
    """Write `ds` with pydicom, read it back with both; the JSON must be the same."""
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        data = buffer.getvalue()
        reference, failures = _pydicom_json(
            pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        )
    assert not failures
    result = _ours(data)
    assert result.warnings == []
    assert result.header.keys() == reference.keys()
    for key in reference:
        assert _same(result.header[key], reference[key]), (key, result.header[key])


@st.composite
def _pixel_rep_tree(draw: st.DrawFn, depth: int = 0) -> Dataset:
    """Datasets where "US or SS" attributes sit at several levels, PixelRepresentation at some."""
    ds = Dataset()
    pixel_rep = draw(st.sampled_from([None, 0, 1]))
    if pixel_rep is not None:
        ds.PixelRepresentation = pixel_rep
    if draw(st.booleans()):
        signed = draw(st.booleans())
        value = draw(st.integers(-0x8000, 0x7FFF) if signed else st.integers(0, 0xFFFF))
        ds.add(DataElement(draw(st.sampled_from(_US_OR_SS_TAGS)), "SS" if signed else "US", value))
    if depth < 3:
        sequences = st.lists(st.sampled_from([0x00081140, 0x00082112]), max_size=2, unique=True)
        for tag in draw(sequences):
            items = draw(st.lists(_pixel_rep_tree(depth + 1), max_size=2))
            element = DataElement(tag, "SQ", Sequence(items))
            element.is_undefined_length = draw(st.booleans())
            ds.add(element)
    return ds


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ds=_pixel_rep_tree(), transfer_syntax=st.sampled_from(_SYNTAXES[:2]))
def test_us_or_ss_follows_pixel_representation_like_pydicom(
    ds: Dataset, transfer_syntax: str
) -> None:
    # In implicit VR pydicom takes the nearest PixelRepresentation, handed down into items of
    # defined-length sequences only; the walker must settle each "US or SS" the same way.
    _check_round_trip(ds, transfer_syntax)


# --- values pydicom cannot convert: kept, with a warning ---------------------------------------


def _explicit_file(elements: bytes) -> bytes:
    meta = Dataset()
    meta.file_meta = FileMetaDataset()
    meta.file_meta.MediaStorageSOPClassUID = "1.2.3"
    meta.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, meta, enforce_file_format=True)
    return buffer.getvalue() + elements


def _element(group: int, element: int, vr: str, value: bytes) -> bytes:
    return (
        group.to_bytes(2, "little")
        + element.to_bytes(2, "little")
        + vr.encode()
        + len(value).to_bytes(2, "little")
        + value
    )


def test_bad_values_are_kept_with_a_warning() -> None:
    data = _explicit_file(
        _element(0x0008, 0x0005, "CS", b"ISO_IR 192")
        + _element(0x0010, 0x0010, "PN", b"Caf\xe9^Ren\xe9 ")  # not UTF-8
        + _element(0x0018, 0x0050, "DS", b"1,5 ")
        + _element(0x0020, 0x0013, "IS", b"12\\xy ")
        + _element(0x0028, 0x0010, "US", b"\x01\x02\x03")
    )
    result = _ours(data)
    header = result.header
    assert header["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Caf\ufffd^Ren\ufffd"}]}
    assert header["00180050"] == {"vr": "DS", "Value": ["1,5"]}
    assert header["00200013"] == {"vr": "IS", "Value": ["12", "xy"]}
    assert header["00280010"] == {"vr": "UN", "InlineBinary": "AQID"}
    assert len(result.warnings) == 4, result.warnings
    expected = ["(0010,0010) PatientName", "(0018,0050) SliceThickness",
                "(0020,0013) InstanceNumber", "(0028,0010) Rows"]  # fmt: skip
    for sentence, start in zip(result.warnings, expected, strict=True):
        assert sentence.startswith(start), sentence


def _implicit(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def _long(group: int, element: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HH2sHI", group, element, vr.encode(), 0, size) + value


_ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
_SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def test_implicit_vr_items_inside_an_explicit_vr_dataset() -> None:
    """PS3.5 6.2.2: UN of undefined length holds implicit VR items; pydicom sniffs every item."""
    name = _implicit(0x0010, 0x0010, b"Doe^Jane")
    number = _implicit(0x0020, 0x0013, b"7 ")
    defined_item = struct.pack("<HHI", 0xFFFE, 0xE000, len(number)) + number
    data = _explicit_file(
        _element(0x0008, 0x0016, "UI", b"1.2.3\x00")
        + _element(0x0008, 0x0018, "UI", b"1.2.3.4\x00")
        # A standard sequence stored as UN with a defined length, its item in implicit VR.
        + _long(0x0008, 0x1140, "UN", defined_item)
        # An explicit SQ of undefined length whose item is implicit VR.
        + _long(0x0040, 0x0275, "SQ", _ITEM + name + _ITEM_END + _SEQUENCE_END, 0xFFFFFFFF)
        # Private: creator, then a UN of undefined length (an implicit VR sequence).
        + _element(0x0043, 0x0010, "LO", b"ACME")
        + _long(0x0043, 0x1001, "UN", _ITEM + name + number + _ITEM_END + _SEQUENCE_END, 0xFFFFFFFF)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference, failures = _pydicom_json(pydicom.dcmread(io.BytesIO(data)))
    assert not failures
    result = _ours(data)
    assert _same(result.header, reference), (result.header, reference)
    assert result.header["00431001"]["Value"][0]["00100010"]["vr"] == "PN"
    assert result.header["00081140"]["vr"] == "SQ"


_FUZZ_SOURCES = ["CT_small.dcm", "rtplan.dcm", "MR_small_implicit.dcm", "UN_sequence.dcm"]


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(_FUZZ_SOURCES),
    edits=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.none() | st.integers(0, 4000),
)
def test_corrupt_bytes_never_raise_anything_but_invalid_instance(
    name: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    original = (PYDICOM_DATA / "test_files" / name).read_bytes()
    offset = file_meta_end(original)
    transfer_syntax = read_file_meta(original)["TransferSyntaxUID"]
    data = bytearray(original)
    for position, byte in edits:
        data[min(offset + position, len(data) - 1)] = byte
    if cut is not None:
        data = data[: offset + cut]
    try:
        header_to_json(bytes(data), offset, transfer_syntax)
    except InvalidInstance as exc:
        assert exc.code in {"truncated", "malformed"}


def test_parse_instance_reports_warnings() -> None:
    record = parse_instance((PYDICOM_DATA / "test_files" / "badVR.dcm").read_bytes()).record
    assert record["warnings"] and "NumberOfFrames" in record["warnings"][0]
    clean = parse_instance((PYDICOM_DATA / "test_files" / "CT_small.dcm").read_bytes()).record
    assert clean["warnings"] == []


def test_read_file_meta() -> None:
    meta = read_file_meta((PYDICOM_DATA / "test_files" / "CT_small.dcm").read_bytes())
    assert meta["TransferSyntaxUID"] == ExplicitVRLittleEndian
    assert meta["MediaStorageSOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"
    assert int(meta["FileMetaInformationGroupLength"]) > 0


def test_speed_against_bare_dcmread(capsys: pytest.CaptureFixture[str]) -> None:
    """Not an assertion: prints parse_instance's rate next to bare dcmread's on CT_small."""
    data = (PYDICOM_DATA / "test_files" / "CT_small.dcm").read_bytes()

    def rate(work: Any, seconds: float = 0.5) -> float:
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            work()
            count += 1
        return count / elapsed

    rate(lambda: parse_instance(data), 0.1)  # warm the caches
    ours = rate(lambda: parse_instance(data))
    bare = rate(lambda: pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
    with capsys.disabled():
        print(
            f"\nCT_small.dcm: parse_instance {ours:,.0f} files/s, bare dcmread "
            f"{bare:,.0f} files/s ({ours / bare:.0%})"
        )
