"""Real DICOM files for the de-identification tests: pydicom's shipped test files and our samples."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from dicomlake.samples import TEST_FILES


def shipped_part10_files() -> list[Path]:
    """pydicom's shipped Part-10 instances (file meta, SOP Class and Instance UIDs), read without
    the network; deliberately broken files (truncated, bad VRs) are left to the error tests."""
    chosen = []
    for path in sorted(TEST_FILES.glob("*.dcm")):
        if "truncated" in path.name or path.name == "badVR.dcm":
            continue
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            continue
        if "TransferSyntaxUID" in ds.file_meta and "SOPClassUID" in ds and "SOPInstanceUID" in ds:
            chosen.append(path)
    return chosen


def walk(ds: Dataset, depth: int = 0):
    """Every element of `ds`, at every depth of its sequences."""
    for elem in ds:
        yield elem, depth
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item, depth + 1)
