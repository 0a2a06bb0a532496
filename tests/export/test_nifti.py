"""NIfTI export: the affine maps voxels to the DICOM patient positions (in RAS), the values are the
rescaled pixels in the right axis order, and series that are no regular volume are skipped with a reason."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomlake.deid import Deidentifier, DeidOptions
from dicomlake.export import Selection, export
from dicomlake.export.nifti import NotAVolume, build_volume, slices_of
from tests.export.conftest import ExportLake
from tests.export.synthetic import Series, enhanced, ingest_folder, rotation, stack, write

AXIAL = np.array([1, 0, 0, 0, 1, 0], dtype=float)
OBLIQUE_ROTATION = rotation("z", 20) @ rotation("x", 30)
OBLIQUE = np.concatenate([OBLIQUE_ROTATION @ [1, 0, 0], OBLIQUE_ROTATION @ [0, 1, 0]])
KEY = "nifti-test-project-key"


@dataclass
class Lake:
    tenant: object
    study: str
    good: dict[str, Series]
    bad: dict[str, tuple[Series, str]]  # name -> series, expected reason fragment


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    root = tmp_path_factory.mktemp("nifti")
    drop, study = root / "drop", generate_uid()
    good = {
        "axial": stack(drop, study, n=3, orientation=AXIAL, origin=np.array([-120.0, -80.0, 40.0]), step=2.0),
        "oblique": stack(drop, study, n=4, orientation=OBLIQUE, origin=np.array([10.0, -30.5, -200.25]),
                         step=2.5, slopes=[1.0, 0.5, 2.0, 1.25], intercept=-1000.0, seed=3),
        "single": stack(drop, study, n=1, orientation=OBLIQUE, origin=np.array([1.0, 2.0, 3.0]), step=3.0),
        "enhanced": enhanced(drop, study, frames=3, orientation=OBLIQUE, origin=np.array([5.0, 6.0, 7.0]),
                             step=1.5),
    }  # fmt: skip
    mixed = stack(drop, study, n=2, orientation=AXIAL, origin=np.zeros(3), step=2.0)
    mixed.files += stack(drop, study, n=1, orientation=AXIAL, origin=np.array([0, 0, 10.0]), step=2.0, rows=6,
                         series_uid=mixed.series).files  # fmt: skip
    unoriented = stack(drop, study, n=2, orientation=AXIAL, origin=np.zeros(3), step=2.0)
    for path in unoriented.files:
        ds = pydicom.dcmread(path)
        del ds.ImageOrientationPatient
        write(ds, path.parent)
    bad = {
        "tilted": (stack(drop, study, n=3, orientation=AXIAL, origin=np.zeros(3), step=2.0,
                         shift=np.array([0.0, 1.0, 0.0])), "gantry tilt"),
        "uneven": (stack(drop, study, n=4, orientation=AXIAL, origin=np.zeros(3), step=2.0,
                         steps=[2.0, 2.0, 3.5]), "inconsistent slice spacing"),
        "mixed": (mixed, "mixed image sizes"),
        "unoriented": (unoriented, "no ImageOrientationPatient"),
    }  # fmt: skip
    return Lake(ingest_folder(drop, root / "lake"), study, good, bad)


@pytest.fixture(scope="module")
def exported(synthetic: Lake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nifti-out")
    export(synthetic.tenant, Selection(uids=(synthetic.study,)), out, "nifti", chunk_instances=3)
    return out


def _lps_to_ras(point: np.ndarray) -> np.ndarray:
    return np.array([-point[0], -point[1], point[2]])


def _frames(ds: pydicom.Dataset) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]]:
    """(pixels, position, orientation, spacing, slope, intercept) per frame, read straight from pydicom."""
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return [(ds.pixel_array, np.array(ds.ImagePositionPatient, float),
                 np.array(ds.ImageOrientationPatient, float), np.array(ds.PixelSpacing, float),
                 float(ds.RescaleSlope), float(ds.RescaleIntercept))]  # fmt: skip
    shared = ds.SharedFunctionalGroupsSequence[0]
    transform = shared.PixelValueTransformationSequence[0]
    return [(ds.pixel_array[f], np.array(item.PlanePositionSequence[0].ImagePositionPatient, float),
             np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float),
             np.array(shared.PixelMeasuresSequence[0].PixelSpacing, float), float(transform.RescaleSlope),
             float(transform.RescaleIntercept))
            for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence)]  # fmt: skip


@pytest.mark.parametrize("name", ["axial", "oblique", "single", "enhanced"])
def test_affine_maps_voxels_to_dicom_positions_and_values_are_rescaled(
    synthetic: Lake, exported: Path, name: str
) -> None:
    series = synthetic.good[name]
    image = nib.load(exported / series.study / f"{series.series}.nii.gz")
    values = image.get_fdata()
    inverse = np.linalg.inv(image.affine)
    seen = set()
    for ds in series.datasets():
        for pixels, position, orientation, spacing, slope, intercept in _frames(ds):
            rows, columns = pixels.shape
            for r, c in [(0, 0), (rows - 1, 0), (0, columns - 1), (rows - 1, columns - 1), (1, 2)]:
                # PS3.3 C.7.6.2.1.1: the centre of pixel (row r, column c) in LPS patient coordinates.
                lps = position + orientation[:3] * spacing[1] * c + orientation[3:] * spacing[0] * r
                voxel = inverse @ np.append(_lps_to_ras(lps), 1.0)
                i, j, k = np.rint(voxel[:3]).astype(int)
                np.testing.assert_allclose(voxel[:3], [i, j, k], atol=1e-3)
                assert (i, j) == (c, r)
                ras = image.affine @ [i, j, k, 1]
                np.testing.assert_allclose(ras[:3], _lps_to_ras(lps), atol=1e-3)
                assert values[i, j, k] == pytest.approx(pixels[r, c] * slope + intercept)
                seen.add(int(k))
    assert seen == set(range(image.shape[2]))
    assert image.header.get_xyzt_units()[0] == "mm"
    assert int(image.header["sform_code"]) == int(image.header["qform_code"]) == 1
    np.testing.assert_allclose(image.get_qform(), image.affine, atol=1e-4)


def test_storage_type(synthetic: Lake, exported: Path) -> None:
    def load(name: str) -> nib.Nifti1Image:
        series = synthetic.good[name]
        return nib.load(exported / series.study / f"{series.series}.nii.gz")

    axial = load("axial")  # one slope for every slice: the stored int16 and scl_slope / scl_inter
    assert axial.get_data_dtype() == np.int16
    assert (axial.dataobj.slope, axial.dataobj.inter) == (1.5, -1024.0)
    oblique = load("oblique")  # a slope per slice: float32 values
    assert oblique.get_data_dtype() == np.float32 and oblique.shape == (5, 4, 4)
    single = load("single")
    assert single.shape == (5, 4, 1)
    assert np.linalg.norm(single.affine[:3, 2]) == pytest.approx(3.0)  # SliceThickness of the one slice
    assert np.linalg.norm(load("enhanced").affine[:3, 2]) == pytest.approx(1.5)


def test_series_that_are_no_volume_are_skipped_with_their_reason(synthetic: Lake, exported: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    errors = [json.loads(line) for line in (exported / "errors.jsonl").read_text().splitlines()]
    bad_instances = sum(len(s.files) for s, _ in synthetic.bad.values())
    good_instances = sum(len(s.files) for s in synthetic.good.values())
    assert manifest["counts"] == {"exported": good_instances, "skipped": bad_instances, "failed": 0}
    assert len(errors) == bad_instances
    for series, reason in synthetic.bad.values():
        mine = [e for e in errors if e["identifier"].split("/")[1] == series.series]
        assert len(mine) == len({p.name for p in series.files}), series
        assert all(e["status"] == "skipped" and reason in e["error"] for e in mine), (reason, mine)
        assert not (exported / series.study / f"{series.series}.nii.gz").exists()
    volumes = {f["series_instance_uid"] for f in manifest["files"]}
    assert volumes == {s.series for s in synthetic.good.values()}
    for entry in manifest["files"]:
        data = (exported / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert entry["patient_id"] == "PAT-001" and entry["study_date"] == "20240315"


def test_rejections_directly() -> None:
    """build_volume on hand-made slices: duplicates, orientation mismatch, a skewed orientation."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    first = slices_of(ds)[0]
    with pytest.raises(NotAVolume, match="share one position"):
        build_volume([first, first])
    turned = slices_of(ds)[0]
    turned.orientation = np.array([0, 1, 0, 1, 0, 0], dtype=float)
    with pytest.raises(NotAVolume, match="ImageOrientationPatient differs"):
        build_volume([first, turned])
    skew = slices_of(ds)[0]
    skew.orientation = np.array([1, 0, 0, 0.5, 0.5, 0], dtype=float)
    with pytest.raises(NotAVolume, match="orthogonal unit vectors"):
        build_volume([skew])


