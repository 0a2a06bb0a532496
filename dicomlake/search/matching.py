"""QIDO-RS matching (PS3.18 §8.3.4, PS3.4 C.2.2.2) as polars expressions over typed columns.

- single value: exact (case-sensitive, as DICOM says), except person names (below);
- universal: an empty value or '*' matches everything;
- wildcards '*' and '?' for text and person names (not for UIDs, dates, times, numbers);
- list of UIDs separated by '\\' or ','; a list of code strings ('CT\\MR') matches any of them;
- ranges for dates and times: 'a-b', 'a-', '-b' (inclusive; a partial upper time means the end of
  that hour or minute);
- person names: case- and accent-insensitive ('müller' finds 'MULLER^Hans'); with fuzzy matching
  every word of the value must begin some component of the name ('jo sm' finds 'Smith^John').
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import polars as pl

from dicomlake.dicom.attributes import normalize_person_name
from dicomlake.dicom.uid import uid_problem
from dicomlake.errors import InvalidQuery
from dicomlake.search.attributes import Match

_WORD_SPLIT = re.compile(r"[\s^=,]+")
_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")


def normalized_name(column: pl.Expr) -> pl.Expr:
    """The polars twin of normalize_person_name: decompose, drop accents, casefold."""
    return column.str.normalize("NFKD").str.replace_all(r"\p{M}", "").str.to_lowercase().str.strip_chars()


def _wildcard_regex(pattern: str) -> str:
    parts = []
    for char in pattern:
        parts.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
    return "^" + "".join(parts) + "$"


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _values(value: str) -> list[str]:
    return [v.strip() for v in value.split("\\")]


def _parse_date(parameter: str, text: str) -> dt.date:
    try:
        if len(text) != 8 or not text.isdigit():
            raise ValueError
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise InvalidQuery(parameter, f"{text!r} is not a date YYYYMMDD") from None


def _range(parameter: str, value: str) -> tuple[str | None, str | None]:
    if value.count("-") > 1:
        raise InvalidQuery(parameter, f"{value!r} is not a range 'a-b', 'a-' or '-b'")
    low, _, high = value.partition("-")
    low, high = low.strip() or None, high.strip() or None
    if low is None and high is None:
        raise InvalidQuery(parameter, "a range needs at least one bound")
    return low, high


def _date_expr(parameter: str, column: pl.Expr, value: str) -> pl.Expr:
    if "-" not in value:
        return column == _parse_date(parameter, value)
    low, high = _range(parameter, value)
    low_date = _parse_date(parameter, low) if low else None
    high_date = _parse_date(parameter, high) if high else None
    return _between(parameter, value, column, low_date, high_date)


def _between(parameter: str, value: str, column: pl.Expr, low: Any, high: Any) -> pl.Expr:
    """low <= column <= high, either bound optional (None); a range that ends before it starts is bad."""
    if low is not None and high is not None and low > high:
        raise InvalidQuery(parameter, f"the range {value!r} ends before it starts")
    expr = pl.lit(True)
    if low is not None:
        expr = expr & (column >= low)
    if high is not None:
        expr = expr & (column <= high)
    return expr


def _time_bound(parameter: str, text: str, upper: bool) -> str:
    """'HH[MM[SS[.F]]]' (colons allowed) -> 'HHMMSS.FFFFFF'; a partial upper bound ends its unit."""
    match = _TIME.match(text.replace(":", ""))
    if not match:
        raise InvalidQuery(parameter, f"{text!r} is not a time HHMMSS.FFFFFF")
    hh, mm, ss, frac = match.groups()
    if int(hh) > 23 or int(mm or 0) > 59 or int(ss or 0) > 60:
        raise InvalidQuery(parameter, f"{text!r} is not a time of day")
    fill = "59" if upper else "00"
    whole = hh + (mm or fill) + (ss or fill)
    return f"{whole}.{(frac or '').ljust(6, '9' if upper and not frac else '0')}"


def normalized_time(column: pl.Expr) -> pl.Expr:
    """Stored TM text -> 'HHMMSS.FFFFFF', comparable as text (missing parts are zeros)."""
    text = column.str.replace_all(":", "").str.strip_chars()
    whole = text.str.split(".").list.get(0, null_on_oob=True).str.pad_end(6, "0")
    frac = text.str.split(".").list.get(1, null_on_oob=True).fill_null("").str.pad_end(6, "0")
    return whole + "." + frac


def _time_expr(parameter: str, column: pl.Expr, value: str) -> pl.Expr:
    stored = normalized_time(column)
    if "-" not in value:
        low, high = _time_bound(parameter, value, False), _time_bound(parameter, value, True)
        return (stored >= low) & (stored <= high)
    low_text, high_text = _range(parameter, value)
    low = _time_bound(parameter, low_text, False) if low_text else None
    high = _time_bound(parameter, high_text, True) if high_text else None
    return _between(parameter, value, stored, low, high)


def _text_expr(column: pl.Expr, values: list[str]) -> pl.Expr:
    exact = [v for v in values if not _has_wildcard(v)]
    expr = column.is_in(exact) if exact else pl.lit(False)
    for pattern in (v for v in values if _has_wildcard(v)):
        expr = expr | column.str.contains(_wildcard_regex(pattern))
    return expr


def _name_expr(parameter: str, column: pl.Expr, value: str, fuzzy: bool, is_normalized: bool) -> pl.Expr:
    name = column if is_normalized else normalized_name(column)
    query = normalize_person_name(value)
    if not fuzzy or _has_wildcard(query):
        return _text_expr(name, [query])
    words = [w for w in _WORD_SPLIT.split(query) if w]
    if not words:
        raise InvalidQuery(parameter, "a fuzzy name needs at least one word")
    expr = pl.lit(True)
    for word in words:
        expr = expr & name.str.contains(r"(?:^|[\s^=])" + re.escape(word))
    return expr


def match_expr(
    parameter: str, column: str, match: Match, value: str, fuzzy: bool = False, normalized: str | None = None
) -> pl.Expr | None:
    """The filter for `parameter=value` on `column`; None for universal matching.

    `normalized`: a column holding the person name already normalized (faster than on the fly).
    """
    value = value.strip()
    if value in ("", "*"):
        return None
    col = pl.col(column)
    if match == "none":
        raise InvalidQuery(parameter, "is computed and can be returned (includefield), not matched")
    if match == "uid":
        uids = [u.strip() for u in re.split(r"[\\,]", value) if u.strip()]
        for uid in uids:
            if _has_wildcard(uid):
                raise InvalidQuery(parameter, "wildcards are not allowed in UIDs; list them instead")
            if problem := uid_problem(uid):
                raise InvalidQuery(parameter, f"{uid!r}: {problem}")
        return col.is_in(uids)
    if match == "date":
        if _has_wildcard(value):
            raise InvalidQuery(parameter, "wildcards are not allowed in dates; use a range a-b")
        return _date_expr(parameter, col, value)
    if match == "time":
        if _has_wildcard(value):
            raise InvalidQuery(parameter, "wildcards are not allowed in times; use a range a-b")
        return _time_expr(parameter, col, value)
    if match in ("int", "float"):
        numbers = []
        for text in _values(value):
            try:
                numbers.append(int(text) if match == "int" else float(text))
            except ValueError:
                raise InvalidQuery(parameter, f"{text!r} is not a number") from None
        return col.is_in(numbers)
    if match == "pn":
        if normalized:
            return _name_expr(parameter, pl.col(normalized), value, fuzzy, is_normalized=True)
        return _name_expr(parameter, col, value, fuzzy, is_normalized=False)
    if match == "list":  # a multi-valued column (ModalitiesInStudy): any listed value present
        wanted = [v for v in _values(value) if v]
        if any(_has_wildcard(v) for v in wanted):
            return col.list.eval(_text_expr(pl.element(), wanted)).list.any()
        return pl.any_horizontal([col.list.contains(v) for v in wanted])
    return _text_expr(col, [v for v in _values(value)])
