from __future__ import annotations

from pathlib import Path

import pytest

from dicomlake.samples import SampleSummary, generate_sample_drop
from dicomlake.store import Lakehouse, TenantStore


@pytest.fixture
def tenant(tmp_path: Path) -> TenantStore:
    return Lakehouse(tmp_path / "lake").tenant("feed")


@pytest.fixture
def drop(tmp_path: Path) -> SampleSummary:
    return generate_sample_drop(tmp_path / "drop", n_instances=30, seed=13)
