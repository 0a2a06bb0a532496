"""The de-identifier: PS3.15 Annex E Basic Application Level Confidentiality Profile, with the
Retain Longitudinal Temporal Information with Modified Dates, Retain Patient Characteristics and
Clean Descriptors options, applied to every element at every depth of a pydicom Dataset.

Pixel data is copied untouched: text burned into the pixels (BurnedInAnnotation) is not found or
removed here.
"""

from __future__ import annotations

import uuid
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomlake.deid import profile
from dicomlake.deid.iod_types import IodContext, attribute_type, resolve_combined
from dicomlake.deid.keyed import KeyedDerivations
from dicomlake.deid.options import DeidError, DeidOptions
from dicomlake.deid.values import TEXT_VRS, clean_text, dummy_value, shift_date_value

__all__ = ["IMPLEMENTATION_CLASS_UID", "METHOD_CODES", "Deidentifier"]

IMPLEMENTATION_CLASS_UID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "dicomlake:deid").int)
IMPLEMENTATION_VERSION_NAME = "DICOMLAKE_DEID"

# CID 7050 De-identification Method: the profile and each option used.
METHOD_CODES: dict[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "retain_long_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
}
_METHOD_TEXT = {
    "basic": "PS3.15 E.1 Basic Profile",
    "retain_long_modified_dates": "Retain Longitudinal Modified Dates",
    "retain_patient_characteristics": "Retain Patient Characteristics",
    "clean_descriptors": "Clean Descriptors",
    "retain_safe_private": "Retain Safe Private (whitelist)",
}

_DATE_VRS = frozenset({"DA", "DT", "TM"})
_STRING_VRS = TEXT_VRS | {"DS", "IS", "UI"}
# UIDs naming a kind of thing, not an instance: never replaced (private SOP classes included).
_KEPT_UID_KEYWORDS = frozenset({"CodingSchemeUID", "MappingResourceUID", "ContextGroupExtensionCreatorUID"})
_PATIENT_ID = 0x00100020
_PATIENT_NAME = 0x00100010
_TIMEZONE_OFFSET = 0x00080201
_SEQUENCE_DELIMITERS = frozenset({0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD})


def _keeps_uid(keyword: str) -> bool:
    return keyword.endswith(("ClassUID", "TransferSyntaxUID")) or keyword in _KEPT_UID_KEYWORDS


def _is_registered_uid(value: str) -> bool:
    return value.startswith("1.2.840.10008.") or UID(value).name != value


def _values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue | list) else [value]


def _with_values(elem: DataElement, values: list[Any]) -> DataElement:
    value: Any = values[0] if len(values) == 1 else (values or None)
    if value is None and elem.VR in _STRING_VRS:
        value = ""
    return DataElement(elem.tag, elem.VR, value)


