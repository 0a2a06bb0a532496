"""Tests for dicomlake.samples: deterministic, realistic sample DICOM data and bad inputs."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import itertools
import math
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, MediaStorageDirectoryStorage

from dicomlake import samples
from dicomlake.samples import (
    BadInput,
    SamplePatient,
    SampleStudy,
    generate_bad_inputs,
    generate_sample_drop,
    plan_studies,
    sample_patients,
)

SOP_CLASS_FOR_MODALITY = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "OT": "1.2.840.10008.5.1.4.1.1.7",
}
DROP_N = 160
DROP_SEED = 3


def _read(path: Path, **kwargs: object) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, **kwargs)


def _age(birth: datetime.date, on: datetime.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _valid_uid(value: str) -> bool:
    return UID(value).is_valid and len(value) <= 64


@pytest.fixture(scope="module")
def drop(tmp_path_factory: pytest.TempPathFactory) -> tuple[samples.SampleSummary, list]:
    dest = tmp_path_factory.mktemp("drop")
    summary = generate_sample_drop(dest, n_instances=DROP_N, seed=DROP_SEED)
    datasets = [_read(p) for p in summary.files]
    return summary, datasets


# ---------------------------------------------------------------------------- plan


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50, 200, 1234, 5001])
def test_plan_has_exact_instance_count(n: int) -> None:
    plan = plan_studies(n, seed=11)
    assert sum(s.series_count * s.instances_per_series for s in plan) == n
    assert all(s.series_count >= 1 and s.instances_per_series >= 1 for s in plan)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=0, max_value=3000), seed=st.integers(0, 50))
def test_plan_exact_count_property(n: int, seed: int) -> None:
    plan = plan_studies(n, seed=seed)
    assert sum(s.n_instances for s in plan) == n
    accessions = [s.accession_number for s in plan]
    assert len(set(accessions)) == len(accessions)


def test_plan_is_realistic() -> None:
    plan = plan_studies(20_000, seed=0)
    by_modality = Counter(s.modality for s in plan)
    assert set(by_modality) == {"CT", "MR", "CR", "US", "OT"}
    instances = Counter()
    for s in plan:
        instances[s.modality] += s.n_instances
    assert instances["CT"] + instances["MR"] > 0.8 * 20_000  # volumes dominate the instance count
    for s in plan:
        assert samples.FIRST_STUDY_DATE <= s.study_date <= datetime.date(2026, 10, 31)
        assert s.study_date < datetime.date(2026, 11, 1)
        assert 1 <= _age(s.patient.birth_date, s.study_date) <= 95
        assert len(s.study_time) == 6 and s.study_time.isdigit()
        assert int(s.study_time[:2]) < 24 and int(s.study_time[2:4]) < 60
        assert s.accession_number.startswith("ACC") and len(s.accession_number) <= 16
        assert _valid_uid(s.study_instance_uid)
        assert s.body_part and s.body_part == s.body_part.upper()
        if s.modality in ("CR", "US"):
            assert s.instances_per_series <= 3
    big = [s for s in plan if s.modality in ("CT", "MR")]
    assert max(s.instances_per_series for s in big) >= 100
    per_patient = Counter(s.patient.patient_id for s in plan)
    assert sum(per_patient.values()) / len(per_patient) >= 2.5  # several studies per patient
    assert max(per_patient.values()) >= 5
    years = {s.study_date.year for s in plan}
    assert years == set(range(2016, 2027))
    assert len({s.accession_number for s in plan}) == len(plan)
    assert len({s.study_instance_uid for s in plan}) == len(plan)
    assert plan == sorted(plan, key=lambda s: (s.study_date, s.study_time, s.patient.patient_id))


def test_plan_is_deterministic_and_seed_dependent() -> None:
    assert plan_studies(500, seed=5) == plan_studies(500, seed=5)
    a = {s.study_instance_uid for s in plan_studies(500, seed=5)}
    b = {s.study_instance_uid for s in plan_studies(500, seed=6)}
    assert not a & b


def test_plan_respects_n_patients() -> None:
    plan = plan_studies(400, seed=2, n_patients=4)
    assert len({s.patient.patient_id for s in plan}) <= 4
    plan = plan_studies(400, seed=2, n_patients=1)
    assert len({s.patient.patient_id for s in plan}) == 1
    with pytest.raises(ValueError):
        plan_studies(-1)
    assert plan_studies(0) == []


def test_sample_patients() -> None:
    patients = sample_patients(300, seed=1)
    assert patients == sample_patients(300, seed=1)
    assert len({p.patient_id for p in patients}) == 300
    assert {p.sex for p in patients} == {"M", "F", "O"}
    assert patients[0].patient_name.isascii()
    assert not patients[1].patient_name.isascii() and patients[1].specific_character_set == ("ISO_IR 100")
    assert patients[2].specific_character_set == "ISO_IR 192"
    charsets = Counter(p.specific_character_set for p in patients)
    assert charsets["ISO_IR 100"] > charsets["ISO_IR 192"] > 0 and charsets[None] > 0
    for p in patients:
        assert p.patient_name == f"{p.family_name}^{p.given_name}"
        assert samples._BIRTH_MIN <= p.birth_date <= samples._BIRTH_MAX
    assert sample_patients(1, seed=0)[0].patient_id == "DL-000001"


# ---------------------------------------------------------------------------- generated drop


def test_summary_matches_files(drop) -> None:
    summary, datasets = drop
    assert summary.n_instances == DROP_N == len(summary.files) == len(datasets)
    assert all(p.is_file() for p in summary.files)
    assert len({ds.StudyInstanceUID for ds in datasets}) == summary.n_studies
    assert len({ds.SeriesInstanceUID for ds in datasets}) == summary.n_series
    assert len({ds.PatientID for ds in datasets}) == summary.n_patients
    assert len({ds.SOPInstanceUID for ds in datasets}) == DROP_N
    plan = plan_studies(DROP_N, seed=DROP_SEED)
    assert summary.n_studies == len(plan)
    assert summary.n_series == sum(s.series_count for s in plan)
    for path, ds in zip(summary.files, datasets, strict=True):
        rel = path.relative_to(summary.dest).parts
        assert len(rel) == 4
        assert rel[0] == ds.PatientID and rel[1] == ds.AccessionNumber
        assert int(rel[2]) == ds.SeriesNumber and rel[3] == f"{ds.InstanceNumber:04d}.dcm"


def test_every_file_is_valid_part10(drop) -> None:
    summary, datasets = drop
    for path, ds in zip(summary.files, datasets, strict=True):
        raw = path.read_bytes()
        assert raw[:128] == b"\x00" * 128 and raw[128:132] == b"DICM"
        meta = ds.file_meta
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert meta.ImplementationClassUID == samples.IMPLEMENTATION_CLASS_UID
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"):
            assert _valid_uid(ds[keyword].value), (keyword, ds[keyword].value)
        assert ds.SOPClassUID == SOP_CLASS_FOR_MODALITY[ds.Modality]
        for keyword in (
            "PatientID",
            "PatientName",
            "PatientBirthDate",
            "PatientSex",
            "PatientAge",
            "StudyDate",
            "StudyTime",
            "SeriesDate",
            "SeriesTime",
            "AccessionNumber",
            "StudyDescription",
            "SeriesDescription",
            "SeriesNumber",
            "InstanceNumber",
            "BodyPartExamined",
            "StudyID",
            "InstitutionName",
            "Manufacturer",
            "ManufacturerModelName",
            "Rows",
            "Columns",
            "PixelData",
        ):
            assert keyword in ds, keyword
        assert "ReferringPhysicianName" in ds
        study_date = datetime.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
        birth = datetime.datetime.strptime(ds.PatientBirthDate, "%Y%m%d").date()
        assert samples.FIRST_STUDY_DATE <= study_date <= samples.LAST_STUDY_DATE
        assert ds.PatientAge == f"{_age(birth, study_date):03d}Y"
        assert 1 <= int(ds.PatientAge[:3]) <= 95
        assert ds.SeriesDate == ds.StudyDate and ds.SeriesTime >= ds.StudyTime
        assert ds.PatientSex in ("M", "F", "O")
        assert ds.AccessionNumber.startswith("ACC")
        # pixel data is complete
        frame = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
        assert len(ds.PixelData) >= frame * int(ds.get("NumberOfFrames", 1))


def test_files_match_plan(drop) -> None:
    _, datasets = drop
    plan = {s.study_instance_uid: s for s in plan_studies(DROP_N, seed=DROP_SEED)}
    counts = Counter(ds.StudyInstanceUID for ds in datasets)
    for uid, study in plan.items():
        assert counts[uid] == study.n_instances
    for ds in datasets:
        study = plan[ds.StudyInstanceUID]
        assert ds.PatientID == study.patient.patient_id
        assert ds.AccessionNumber == study.accession_number
        assert ds.Modality == study.modality
        assert ds.BodyPartExamined == study.body_part
        assert ds.StudyDescription == study.description
        assert ds.StudyDate == study.study_date.strftime("%Y%m%d")
        assert ds.StudyTime == study.study_time
        assert ds.PatientSex == study.patient.sex
        assert ds.PatientBirthDate == study.patient.birth_date.strftime("%Y%m%d")


def test_non_ascii_names_decode(drop) -> None:
    summary, datasets = drop
    patients = {s.patient.patient_id: s.patient for s in plan_studies(DROP_N, seed=DROP_SEED)}
    seen = Counter()
    for path, ds in zip(summary.files, datasets, strict=True):
        patient = patients[ds.PatientID]
        assert str(ds.PatientName) == patient.patient_name
        assert ds.PatientName.family_name == patient.family_name
        assert ds.PatientName.given_name == patient.given_name
        charset = ds.get("SpecificCharacterSet")
        assert charset == patient.specific_character_set
        if not patient.patient_name.isascii():
            codec = {"ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}[charset]
            assert patient.patient_name.encode(codec) in path.read_bytes()
            seen[charset] += 1
    assert seen["ISO_IR 100"] > 0 and seen["ISO_IR 192"] > 0


def test_greek_and_japanese_names_round_trip(tmp_path: Path) -> None:
    for family, given_name in (("Παπαδόπουλος", "Γιώργος"), ("山田", "太郎")):
        patient = SamplePatient("DL-999999", family, given_name, "M", datetime.date(1970, 5, 17))
        study = _study(patient, "CR", "XR CHEST 2 VIEWS", "CHEST", 1, 1)
        ((_, series, index, tpl, segments, _),) = samples._iter_instances([study])
        data = samples._instance_bytes(tpl, segments, samples._instance_values(series, tpl, index))
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert ds.PatientName.family_name == family
        assert ds.PatientName.given_name == given_name
        assert f"{family}^{given_name}".encode() in data


def test_series_geometry_is_a_regular_volume(drop) -> None:
    _, datasets = drop
    series: dict[str, list] = defaultdict(list)
    for ds in datasets:
        if ds.Modality in ("CT", "MR"):
            series[ds.SeriesInstanceUID].append(ds)
    assert series
    multi = 0
    for slices in series.values():
        slices.sort(key=lambda d: d.InstanceNumber)
        assert [d.InstanceNumber for d in slices] == list(range(1, len(slices) + 1))
        first = slices[0]
        iop = [float(v) for v in first.ImageOrientationPatient]
        row, col = iop[:3], iop[3:]
        assert math.isclose(sum(r * c for r, c in zip(row, col, strict=True)), 0.0, abs_tol=1e-6)
        normal = (
            row[1] * col[2] - row[2] * col[1],
            row[2] * col[0] - row[0] * col[2],
            row[0] * col[1] - row[1] * col[0],
        )
        thickness = float(first.SliceThickness)
        assert thickness > 0
        for keyword in (
            "ImageOrientationPatient",
            "PixelSpacing",
            "SliceThickness",
            "FrameOfReferenceUID",
            "Rows",
            "Columns",
            "SeriesDescription",
        ):
            assert len({str(d[keyword].value) for d in slices}) == 1, keyword
        assert _valid_uid(first.FrameOfReferenceUID)
        for a, b in itertools.pairwise(slices):
            pa = [float(v) for v in a.ImagePositionPatient]
            pb = [float(v) for v in b.ImagePositionPatient]
            for i in range(3):
                assert math.isclose(pb[i] - pa[i], thickness * normal[i], abs_tol=2e-4)
            assert math.isclose(float(b.SliceLocation) - float(a.SliceLocation), thickness, abs_tol=2e-4)
        multi += len(slices) > 1
    assert multi > 0


def test_same_seed_same_bytes_different_seed_different_uids(tmp_path: Path) -> None:
    def digest(summary: samples.SampleSummary) -> list[str]:
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in summary.files]

    a = generate_sample_drop(tmp_path / "a", n_instances=70, seed=9, layout="flat")
    b = generate_sample_drop(tmp_path / "b", n_instances=70, seed=9, layout="flat")
    c = generate_sample_drop(tmp_path / "c", n_instances=70, seed=10, layout="flat")
    assert [p.name for p in a.files] == [p.name for p in b.files]
    assert digest(a) == digest(b)
    assert all(p.parent == tmp_path / "a" for p in a.files)
    assert sorted(x.name for x in (tmp_path / "a").iterdir()) == sorted(p.name for p in a.files)
    uids_a = {_read(p).SOPInstanceUID for p in a.files}
    uids_c = {_read(p).SOPInstanceUID for p in c.files}
    assert len(uids_a) == len(uids_c) == 70 and not uids_a & uids_c
    with pytest.raises(ValueError):
        generate_sample_drop(tmp_path / "d", n_instances=1, layout="zip")
    empty = generate_sample_drop(tmp_path / "e", n_instances=0)
    assert empty.files == [] and empty.n_studies == 0


def _study(
    patient: SamplePatient, modality: str, description: str, body_part: str, series_count: int, ips: int
) -> SampleStudy:
    return SampleStudy(
        patient=patient,
        study_instance_uid=str(pydicom.uid.generate_uid(entropy_srcs=[modality, description])),
        accession_number="ACC00000042",
        study_date=datetime.date(2020, 2, 29),
        study_time="235500",
        modality=modality,
        description=description,
        body_part=body_part,
        series_count=series_count,
        instances_per_series=ips,
    )


def test_fast_path_equals_pydicom_dcmwrite() -> None:
    """The spliced bytes are exactly what pydicom.dcmwrite(enforce_file_format=True) writes."""
    patients = [
        SamplePatient("DL-000101", "Smith", "John", "M", datetime.date(1950, 1, 2)),
        SamplePatient("DL-000102", "Müller", "Zoë", "F", datetime.date(1988, 2, 29)),
        SamplePatient("DL-000103", "山田", "太郎", "O", datetime.date(2010, 12, 31)),
    ]
    seen_charsets = set()
    protocols = {}
    for proto in samples._PROTOCOLS:
        protocols.setdefault(proto.modality, proto)
    pool = sample_patients(200, seed=4)
    patients += pool[:6] + [p for p in pool if p.specific_character_set is None][:2]
    for patient in patients:
        seen_charsets.add(patient.specific_character_set)
        for modality, proto in protocols.items():
            study = _study(patient, modality, proto.description, proto.body_part, len(proto.series), 2)
            for _, series, index, tpl, segments, dynamic in samples._iter_instances([study]):
                values = samples._instance_values(series, tpl, index)
                fast = samples._instance_bytes(tpl, segments, values)
                slow = samples._dcmwrite_bytes(samples._instance_dataset(tpl, dynamic, values))
                assert fast == slow, (modality, patient)
    assert seen_charsets == {None, "ISO_IR 100", "ISO_IR 192"}


def test_templates_come_from_the_wheel() -> None:
    for modality, rel in samples._TEMPLATE_FILES.items():
        assert (samples.TEST_FILES / rel).is_file(), rel
        tpl = samples._template(modality)
        assert tpl.dataset.Modality == modality
        # no identifiers of the original test file survive in the static part
        for elem in tpl.dataset.iterall():
            if elem.VR == "UI":
                assert elem.keyword in ("SOPClassUID", "ReferencedSOPClassUID"), elem


# ---------------------------------------------------------------------------- bad inputs


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI", "ignore:The value length")
def test_bad_inputs(tmp_path: Path) -> None:
    bad = generate_bad_inputs(tmp_path / "bad", seed=0)
    kinds = {b.kind: b for b in bad}
    assert set(kinds) == {
        "not_dicom",
        "zero_bytes",
        "truncated_pixel_data",
        "truncated_header",
        "missing_sop_instance_uid",
        "missing_study_instance_uid",
        "invalid_uid",
        "uid_too_long",
        "no_file_meta",
        "dicomdir",
        "gzip",
    }
    assert set(samples.BAD_INPUT_KINDS) == set(kinds)
    for b in bad:
        assert isinstance(b, BadInput) and b.path.is_file()
        expected = "truncated" if b.kind.startswith("truncated") else b.kind
        assert b.expected_code == expected
    assert len({b.path for b in bad}) == len(bad)

    def fails(path: Path, **kwargs: object) -> bool:
        try:
            _read(path, **kwargs)
        except (InvalidDicomError, EOFError, ValueError, OSError, TypeError):
            return True
        return False

    assert fails(kinds["not_dicom"].path)
    assert kinds["zero_bytes"].path.stat().st_size == 0 and fails(kinds["zero_bytes"].path)

    path = kinds["truncated_pixel_data"].path
    if not fails(path):
        ds = _read(path)
        assert len(ds.PixelData) < ds.Rows * ds.Columns * ds.BitsAllocated // 8
    path = kinds["truncated_header"].path
    if not fails(path):
        ds = _read(path)
        assert "PixelData" not in ds and "StudyInstanceUID" not in ds

    ds = _read(kinds["missing_sop_instance_uid"].path)
    assert "SOPInstanceUID" not in ds and "MediaStorageSOPInstanceUID" not in ds.file_meta
    assert "StudyInstanceUID" in ds and "PixelData" in ds
    ds = _read(kinds["missing_study_instance_uid"].path)
    assert "StudyInstanceUID" not in ds and _valid_uid(ds.SOPInstanceUID)

    ds = _read(kinds["invalid_uid"].path)
    assert ds.SOPInstanceUID == "1.2.03.abc" and not UID(ds.SOPInstanceUID).is_valid
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.03.abc"
    ds = _read(kinds["uid_too_long"].path)
    assert len(ds.SOPInstanceUID) == 65 and not UID(ds.SOPInstanceUID).is_valid
    assert all(
        part.isdigit() and not (len(part) > 1 and part[0] == "0") for part in ds.SOPInstanceUID.split(".")
    )  # only the length is wrong

    path = kinds["no_file_meta"].path
    assert path.read_bytes()[128:132] != b"DICM" and fails(path)
    ds = _read(path, force=True)
    assert "TransferSyntaxUID" not in ds.file_meta and _valid_uid(ds.SOPInstanceUID)

    ds = _read(kinds["dicomdir"].path)
    assert ds.file_meta.MediaStorageSOPClassUID == MediaStorageDirectoryStorage
    assert "DirectoryRecordSequence" in ds and "PixelData" not in ds

    path = kinds["gzip"].path
    assert path.read_bytes()[:2] == b"\x1f\x8b" and fails(path)
    ds = pydicom.dcmread(io.BytesIO(gzip.decompress(path.read_bytes())))
    assert _valid_uid(ds.SOPInstanceUID) and "PixelData" in ds

    # all derived files carry distinct SOP Instance UIDs; same seed gives the same bytes
    again = generate_bad_inputs(tmp_path / "again", seed=0)
    assert [b.path.read_bytes() for b in bad] == [b.path.read_bytes() for b in again]
    other = generate_bad_inputs(tmp_path / "other", seed=1)
    assert kinds["gzip"].path.read_bytes() != next(b for b in other if b.kind == "gzip").path.read_bytes()
