"""Private tags go unless whitelisted; Part-10 output has rebuilt file meta, reads back, keeps the
pixels; the de-identification attributes are set; bad input and bad options get clear errors."""

from __future__ import annotations

import json
from io import BytesIO

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomlake.deid import Deidentifier, DeidError, DeidOptions
from dicomlake.samples import TEST_FILES

KEY = "private-and-files-key"


def with_privates() -> Dataset:
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.add(DataElement(0x00290010, "LO", "ACME SAFE"))
    ds.add(DataElement(0x00291001, "DS", "3.5"))  # whitelisted
    ds.add(DataElement(0x00291002, "LO", "Smith^John"))  # same block, not whitelisted
    ds.add(DataElement(0x00290011, "LO", "OTHER VENDOR"))
    ds.add(DataElement(0x00291101, "DS", "3.5"))  # same offset, other creator
    item = Dataset()
    item.add(DataElement(0x00290010, "LO", "ACME SAFE"))
    item.add(DataElement(0x00291002, "LO", "Nested^Private"))
    item.CodeValue = "T-1"
    ds.add(DataElement(0x00400260, "SQ", Sequence([item])))  # Performed Protocol Code Seq: not listed
    return ds


def test_private_tags_are_removed_unless_whitelisted() -> None:
    source = with_privates()
    out = Deidentifier(DeidOptions(project_key=KEY)).deidentify(source)
    assert not [e for e in out if e.tag.is_private]
    assert not [e for e in out[0x00400260].value[0] if e.tag.is_private], "inside sequences too"
    assert [e.tag for e in source if e.tag.is_private], "the source still has them"

    kept = Deidentifier(DeidOptions(project_key=KEY, private_tag_whitelist=[("ACME SAFE", "0029xx01")]))
    out = kept.deidentify(source)
    assert out[0x00290010].value == "ACME SAFE" and out[0x00291001].value == "3.5"
    assert 0x00291002 not in out and 0x00290011 not in out and 0x00291101 not in out
    assert "113111" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]


@pytest.mark.parametrize(
    "entry", [("ACME", "0028xx01"), ("", "0029xx01"), ("ACME", "00291001"), ("ACME",), "ACME"]
)
def test_bad_whitelist_entries_are_refused(entry: object) -> None:
    with pytest.raises(DeidError):
        DeidOptions(project_key=KEY, private_tag_whitelist=[entry])


def test_short_key_is_refused() -> None:
    with pytest.raises(DeidError):
        DeidOptions(project_key="short")


def test_part10_output_is_rebuilt_and_keeps_pixels() -> None:
    deid = Deidentifier(DeidOptions(project_key=KEY, retain_longitudinal_modified_dates=True))
    for name in ("CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm"):
        source = pydicom.dcmread(TEST_FILES / name)
        out = pydicom.dcmread(BytesIO(deid.deidentify_bytes((TEST_FILES / name).read_bytes())))
        meta = out.file_meta
        assert meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID == deid.map_uid(source.SOPInstanceUID)
        assert meta.MediaStorageSOPClassUID == source.SOPClassUID
        assert meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert "SourceApplicationEntityTitle" not in meta
        assert out.PixelData == source.PixelData, name
        assert out.PatientIdentityRemoved == "YES"
        codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
        assert codes == ["113100", "113107"]
        methods = ["PS3.15 E.1 Basic Profile", "Retain Longitudinal Modified Dates"]
        assert list(out.DeidentificationMethod) == methods
        assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_all_options_are_recorded() -> None:
    deid = Deidentifier(
        DeidOptions(
            project_key=KEY,
            retain_longitudinal_modified_dates=True,
            retain_patient_characteristics=True,
            clean_descriptors=True,
        )
    )
    out = deid.deidentify(pydicom.dcmread(TEST_FILES / "MR_small.dcm"))
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113108", "113105"]
    assert all(i.CodingSchemeDesignator == "DCM" for i in out.DeidentificationMethodCodeSequence)
    assert out.PatientSex == pydicom.dcmread(TEST_FILES / "MR_small.dcm").PatientSex  # characteristics kept


def test_describe_is_json_and_never_holds_the_key() -> None:
    secret = "a-very-secret-project-key"
    record = Deidentifier(DeidOptions(project_key=secret, clean_descriptors=True)).describe()
    text = json.dumps(record)
    assert secret not in text
    assert record["table_rows"] == 656 and record["options"]["clean_descriptors"] is True


@pytest.mark.parametrize("data", [b"", b"not dicom at all", (TEST_FILES / "no_meta.dcm").read_bytes(),
                                  (TEST_FILES / "badVR.dcm").read_bytes()])
def test_bad_input_gets_a_clear_error(data: bytes) -> None:
    with pytest.raises(DeidError):
        Deidentifier(DeidOptions(project_key=KEY)).deidentify_bytes(data)


def test_wrong_types_get_a_clear_error() -> None:
    deid = Deidentifier(DeidOptions(project_key=KEY))
    with pytest.raises(DeidError):
        deid.deidentify(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(DeidError):
        deid.map_uid(123)  # type: ignore[arg-type]
