"""Part-10 bytes -> a validated instance record: promoted columns, DICOM JSON, hash and size.

Only the header is decoded (fastjson stops before pixel data); the structural walk proves the rest
of the file is complete. Anything that cannot be stored raises InvalidInstance with a stable code.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from typing import Any

import orjson
import pydicom

from dicomlake.dicom.attributes import promoted_values
from dicomlake.dicom.fastjson import header_to_json, read_file_meta
from dicomlake.dicom.structure import PREAMBLE_LENGTH, check_structure, file_meta_end
from dicomlake.dicom.uid import MAX_UID_LENGTH, uid_problem
from dicomlake.errors import InvalidInstance

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
# Binary values above this size stay in the blob; the JSON carries a BulkDataURI instead.
BULK_DATA_THRESHOLD = 1024
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
# DICOM JSON keys of REQUIRED_UIDS: (0020,000D), (0020,000E), (0008,0018), (0008,0016).
_REQUIRED_UID_KEYS = {
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
    "SOPInstanceUID": "00080018",
    "SOPClassUID": "00080016",
}
_SNAKE = {
    "StudyInstanceUID": "study_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "SOPClassUID": "sop_class_uid",
}


@dataclass(frozen=True)
class ParsedInstance:
    """One storable instance: `record` maps column name -> value (see attributes.PROMOTED)."""

    record: dict[str, Any]
    sha256: str
    size: int

    @property
    def sop_instance_uid(self) -> str:
        return self.record["sop_instance_uid"]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _classify_non_part10(data: bytes) -> InvalidInstance:
    if data[:2] == b"\x1f\x8b":
        return InvalidInstance("gzip", "gzip-compressed data; decompress it before ingesting")
    if data[:4] == b"PK\x03\x04":
        return InvalidInstance("not_dicom", "a zip archive inside a drop; ingest it as a zip source")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
            looks_like_dataset = "SOPInstanceUID" in ds or "StudyInstanceUID" in ds
    except Exception:
        looks_like_dataset = False
    if looks_like_dataset:
        return InvalidInstance(
            "no_file_meta",
            "a bare DICOM dataset without the Part-10 preamble, 'DICM' prefix and file meta "
            "information (PS3.10 §7.1)",
        )
    return InvalidInstance("not_dicom", "not a DICOM Part-10 file (no 'DICM' prefix at byte 128)")


def parse_instance(data: bytes, sha256: str | None = None) -> ParsedInstance:
    """Validate and parse one Part-10 file; raise InvalidInstance with a clear reason otherwise.

    `data` may be any bytes-like object that slices to bytes, such as an `mmap` of a file: only
    the header and the element headers after it are read, so pixel data is never copied. Pass
    `sha256` when the caller already hashed the bytes (e.g. while spooling an upload to disk);
    otherwise they are hashed here.
    """
    if not data:
        raise InvalidInstance("zero_bytes", "the file is empty (0 bytes)")
    if len(data) < PREAMBLE_LENGTH + 4 or data[PREAMBLE_LENGTH : PREAMBLE_LENGTH + 4] != b"DICM":
        raise _classify_non_part10(data)
    dataset_offset = file_meta_end(data)
    meta = read_file_meta(data)
    if meta.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
        raise InvalidInstance(
            "dicomdir", "a DICOMDIR media directory, not an instance; ingest the files it indexes"
        )
    transfer_syntax = meta.get("TransferSyntaxUID", "").strip()
    if not transfer_syntax:
        raise InvalidInstance(
            "missing_transfer_syntax_uid", "the file meta information has no TransferSyntaxUID"
        )
    if problem := uid_problem(transfer_syntax):
        raise InvalidInstance("invalid_uid", f"TransferSyntaxUID {problem}")
    parsed = header_to_json(data, dataset_offset, transfer_syntax, BULK_DATA_THRESHOLD)
    check_structure(data, parsed.end_offset, transfer_syntax)  # pixel data and after: not walked yet
    header = parsed.header

    for keyword in REQUIRED_UIDS:
        values = (header.get(_REQUIRED_UID_KEYS[keyword]) or {}).get("Value") or []
        text = "\\".join(str(v) for v in values).strip()
        if not text:
            raise InvalidInstance(f"missing_{_SNAKE[keyword]}", f"{keyword} is missing or empty")
        if problem := uid_problem(text):
            code = "uid_too_long" if len(text) > MAX_UID_LENGTH else "invalid_uid"
            raise InvalidInstance(code, f"{keyword} {problem}")

    try:
        header_json = orjson.dumps(header).decode()  # compact UTF-8 JSON, ~5x faster than json
    except orjson.JSONEncodeError:  # e.g. an IS value beyond 64 bits, which orjson refuses
        header_json = json.dumps(header, ensure_ascii=False, separators=(",", ":"))
    record = promoted_values(header)
    record["transfer_syntax_uid"] = transfer_syntax
    record["dicom_json"] = header_json
    record["warnings"] = parsed.warnings  # one sentence per value that was not converted cleanly
    return ParsedInstance(record=record, sha256=sha256 or sha256_hex(data), size=len(data))
