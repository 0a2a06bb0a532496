from __future__ import annotations

import pytest

from tests.cohort.demo_lake import DemoLake, build_demo_lake


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoLake:
    return build_demo_lake(tmp_path_factory.mktemp("sql-demo"))
