"""Cohorts in Dagster: `cohort_marts_job` builds and tests the dbt marts; `saved_cohorts_job`
materializes every saved cohort definition of $DICOMLAKE_COHORTS_DIR (default ./cohorts of the repo)."""

import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource

from assets.cohorts import DBT_PROJECT, cohort_marts, saved_cohort_assets

# The environment's own dbt, activated or not (like the demo's commands).
DBT_EXECUTABLE = str(Path(sys.executable).parent / "dbt")

cohort_marts_job = dg.define_asset_job(
    "cohort_marts_job",
    selection=dg.AssetSelection.assets(cohort_marts),
    description="dbt build: patient_timeline, imaging_cohort_base, image_occurrence and their tests.",
)


def cohort_definitions() -> dg.Definitions:
    saved = saved_cohort_assets()
    jobs = [cohort_marts_job]
    if saved:
        jobs.append(dg.define_asset_job("saved_cohorts_job", selection=dg.AssetSelection.assets(*saved),
                                        description="Materialize every saved cohort definition."))
    dbt = DbtCliResource(project_dir=DBT_PROJECT, dbt_executable=DBT_EXECUTABLE)
    return dg.Definitions(assets=[cohort_marts, *saved], jobs=jobs, resources={"dbt": dbt})