def test_sample_drop_ct_and_mr_form_volumes(lake: ExportLake, tmp_path: Path) -> None:
    """The generated sample data: CT and MR series are volumes; CR/US/OT (no geometry, colour) are not."""
    studies = tuple(sorted({r["study_instance_uid"] for r in lake.instances()}))
    summary = export(lake.tenant, Selection(uids=studies), tmp_path, "nifti", workers=2)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    by_series: dict[str, list[dict]] = {}
    for row in lake.instances():
        by_series.setdefault(row["series_instance_uid"], []).append(row)
    broken = next(r for r in lake.instances() if r["sop_instance_uid"] == lake.broken_sop)
    broken_series = broken["series_instance_uid"]
    volumes = {f["series_instance_uid"]: f for f in manifest["files"]}
    for uid, rows in by_series.items():
        modality = rows[0]["modality"]
        if uid == broken_series:
            assert uid not in volumes
        elif modality in ("CT", "MR"):
            assert volumes[uid]["shape"][2] == len(rows) and volumes[uid]["modality"] == modality
        else:
            assert uid not in volumes, modality
    assert summary.exported == sum(f["instances"] for f in manifest["files"]) > 0
    assert summary.skipped > 0


def test_deid_names_and_metadata(synthetic: Lake, tmp_path: Path) -> None:
    options = DeidOptions(project_key=KEY, retain_longitudinal_modified_dates=True)
    deid = Deidentifier(options)
    export(synthetic.tenant, Selection(uids=(synthetic.study,)), tmp_path, "nifti", deid_options=options)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    shifted = pydicom.dcmread(synthetic.good["axial"].files[0])
    shifted = deid.deidentify(shifted)
    expected = {deid.map_uid(s.series) for s in synthetic.good.values()}
    assert {f["series_instance_uid"] for f in manifest["files"]} == expected
    for entry in manifest["files"]:
        assert entry["path"] == f"{deid.map_uid(synthetic.study)}/{entry['series_instance_uid']}.nii.gz"
        assert entry["patient_id"] == deid.pseudonym("PAT-001")
        assert entry["study_date"] == shifted.StudyDate != "20240315"
        data = gzip.decompress((tmp_path / entry["path"]).read_bytes())
        assert synthetic.study.encode() not in data and b"PAT-001" not in data
    errors = (tmp_path / "errors.jsonl").read_text()
    assert synthetic.study not in errors and deid.map_uid(synthetic.study) in errors
