"""The display windowing of /rendered and PNG export (PS3.3 C.11.2.1.2.1), on hand-made values."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from dicomlake.retrieve.rendered import to_8bit


def _header(**values) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_linear_window_by_the_standards_formula() -> None:
    frame = np.array([[0, 40, 80, 120]], dtype=np.int16)
    out = to_8bit(frame, _header(WindowCenter=60, WindowWidth=81))
    expected = np.clip(np.rint(((frame - 59.5) / 80 + 0.5) * 255), 0, 255)
    assert out.tolist() == expected.astype(np.uint8).tolist() == [[0, 65, 193, 255]]


def test_a_window_of_width_one_is_a_threshold_not_a_division_by_zero() -> None:
    frame = np.array([[99, 100, 101]], dtype=np.uint16)
    assert to_8bit(frame, _header(WindowCenter=100, WindowWidth=1)).tolist() == [[0, 255, 255]]
    # x <= c - 0.5 is the bottom of the range, x > c - 0.5 its top.
    assert to_8bit(frame, _header(WindowCenter=100.6, WindowWidth=1)).tolist() == [[0, 0, 255]]


def test_no_window_spans_min_to_max_and_monochrome1_inverts() -> None:
    frame = np.array([[10, 20, 30]], dtype=np.uint16)
    assert to_8bit(frame, _header()).tolist() == [[0, 128, 255]]
    assert to_8bit(frame, _header(PhotometricInterpretation="MONOCHROME1")).tolist() == [[255, 127, 0]]
