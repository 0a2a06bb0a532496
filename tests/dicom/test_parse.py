"""parse_instance over every file pydicom ships, plus each kind of bad input we generate."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pydicom
import pytest

from dicomlake.dicom import parse_instance
from dicomlake.dicom.attributes import age_in_years, normalize_person_name, parse_date, parse_time
from dicomlake.dicom.uid import is_valid_uid, uid_problem
from dicomlake.errors import InvalidInstance
from dicomlake.samples import generate_bad_inputs, generate_sample_drop

PYDICOM_DATA = Path(pydicom.__file__).parent / "data"

# Every file pydicom ships that must NOT be stored, with the reason code we must give.
EXPECTED_QUARANTINE = {
    "charset_files/chrSQEncoding.dcm": "missing_study_instance_uid",
    "charset_files/chrSQEncoding1.dcm": "missing_study_instance_uid",
    "palettes/fall.dcm": "missing_study_instance_uid",
    "palettes/hotiron.dcm": "missing_study_instance_uid",
    "palettes/hotmetalblue.dcm": "missing_study_instance_uid",
    "palettes/pet.dcm": "missing_study_instance_uid",
    "palettes/pet20step.dcm": "missing_study_instance_uid",
    "palettes/spring.dcm": "missing_study_instance_uid",
    "palettes/summer.dcm": "missing_study_instance_uid",
    "palettes/winter.dcm": "missing_study_instance_uid",
    "test_files/ExplVR_BigEndNoMeta.dcm": "no_file_meta",
    "test_files/ExplVR_LitEndNoMeta.dcm": "no_file_meta",
    "test_files/rtstruct.dcm": "no_file_meta",
    "test_files/no_meta.dcm": "not_dicom",
    "test_files/JPEGLSNearLossless_08.dcm": "missing_study_instance_uid",
    "test_files/JPEGLSNearLossless_16.dcm": "missing_study_instance_uid",
    "test_files/SC_rgb_jls_lossy_line.dcm": "missing_study_instance_uid",
    "test_files/SC_rgb_jls_lossy_sample.dcm": "missing_study_instance_uid",
    "test_files/UN_sequence.dcm": "missing_study_instance_uid",
    "test_files/empty_charset_LEI.dcm": "missing_study_instance_uid",
    "test_files/nested_priv_SQ.dcm": "missing_study_instance_uid",
    "test_files/no_meta_group_length.dcm": "missing_study_instance_uid",
    "test_files/priv_SQ.dcm": "missing_study_instance_uid",
    "test_files/MR_truncated.dcm": "truncated",
    "test_files/rtplan_truncated.dcm": "truncated",
    "test_files/meta_missing_tsyntax.dcm": "missing_transfer_syntax_uid",
    "test_files/zipMR.gz": "gzip",
    "test_files/dicomdirtests/DICOMDIR": "dicomdir",
    "test_files/dicomdirtests/DICOMDIR-bigEnd": "dicomdir",
    "test_files/dicomdirtests/DICOMDIR-empty.dcm": "dicomdir",
    "test_files/dicomdirtests/DICOMDIR-implicit": "dicomdir",
    "test_files/dicomdirtests/DICOMDIR-nooffset": "dicomdir",
    "test_files/dicomdirtests/DICOMDIR-nopatient": "dicomdir",
    "test_files/dicomdirtests/DICOMDIR-reordered": "dicomdir",
    "test_files/dicomdirtests/TINY_ALPHA/DICOMDIR": "dicomdir",
}


def _shipped_files() -> list[Path]:
    return sorted(
        p
        for p in PYDICOM_DATA.rglob("*")
        if p.is_file()
        and p.suffix not in {".py", ".pyc", ".json", ".txt", ".dump", ".icc"}
        and p.suffix != ".md"
        and p.name != "README"
        and "__pycache__" not in p.parts
    )


@pytest.mark.parametrize("path", _shipped_files(), ids=lambda p: str(p.relative_to(PYDICOM_DATA)))
def test_every_shipped_file_is_stored_or_quarantined_with_its_reason(path: Path) -> None:
    relative = str(path.relative_to(PYDICOM_DATA))
    data = path.read_bytes()
    if relative in EXPECTED_QUARANTINE:
        with pytest.raises(InvalidInstance) as caught:
            parse_instance(data)
        assert caught.value.code == EXPECTED_QUARANTINE[relative]
        assert caught.value.reason
        return
    parsed = parse_instance(data)
    record = parsed.record
    reference = pydicom.dcmread(path, stop_before_pixels=True)
    assert record["sop_instance_uid"] == reference.SOPInstanceUID
    assert record["study_instance_uid"] == reference.StudyInstanceUID
    assert record["series_instance_uid"] == reference.SeriesInstanceUID
    assert record["sop_class_uid"] == reference.SOPClassUID
    assert record["transfer_syntax_uid"] == reference.file_meta.TransferSyntaxUID
    assert parsed.size == len(data) and len(parsed.sha256) == 64
    assert "7FE00010" not in json.loads(record["dicom_json"])  # pixel data stays in the blob


def test_non_dicom_text_files_are_not_dicom() -> None:
    for name in ("test_files/README.txt", "test_files/test1.json", "test_files/rtplan.dump"):
        with pytest.raises(InvalidInstance) as caught:
            parse_instance((PYDICOM_DATA / name).read_bytes())
        assert caught.value.code == "not_dicom"


def test_generated_bad_inputs_get_their_expected_code(tmp_path: Path) -> None:
    for bad in generate_bad_inputs(tmp_path):
        with pytest.raises(InvalidInstance) as caught:
            parse_instance(bad.path.read_bytes())
        assert caught.value.code == bad.expected_code, (bad.kind, caught.value.reason)


def test_character_sets_decode() -> None:
    expected = {
        "chrFren.dcm": "Buc^Jérôme",
        "chrGerm.dcm": "Äneas^Rüdiger",
        "chrGreek.dcm": "Διονυσιος",
        "chrRuss.dcm": "Люкceмбypг",
        "chrX1.dcm": "Wang^XiaoDong=王^小東",
        "chrJapMulti.dcm": "やまだ^たろう",
        "chrH31.dcm": "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "chrKoreanMulti.dcm": "김희중",
    }
    for name, name_value in expected.items():
        record = parse_instance((PYDICOM_DATA / "charset_files" / name).read_bytes()).record
        assert record["patient_name"] is not None
        full = record["dicom_json"]
        for part in name_value.split("="):
            assert part.split("^")[0] in full, (name, part)


def test_promoted_columns_are_typed(tmp_path: Path) -> None:
    summary = generate_sample_drop(tmp_path, n_instances=5, seed=3)
    record = parse_instance(summary.files[0].read_bytes()).record
    assert isinstance(record["study_date"], dt.date)
    assert isinstance(record["patient_birth_date"], dt.date)
    assert isinstance(record["series_number"], int) and isinstance(record["rows"], int)
    assert record["patient_name_normalized"] == normalize_person_name(record["patient_name"])
    assert record["patient_age_years"] is not None and 0 <= record["patient_age_years"] <= 120
    assert record["study_datetime"].date() == record["study_date"]
    assert record["accession_number"]


def test_uid_rules() -> None:
    assert is_valid_uid("1.2.840.10008.1.2.1")
    assert is_valid_uid("0")
    assert uid_problem("1.2.03") and uid_problem("1..2") and uid_problem("1.2.") and uid_problem("a.1")
    assert uid_problem("1." + "2" * 63)
    assert uid_problem("") and uid_problem(None)


def test_value_parsers() -> None:
    assert parse_date("20240229") == dt.date(2024, 2, 29)
    assert parse_date("2024.02.29") == dt.date(2024, 2, 29)
    assert parse_date("20230229") is None and parse_date("") is None and parse_date("2024") is None
    assert parse_time("1230") == dt.time(12, 30)
    assert parse_time("123045.5") == dt.time(12, 30, 45, 500000)
    assert parse_time("12:30:45") == dt.time(12, 30, 45)
    assert parse_time("25") is None
    assert normalize_person_name("Müller^Hans") == "muller^hans"
    assert age_in_years(None, dt.date(1980, 6, 15), dt.date(2020, 6, 14)) == 39
    assert age_in_years("045Y", None, None) == 45
    assert age_in_years("018M", None, None) == 1
