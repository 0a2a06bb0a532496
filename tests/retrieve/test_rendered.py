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


def _voi(center: float, width: float) -> Dataset:
    item = Dataset()
    item.WindowCenter, item.WindowWidth = center, width
    return item


def _rescale(slope: float, intercept: float) -> Dataset:
    item = Dataset()
    item.RescaleSlope, item.RescaleIntercept, item.RescaleType = slope, intercept, "HU"
    return item


def _group(**macros) -> Dataset:
    group = Dataset()
    for keyword, item in macros.items():
        setattr(group, keyword, [item])
    return group


def test_an_enhanced_image_is_windowed_per_frame_from_its_functional_groups() -> None:
    from pydicom.sequence import Sequence

    frame = np.array([[0, 40, 80, 120]], dtype=np.int16)
    ds = _header(NumberOfFrames=3)
    # Shared: the rescale of every frame and a default window; frame 2 brings its own window.
    ds.SharedFunctionalGroupsSequence = Sequence([_group(PixelValueTransformationSequence=_rescale(1, -20),
                                                         FrameVOILUTSequence=_voi(40, 81))])
    ds.PerFrameFunctionalGroupsSequence = Sequence([
        _group(), _group(FrameVOILUTSequence=_voi(80, 81)), _group(),
    ])
    shared_window = to_8bit(frame, ds, 1)
    # The same as a classic image with those values at the top level:
    assert shared_window.tolist() == to_8bit(
        frame, _header(RescaleSlope=1, RescaleIntercept=-20, WindowCenter=40, WindowWidth=81)).tolist()
    assert to_8bit(frame, ds, 3).tolist() == shared_window.tolist()
    own_window = to_8bit(frame, ds, 2)
    assert own_window.tolist() == to_8bit(
        frame, _header(RescaleSlope=1, RescaleIntercept=-20, WindowCenter=80, WindowWidth=81)).tolist()
    assert own_window.tolist() != shared_window.tolist()


def test_without_functional_groups_the_top_level_values_apply_to_every_frame() -> None:
    from dicomlake.retrieve.rendered import frame_value

    ds = _header(WindowCenter=50, WindowWidth=100, RescaleSlope=2)
    assert [float(frame_value(ds, "WindowCenter", n)) for n in (1, 2)] == [50.0, 50.0]
    assert frame_value(ds, "RescaleIntercept", 1) is None  # the caller's default (0) applies
