"""Small DICOM files built from pydicom's CT_small, with chosen UIDs and attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ImplicitVRLittleEndian

from dicomlake.store import Lakehouse, TenantStore

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"
ACME = "ACME 1.0"


def sop(n: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.1.1.{n}"


@pytest.fixture
def tenant(tmp_path: Path) -> TenantStore:
    return Lakehouse(tmp_path / "lake").tenant("acme")


def make_file(
    dest: Path,
    n: int,
    *,
    study: str = STUDY,
    series: str = SERIES,
    acme: dict[int, tuple[str, Any]] | None = None,
    acme_block: int = 0x11,
    implicit: bool = False,
    **attributes: Any,
) -> Path:
    """CT_small as instance `n`: attributes by keyword (None removes one), and elements of the
    private creator ACME at `acme_block` (CT_small's own creator already holds block 0x10)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop(n)
    ds.file_meta.MediaStorageSOPInstanceUID = sop(n)
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if acme:
        group = 0x0009
        ds.add_new((group << 16) | acme_block, "LO", ACME)
        for offset, (vr, value) in acme.items():
            ds.add_new((group << 16) | (acme_block << 8) | offset, vr, value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(dest, implicit_vr=True, little_endian=True, enforce_file_format=True)
    else:
        ds.save_as(dest, enforce_file_format=True)
    return dest
