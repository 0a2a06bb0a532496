"""The promoted attributes: typed columns for what people search, join and train on.

Every instance row carries these beside the whole header as DICOM JSON. Columns are snake_case
so analysts can type them; `keyword` ties each one to the DICOM data dictionary.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

from pydicom.datadict import tag_for_keyword

Kind = Literal["str", "uid", "pn", "date", "time", "int", "float", "floats", "timestamp"]


@dataclass(frozen=True)
class Promoted:
    column: str
    keyword: str
    kind: Kind

    @property
    def json_key(self) -> str:
        tag = tag_for_keyword(self.keyword)
        assert tag is not None, self.keyword
        return f"{tag:08X}"


def _p(keyword: str, kind: Kind) -> Promoted:
    column = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", keyword).lower()
    return Promoted(column.replace("u_i_d", "uid"), keyword, kind)


PROMOTED: tuple[Promoted, ...] = (
    # Patient
    _p("PatientID", "str"),
    _p("IssuerOfPatientID", "str"),
    _p("PatientName", "pn"),
    _p("PatientBirthDate", "date"),
    _p("PatientSex", "str"),
    _p("PatientAge", "str"),
    # Study
    _p("StudyInstanceUID", "uid"),
    _p("StudyDate", "date"),
    _p("StudyTime", "time"),
    _p("StudyID", "str"),
    _p("AccessionNumber", "str"),
    _p("ReferringPhysicianName", "pn"),
    _p("StudyDescription", "str"),
    _p("TimezoneOffsetFromUTC", "str"),
    _p("InstitutionName", "str"),
    # Series
    _p("SeriesInstanceUID", "uid"),
    _p("Modality", "str"),
    _p("SeriesNumber", "int"),
    _p("SeriesDescription", "str"),
    _p("SeriesDate", "date"),
    _p("SeriesTime", "time"),
    _p("BodyPartExamined", "str"),
    _p("ProtocolName", "str"),
    _p("PerformedProcedureStepStartDate", "date"),
    _p("PerformedProcedureStepStartTime", "time"),
    _p("Manufacturer", "str"),
    _p("ManufacturerModelName", "str"),
    _p("StationName", "str"),
    # Instance
    _p("SOPInstanceUID", "uid"),
    _p("SOPClassUID", "uid"),
    _p("InstanceNumber", "int"),
    _p("ContentDate", "date"),
    _p("ContentTime", "time"),
    _p("SpecificCharacterSet", "str"),
    # Image
    _p("Rows", "int"),
    _p("Columns", "int"),
    _p("NumberOfFrames", "int"),
    _p("SamplesPerPixel", "int"),
    _p("BitsAllocated", "int"),
    _p("BitsStored", "int"),
    _p("PixelRepresentation", "int"),
    _p("PhotometricInterpretation", "str"),
    _p("PixelSpacing", "floats"),
    _p("SliceThickness", "float"),
    _p("ImagePositionPatient", "floats"),
    _p("ImageOrientationPatient", "floats"),
    _p("RescaleSlope", "float"),
    _p("RescaleIntercept", "float"),
    _p("WindowCenter", "float"),
    _p("WindowWidth", "float"),
)

# Derived, not read directly: searchable person names, a combined study timestamp, age in years.
DERIVED_KINDS: dict[str, str] = {
    "patient_name_normalized": "str",
    "study_datetime": "timestamp",
    "patient_age_years": "int",
}


# --- value conversion from DICOM JSON (PS3.18 F.2) -------------------------------------------


def parse_date(value: str) -> dt.date | None:
    """DA 'YYYYMMDD' (and the retired 'YYYY.MM.DD'); None when it is not a real date."""
    text = value.strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


_TIME = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")


def parse_time(value: str) -> dt.time | None:
    """TM 'HH[MM[SS[.F{1,6}]]]' (and the retired 'HH:MM:SS'); None when it is not a real time."""
    match = _TIME.match(value.strip())
    if not match:
        return None
    hh, mm, ss, frac = match.groups()
    try:
        return dt.time(int(hh), int(mm or 0), min(int(ss or 0), 59), int((frac or "0").ljust(6, "0")))
    except ValueError:
        return None


def normalize_person_name(name: str) -> str:
    """Case- and accent-insensitive form used for matching: 'Müller^Hans' -> 'muller^hans'."""
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold().strip()


_AGE = re.compile(r"^(\d{3})([DWMY])$")


def age_in_years(age: str | None, birth: dt.date | None, on: dt.date | None) -> int | None:
    """Whole years at the study: from the birth date when both dates exist, else from PatientAge."""
    if birth and on and on >= birth:
        return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    match = _AGE.match(age or "")
    if not match:
        return None
    n, unit = int(match.group(1)), match.group(2)
    return {"Y": n, "M": n // 12, "W": n // 52, "D": n // 365}[unit]


def _first(element: dict[str, Any] | None) -> Any:
    if not element:
        return None
    values = element.get("Value")
    return values[0] if values else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def promoted_values(header: dict[str, Any]) -> dict[str, Any]:
    """The promoted columns of one instance, read from its DICOM JSON."""
    row: dict[str, Any] = {}
    for p in PROMOTED:
        element = header.get(_JSON_KEYS[p.column])
        value: Any
        if p.kind == "floats":
            values = (element or {}).get("Value") or []
            try:
                value = [float(v) for v in values] or None
            except (TypeError, ValueError):
                value = None
        elif p.keyword == "SpecificCharacterSet":
            values = (element or {}).get("Value") or []
            value = "\\".join(str(v) for v in values) or None
        else:
            first = _first(element)
            if p.kind == "pn":
                value = _text(first.get("Alphabetic")) if isinstance(first, dict) else _text(first)
            elif p.kind == "date":
                value = parse_date(first) if isinstance(first, str) else None
            elif p.kind == "int":
                value = _as_int(first)
            elif p.kind == "float":
                value = _as_float(first)
            else:
                value = _text(first)
        row[p.column] = value
    name = row["patient_name"]
    row["patient_name_normalized"] = normalize_person_name(name) if name else None
    study_time = parse_time(row["study_time"]) if row["study_time"] else None
    row["study_datetime"] = (
        dt.datetime.combine(row["study_date"], study_time or dt.time()) if row["study_date"] else None
    )
    row["patient_age_years"] = age_in_years(row["patient_age"], row["patient_birth_date"], row["study_date"])
    return row


def _as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if -(2**63) <= number < 2**63 else None


def _as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_JSON_KEYS = {p.column: p.json_key for p in PROMOTED}
