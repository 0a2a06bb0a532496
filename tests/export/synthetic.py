"""Small synthetic series with known geometry and pixels, built with pydicom, ingested into a lake."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomlake.store import Lakehouse, TenantStore

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]  # fmt: skip


def _ds_text(values: np.ndarray) -> list[str]:
    return [f"{v:.10g}"[:16] for v in values]


def base(study: str, series: str, *, sop_class: str = CT_IMAGE, rows: int = 4, columns: int = 5,
         patient_id: str = "PAT-001", signed: bool = True, bits_stored: int = 16) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName, ds.PatientSex = patient_id, "Doe^Jane", "F"
    ds.StudyDate, ds.StudyTime, ds.Modality = "20240315", "101500", "CT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    return ds


def set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    dtype = np.int16 if ds.PixelRepresentation == 1 else np.uint16
    if ds.BitsAllocated == 8:
        dtype = np.uint8
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()


def write(ds: Dataset, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Series:
    """A written series: its UIDs and, per instance file, the pydicom dataset as written."""

    study: str
    series: str
    files: list[Path] = field(default_factory=list)

    def datasets(self) -> list[Dataset]:
        return [pydicom.dcmread(p) for p in self.files]


def stack(folder: Path, study: str, *, n: int, orientation: np.ndarray, origin: np.ndarray, step: float,
          spacing: tuple[float, float] = (0.7, 0.9), slopes: list[float] | None = None,
          intercept: float = -1024.0, shift: np.ndarray | None = None, steps: list[float] | None = None,
          rows: int = 4, columns: int = 5, seed: int = 0, series_uid: str | None = None) -> Series:
    """n single-frame slices along the normal of `orientation` (3x2 or 6 values); written out of order.

    `shift`: an in-plane offset added per slice (a gantry tilt); `steps`: the gaps, to break spacing;
    `series_uid`: add the slices to that series.
    """
    rng = np.random.default_rng(seed)
    series = Series(study, series_uid or generate_uid())
    iop = np.asarray(orientation, dtype=np.float64).reshape(6)
    normal = np.cross(iop[:3], iop[3:])
    gaps = steps or [step] * (n - 1)
    distances = np.concatenate([[0.0], np.cumsum(gaps)])
    for k in rng.permutation(n):
        ds = base(study, series.series, rows=rows, columns=columns)
        ds.ImageOrientationPatient = _ds_text(iop)
        position = origin + distances[k] * normal + (k * shift if shift is not None else 0)
        ds.ImagePositionPatient = _ds_text(position)
        ds.PixelSpacing = list(_ds_text(np.array(spacing)))
        ds.SliceThickness = f"{step:g}"
        ds.RescaleSlope = f"{(slopes[k] if slopes else 1.5):g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.InstanceNumber = int(k) + 1
        set_pixels(ds, rng.integers(-500, 3000, size=(rows, columns)))
        series.files.append(write(ds, folder / series.series))
    return series


def enhanced(folder: Path, study: str, *, frames: int, orientation: np.ndarray, origin: np.ndarray,
             step: float, spacing: tuple[float, float] = (0.8, 0.6), seed: int = 1) -> Series:
    """One enhanced CT object: per-frame PlanePositionSequence, shared orientation, measures, rescale."""
    rng = np.random.default_rng(seed)
    series = Series(study, generate_uid())
    ds = base(study, series.series, sop_class=ENHANCED_CT_IMAGE)
    ds.NumberOfFrames = frames
    iop = np.asarray(orientation, dtype=np.float64).reshape(6)
    normal = np.cross(iop[:3], iop[3:])
    shared = Dataset()
    orient, measures, transform = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = _ds_text(iop)
    measures.PixelSpacing = list(_ds_text(np.array(spacing)))
    measures.SliceThickness = f"{step:g}"
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "2", "-100", "HU"
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(frames)[::-1]:  # frames stored from the far end: the exporter must sort them
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = _ds_text(origin + k * step * normal)
        item.PlanePositionSequence = Sequence([plane])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    set_pixels(ds, rng.integers(-200, 2000, size=(frames, ds.Rows, ds.Columns)))
    series.files.append(write(ds, folder / series.series))
    return series


def ingest_folder(folder: Path, root: Path) -> TenantStore:
    from dicomlake.ingest import ingest

    tenant = Lakehouse(root).tenant("synthetic")
    summary = ingest([folder], tenant)
    assert summary.quarantined == 0, summary.errors
    return tenant