class Deidentifier:
    """De-identifies datasets and Part-10 files under one set of DeidOptions (see README)."""

    def __init__(self, options: DeidOptions) -> None:
        if not isinstance(options, DeidOptions):
            raise DeidError(f"Deidentifier needs DeidOptions, got {type(options).__name__}")
        self.options = options
        self._keyed = KeyedDerivations(options.project_key)

    # -- keyed derivations -------------------------------------------------------------------------

    def map_uid(self, uid: str) -> str:
        """The replacement for `uid`: "2.25.<int>", the same for the same (project key, uid)."""
        if not isinstance(uid, str):
            raise DeidError(f"a UID is a string, got {type(uid).__name__}")
        return self._keyed.uid(uid.strip().rstrip("\x00"))

    def pseudonym(self, patient_id: str) -> str:
        """The PatientID pseudonym: HMAC-SHA256(project key, PatientID), 32 hex digits."""
        if not isinstance(patient_id, str):
            raise DeidError(f"a PatientID is a string, got {type(patient_id).__name__}")
        return self._keyed.pseudonym(patient_id.strip())

    def date_shift_days(self, patient_id: str) -> int:
        """Days all of this patient's dates move by under the longitudinal option (negative)."""
        if not isinstance(patient_id, str):
            raise DeidError(f"a PatientID is a string, got {type(patient_id).__name__}")
        return self._keyed.date_shift_days(patient_id.strip())

    # -- what was done -----------------------------------------------------------------------------

    def _methods(self) -> list[str]:
        methods = ["basic", *self.options.option_columns]
        if self.options.whitelist:
            methods.append("retain_safe_private")
        return methods

    def describe(self) -> dict[str, Any]:
        """A JSON-able record of the profile and options (never the key), for export manifests."""
        rows = profile.rows()
        return {
            "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
            "table": "PS3.15 Table E.1-1 (dicomlake/deid/table_e1_1.tsv)",
            "table_rows": len(rows),
            "options": {
                "retain_longitudinal_modified_dates": self.options.retain_longitudinal_modified_dates,
                "retain_patient_characteristics": self.options.retain_patient_characteristics,
                "clean_descriptors": self.options.clean_descriptors,
            },
            "private_tag_whitelist": [list(entry) for entry in self.options.private_tag_whitelist],
            "method_codes": [
                {"code_value": METHOD_CODES[m][0], "coding_scheme": "DCM", "code_meaning": METHOD_CODES[m][1]}
                for m in self._methods()
            ],
            "pseudonym": "HMAC-SHA256(project key, PatientID), 32 hex digits, as PatientID and PatientName",
            "uids": "2.25.<128 bits of HMAC-SHA256(project key, UID)>",
            "date_shift": (
                "per patient, whole days, from HMAC-SHA256(project key, PatientID)"
                if self.options.retain_longitudinal_modified_dates
                else "dates removed or emptied"
            ),
            "pixel_data": "unchanged (burned-in annotation is not removed)",
        }

    # -- de-identification -------------------------------------------------------------------------

    def deidentify(self, ds: Dataset) -> Dataset:
        """A new, de-identified Dataset; `ds` is left as it was."""
        if not isinstance(ds, Dataset):
            raise DeidError(f"deidentify needs a pydicom Dataset, got {type(ds).__name__}")
        patient_id = str(ds.get("PatientID", "") or "")
        shift = self.date_shift_days(patient_id) if self.options.retain_longitudinal_modified_dates else None
        run = _Run(self, IodContext.of(ds), shift)
        out = run.dataset(ds, nested=False, in_dummy=False)

        pseudonym = self.pseudonym(patient_id)
        out.PatientID = pseudonym
        out.PatientName = f"{pseudonym}^"  # family name = pseudonym; the caret keeps the PN form current
        out.PatientIdentityRemoved = "YES"
        methods = self._methods()
        out.DeidentificationMethod = [_METHOD_TEXT[m] for m in methods]
        codes = []
        for method in methods:
            item = Dataset()
            item.CodeValue, item.CodeMeaning = METHOD_CODES[method]
            item.CodingSchemeDesignator = "DCM"
            codes.append(item)
        out.DeidentificationMethodCodeSequence = Sequence(codes)
        out.LongitudinalTemporalInformationModified = "MODIFIED" if shift is not None else "REMOVED"

        source_meta = getattr(ds, "file_meta", None)
        if source_meta is not None or "SOPInstanceUID" in out:
            out.file_meta = self._file_meta(out, source_meta)
        return out

    def _file_meta(self, out: Dataset, source_meta: FileMetaDataset | None) -> FileMetaDataset:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = out.get("SOPClassUID", "")
        meta.MediaStorageSOPInstanceUID = out.get("SOPInstanceUID", "")
        transfer_syntax = source_meta.get("TransferSyntaxUID") if source_meta is not None else None
        meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        return meta

    def deidentify_bytes(self, data: bytes) -> bytes:
        """A de-identified Part-10 file for the Part-10 file `data` (file meta rebuilt)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DeidError(f"deidentify_bytes needs bytes, got {type(data).__name__}")
        try:
            ds = pydicom.dcmread(BytesIO(bytes(data)))
        except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as exc:
            raise DeidError(f"not a readable DICOM Part-10 file: {exc}") from exc
        try:
            out = self.deidentify(ds)
            if "SOPClassUID" not in out or "SOPInstanceUID" not in out:
                raise DeidError("the file has no SOPClassUID/SOPInstanceUID: it cannot be written as Part-10")
            buffer = BytesIO()
            pydicom.dcmwrite(buffer, out, enforce_file_format=True)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            if isinstance(exc, DeidError):
                raise
            raise DeidError(f"the file has a value that cannot be read or written: {exc}") from exc
        return buffer.getvalue()


class _Run:
    """One dataset's de-identification: the IOD context and the patient's date shift."""

    def __init__(self, deid: Deidentifier, context: IodContext, shift: int | None) -> None:
        self.deid = deid
        self.options = deid.options
        self.columns = deid.options.option_columns
        self.context = context
        self.shift = shift

    def dataset(self, ds: Dataset, nested: bool, in_dummy: bool) -> Dataset:
        out = Dataset()
        dropped_overlays: set[int] = set()
        for elem in ds:
            new = self.element(ds, elem, nested, in_dummy)
            if new is not None:
                out.add(new)
            elif 0x6000 <= elem.tag.group <= 0x601E and elem.tag.element == 0x3000:
                dropped_overlays.add(elem.tag.group)
        # An overlay whose data is removed leaves no half Overlay Plane module behind.
        for group in dropped_overlays:
            for tag in [elem.tag for elem in out if elem.tag.group == group]:
                del out[tag]
        return out

    def element(self, parent: Dataset, elem: DataElement, nested: bool, in_dummy: bool) -> DataElement | None:
        tag: BaseTag = elem.tag
        if tag.group == 0x0002 or tag.element == 0x0000 or int(tag) in _SEQUENCE_DELIMITERS:
            return None  # file meta is rebuilt; group lengths are recomputed by writers
        if tag.is_private:
            return self.private(parent, elem, nested, in_dummy)
        row = profile.row_for_tag(int(tag))
        if row is None:
            return self.unlisted(elem, nested, in_dummy)
        code = profile.effective_code(row, self.columns)
        return self.apply(elem, row, code, nested, in_dummy)

    # -- actions ------------------------------------------------------------------------------------

    def apply(
        self, elem: DataElement, row: profile.ProfileRow, code: str, nested: bool, in_dummy: bool
    ) -> DataElement | None:
        keyword = elem.keyword or ""
        if "/" in code:
            code = resolve_combined(code, attribute_type(keyword, self.context, nested))
        if code == "X":
            return None
        if code == "K":
            return self.unlisted(elem, nested, in_dummy)
        if code == "Z":
            return self.zero(elem)
        if code == "D":
            return self.dummy(elem, nested)
        if code == "U":
            return self.replace_uids(elem, nested, in_dummy)
        # C: clean, by the option that asked for it
        cleaned = self.clean(elem, nested, in_dummy)
        if cleaned is not None:
            return cleaned
        return self.apply(elem, row, row.basic, nested, in_dummy)

    def zero(self, elem: DataElement) -> DataElement:
        if int(elem.tag) == _PATIENT_ID and _values(elem):
            return DataElement(elem.tag, elem.VR, self.deid.pseudonym(str(elem.value)))
        if elem.VR == "SQ":
            return DataElement(elem.tag, "SQ", Sequence())
        return _with_values(elem, [])

    def dummy(self, elem: DataElement, nested: bool) -> DataElement:
        if elem.VR == "SQ":
            items = [self.dataset(item, nested=True, in_dummy=True) for item in elem.value]
            return DataElement(elem.tag, "SQ", Sequence(items))
        if int(elem.tag) == _PATIENT_ID:
            return DataElement(elem.tag, elem.VR, self.deid.pseudonym(str(elem.value or "")))
        if elem.VR == "UI":
            values = _values(elem)
            return _with_values(elem, [self.deid.map_uid(str(v)) for v in values] or [self.deid.map_uid("")])
        return DataElement(elem.tag, elem.VR, dummy_value(elem.VR))

    def replace_uids(self, elem: DataElement, nested: bool, in_dummy: bool) -> DataElement:
        if elem.VR == "SQ":  # X/Z/U* kept: the items stay, every UID in them is replaced
            items = [self.dataset(item, nested=True, in_dummy=in_dummy) for item in elem.value]
            return DataElement(elem.tag, "SQ", Sequence(items))
        return _with_values(elem, [self.deid.map_uid(str(v)) for v in _values(elem)])

    def clean(self, elem: DataElement, nested: bool, in_dummy: bool) -> DataElement | None:
        """The C action; None when this element cannot be cleaned (the Basic action then applies)."""
        if elem.VR == "SQ":  # coded descriptors: keep the items, with the profile applied inside
            items = [self.dataset(item, nested=True, in_dummy=in_dummy) for item in elem.value]
            return DataElement(elem.tag, "SQ", Sequence(items))
        if elem.VR in _DATE_VRS and self.shift is not None:
            shifted = [shift_date_value(elem.VR, str(v), self.shift) for v in _values(elem)]
            return None if None in shifted else _with_values(elem, shifted)
        if int(elem.tag) == _TIMEZONE_OFFSET and self.shift is not None:
            return self.unlisted(elem, nested, in_dummy)  # needed to read the (kept) times of day
        if elem.VR in TEXT_VRS:
            cleaned = [clean_text(str(v)) for v in _values(elem)]
            return None if None in cleaned else _with_values(elem, cleaned)
        return None

    def unlisted(self, elem: DataElement, nested: bool, in_dummy: bool) -> DataElement:
        """An element the table does not govern (or keeps): copied, with the profile applied inside
        sequences and instance UIDs replaced; inside a D sequence its text becomes a dummy."""
        if elem.VR == "SQ":
            items = [self.dataset(item, nested=True, in_dummy=in_dummy) for item in elem.value]
            return DataElement(elem.tag, "SQ", Sequence(items))
        if elem.VR == "UI":
            if _keeps_uid(elem.keyword or ""):
                return _with_values(elem, _values(elem))
            return _with_values(
                elem,
                [str(v) if _is_registered_uid(str(v)) else self.deid.map_uid(str(v)) for v in _values(elem)],
            )
        if in_dummy and elem.VR in TEXT_VRS and elem.VR != "CS" and _values(elem):
            return DataElement(elem.tag, elem.VR, dummy_value(elem.VR))
        value = elem.value
        if isinstance(value, MultiValue | list):
            value = list(value)
        return DataElement(elem.tag, elem.VR, value, is_undefined_length=elem.is_undefined_length)

    def private(self, parent: Dataset, elem: DataElement, nested: bool, in_dummy: bool) -> DataElement | None:
        """Private elements go (Table E.1-1 row (gggg,eeee)) unless the whitelist names them."""
        tag = elem.tag
        whitelist = self.options.whitelist
        if not whitelist:
            return None
        if tag.is_private_creator:
            creator = str(elem.value or "").strip()
            keep = any(k.group == tag.group and k.creator == creator for k in whitelist)
            return self.unlisted(elem, nested, in_dummy) if keep else None
        block = tag.element >> 8
        if block < 0x10:
            return None
        creator_elem = parent.get((tag.group << 16) | block)
        creator = str(creator_elem.value or "").strip() if creator_elem is not None else ""
        offset = tag.element & 0xFF
        wanted = (tag.group, creator, offset)
        if any((k.group, k.creator, k.element_offset) == wanted for k in whitelist):
            return self.unlisted(elem, nested, in_dummy)
        return None
