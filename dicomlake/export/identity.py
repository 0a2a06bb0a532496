"""The identifying values an export writes beside pixels (paths, manifest, columns), plain or de-identified.

With de-identification the values are read from `Deidentifier.deidentify(ds)`, the very dataset a
`dicom --deid` copy holds: UIDs through `map_uid`, PatientID the keyed pseudonym, StudyDate shifted
(Retain Longitudinal Temporal Information with Modified Dates) or removed, as the options say. So
a NIfTI volume, a PNG and a de-identified DICOM copy of the same series carry the same UIDs.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset


def deidentifier(options: Any) -> Any:
    """A dicomlake.deid.Deidentifier for DeidOptions `options`, or None without de-identification."""
    if options is None:
        return None
    from dicomlake.deid import Deidentifier

    return Deidentifier(options)


def header(ds: Dataset, deid: Any) -> Dataset:
    """The dataset the export reads identifying values from: `ds`, or its de-identified copy."""
    return ds if deid is None else deid.deidentify(ds)


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return str(value) if value not in (None, "") else None


def identity(ds: Dataset) -> dict[str, str | None]:
    """UIDs, patient and study date of `ds` (pass it through `header` first to de-identify)."""
    return {
        "study_instance_uid": str(ds.StudyInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "patient_id": _text(ds, "PatientID"),
        "study_date": _text(ds, "StudyDate"),
    }
