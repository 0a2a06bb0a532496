"""Saved cohorts in Dagster: a definition file becomes an asset whose run writes the cohort table."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from assets.cohorts import saved_cohort_assets
from dicomlake.cohort.definition import load_definition
from dicomlake.sql import query
from resources import LakehouseResource
from tests.cohort.demo_lake import build_demo_lake
from tests.cohort.hand_clinical import write_hand_clinical

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_definitions_are_valid() -> None:
    files = sorted((REPO / "cohorts").glob("*.yaml"))
    assert files and all(load_definition(f).returns.collections for f in files)


def test_a_saved_cohort_materializes_its_table(tmp_path: Path) -> None:
    lake = build_demo_lake(tmp_path, "saved", with_clinical=False)
    write_hand_clinical(lake.tenant, lake.studies)
    folder = tmp_path / "cohorts"
    folder.mkdir()
    seed = (REPO / "cohorts" / "osteosarcoma_ct.yaml").read_text()
    (folder / "osteo-ct.yaml").write_text(seed + "as_of: 2026-11-01\n")
    (asset,) = saved_cohort_assets(folder)
    assert asset.key == dg.AssetKey("cohort_osteo_ct")
    resource = LakehouseResource(root=lake.tenant.lakehouse.root, tenant="saved")
    for _ in range(2):  # a rebuild replaces the table, it does not add to it
        result = dg.materialize([asset], resources={"lakehouse": resource})
        assert result.success
    metadata = result.asset_materializations_for_node("cohort_osteo_ct")[0].metadata
    assert metadata["patient_count"].value == 2 and "osteosarcoma" in metadata["sql"].value
    # DL-000001: CT chest 2022 + CT head 2025; DL-000008: CT chest 2023 + CT abdomen 2024; a row per series.
    ct = [
        s for s in lake.studies if s.modality == "CT" and s.patient.patient_id in ("DL-000001", "DL-000008")
    ]
    rows = query(
        lake.tenant,
        "SELECT patient_id, study_instance_uid, count(*) AS n FROM lake.cohort_osteo_ct "
        "GROUP BY ALL ORDER BY ALL",
    ).to_pylist()
    assert rows == sorted(
        (
            {
                "patient_id": s.patient.patient_id,
                "study_instance_uid": s.study_instance_uid,
                "n": s.series_count,
            }
            for s in ct
        ),
        key=lambda r: (r["patient_id"], r["study_instance_uid"]),
    )
    assert metadata["dagster/row_count"].value == sum(s.series_count for s in ct)


def test_a_bad_file_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Bad Name!.yaml").write_text("patients: {}\n")
    with pytest.raises(ValueError, match="file names of saved cohorts"):
        saved_cohort_assets(tmp_path)
