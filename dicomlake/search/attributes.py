"""Which attributes QIDO-RS can match and return at each level, and where their values live.

Built-in attributes are columns of the search snapshot (see `snapshot.py`): patient and study
attributes in the study frame, series attributes in the series frame, instance attributes in the
instance frame. A level may match on its own attributes and on those of the levels above it
(PS3.18 §8.3.4: a search for all series may use study keys too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicomlake.errors import InvalidQuery

Level = Literal["study", "series", "instance"]
LEVELS: tuple[Level, ...] = ("study", "series", "instance")
# The URL nouns of PS3.18 (…/studies, …/series, …/instances) and the levels they search.
RESOURCE_LEVELS: dict[str, Level] = {"studies": "study", "series": "series", "instances": "instance"}

# How a value of this attribute is matched (PS3.4 C.2.2.2).
Match = Literal["str", "uid", "pn", "date", "time", "int", "float", "list", "none"]


@dataclass(frozen=True)
class Attribute:
    keyword: str
    level: Level
    column: str  # column in that level's frame
    match: Match  # "none": returned, never matched (e.g. counts)
    vr: str

    @property
    def tag(self) -> str:
        return f"{tag_for_keyword(self.keyword):08X}"


def _a(keyword: str, level: Level, column: str, match: Match) -> Attribute:
    vr = dictionary_VR(tag_for_keyword(keyword))
    return Attribute(keyword, level, column, match, vr)


BUILT_IN: tuple[Attribute, ...] = (
    # Patient and study (QIDO-RS study keys, plus a few more people search on)
    _a("PatientName", "study", "patient_name", "pn"),
    _a("PatientID", "study", "patient_id", "str"),
    _a("IssuerOfPatientID", "study", "issuer_of_patient_id", "str"),
    _a("PatientBirthDate", "study", "patient_birth_date", "date"),
    _a("PatientSex", "study", "patient_sex", "str"),
    _a("PatientAge", "study", "patient_age", "str"),
    _a("StudyInstanceUID", "study", "study_instance_uid", "uid"),
    _a("StudyDate", "study", "study_date", "date"),
    _a("StudyTime", "study", "study_time", "time"),
    _a("StudyID", "study", "study_id", "str"),
    _a("AccessionNumber", "study", "accession_number", "str"),
    _a("ReferringPhysicianName", "study", "referring_physician_name", "pn"),
    _a("StudyDescription", "study", "study_description", "str"),
    _a("TimezoneOffsetFromUTC", "study", "timezone_offset_from_utc", "str"),
    _a("InstitutionName", "study", "institution_name", "str"),
    _a("ModalitiesInStudy", "study", "modalities_in_study", "list"),
    _a("SOPClassesInStudy", "study", "sop_classes_in_study", "list"),
    _a("NumberOfStudyRelatedSeries", "study", "number_of_study_related_series", "none"),
    _a("NumberOfStudyRelatedInstances", "study", "number_of_study_related_instances", "none"),
    # Series
    _a("SeriesInstanceUID", "series", "series_instance_uid", "uid"),
    _a("Modality", "series", "modality", "str"),
    _a("SeriesNumber", "series", "series_number", "int"),
    _a("SeriesDescription", "series", "series_description", "str"),
    _a("SeriesDate", "series", "series_date", "date"),
    _a("SeriesTime", "series", "series_time", "time"),
    _a("BodyPartExamined", "series", "body_part_examined", "str"),
    _a("ProtocolName", "series", "protocol_name", "str"),
    _a("PerformedProcedureStepStartDate", "series", "performed_procedure_step_start_date", "date"),
    _a("PerformedProcedureStepStartTime", "series", "performed_procedure_step_start_time", "time"),
    _a("Manufacturer", "series", "manufacturer", "str"),
    _a("ManufacturerModelName", "series", "manufacturer_model_name", "str"),
    _a("StationName", "series", "station_name", "str"),
    _a("NumberOfSeriesRelatedInstances", "series", "number_of_series_related_instances", "none"),
    # Instance
    _a("SOPInstanceUID", "instance", "sop_instance_uid", "uid"),
    _a("SOPClassUID", "instance", "sop_class_uid", "uid"),
    _a("InstanceNumber", "instance", "instance_number", "int"),
    _a("ContentDate", "instance", "content_date", "date"),
    _a("ContentTime", "instance", "content_time", "time"),
    _a("Rows", "instance", "rows", "int"),
    _a("Columns", "instance", "columns", "int"),
    _a("BitsAllocated", "instance", "bits_allocated", "int"),
    _a("NumberOfFrames", "instance", "number_of_frames", "int"),
    _a("PhotometricInterpretation", "instance", "photometric_interpretation", "str"),
    _a("TransferSyntaxUID", "instance", "transfer_syntax_uid", "uid"),
)
BY_KEYWORD: dict[str, Attribute] = {a.keyword: a for a in BUILT_IN}
BY_TAG: dict[str, Attribute] = {a.tag: a for a in BUILT_IN}

# Returned for every match (PS3.18 §10.6.3.3 "default" result attributes that we hold), besides the
# matching keys and `includefield`s. InstanceAvailability is always ONLINE here.
DEFAULT_RETURN: dict[Level, tuple[str, ...]] = {
    "study": (
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
        "TimezoneOffsetFromUTC", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyInstanceUID", "StudyID", "StudyDescription", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "series": (
        "StudyInstanceUID", "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime", "BodyPartExamined",
    ),
    "instance": (
        "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "InstanceNumber",
        "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
    ),
}
# With includefield=all: every built-in attribute of the level and the levels above it.
INSTANCE_AVAILABILITY = "00080056"


def level_rank(level: Level) -> int:
    return LEVELS.index(level)


def resolve_tag(name: str) -> tuple[str, str | None]:
    """A query parameter's attribute as (8-hex tag, keyword or None); InvalidQuery if neither.

    Accepts a keyword ('PatientID') or a tag ('00100020', '(0010,0020)', '0010,0020').
    """
    text = name.strip()
    if not text:
        raise InvalidQuery(name, "an empty attribute name")
    hex_text = text.strip("()").replace(",", "")
    if len(hex_text) == 8 and all(c in "0123456789abcdefABCDEF" for c in hex_text):
        tag = hex_text.upper()
        return tag, keyword_for_tag(int(tag, 16)) or None
    if "." in text:
        raise InvalidQuery(name, "sequence paths cannot be searched; match a top-level attribute")
    number = tag_for_keyword(text)
    if number is None:
        raise InvalidQuery(name, "not a DICOM keyword or tag (e.g. 'PatientID' or '00100020')")
    return f"{number:08X}", text
