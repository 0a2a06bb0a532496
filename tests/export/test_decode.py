"""The export decoder (metadata from the instances row, pixels with minimal parsing) equals pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from dicomlake.export import Selection, resolve
from dicomlake.export.decode import decode_row, native_pixels
from dicomlake.ingest import IngestOptions, ingest
from dicomlake.store import Lakehouse

STUDY = generate_uid()
rng = np.random.default_rng(7)


def _instance(folder: Path, name: str, pixels: np.ndarray, *, syntax: str = ExplicitVRLittleEndian,
              photometric: str = "MONOCHROME2", bits_stored: int | None = None, signed: bool = False,
              frames: int = 1, planar: int | None = None, sequence: bool = False, rle: bool = False) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, generate_uid()
    ds.PatientID, ds.Modality, ds.PatientAge, ds.PatientSex = "P1", "OT", "042Y", "F"
    ds.PixelSpacing, ds.WindowCenter, ds.WindowWidth = [0.5, 0.25], [40, 50], [400, 500]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if sequence:  # an undefined-length sequence before the pixels
        item = Dataset()
        item.ReferencedSOPInstanceUID = generate_uid()
        ds.ReferencedImageSequence = Sequence([item])
    bits = pixels.dtype.itemsize * 8
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if photometric == "RGB" else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    if photometric == "RGB":
        ds.PlanarConfiguration = planar or 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored = bits, bits_stored or bits
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    data = pixels
    if planar == 1:  # colour-by-plane: all R, then all G, then all B (per frame)
        data = np.moveaxis(pixels, -1, -3)
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    if rle:
        ds.compress(RLELossless, pixels, generate_instance_uid=False)
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / f"{name}.dcm", enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian,
               little_endian=syntax != ExplicitVRBigEndian)


CASES = {
    "signed-12-garbage": dict(pixels=rng.integers(0, 2**16, (6, 5), dtype=np.uint16).view(np.int16),
                              bits_stored=12, signed=True),
    "unsigned-10-garbage": dict(pixels=rng.integers(0, 2**16, (4, 7), dtype=np.uint16), bits_stored=10),
    "mono1-8bit": dict(pixels=rng.integers(0, 256, (5, 5), dtype=np.uint8), photometric="MONOCHROME1"),
    "multiframe-16": dict(pixels=rng.integers(0, 4096, (3, 4, 6), dtype=np.uint16), frames=3,
                          sequence=True),
    "rgb-planar0": dict(pixels=rng.integers(0, 256, (4, 3, 3), dtype=np.uint8), photometric="RGB"),
    "rgb-planar1-frames": dict(pixels=rng.integers(0, 256, (2, 4, 3, 3), dtype=np.uint8), photometric="RGB",
                               planar=1, frames=2),
    "implicit-32": dict(pixels=rng.integers(0, 2**31, (3, 3), dtype=np.uint32),
                        syntax=ImplicitVRLittleEndian),
    "big-endian": dict(pixels=rng.integers(0, 4096, (4, 4), dtype=np.uint16), syntax=ExplicitVRBigEndian),
    "rle": dict(pixels=rng.integers(0, 4096, (4, 4), dtype=np.uint16), rle=True),
}
FAST = {"signed-12-garbage", "unsigned-10-garbage", "mono1-8bit", "multiframe-16", "rgb-planar0",
        "rgb-planar1-frames", "implicit-32"}


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lakehouse, list[dict]]:
    root = tmp_path_factory.mktemp("decode")
    for name, case in CASES.items():
        _instance(root / "drop", name, **case)
    tenant = Lakehouse(root / "lake").tenant("decode")
    summary = ingest([root / "drop"], tenant, IngestOptions(workers=1))
    assert summary.quarantined == 0, summary.errors
    rows = resolve(tenant, Selection(uids=(STUDY,))).instances.to_pylist()
    assert len(rows) == len(CASES)
    return tenant, rows


def test_decoded_pixels_and_metadata_equal_pydicom(resolved) -> None:
    tenant, rows = resolved
    fast = 0
    for row in rows:
        path = str(tenant.blobs.local_path(row["blob_key"]))
        source = pydicom.dcmread(path)
        decoded = decode_row(row, path)
        expected = source.pixel_array
        assert decoded.pixels.dtype == expected.dtype and decoded.pixels.shape == expected.shape
        np.testing.assert_array_equal(decoded.pixels, expected)
        assert decoded.pixels.flags.c_contiguous and decoded.pixels.flags.writeable
        fast += native_pixels(Path(path).read_bytes(), row) is not None
        meta = decoded.metadata
        assert meta["sop_instance_uid"] == source.SOPInstanceUID and meta["modality"] == "OT"
        assert meta["patient_age"] == "042Y" and meta["patient_sex"] == "F"
        assert meta["pixel_spacing"] == [0.5, 0.25] and meta["window_center"] == 40.0
        assert meta["window_width"] == 400.0 and meta["rescale_intercept"] == -1024.0
        assert meta["bits_stored"] == source.BitsStored and meta["rows"] == source.Rows
        assert meta["number_of_frames"] == int(source.get("NumberOfFrames", 1))
    assert fast == len(FAST)  # the rest went through pydicom


def test_a_row_that_does_not_match_its_file_falls_back_to_pydicom(resolved) -> None:
    tenant, rows = resolved
    row = next(r for r in rows if r["transfer_syntax_uid"] == ExplicitVRLittleEndian and r["rows"] == 4)
    path = str(tenant.blobs.local_path(row["blob_key"]))
    wrong = {**row, "rows": row["rows"] * 50}  # more pixels than the file holds
    assert native_pixels(Path(path).read_bytes(), wrong) is None
    np.testing.assert_array_equal(decode_row(wrong, path).pixels, pydicom.dcmread(path).pixel_array)
