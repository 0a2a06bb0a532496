"""PS3.15 Annex E Table E.1-1, the Application Level Confidentiality Profile Attributes, as data.

The table lives in ``table_e1_1.tsv`` next to this module (its header says which edition each column
comes from). This module reads it once and answers two questions: which row governs a tag, and which
action code that row gives under a set of options.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = [
    "ACTION_CODES",
    "BASIC",
    "OPTION_COLUMNS",
    "ProfileRow",
    "effective_code",
    "row_for_tag",
    "rows",
]

BASIC = "basic"
OPTION_COLUMNS = (
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_long_full_dates",
    "retain_long_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)
"""The table's option columns, in its order; dicomlake implements three of them (see DeidOptions)."""

ACTION_CODES = frozenset({"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "X/Z/D", "X/Z/U*", "Z/D"})

CURVE_ROW = "(50XX,XXXX)"
OVERLAY_DATA_ROW = "(60XX,3000)"
OVERLAY_COMMENTS_ROW = "(60XX,4000)"
PRIVATE_ROW = "(GGGG,EEEE)"


@dataclass(frozen=True)
class ProfileRow:
    """One row of Table E.1-1: the tag as the table writes it, the name, and the codes per column."""

    tag: str  # "(0008,0050)", or the table's own pattern: (50XX,XXXX), (60XX,3000), (GGGG,EEEE)
    name: str
    retired: bool
    basic: str
    options: dict[str, str]  # option column -> code, only the columns the table fills
    option_source: str  # "earlier": option columns recorded; "none": not recorded for this row

    @property
    def is_pattern(self) -> bool:
        return "X" in self.tag or "G" in self.tag

    @property
    def tag_value(self) -> int | None:
        """The tag as an int for rows naming a single element; None for the pattern rows."""
        if self.is_pattern:
            return None
        group, element = self.tag.strip("()").split(",")
        return int(group, 16) << 16 | int(element, 16)

    def code(self, column: str) -> str:
        """The code in `column` (BASIC or an option column); "" where the table leaves it empty."""
        return self.basic if column == BASIC else self.options.get(column, "")


@cache
def rows() -> tuple[ProfileRow, ...]:
    """Every row of the table, in the table's order."""
    text = resources.files(__package__).joinpath("table_e1_1.tsv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    parsed = []
    for record in csv.DictReader(lines, delimiter="\t"):
        basic = record[BASIC]
        options = {column: record[column] for column in OPTION_COLUMNS if record[column]}
        for code in (basic, *options.values()):
            if code not in ACTION_CODES:
                raise ValueError(f"table_e1_1.tsv: {record['tag']} has unknown action code {code!r}")
        parsed.append(
            ProfileRow(
                tag=record["tag"],
                name=record["name"],
                retired=record["retired"] == "Y",
                basic=basic,
                options=options,
                option_source=record["option_source"],
            )
        )
    return tuple(parsed)


@cache
def _by_tag() -> dict[int, ProfileRow]:
    return {row.tag_value: row for row in rows() if row.tag_value is not None}


@cache
def _pattern_row(tag: str) -> ProfileRow:
    return next(row for row in rows() if row.tag == tag)


def row_for_tag(tag: int) -> ProfileRow | None:
    """The row governing `tag` (an int ggggeeee), or None when the table does not list it."""
    row = _by_tag().get(tag)
    if row is not None:
        return row
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 1:
        return _pattern_row(PRIVATE_ROW)
    # Repeating groups (PS3.5 7.6): curves in 5000-501E, overlays in 6000-601E, even groups only.
    if 0x5000 <= group <= 0x501E:
        return _pattern_row(CURVE_ROW)
    if 0x6000 <= group <= 0x601E:
        if element == 0x3000:
            return _pattern_row(OVERLAY_DATA_ROW)
        if element == 0x4000:
            return _pattern_row(OVERLAY_COMMENTS_ROW)
    return None


def effective_code(row: ProfileRow, enabled_options: Iterable[str]) -> str:
    """The code for `row` under the Basic Profile plus `enabled_options` (option column names).

    An option overrides the Basic Profile only where its column has a code. When several enabled
    options fill the row, the one that retains most wins (K, then C), as the options are each a
    permission to keep more than the Basic Profile does.
    """
    codes = {row.options[column] for column in enabled_options if column in row.options}
    for preferred in ("K", "C"):
        if preferred in codes:
            return preferred
    return row.basic
