"""Instances in Explicit VR Little Endian (the WADO-RS default): stored bytes when they already are,
else decoded (compressed pixel data) or re-encoded (implicit VR, big endian) with pydicom."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from typing import BinaryIO

from dicomlake.retrieve.instances import NotAcceptable, StoredInstance
from dicomlake.retrieve.pixels import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE_TRANSFER_SYNTAXES,
    can_decode,
)
from dicomlake.store.lakehouse import TenantStore

SPOOL_IN_MEMORY = 16 * 1024 * 1024  # larger results spill to a temp file


def needs_transcoding(instance: StoredInstance, transfer_syntax_uid: str) -> bool:
    return instance.transfer_syntax_uid != transfer_syntax_uid


def check_transcodable(instance: StoredInstance,
                       transfer_syntax_uid: str = EXPLICIT_VR_LITTLE_ENDIAN) -> None:
    """NotAcceptable unless the instance can be given in `transfer_syntax_uid`."""
    if not needs_transcoding(instance, transfer_syntax_uid):
        return
    if transfer_syntax_uid != EXPLICIT_VR_LITTLE_ENDIAN:
        raise NotAcceptable(
            f"the instance is stored as {instance.transfer_syntax_uid}; it can be retrieved as stored "
            f"(transfer-syntax=*) or as {EXPLICIT_VR_LITTLE_ENDIAN}, not as {transfer_syntax_uid}"
        )
    stored = instance.transfer_syntax_uid
    if stored not in NATIVE_TRANSFER_SYNTAXES and not can_decode(stored):
        raise NotAcceptable(
            f"the pixel data ({instance.transfer_syntax_uid}) cannot be decoded here; retrieve it as "
            "stored with transfer-syntax=*"
        )


def transcoded(tenant: TenantStore, instance: StoredInstance,
               transfer_syntax_uid: str = EXPLICIT_VR_LITTLE_ENDIAN) -> BinaryIO:
    """The instance's Part-10 bytes in `transfer_syntax_uid`, as a file object positioned at 0 (the
    caller closes it). NotAcceptable when the pixel data cannot be decoded."""
    check_transcodable(instance, transfer_syntax_uid)
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (returned open)
    try:
        with tenant.blobs.open(instance.blob_key) as source:
            if not needs_transcoding(instance, transfer_syntax_uid):
                shutil.copyfileobj(source, out, 1024 * 1024)
            else:
                _to_explicit_little(source, out)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out  # type: ignore[return-value]


def _to_explicit_little(source: BinaryIO, out: BinaryIO) -> None:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(source)
        syntax = ds.file_meta.TransferSyntaxUID
        try:
            if syntax.is_compressed:
                # Explicit VR Little Endian, image attributes fixed; the same instance, so its UID stays
                ds.decompress(generate_instance_uid=False)
            elif syntax == EXPLICIT_VR_BIG_ENDIAN and "PixelData" in ds:
                array = ds.pixel_array
                ds.PixelData = array.astype(array.dtype.newbyteorder("<")).tobytes()
                ds["PixelData"].VR = "OB" if ds.BitsAllocated <= 8 else "OW"
        except Exception as exc:
            raise NotAcceptable(f"the pixel data could not be decoded: {exc}") from exc
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if syntax == EXPLICIT_VR_BIG_ENDIAN:  # pydicom re-encodes big endian only when forced
            ds.preamble = ds.preamble or b"\0" * 128
            pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=True, force_encoding=True)
        else:
            pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
