"""Decode one instance for export with as little parsing as the pixels allow.

The metadata columns come from the `instances` row the selection resolved (its promoted columns
were read from the header at ingest), so the header is not parsed again here. The pixels:
  - native little-endian pixel data (Implicit / Explicit VR Little Endian, 8, 16 or 32 bits
    allocated, monochrome, palette or RGB): a walk over the element headers (values skipped) finds
    the top-level Pixel Data, and numpy views its bytes with the row's Rows, Columns, Samples per
    Pixel, Bits Allocated/Stored and Pixel Representation; unused high bits are corrected (masked,
    or sign-extended) as pydicom does, so the array equals `Dataset.pixel_array`;
  - anything else (encapsulated, deflated, big endian, YBR, 1-bit, a file that does not match its
    row): `pydicom.pixels.pixel_array`, which reads only the Image Pixel module, not the whole header.
tests/export/test_decode.py holds both paths to `pydicom.dcmread(...).pixel_array`.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Any

import numpy as np

from dicomlake.dicom.structure import _Walker, file_meta_end
from dicomlake.export.parquet import Decoded, NoPixelData, has_pixel_data

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
FAST_SYNTAXES = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN})
FAST_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB"})
PIXEL_DATA = 0x7FE00010
PLANAR_CONFIGURATION = 0x00280006
UNDEFINED_LENGTH = 0xFFFFFFFF
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
# Explicit VRs with a 4-byte length field (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# The metadata columns of a Parquet row, read from the `instances` row of the same name.
METADATA_COLUMNS = (
    "study_instance_uid", "series_instance_uid", "sop_instance_uid", "patient_id", "study_date",
    "patient_age", "patient_sex",
    "modality", "body_part_examined", "pixel_spacing", "image_orientation_patient", "image_position_patient",
    "rescale_slope", "rescale_intercept", "window_center", "window_width", "photometric_interpretation",
    "bits_allocated", "bits_stored", "rows", "columns",
)  # fmt: skip
# What decoding needs from the row beyond those.
PIXEL_COLUMNS = ("transfer_syntax_uid", "samples_per_pixel", "pixel_representation", "number_of_frames")


def pixel_data_value(data: bytes | memoryview, transfer_syntax_uid: str) -> tuple[int, int, int] | None:
    """(value offset, value length, Planar Configuration) of the top-level native Pixel Data of a
    little-endian Part-10 file, or None when there is none of a defined length."""
    explicit = transfer_syntax_uid != IMPLICIT_VR_LITTLE_ENDIAN
    pos, end = file_meta_end(data), len(data)
    planar = 0
    skipper: _Walker | None = None
    while pos + 8 <= end:
        group, element = _TAG.unpack_from(data, pos)
        tag = group << 16 | element
        vr = bytes(data[pos + 4 : pos + 6])
        if explicit and vr.isalpha() and vr.isupper():
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    return None
                length, pos = _U32.unpack_from(data, pos + 8)[0], pos + 12
            else:
                length, pos = _U16.unpack_from(data, pos + 6)[0], pos + 8
        else:
            length, pos = _U32.unpack_from(data, pos + 4)[0], pos + 8
        if tag == PIXEL_DATA:
            return None if length == UNDEFINED_LENGTH or pos + length > end else (pos, length, planar)
        if length == UNDEFINED_LENGTH:  # a sequence: walk its items to find where it ends
            skipper = skipper or _Walker(bytes(data), explicit, little=True)
            pos = skipper.items(pos, 1, (group, element))
            continue
        if tag == PLANAR_CONFIGURATION and length == 2:
            planar = _U16.unpack_from(data, pos)[0]
        elif tag > PIXEL_DATA:
            return None
        pos += length
    return None


def native_pixels(data: bytes | memoryview, row: dict[str, Any]) -> np.ndarray | None:
    """The pixel array as pydicom's `pixel_array` gives it, or None when the fast path does not apply."""
    bits = row.get("bits_allocated")
    photometric = str(row.get("photometric_interpretation") or "").upper()
    if row.get("transfer_syntax_uid") not in FAST_SYNTAXES or bits not in (8, 16, 32):
        return None
    if photometric not in FAST_PHOTOMETRICS:
        return None
    rows, columns = row.get("rows") or 0, row.get("columns") or 0
    samples, frames = row.get("samples_per_pixel") or 1, row.get("number_of_frames") or 1
    stored = row.get("bits_stored") or bits
    if not rows or not columns or samples not in (1, 3) or not 1 <= stored <= bits:
        return None
    found = pixel_data_value(data, row["transfer_syntax_uid"])
    count = rows * columns * samples * frames
    if found is None or found[1] < count * bits // 8:
        return None  # let pydicom say what is wrong with it
    offset, _, planar = found
    signed = bool(row.get("pixel_representation"))
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    array = np.frombuffer(data, dtype, count=count, offset=offset).copy()  # owns its memory
    if samples == 1:
        shape: tuple[int, ...] = (frames, rows, columns)
    elif planar == 1:
        array = array.reshape(frames, samples, rows, columns).transpose(0, 2, 3, 1)
        shape = (frames, rows, columns, samples)
    else:
        shape = (frames, rows, columns, samples)
    array = np.ascontiguousarray(array.reshape(shape))
    if frames == 1:
        array = array[0]
    if stored < bits:  # as pydicom: drop the unused high bits (sign-extending signed values)
        shift = bits - stored
        np.left_shift(array, shift, out=array)
        np.right_shift(array, shift, out=array)
    return array


def _read(source: str | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as handle:
        return handle.read()


def _pydicom_pixels(data: bytes) -> np.ndarray:
    """`pydicom.pixels.pixel_array`; NoPixelData when the file holds no pixel data element."""
    import pydicom
    from pydicom.pixels import pixel_array

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pixel_array(io.BytesIO(data))
        except Exception:
            if not has_pixel_data(pydicom.dcmread(io.BytesIO(data), defer_size=256)):
                raise NoPixelData() from None
            raise


def decode_row(row: dict[str, Any], source: str | bytes) -> Decoded:
    """One instance of a resolved selection (its `instances` row) decoded from its Part-10 bytes."""
    data = _read(source)
    pixels = native_pixels(data, row)
    if pixels is None:
        pixels = _pydicom_pixels(data)
    frames = int(row.get("number_of_frames") or 1)
    metadata = {name: row.get(name) for name in METADATA_COLUMNS}
    metadata["number_of_frames"] = frames
    if metadata["study_date"] is not None:  # a date in the table; the DICOM DA text in the export
        metadata["study_date"] = metadata["study_date"].strftime("%Y%m%d")
    return Decoded(metadata, np.ascontiguousarray(pixels), frames)
