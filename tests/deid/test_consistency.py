"""Keyed derivations are consistent: the same UID, PatientID and patient's dates map the same way in
every file under one project key, so studies, series, frames of reference and cohorts stay linked."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from copy import deepcopy
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomlake.deid import Deidentifier, DeidOptions
from dicomlake.deid.keyed import MAX_SHIFT_DAYS, MIN_SHIFT_DAYS
from dicomlake.dicom.uid import is_valid_uid
from dicomlake.samples import generate_sample_drop

KEY = "consistency-key"


@pytest.fixture(scope="module")
def drop(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    summary = generate_sample_drop(tmp_path_factory.mktemp("drop"), n_instances=60, seed=3)
    assert summary.n_patients > 1 and summary.n_studies > 1
    return summary.files


def deidentified(files: list[Path], **flags: bool) -> list[tuple[Dataset, Dataset]]:
    deid = Deidentifier(DeidOptions(project_key=KEY, **flags))
    pairs = []
    for path in files:
        data = path.read_bytes()
        pairs.append((pydicom.dcmread(BytesIO(data)), pydicom.dcmread(BytesIO(deid.deidentify_bytes(data)))))
    return pairs


def test_uids_map_one_to_one_and_keep_the_hierarchy(drop: list[Path]) -> None:
    pairs = deidentified(drop)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        mapping: dict[str, set[str]] = defaultdict(set)
        for src, out in pairs:
            if keyword in src:
                mapping[src.get(keyword)].add(out.get(keyword))
        assert mapping, keyword
        assert all(len(new) == 1 for new in mapping.values()), f"{keyword}: one source UID, one new UID"
        news = [next(iter(new)) for new in mapping.values()]
        assert len(set(news)) == len(news), f"{keyword}: different sources stay different"
        assert not set(news) & set(mapping), f"{keyword}: no source UID survives"
    series_study = {(out.SeriesInstanceUID, out.StudyInstanceUID) for _, out in pairs}
    assert len({series for series, _ in series_study}) == len(series_study), "a series stays in one study"
    for src, out in pairs:
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            assert is_valid_uid(out[keyword].value)
        assert out.PatientID == Deidentifier(DeidOptions(project_key=KEY)).pseudonym(src.PatientID)


def test_another_key_gives_unlinkable_outputs(drop: list[Path]) -> None:
    data = drop[0].read_bytes()
    one = pydicom.dcmread(BytesIO(Deidentifier(DeidOptions(project_key=KEY)).deidentify_bytes(data)))
    other = pydicom.dcmread(BytesIO(Deidentifier(DeidOptions(project_key=KEY + "-2")).deidentify_bytes(data)))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID"):
        assert one.get(keyword) != other.get(keyword)
    again = pydicom.dcmread(BytesIO(Deidentifier(DeidOptions(project_key=KEY)).deidentify_bytes(data)))
    assert again.SOPInstanceUID == one.SOPInstanceUID and again.PatientID == one.PatientID


def test_pseudonyms_are_stable_per_patient_and_distinct_across_patients(drop: list[Path]) -> None:
    pairs = deidentified(drop)
    by_patient: dict[str, set[str]] = defaultdict(set)
    for src, out in pairs:
        by_patient[src.PatientID].add(out.PatientID)
        assert str(out.PatientName) == out.PatientID + "^"
    assert all(len(p) == 1 for p in by_patient.values())
    assert len({next(iter(p)) for p in by_patient.values()}) == len(by_patient)


def test_dates_shift_per_patient_and_stay_valid(drop: list[Path]) -> None:
    deid = Deidentifier(DeidOptions(project_key=KEY, retain_longitudinal_modified_dates=True))
    pairs = deidentified(drop, retain_longitudinal_modified_dates=True)
    shifts: dict[str, set[int]] = defaultdict(set)
    for src, out in pairs:
        assert out.LongitudinalTemporalInformationModified == "MODIFIED"
        for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            if src.get(keyword):
                before = dt.datetime.strptime(src.get(keyword), "%Y%m%d")
                after = dt.datetime.strptime(out.get(keyword), "%Y%m%d")  # still a valid DA
                shifts[src.PatientID].add((after - before).days)
        if src.get("StudyTime"):
            assert out.StudyTime == src.StudyTime
    assert shifts
    for patient, days in shifts.items():
        assert days == {deid.date_shift_days(patient)}, "one shift per patient"
        assert -MAX_SHIFT_DAYS <= next(iter(days)) <= -MIN_SHIFT_DAYS
    assert len({next(iter(d)) for d in shifts.values()}) > 1, "patients get different shifts"


def test_basic_profile_removes_dates(drop: list[Path]) -> None:
    for _, out in deidentified(drop[:5]):
        assert out.LongitudinalTemporalInformationModified == "REMOVED"
        assert out.StudyDate == "" and "SeriesDate" not in out and "AcquisitionDate" not in out


def nested_reference(target_sop: str, target_series: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.9.1"
    ds.PatientID = "P1"
    instance = Dataset()
    instance.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    instance.ReferencedSOPInstanceUID = target_sop
    series = Dataset()
    series.SeriesInstanceUID = target_series
    series.ReferencedInstanceSequence = Sequence([instance])
    ds.ReferencedSeriesSequence = Sequence([series])
    ds.SOPInstanceUIDOfConcatenationSource = target_sop  # a UID the table does not list
    return ds


def test_nested_references_follow_their_targets(drop: list[Path]) -> None:
    deid = Deidentifier(DeidOptions(project_key=KEY))
    target = pydicom.dcmread(drop[0])
    ds = nested_reference(target.SOPInstanceUID, target.SeriesInstanceUID)
    before = deepcopy(ds)
    out = deid.deidentify(ds)
    assert ds == before, "the input dataset is left as it was"
    new_target = deid.deidentify(target)
    ref_series = out.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == new_target.SeriesInstanceUID
    assert ref_series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == new_target.SOPInstanceUID
    assert ref_series.ReferencedInstanceSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert out.SOPInstanceUIDOfConcatenationSource == new_target.SOPInstanceUID


def test_map_uid_is_valid_and_deterministic() -> None:
    deid = Deidentifier(DeidOptions(project_key=KEY))
    uids = {deid.map_uid(f"1.2.3.{i}") for i in range(2000)}
    assert len(uids) == 2000
    assert all(u.startswith("2.25.") and is_valid_uid(u) and len(u) <= 64 for u in uids)
    assert deid.map_uid("1.2.3.4") == deid.map_uid("1.2.3.4 ") == deid.map_uid("1.2.3.4\x00")
