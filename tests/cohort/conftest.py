from __future__ import annotations

import pytest

from tests.cohort.demo_lake import DemoLake, build_demo_lake


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoLake:
    return build_demo_lake(tmp_path_factory.mktemp("cohort-demo"))


@pytest.fixture(scope="session")
def hand(tmp_path_factory: pytest.TempPathFactory) -> DemoLake:
    """The demo's DICOM data plus the hand-written clinical record of hand_clinical.py (tenant 'hand')."""
    from tests.cohort.hand_clinical import write_hand_clinical

    lake = build_demo_lake(tmp_path_factory.mktemp("cohort-hand"), "hand", with_clinical=False)
    write_hand_clinical(lake.tenant, lake.studies)
    return lake
