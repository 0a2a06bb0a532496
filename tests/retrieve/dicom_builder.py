"""Part-10 files for the STOW/WADO tests, built with pydicom (independent of our parser)."""

from __future__ import annotations

import io
import itertools
import warnings

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
_numbers = itertools.count(1)


def uid() -> str:
    return generate_uid(prefix="1.2.826.0.1.3680043.10.543.")


def _meta(sop_class: str, sop: str, syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = syntax
    return meta


def header(study: str, series: str, sop: str, *, rows: int = 8, columns: int = 8, frames: int = 1,
           bits: int = 16, samples: int = 1, photometric: str = "MONOCHROME2", patient_id: str = "P1",
           window: tuple[float, float] | None = None, syntax: str = ExplicitVRLittleEndian,
           sop_class: str = SECONDARY_CAPTURE) -> Dataset:
    ds = Dataset()
    ds.file_meta = _meta(sop_class, sop, syntax)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = patient_id
    ds.PatientName = "Test^Stow"
    ds.StudyDate = "20240101"
    ds.Modality = "OT"
    ds.InstanceNumber = next(_numbers)
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    return ds


def encode(ds: Dataset) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def instance(study: str | None = None, series: str | None = None, sop: str | None = None, *,
             pixels: np.ndarray | None = None, **kwargs) -> bytes:
    """An uncompressed instance (explicit VR little endian) with the given or a gradient image."""
    study, series, sop = study or uid(), series or uid(), sop or uid()
    ds = header(study, series, sop, **kwargs)
    if pixels is None:
        shape = (kwargs.get("frames", 1), ds.Rows, ds.Columns)
        pixels = (np.arange(np.prod(shape), dtype=np.uint16) % 4096).reshape(shape)
    dtype = np.uint8 if ds.BitsAllocated == 8 else np.uint16
    ds.PixelData = pixels.astype(dtype).tobytes()
    return encode(ds)


def from_testdata(name: str, study: str | None = None, series: str | None = None,
                  sop: str | None = None) -> bytes:
    """A pydicom test file with new UIDs (its transfer syntax and pixel data as they are)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file(name))
    ds.StudyInstanceUID = study or uid()
    ds.SeriesInstanceUID = series or uid()
    ds.SOPInstanceUID = sop or uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return encode(ds)


def pixel_data_header(length: int) -> bytes:
    """The element header of a top-level (7FE0,0010) OW value of `length` bytes (explicit VR LE)."""
    return b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little")
