"""UID syntax (PS3.5 §9.1): digits and dots, no empty or zero-led components, at most 64 chars."""

from __future__ import annotations

import re

MAX_UID_LENGTH = 64
# Non-capturing groups, so the same pattern also serves pandas/great-expectations regex checks.
UID_PATTERN = r"^(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*$"
_UID = re.compile(UID_PATTERN)


def uid_problem(value: object) -> str | None:
    """Why `value` is not a valid UID, or None when it is."""
    if not isinstance(value, str) or not value:
        return "is empty"
    if len(value) > MAX_UID_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_UID_LENGTH})"
    if not _UID.match(value):
        return f"{value!r} is not digits and dots without leading zeros"
    return None


def is_valid_uid(value: object) -> bool:
    return uid_problem(value) is None
