"""Functional groups of enhanced multi-frame objects (PS3.3 C.7.6.16): the value of a macro's
attribute as it applies to one frame."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset


def functional_value(ds: Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """`keyword` of functional group macro `sequence` (e.g. FrameVOILUTSequence) for frame `frame`
    (0-based): from the frame's Per-Frame Functional Groups item, else the Shared Functional
    Groups; None when neither has it."""
    places = (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0))
    for groups_name, index in places:
        groups = ds.get(groups_name)
        if not groups or not 0 <= index < len(groups) or sequence not in groups[index]:
            continue
        items = groups[index][sequence].value
        if items and keyword in items[0]:
            return items[0][keyword].value
    return None
