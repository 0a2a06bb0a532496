"""Pixel data of a stored instance: where it is, its frames as stored, its frames decoded.

Frames as stored (PS3.18 8.7.3): native (uncompressed) pixel data gives each frame's raw bytes
(application/octet-stream, little endian); encapsulated pixel data gives each frame's compressed
bitstream in the media type of its transfer syntax (image/jpeg, image/jp2, image/jls,
image/dicom-rle...). Frames are read with seeks from the blob file; the rest of the pixel data is
never loaded. Decoding uses pydicom's pixel backends (pylibjpeg plugins, one frame at a time).
"""

from __future__ import annotations

import contextlib
import mmap
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from dicomlake.dicom.fastjson import header_to_json
from dicomlake.dicom.parse import BULK_DATA_THRESHOLD
from dicomlake.dicom.structure import file_meta_end
from dicomlake.retrieve.instances import InvalidRequest, NotAcceptable, NotFound, StoredInstance
from dicomlake.store.lakehouse import TenantStore

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
NATIVE_TRANSFER_SYNTAXES = frozenset(
    {IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
     EXPLICIT_VR_BIG_ENDIAN}
)  # fmt: skip
OCTET_STREAM = "application/octet-stream"
# Media types of compressed frames by transfer syntax (PS3.18 Table 8.7.3-2 and -5).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"}


@dataclass(frozen=True)
class PixelDataLocation:
    value_offset: int  # file offset of the value (the Basic Offset Table item when encapsulated)
    length: int | None  # None: undefined length (encapsulated)


@dataclass(frozen=True)
class Frame:
    number: int  # 1-based
    data: bytes
    media_type: str  # application/octet-stream or the compressed media type
    transfer_syntax_uid: str


def frame_media_type(transfer_syntax_uid: str) -> str:
    """The media type of a frame as stored under this transfer syntax."""
    if transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES:
        return OCTET_STREAM
    media = FRAME_MEDIA_TYPES.get(transfer_syntax_uid)
    if media is None:  # video and anything else not addressable frame by frame
        raise NotAcceptable(f"frames of transfer syntax {transfer_syntax_uid} cannot be retrieved one by one")
    return media


def can_decode(transfer_syntax_uid: str) -> bool:
    """Whether the installed pixel data decoders can decode this transfer syntax."""
    if transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES:
        return True
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(transfer_syntax_uid).is_available)
    except (NotImplementedError, ValueError):
        return False


def parse_frame_numbers(text: str) -> list[int]:
    """'1,3,5' -> [1, 3, 5]; InvalidRequest for anything but positive integers."""
    numbers = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise InvalidRequest(f"frame numbers are positive integers separated by commas, not {text!r}")
        numbers.append(int(part))
    return numbers


def check_frames(instance: StoredInstance, numbers: list[int]) -> None:
    if not instance.rows or not instance.columns:
        raise NotFound("the instance has no pixel data")
    for number in numbers:
        if number > instance.frames:
            raise NotFound(f"frame {number} does not exist: the instance has {instance.frames} frame(s)")


@contextlib.contextmanager
def _opened(tenant: TenantStore, instance: StoredInstance) -> Iterator[tuple[BinaryIO, Any]]:
    """The blob as (file object, bytes-like view): an mmap for local files, else the bytes."""
    handle = tenant.blobs.open(instance.blob_key)
    try:
        try:
            view: Any = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError, AttributeError, NotImplementedError):
            view = handle.read()
            handle.seek(0)
        try:
            yield handle, view
        finally:
            if isinstance(view, mmap.mmap):
                view.close()
    finally:
        handle.close()


