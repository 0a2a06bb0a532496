"""Extended query tags: what a tag is, how a request to add one is checked, and its canonical key.

A tag is named by keyword ("PatientWeight") or by its 8 hex digits ("00101030", "(0010,1030)").

- Standard tags (even group): the VR comes from the data dictionary (a VR given must match it),
  the key is the path, e.g. "00101030". The level defaults by group/attribute (DEFAULT_LEVELS):
  patient and study attributes -> study, series attributes -> series, anything else -> instance.
- Private tags (odd group): VR and private creator are required, and the level defaults to
  instance. The path's last byte is the element offset inside the block the creator reserves
  in each instance: "00091010" + "ACME 1.0" means element 0x10 of whichever block (0009,00xx) =
  "ACME 1.0" names, so (0009,1110) in an instance where the creator sits at (0009,0011). The
  block byte of the path is normalised to 10 ("00091110" -> "00091010"); the key is
  "<path>:<creator>", e.g. "00091010:ACME 1.0".

Refused: sequences (SQ) and binary VRs (OB, OD, OF, OL, OV, OW, UN: nothing to match on), file
meta (group 0002), command and directory groups (0000, 0004), group lengths (gggg,0000),
private creator slots (gggg,00xx), item delimiters (FFFE), the attributes search already
supports (the promoted columns) and those it computes (ModalitiesInStudy, NumberOf*Related*).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from typing import Any

from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag, tag_for_keyword

from dicomlake.dicom.attributes import PROMOTED
from dicomlake.errors import InvalidQueryTag

LEVELS = ("study", "series", "instance")
STATUSES = ("adding", "ready", "deleting")
QUERY_STATUSES = ("enabled", "disabled")

# PS3.5 6.2: maximum length of one value, in characters (PN: per component group).
MAX_LENGTH: dict[str, int] = {
    "AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "LT": 10240,
    "PN": 64, "SH": 16, "ST": 1024, "TM": 14, "UI": 64, "AT": 8,
}  # fmt: skip
DATE_VRS = frozenset({"DA"})
INT_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
FLOAT_VRS = frozenset({"DS", "FL", "FD"})
STRING_VRS = frozenset({"AE", "AS", "AT", "CS", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                        "UR", "UT"})
INDEXABLE_VRS = DATE_VRS | INT_VRS | FLOAT_VRS | STRING_VRS
REFUSED_VRS = {"SQ": "a sequence", **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), "binary")}

# Attributes search computes itself: indexing their (usually absent) header values would be wrong.
COMPUTED = {
    0x00080061: "ModalitiesInStudy",
    0x00201200: "NumberOfPatientRelatedStudies",
    0x00201202: "NumberOfPatientRelatedSeries",
    0x00201204: "NumberOfPatientRelatedInstances",
    0x00201206: "NumberOfStudyRelatedSeries",
    0x00201208: "NumberOfStudyRelatedInstances",
    0x00201209: "NumberOfSeriesRelatedInstances",
}
BUILT_IN = {int(p.json_key, 16): p.keyword for p in PROMOTED}

# Default level of a standard tag when none is given: patient and study attributes -> study,
# series attributes -> series, anything else -> instance. Whole groups first, then single tags.
_STUDY_GROUPS = {0x0010, 0x0032, 0x0038}  # patient, study (retired), visit
_SERIES_GROUPS = {0x0040}  # performed procedure step (series level in QIDO)
_STUDY_KEYWORDS = {
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription",
    "PhysiciansOfRecord", "IssuerOfAccessionNumberSequence", "ReasonForPerformedProcedureCodeSequence",
    "PatientAge", "PatientSize", "PatientWeight", "Occupation", "AdditionalPatientHistory",
}  # fmt: skip
_SERIES_KEYWORDS = {
    "Modality", "SeriesDescription", "SeriesDate", "SeriesTime", "SeriesNumber", "Laterality",
    "BodyPartExamined", "ProtocolName", "PerformingPhysicianName", "OperatorsName", "PatientPosition",
    "FrameOfReferenceUID", "StationName", "Manufacturer", "ManufacturerModelName", "DeviceSerialNumber",
    "SoftwareVersions", "InstitutionName", "InstitutionalDepartmentName", "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries", "PositionReferenceIndicator",
}  # fmt: skip


def default_level(tag: int, keyword: str | None) -> str:
    if keyword in _STUDY_KEYWORDS or tag >> 16 in _STUDY_GROUPS:
        return "study"
    if keyword in _SERIES_KEYWORDS or tag >> 16 in _SERIES_GROUPS:
        return "series"
    return "instance"


@dataclass(frozen=True)
class QueryTag:
    """One extended query tag, as the catalog holds it.

    `indexed_through` is the seq up to which values are indexed (the tag's watermark);
    `error_count` how many values could not be indexed (see tags.tag_errors).
    """

    key: str
    path: str
    keyword: str | None
    vr: str
    private_creator: str | None
    level: str
    status: str = "adding"
    query_status: str = "enabled"
    error_count: int = 0
    indexed_through: int = 0
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    id: str = field(default="", compare=False)

    @property
    def is_private(self) -> bool:
        return self.private_creator is not None

    @property
    def tag(self) -> int:
        return int(self.path, 16)

    @property
    def queryable(self) -> bool:
        return self.status == "ready" and self.query_status == "enabled"

    def with_(self, **changes: Any) -> QueryTag:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": self.path,
            "keyword": self.keyword,
            "vr": self.vr,
            "private_creator": self.private_creator,
            "level": self.level,
            "status": self.status,
            "query_status": self.query_status,
            "error_count": self.error_count,
            "indexed_through": self.indexed_through,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }

    def row(self) -> dict[str, Any]:
        return {**self.as_dict(), "id": self.id, "created_at": self.created_at, "updated_at": self.updated_at}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> QueryTag:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in row.items() if k in names})


@dataclass(frozen=True)
class TagSpec:
    """A request to add a tag: `tag` is a keyword or hex path; the rest as the CLI takes them."""

    tag: str
    vr: str | None = None
    level: str | None = None
    private_creator: str | None = None

    @classmethod
    def of(cls, value: TagSpec | str | dict[str, Any]) -> TagSpec:
        if isinstance(value, TagSpec):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict):
            known = {"tag", "path", "keyword", "vr", "level", "private_creator"}
            unknown = set(value) - known
            if unknown:
                raise InvalidQueryTag(f"unknown field(s) {sorted(unknown)} in {value!r}")
            name = value.get("tag") or value.get("path") or value.get("keyword")
            if not name:
                raise InvalidQueryTag(f"{value!r} names no tag (give 'tag', 'path' or 'keyword')")
            return cls(name, value.get("vr"), value.get("level"), value.get("private_creator"))
        raise InvalidQueryTag(f"cannot read a query tag from {value!r}")


_HEX = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?$")
_PRIVATE_CREATOR_BAD = re.compile(r"[\\\x00-\x1f]")


def parse_path(text: str) -> int:
    """'00101030', '(0010,1030)', '0010,1030' -> 0x00101030; keywords are resolved too."""
    name = text.strip()
    match = _HEX.match(name)
    if match:
        return int(match.group(1) + match.group(2), 16)
    tag = tag_for_keyword(name)
    if tag is None:
        raise InvalidQueryTag(f"{text!r} is neither a DICOM keyword nor a tag in hex (e.g. 00101030)")
    return tag


def private_key(path: str, creator: str) -> str:
    return f"{path}:{creator}"


def resolve(spec: TagSpec | str | dict[str, Any], now: dt.datetime | None = None) -> QueryTag:
    """Check a request to add a tag and return the tag it describes (status adding)."""
    spec = TagSpec.of(spec)
    tag = parse_path(spec.tag)
    group, element = tag >> 16, tag & 0xFFFF
    shown = f"({group:04X},{element:04X})"
    vr = spec.vr.strip().upper() if spec.vr else None
    level = spec.level.strip().lower() if spec.level else None
    if level is not None and level not in LEVELS:
        raise InvalidQueryTag(f"{shown}: level {spec.level!r} must be one of {', '.join(LEVELS)}")
    if group == 0x0002:
        raise InvalidQueryTag(f"{shown} is a file meta element (group 0002), not part of the dataset")
    if group in (0x0000, 0x0004):
        raise InvalidQueryTag(f"{shown}: group {group:04X} holds command/directory elements, not data")
    if group == 0xFFFE:
        raise InvalidQueryTag(f"{shown} is an item delimiter, not an attribute")
    if element == 0x0000:
        raise InvalidQueryTag(f"{shown} is a group length element")
    if vr is not None and vr in REFUSED_VRS:
        raise InvalidQueryTag(f"{shown}: VR {vr} is {REFUSED_VRS[vr]} and cannot be indexed")
    if vr is not None and vr not in INDEXABLE_VRS:
        raise InvalidQueryTag(f"{shown}: {vr!r} is not a DICOM VR")
    stamp = now or dt.datetime.now(dt.UTC)
    if group % 2:
        return _private(tag, shown, vr, level, spec.private_creator, stamp)
    if spec.private_creator is not None:
        raise InvalidQueryTag(f"{shown} is a standard tag: it takes no private creator")
    if tag in BUILT_IN:
        raise InvalidQueryTag(f"{shown} {BUILT_IN[tag]} is already searchable (a built-in key)")
    if tag in COMPUTED:
        raise InvalidQueryTag(f"{shown} {COMPUTED[tag]} is computed by search, not indexed")
    try:
        dictionary = dictionary_VR(tag)
    except KeyError:
        raise InvalidQueryTag(f"{shown} is not in the DICOM data dictionary") from None
    keyword = keyword_for_tag(tag) or None
    choices = [v.strip() for v in dictionary.split(" or ")]
    if vr is None:
        if all(choice in REFUSED_VRS for choice in choices):
            raise InvalidQueryTag(f"{shown} {keyword}: VR {dictionary} is {REFUSED_VRS[choices[0]]} "
                                  "and cannot be indexed")
        if len(choices) > 1:
            raise InvalidQueryTag(f"{shown} {keyword}: its VR is one of {dictionary}; give --vr")
        vr = choices[0]
    elif vr not in choices:
        raise InvalidQueryTag(f"{shown} {keyword}: VR {vr} does not match the dictionary VR {dictionary}")
    if vr in REFUSED_VRS:
        raise InvalidQueryTag(f"{shown} {keyword}: VR {vr} is {REFUSED_VRS[vr]} and cannot be indexed")
    if vr not in INDEXABLE_VRS:
        raise InvalidQueryTag(f"{shown} {keyword}: VR {vr} cannot be indexed")
    path = f"{tag:08X}"
    return QueryTag(key=path, path=path, keyword=keyword, vr=vr, private_creator=None,
                    level=level or default_level(tag, keyword), created_at=stamp, updated_at=stamp)


def _private(tag: int, shown: str, vr: str | None, level: str | None, creator: str | None,
             stamp: dt.datetime) -> QueryTag:
    group, element = tag >> 16, tag & 0xFFFF
    if group in (0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF):
        raise InvalidQueryTag(f"{shown}: group {group:04X} may not be used for private elements")
    if element < 0x0100:
        raise InvalidQueryTag(f"{shown} is a private creator slot; index an element of its block, "
                              f"e.g. ({group:04X},10{element & 0xFF:02X})")
    if element < 0x1000:
        raise InvalidQueryTag(f"{shown}: private data elements are (gggg,1000)-(gggg,FFFF)")
    if vr is None:
        raise InvalidQueryTag(f"{shown} is a private tag: its VR is required (e.g. --vr LO)")
    if creator is None or not creator.strip():
        raise InvalidQueryTag(f"{shown} is a private tag: its private creator is required")
    creator = creator.strip()
    if len(creator) > 64 or _PRIVATE_CREATOR_BAD.search(creator):
        raise InvalidQueryTag(f"private creator {creator!r} must be at most 64 characters, no '\\' "
                              "or control characters (VR LO)")
    path = f"{group:04X}10{element & 0xFF:02X}"
    return QueryTag(key=private_key(path, creator), path=path, keyword=None, vr=vr,
                    private_creator=creator, level=level or "instance", created_at=stamp, updated_at=stamp)


def single_valued(tag: QueryTag) -> bool:
    """True when the dictionary says the attribute holds exactly one value (VM 1)."""
    if tag.is_private:
        return False
    try:
        return dictionary_VM(tag.tag).strip() == "1"
    except KeyError:
        return False
