from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicomlake.samples import SampleSummary, generate_sample_drop
from dicomlake.store import Lakehouse, TenantStore


@pytest.fixture
def tenant(tmp_path: Path) -> TenantStore:
    return Lakehouse(tmp_path / "lake").tenant("acme")


@pytest.fixture
def drop(tmp_path: Path) -> SampleSummary:
    return generate_sample_drop(tmp_path / "drop", n_instances=24, seed=7)


def rewrite(source: Path, dest: Path, **changes: str) -> Path:
    """A copy of `source` with other bytes but the same UIDs (a corrected re-send)."""
    ds = pydicom.dcmread(source)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)
    return dest