def locate_pixel_data(view: Any, transfer_syntax_uid: str) -> PixelDataLocation:
    """Where the top-level pixel data value starts in a Part-10 file (not for deflated files)."""
    offset = file_meta_end(view)
    end = header_to_json(view, offset, transfer_syntax_uid, BULK_DATA_THRESHOLD).end_offset
    if end + 8 > len(view):
        raise NotFound("the instance has no pixel data")
    endian = ">" if transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN else "<"
    group, element = struct.unpack_from(endian + "HH", view, end)
    if (group << 16 | element) not in _PIXEL_TAGS:
        raise NotFound("the instance has no pixel data")
    vr = bytes(view[end + 4 : end + 6])
    if transfer_syntax_uid != IMPLICIT_VR_LITTLE_ENDIAN and vr in _LONG_VRS:
        (length,) = struct.unpack_from(endian + "I", view, end + 8)
        value = end + 12
    elif transfer_syntax_uid != IMPLICIT_VR_LITTLE_ENDIAN and vr.isalpha():
        (length,) = struct.unpack_from(endian + "H", view, end + 6)
        value = end + 8
    else:
        (length,) = struct.unpack_from(endian + "I", view, end + 4)
        value = end + 8
    return PixelDataLocation(value, None if length == 0xFFFFFFFF else length)


def stored_frames(tenant: TenantStore, instance: StoredInstance, numbers: list[int]) -> list[Frame]:
    """The frames as stored: raw native bytes (little endian) or each frame's compressed bitstream."""
    check_frames(instance, numbers)
    syntax = instance.transfer_syntax_uid
    media = frame_media_type(syntax)
    if syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return decoded_frames(tenant, instance, numbers)  # offsets are inside the deflated stream
    with _opened(tenant, instance) as (handle, view):
        location = locate_pixel_data(view, syntax)
        if location.length is None:
            from pydicom.encaps import get_frame

            frames = []
            for number in numbers:
                handle.seek(location.value_offset)
                data = get_frame(handle, number - 1, number_of_frames=instance.frames)
                frames.append(Frame(number, data, media, syntax))
            return frames
        return [Frame(n, _native_frame(view, location, instance, n), media, EXPLICIT_VR_LITTLE_ENDIAN)
                for n in numbers]


def _native_frame(view: Any, location: PixelDataLocation, instance: StoredInstance, number: int) -> bytes:
    bits = (instance.rows or 0) * (instance.columns or 0) * (instance.samples_per_pixel or 1) * (
        instance.bits_allocated or 8)
    start_bit = (number - 1) * bits
    assert location.length is not None
    if (start_bit + bits + 7) // 8 > location.length:
        raise NotFound(f"frame {number} is beyond the end of the pixel data")
    base = location.value_offset
    if bits % 8 == 0:
        data = bytes(view[base + start_bit // 8 : base + (start_bit + bits) // 8])
    else:  # 1-bit frames need not start on a byte: re-pack the frame's bits from bit 0
        first, last = start_bit // 8, (start_bit + bits + 7) // 8
        unpacked = np.unpackbits(np.frombuffer(view[base + first : base + last], np.uint8), bitorder="little")
        skip = start_bit - first * 8
        data = np.packbits(unpacked[skip : skip + bits], bitorder="little").tobytes()
    if instance.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN and (instance.bits_allocated or 8) > 8:
        width = (instance.bits_allocated or 16) // 8
        data = np.frombuffer(data, f">u{width}").astype(f"<u{width}").tobytes()
    return data


def decoded_frames(tenant: TenantStore, instance: StoredInstance, numbers: list[int]) -> list[Frame]:
    """Frames decoded to native little-endian bytes (as in Explicit VR Little Endian); NotAcceptable
    when no installed decoder handles the transfer syntax."""
    check_frames(instance, numbers)
    if instance.transfer_syntax_uid in (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN,
                                        EXPLICIT_VR_BIG_ENDIAN):
        return stored_frames(tenant, instance, numbers)
    frames = []
    for number in numbers:
        array = decode_frame(tenant, instance, number)
        frames.append(Frame(number, array.astype(array.dtype.newbyteorder("<")).tobytes(), OCTET_STREAM,
                            EXPLICIT_VR_LITTLE_ENDIAN))
    return frames


def decode_frame(tenant: TenantStore, instance: StoredInstance, number: int) -> np.ndarray:
    """One frame as an array (colour converted to RGB as pydicom does when decompressing)."""
    check_frames(instance, [number])
    if not can_decode(instance.transfer_syntax_uid):
        raise NotAcceptable(f"no installed decoder for transfer syntax {instance.transfer_syntax_uid}")
    from pydicom.pixels import pixel_array

    with tenant.blobs.open(instance.blob_key) as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pixel_array(handle, index=number - 1)
        except Exception as exc:
            raise NotAcceptable(f"the pixel data could not be decoded: {exc}") from exc
