"""Values of an extended query tag in one instance's DICOM JSON (PS3.18 F.2), checked against its VR.

The value column follows the VR: DA -> value_date; IS, SL, SS, UL, US, SV, UV -> value_int;
DS, FL, FD -> value_float; PN -> value_string (the Alphabetic group); anything else ->
value_string. Each value is checked (PS3.5 6.2 lengths, parsable dates and numbers, ranges);
a value that fails becomes an error row instead, with a code:

    value_too_long, wrong_vr, unparsable_date, unparsable_time, unparsable_datetime,
    unparsable_number, value_out_of_range, invalid_characters, invalid_value,
    multiple_values_not_allowed, value_not_available

An element stored as UN (an implicit-VR private element the dictionary does not know) is read
as the tag's VR from its inline bytes (little endian); other VR mismatches are wrong_vr.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from dicomlake.dicom.attributes import parse_date, parse_time
from dicomlake.tags.model import DATE_VRS, FLOAT_VRS, INT_VRS, MAX_LENGTH, QueryTag, single_valued

INT_RANGES = {
    "IS": (-(2**31), 2**31 - 1), "SL": (-(2**31), 2**31 - 1), "SS": (-(2**15), 2**15 - 1),
    "UL": (0, 2**32 - 1), "US": (0, 2**16 - 1), "SV": (-(2**63), 2**63 - 1), "UV": (0, 2**63 - 1),
}  # fmt: skip  (UV above 2**63 - 1 does not fit value_int: value_out_of_range)
_BINARY_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}
_CS = re.compile(r"^[A-Z0-9 _]*$")
_UI = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_AS = re.compile(r"^\d{3}[DWMY]$")
_DT = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
_AT = re.compile(r"^[0-9A-F]{8}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(frozen=True)
class Value:
    string: str | None = None
    int: int | None = None
    float: float | None = None
    date: dt.date | None = None


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


def find_element(header: dict[str, Any], tag: QueryTag) -> dict[str, Any] | None:
    """The tag's element at the top level of `header`; private tags through their creator's block."""
    if not tag.is_private:
        return header.get(tag.path)
    group = tag.path[:4]
    for block in range(0x10, 0x100):
        creator = header.get(f"{group}00{block:02X}")
        if creator is None:
            continue
        values = creator.get("Value") or []
        if values and isinstance(values[0], str) and values[0].strip() == tag.private_creator:
            return header.get(f"{group}{block:02X}{tag.path[6:]}")
    return None


def extract(header: dict[str, Any], tag: QueryTag) -> tuple[list[Value], list[Problem]]:
    """The values to index for `tag` in one header, and the problems that kept any from it."""
    element = find_element(header, tag)
    if element is None:
        return [], []
    vr = element.get("vr")
    if vr == "UN" and tag.vr != "UN":
        if "BulkDataURI" in element:
            return [], [Problem("value_not_available", f"{tag.key}: UN value too large to read as {tag.vr}")]
        raw = element.get("InlineBinary")
        if not raw:
            return [], []
        try:
            items = _from_bytes(base64.b64decode(raw), tag.vr)
        except (ValueError, struct.error) as exc:
            return [], [Problem("wrong_vr", f"{tag.key}: UN bytes are not a valid {tag.vr} value ({exc})")]
    elif vr != tag.vr:
        return [], [Problem("wrong_vr", f"{tag.key}: element has VR {vr}, the tag is {tag.vr}")]
    else:
        items = element.get("Value") or []
    items = [item for item in items if item is not None and item != ""]
    if not items:
        return [], []
    if len(items) > 1 and single_valued(tag):
        return [], [Problem("multiple_values_not_allowed",
                            f"{tag.key}: {len(items)} values where the dictionary allows one")]
    values: list[Value] = []
    problems: list[Problem] = []
    for item in items:
        result = convert(item, tag.vr)
        if isinstance(result, Problem):
            problems.append(Problem(result.code, f"{tag.key}: {result.message}"))
        else:
            values.append(result)
    return values, problems


def _from_bytes(data: bytes, vr: str) -> list[Any]:
    code = _BINARY_NUMBERS.get(vr)
    if code:
        size = struct.calcsize("<" + code)
        if len(data) % size:
            raise ValueError(f"{len(data)} bytes is not a multiple of {size}")
        return list(struct.unpack(f"<{len(data) // size}{code}", data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    text = text.rstrip("\x00 ")
    if vr == "PN":
        return [{"Alphabetic": name.split("=")[0]} for name in text.split("\\")]
    if vr in ("LT", "ST", "UT", "UR"):
        return [text]
    return [part.strip() for part in text.split("\\")]


def _too_long(text: str, vr: str) -> Problem | None:
    limit = MAX_LENGTH.get(vr)
    if limit is not None and len(text) > limit:
        shown = text[:60]
        return Problem("value_too_long", f"{vr} value of {len(text)} characters exceeds {limit}: {shown!r}")
    return None


def convert(item: Any, vr: str) -> Value | Problem:
    """One JSON value as its index value, or the problem with it."""
    if vr in DATE_VRS:
        text = str(item).strip()
        if (problem := _too_long(text, vr)) is not None:
            return problem
        date = parse_date(text)
        if date is None:
            return Problem("unparsable_date", f"{text[:40]!r} is not a date (YYYYMMDD)")
        return Value(date=date)
    if vr in INT_VRS:
        number = item
        if isinstance(item, str):
            text = item.strip()
            if (problem := _too_long(text, vr)) is not None:
                return problem
            try:
                number = int(text)
            except ValueError:
                return Problem("unparsable_number", f"{text[:40]!r} is not an integer ({vr})")
        if isinstance(number, bool) or not isinstance(number, int):
            if isinstance(number, float) and number.is_integer():
                number = int(number)
            else:
                return Problem("unparsable_number", f"{number!r} is not an integer ({vr})")
        low, high = INT_RANGES[vr]
        if not low <= number <= high:
            return Problem("value_out_of_range", f"{number} is outside the range of {vr} ({low}..{high})")
        return Value(int=number)
    if vr in FLOAT_VRS:
        number = item
        if isinstance(item, str):
            text = item.strip()
            if (problem := _too_long(text, vr)) is not None:
                return problem
            try:
                number = float(text)
            except ValueError:
                return Problem("unparsable_number", f"{text[:40]!r} is not a number ({vr})")
        if isinstance(number, bool) or not isinstance(number, int | float):
            return Problem("unparsable_number", f"{number!r} is not a number ({vr})")
        number = float(number)
        if vr == "DS" and not math.isfinite(number):
            return Problem("unparsable_number", f"{number} is not a finite decimal string")
        return Value(float=number)
    if vr == "PN":
        if isinstance(item, dict):
            name = item.get("Alphabetic")
            groups = [g for g in (item.get("Alphabetic"), item.get("Ideographic"), item.get("Phonetic")) if g]
        else:
            name, groups = str(item), [str(item)]
        for group in groups:
            if len(group) > MAX_LENGTH["PN"]:
                return Problem("value_too_long", f"PN component group of {len(group)} characters exceeds 64")
            if group.count("^") > 4:
                return Problem("invalid_value", f"PN {group[:80]!r} has more than 5 components")
        if not name:
            return Problem("invalid_value", "PN has no Alphabetic component group")
        return Value(string=name)
    text = str(item)
    if (problem := _too_long(text, vr)) is not None:
        return problem
    if vr == "CS" and not _CS.match(text):
        return Problem("invalid_characters", f"CS {text!r} may hold only A-Z, 0-9, space and '_'")
    if vr == "UI" and not _UI.match(text):
        return Problem("invalid_value", f"{text!r} is not a UID")
    if vr == "AS" and not _AS.match(text):
        return Problem("invalid_value", f"{text!r} is not an age string (nnnD, nnnW, nnnM or nnnY)")
    if vr == "TM" and parse_time(text) is None:
        return Problem("unparsable_time", f"{text!r} is not a time (HHMMSS.FFFFFF)")
    if vr == "DT" and not _DT.match(text):
        return Problem("unparsable_datetime", f"{text!r} is not a date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX)")
    if vr == "AT" and not _AT.match(text.upper()):
        return Problem("invalid_value", f"{text!r} is not an attribute tag")
    if vr in ("AE", "CS", "SH", "LO", "UC", "AS", "DA", "TM", "DT") and _CONTROL.search(text):
        return Problem("invalid_characters", f"{vr} value has control characters")
    return Value(string=text)
