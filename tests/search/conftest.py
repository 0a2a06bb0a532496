"""A small, hand-written archive whose every search answer can be checked by eye.

    study A  Müller^Jürgen   P1  1970-01-01 M  2020-01-15 10:15:00    ACC1  ref Smith^John
             series A1  CT #1 CHEST  (2 instances, #1 and #2)   series A2  MR #2 HEAD (1 instance)
    study B  MULLER^Anna     P2  1985-05-05 F  2021-06-01 08:30:00    ACC2  ref Doe^Jane
             series B1  MR #1 HEAD  (1 instance)
    study C  O'Brien^Seán    P1  1970-01-01 M  2019-03-20 23:59:59.5  ACC3  ref Smith^Johnny
             series C1  CR #3 CHEST (1 instance)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomlake.ingest import IngestOptions, ingest
from dicomlake.search import SearchIndex
from dicomlake.store import Lakehouse, TenantStore

ROOT = "1.2.826.0.1.3680043.8.498.777"
STUDY = {"A": f"{ROOT}.1", "B": f"{ROOT}.2", "C": f"{ROOT}.3"}
SERIES = {"A1": f"{ROOT}.1.1", "A2": f"{ROOT}.1.2", "B1": f"{ROOT}.2.1", "C1": f"{ROOT}.3.1"}

_STUDIES = {
    "A": dict(PatientName="Müller^Jürgen", PatientID="P1", PatientBirthDate="19700101", PatientSex="M",
              StudyDate="20200115", StudyTime="101500", AccessionNumber="ACC1",
              ReferringPhysicianName="Smith^John", StudyID="S1", StudyDescription="CT CHEST"),
    "B": dict(PatientName="MULLER^Anna", PatientID="P2", PatientBirthDate="19850505", PatientSex="F",
              StudyDate="20210601", StudyTime="083000", AccessionNumber="ACC2",
              ReferringPhysicianName="Doe^Jane", StudyID="S2", StudyDescription="MR BRAIN"),
    "C": dict(PatientName="O'Brien^Seán", PatientID="P1", PatientBirthDate="19700101", PatientSex="M",
              StudyDate="20190320", StudyTime="235959.5", AccessionNumber="ACC3",
              ReferringPhysicianName="Smith^Johnny", StudyID="S3", StudyDescription="CR CHEST"),
}
_SERIES = {
    "A1": dict(Modality="CT", SeriesNumber="1", BodyPartExamined="CHEST",
               PerformedProcedureStepStartDate="20200115", PerformedProcedureStepStartTime="101600"),
    "A2": dict(Modality="MR", SeriesNumber="2", BodyPartExamined="HEAD",
               PerformedProcedureStepStartDate="20200115", PerformedProcedureStepStartTime="103000"),
    "B1": dict(Modality="MR", SeriesNumber="1", BodyPartExamined="HEAD",
               PerformedProcedureStepStartDate="20210601", PerformedProcedureStepStartTime="083100"),
    "C1": dict(Modality="CR", SeriesNumber="3", BodyPartExamined="CHEST",
               PerformedProcedureStepStartDate="20190320", PerformedProcedureStepStartTime="235959"),
}
# (series, instance number) of every instance
INSTANCES = [("A1", 1), ("A1", 2), ("A2", 1), ("B1", 1), ("C1", 1)]


def sop_uid(series: str, number: int) -> str:
    return f"{SERIES[series]}.{number}"


def write_instance(folder: Path, series: str, number: int, **changes: str) -> Path:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study = series[0]
    values = {**_STUDIES[study], **_SERIES[series], **changes}
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the accents above
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.StudyInstanceUID = STUDY[study]
    ds.SeriesInstanceUID = SERIES[series]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid(series, number)
    ds.InstanceNumber = str(number)
    ds.SliceThickness = "2.5"
    if "TimezoneOffsetFromUTC" in ds:
        del ds.TimezoneOffsetFromUTC  # so that a returned attribute can be empty
    path = folder / f"{series}-{number}-{len(changes)}.dcm"
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Archive:
    tenant: TenantStore
    index: SearchIndex
    folder: Path

    def uids(self, level: str, params: dict[str, str] | None = None, **options) -> list[str]:
        """The UIDs of the matches at `level`, in result order."""
        key = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}[level]
        return [r[key]["Value"][0] for r in self.index.search(level, params, **options)]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    base = tmp_path_factory.mktemp("search")
    folder = base / "drop"
    for series, number in INSTANCES:
        write_instance(folder, series, number)
    tenant = Lakehouse(base / "lake").tenant("search")
    summary = ingest([folder], tenant, IngestOptions(workers=1))
    assert summary.created == len(INSTANCES)
    return Archive(tenant, SearchIndex(tenant), base)
