"""Format `nifti`: one NIfTI-1 volume (`<out>/<study>/<series>.nii.gz`) per series that forms one.

A series qualifies when its slices (single-frame images, or the frames of enhanced multi-frame
objects through their per-frame / shared functional groups) are grayscale, all have one
ImageOrientationPatient (within ORIENTATION_TOLERANCE), one Rows x Columns and one PixelSpacing,
and their ImagePositionPatient values lie on one line along the slice normal (no gantry tilt or
shear) with one spacing (within 1% or 0.01 mm, the larger). A single slice with geometry is a
1-slice volume (slice spacing: SpacingBetweenSlices, else SliceThickness, else 1 mm). Anything
else raises NotAVolume with the reason, and the exporter counts the series as skipped.

Geometry: voxel (i, j, k) is column i, row j of the k-th slice sorted along the normal
(row cosines x column cosines). In DICOM's LPS patient space its position is
    P0 + i * PixelSpacing[1] * row_cosines + j * PixelSpacing[0] * column_cosines + k * spacing * normal
with P0 the first slice's position; NIfTI is RAS, so x and y change sign. The affine is written as
sform and qform (code 1, scanner), units mm.

Values: RescaleSlope/Intercept the same on every slice: the stored integers with scl_slope and
scl_inter (readers apply them); differing per slice: float32 of the rescaled values.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dicomlake.dicom.functional_groups import functional_value

ORIENTATION_TOLERANCE = 1e-4
SPACING_TOLERANCE_MM = 0.01
SPACING_TOLERANCE_RELATIVE = 0.01
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class NotAVolume(ValueError):
    """The series does not form one regular 3-D volume (the message says why)."""


@dataclass
class Slice:
    position: np.ndarray  # ImagePositionPatient (LPS, mm)
    orientation: np.ndarray  # ImageOrientationPatient: row cosines, column cosines
    spacing: tuple[float, float]  # PixelSpacing: between rows, between columns
    pixels: np.ndarray  # stored values, (Rows, Columns)
    slope: float
    intercept: float
    thickness: float | None


def _floats(value: Any, count: int, name: str) -> np.ndarray:
    if value is None or value == "":
        raise NotAVolume(f"no {name}")
    values = np.array([float(v) for v in value], dtype=np.float64)
    if values.size != count:
        raise NotAVolume(f"{name} has {values.size} values, not {count}")
    return values


def _number(value: Any, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    many = isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"
    return float(value[0]) if many else float(value)


def slices_of(ds: Dataset) -> list[Slice]:
    """The 2-D slices of one instance: itself, or each frame of an enhanced multi-frame object."""
    if "PixelData" not in ds:
        raise NotAVolume("an instance has no pixel data")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise NotAVolume(f"colour images ({ds.get('PhotometricInterpretation')}) are not a scalar volume")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = ds.pixel_array
    if frames == 1:
        spacing = _floats(ds.get("PixelSpacing"), 2, "PixelSpacing")
        thickness = _number(ds.get("SpacingBetweenSlices"), None) or _number(ds.get("SliceThickness"), None)
        return [Slice(_floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient"),
                      _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient"),
                      (spacing[0], spacing[1]), pixels, _number(ds.get("RescaleSlope"), 1.0) or 1.0,
                      _number(ds.get("RescaleIntercept"), 0.0) or 0.0, thickness)]  # fmt: skip
    if "PerFrameFunctionalGroupsSequence" not in ds:
        raise NotAVolume("a multi-frame object without per-frame functional groups (no per-frame positions)")
    out = []
    for frame in range(frames):
        def group(sequence: str, keyword: str, f: int = frame) -> Any:
            return functional_value(ds, f, sequence, keyword)

        spacing = _floats(group("PixelMeasuresSequence", "PixelSpacing"), 2, "PixelSpacing")
        thickness = (_number(group("PixelMeasuresSequence", "SpacingBetweenSlices"), None)
                     or _number(group("PixelMeasuresSequence", "SliceThickness"), None))  # fmt: skip
        slope = _number(group("PixelValueTransformationSequence", "RescaleSlope"), None)
        intercept = _number(group("PixelValueTransformationSequence", "RescaleIntercept"), None)
        out.append(Slice(
            _floats(group("PlanePositionSequence", "ImagePositionPatient"), 3, "ImagePositionPatient"),
            _floats(group("PlaneOrientationSequence", "ImageOrientationPatient"), 6,
                    "ImageOrientationPatient"),
            (spacing[0], spacing[1]), pixels[frame],
            slope if slope is not None else _number(ds.get("RescaleSlope"), 1.0) or 1.0,
            intercept if intercept is not None else _number(ds.get("RescaleIntercept"), 0.0) or 0.0,
            thickness,
        ))  # fmt: skip
    return out


@dataclass
class Volume:
    data: np.ndarray  # (columns, rows, slices): index i, j, k
    affine: np.ndarray  # 4x4, voxel -> RAS mm
    slope: float  # scl_slope / scl_inter to apply to `data` (1 / 0 for float32 data)
    intercept: float


def _check_same(slices: list[Slice]) -> None:
    first = slices[0]
    for s in slices[1:]:
        if np.max(np.abs(s.orientation - first.orientation)) > ORIENTATION_TOLERANCE:
            raise NotAVolume("ImageOrientationPatient differs between slices")
        if s.pixels.shape != first.pixels.shape:
            raise NotAVolume(f"mixed image sizes ({first.pixels.shape} and {s.pixels.shape})")
        if not np.allclose(s.spacing, first.spacing, rtol=1e-5, atol=1e-6):
            raise NotAVolume(f"PixelSpacing differs between slices ({first.spacing} and {s.spacing})")
    row, col = first.orientation[:3], first.orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise NotAVolume("ImageOrientationPatient is not two orthogonal unit vectors")


def build_volume(slices: list[Slice]) -> Volume:
    """The volume of `slices` (any order), or NotAVolume (see the module docstring)."""
    if not slices:
        raise NotAVolume("no slices")
    _check_same(slices)
    row, col = slices[0].orientation[:3], slices[0].orientation[3:]
    normal = np.cross(row, col)
    slices = sorted(slices, key=lambda s: float(s.position @ normal))
    distances = np.array([s.position @ normal for s in slices])
    if len(slices) > 1:
        gaps = np.diff(distances)
        step = float(distances[-1] - distances[0]) / (len(slices) - 1)
        tolerance = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_RELATIVE * step)
        if gaps.min() <= SPACING_TOLERANCE_MM:
            raise NotAVolume("two slices share one position (several echoes, phases or stacks?)")
        if np.max(np.abs(gaps - step)) > tolerance:
            raise NotAVolume(f"inconsistent slice spacing ({gaps.min():.4g} to {gaps.max():.4g} mm)")
        origin = slices[0].position
        for s, d in zip(slices, distances, strict=True):
            off_axis = s.position - origin - (d - distances[0]) * normal
            if np.linalg.norm(off_axis) > tolerance:
                raise NotAVolume("slices are not stacked along the slice normal (gantry tilt or shear)")
    else:
        step = slices[0].thickness or 1.0
    row_spacing, col_spacing = slices[0].spacing
    lps = np.eye(4)
    lps[:3, 0] = row * col_spacing
    lps[:3, 1] = col * row_spacing
    lps[:3, 2] = normal * step
    lps[:3, 3] = slices[0].position
    stacked = np.stack([s.pixels for s in slices], axis=-1).transpose(1, 0, 2)  # (columns, rows, slices)
    scales = {(s.slope, s.intercept) for s in slices}
    if len(scales) == 1 and stacked.dtype.kind in "iu":
        slope, intercept = scales.pop()
        return Volume(stacked, LPS_TO_RAS @ lps, slope, intercept)
    values = np.stack([s.pixels * s.slope + s.intercept for s in slices], axis=-1).transpose(1, 0, 2)
    return Volume(values.astype(np.float32), LPS_TO_RAS @ lps, 1.0, 0.0)


def nifti_bytes(volume: Volume) -> bytes:
    """The volume as a gzipped NIfTI-1 file (deterministic: the same volume gives the same bytes)."""
    import nibabel as nib

    image = nib.Nifti1Image(np.asfortranarray(volume.data), volume.affine)
    image.set_sform(volume.affine, code=1)
    image.set_qform(volume.affine, code=1)
    image.header.set_xyzt_units("mm")
    image.header.set_data_dtype(volume.data.dtype)
    image.header.set_slope_inter(volume.slope, volume.intercept)
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def export_series(datasets: list[Dataset], out: Path, deid: Any = None) -> dict[str, Any]:
    """Write the series of `datasets` to out/<study>/<series>.nii.gz; its manifest entry, or NotAVolume."""
    from dicomlake.export.identity import header, identity

    slices = [s for ds in datasets for s in slices_of(ds)]
    volume = build_volume(slices)
    ids = identity(header(datasets[0], deid))
    data = nifti_bytes(volume)
    path = out / ids["study_instance_uid"] / f"{ids['series_instance_uid']}.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return {
        "path": str(path.relative_to(out)), "sha256": hashlib.sha256(data).hexdigest(),
        "instances": len(datasets), "shape": list(volume.data.shape),
        "study_instance_uid": ids["study_instance_uid"], "series_instance_uid": ids["series_instance_uid"],
        "patient_id": ids["patient_id"], "study_date": ids["study_date"],
        "modality": str(datasets[0].get("Modality", "")) or None,
    }  # fmt: skip
