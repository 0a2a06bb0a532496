"""Replacement values: dummies consistent with a VR (action D), shifted dates (the longitudinal
option's C) and cleaned descriptors (the Clean Descriptors and Patient Characteristics options' C)."""

from __future__ import annotations

import datetime as dt
import re

__all__ = [
    "DUMMY_TEXT",
    "SAFE_DESCRIPTOR_TERMS",
    "TEXT_VRS",
    "clean_text",
    "dummy_value",
    "shift_date_value",
]

DUMMY_TEXT = "DEIDENTIFIED"
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
"""VRs whose values can spell out a name, a place or a date; inside a D sequence they become dummies
(CS only when the table names the attribute: enumerated codes carry no identity)."""

_DUMMIES: dict[str, object] = {
    "AE": "DEIDENTIFIED",
    "AS": "000D",
    "CS": "DEIDENTIFIED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "PN": f"{DUMMY_TEXT}^",
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "UR": "urn:deidentified",
    "DS": "0",
    "IS": "0",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "AT": 0,
    "OB": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
}


def dummy_value(vr: str) -> object:
    """A non-empty value valid for `vr` that says nothing about anyone (UI and SQ are handled apart)."""
    vr = vr.split(" or ")[0]  # an ambiguous VR ("US or SS", "OB or OW"): either fits the dummy
    return _DUMMIES.get(vr, _DUMMIES["UN"] if vr.startswith("O") else DUMMY_TEXT)


def _shift_date(text: str, days: int) -> str:
    return (dt.datetime.strptime(text, "%Y%m%d").date() + dt.timedelta(days=days)).strftime("%Y%m%d")


def shift_date_value(vr: str, value: str, days: int) -> str | None:
    """`value` (one DA or DT value, or a DA range) moved by `days`; None when it is not a valid date.

    TM values carry no date and are returned unchanged: the shift is whole days, so the time of day
    and every interval between this patient's dates and times are preserved.
    """
    value = value.strip()
    if not value or vr == "TM":
        return value
    if vr == "DA":
        if "-" in value:  # a range, as in query datasets
            parts = value.split("-")
            shifted = [shift_date_value("DA", part, days) if part else "" for part in parts]
            return None if None in shifted else "-".join(s or "" for s in shifted)
        try:
            return _shift_date(value, days)
        except ValueError:
            return None
    # DT: YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]; shift when the day is present, else treat as invalid
    match = re.fullmatch(r"(\d{8})(\d{0,6}(?:\.\d{1,6})?)([+-]\d{4})?", value)
    if not match:
        return None
    try:
        return _shift_date(match.group(1), days) + match.group(2) + (match.group(3) or "")
    except ValueError:
        return None


_SAFE_TERMS_TEXT = """
    ABDOMEN ABD ACQ ACQUISITION ANGIO ANGIOGRAPHY ANKLE AORTA AP ARM AX AXIAL AXIS BILATERAL BLADDER BODY
    BONE BRAIN BREAST CALCIUM CARDIAC CAROTID CERVICAL CHEST CIRCLE COLON CONTRAST COR CORONAL CT CTA CR
    DELAYED DIFFUSION DWI DX ELBOW EXTREMITY FACE FEMUR FLAIR FOOT FOREARM FSE GRE HAND HEAD HEART HELICAL
    HIP HRCT HUMERUS IMAGE IMAGES IV KIDNEY KNEE L LAT LATERAL LEFT LEG LIVER LOCALIZER LOWER LUMBAR LUNG
    LUNGS MIP MPR MR MRA MRI NECK NM NON ORAL PA PANCREAS PELVIS PERFUSION PET PHASE PLAIN POST PRE PROTOCOL
    R RECON RECONSTRUCTION RENAL RIGHT ROUTINE SAG SAGITTAL SCOUT SCREENING SE SERIES SHOULDER SINUS SKULL
    SLICE SOFT SPINE SPIN ECHO STANDARD STIR STUDY SUMMARY SURVEY T1 T2 TFE TSE THICK THIN THORACIC THORAX
    TISSUE TOPOGRAM TRA TRANSVERSE US UPPER VENOUS VIEW W WITH WITHOUT WO WRIST XA XR
"""
SAFE_DESCRIPTOR_TERMS = frozenset(_SAFE_TERMS_TEXT.split())
"""Words a descriptor may consist of and still be kept by the Clean Descriptors option: anatomy,
modality and technique terms that say nothing about a person, a place or a date."""

_SEPARATORS = re.compile(r"[\s_,;()+^]+")
_NUMBER_WITH_UNIT = re.compile(r"^\d{1,3}(?:\.\d+)?(?:MM|CM|ML|MG|KV|KVP|MAS|MS|S)?$")


def clean_text(value: str) -> str | None:
    """`value` when every word in it is a safe descriptor term or a small number; else None.

    None tells the caller to fall back to the Basic Profile's action, so a descriptor that could name
    someone or something ("Dr Smith's protocol", "follow-up 03/04/19", "2019") never survives cleaning.
    Numbers have at most three digits before the decimal point, so no year or identifier passes.
    """
    words = [word for word in _SEPARATORS.split(value.strip().upper()) if word]
    for word in words:
        if word not in SAFE_DESCRIPTOR_TERMS and not _NUMBER_WITH_UNIT.match(word):
            return None
    return value
