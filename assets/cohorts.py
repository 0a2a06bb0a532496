"""Cohorts group: the dbt marts (dbt_project/) as assets, and one asset per saved cohort definition.

Thin: dbt runs through dagster-dbt's DbtCliResource with the tenant's --vars (so its DuckDB file is
`<tenant>/marts/cohort.duckdb`); a saved cohort runs dicomlake.cohort.saved.materialize_cohort.
The dbt manifest is parsed when the definitions load if a clean clone has none yet (`dbt parse`,
a few seconds, once).
"""

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from dicomlake.cohort.saved import cohort_name, definition_files, materialize_cohort
from dicomlake.sql.marts import PROJECT_DIR, dbt_vars
from resources import LakehouseResource

DBT_PROJECT = DbtProject(project_dir=PROJECT_DIR, profiles_dir=PROJECT_DIR)
DEFAULT_COHORTS_DIR = Path(__file__).resolve().parent.parent / "cohorts"
# The dbt sources that are tables other assets of this project write: the DICOM levels, and the
# clinical views the FHIR import (assets.clinical) writes, so lineage shows FHIR -> marts -> cohorts.
CLINICAL = dg.AssetKey("clinical_fhir")
UPSTREAM = {
    "studies": dg.AssetKey("studies"),
    "series": dg.AssetKey("series"),
    **{name: CLINICAL for name in ("patients", "conditions", "medications", "reports", "observations",
                                   "encounters", "procedures", "documents", "imaging_studies")},
}


def ensure_manifest(project: DbtProject = DBT_PROJECT) -> Path:
    """The manifest dagster-dbt needs: `dagster dev` re-parses, anything else parses once when missing."""
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        from dbt.cli.main import dbtRunner

        result = dbtRunner().invoke(["parse", "--quiet", "--project-dir", str(project.project_dir),
                                     "--profiles-dir", str(project.profiles_dir)])
        if not result.success or not project.manifest_path.exists():
            raise RuntimeError(f"dbt parse of {project.project_dir} failed: {result.exception}")
    return project.manifest_path


class CohortTranslator(DagsterDbtTranslator):
    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str,
                       project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["sources"].get(unique_id) if unique_id.startswith("source.") else None
        if node is not None:
            key = UPSTREAM.get(node["name"], dg.AssetKey(["lake", node["name"]]))
            return spec.replace_attributes(key=key)
        return spec.replace_attributes(group_name="cohorts")


# Several sources (the clinical views) are one asset: clinical_fhir.
TRANSLATOR = CohortTranslator(DagsterDbtTranslatorSettings(enable_duplicate_source_asset_keys=True))


@dbt_assets(manifest=ensure_manifest(), project=DBT_PROJECT, dagster_dbt_translator=TRANSLATOR,
            name="cohort_marts")
def cohort_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                 lakehouse: LakehouseResource) -> Iterator[Any]:
    tenant = lakehouse.tenant_store()
    yield from dbt.cli(["build", "--vars", json.dumps(dbt_vars(tenant))], context=context).stream()


def cohorts_dir() -> Path:
    return Path(os.environ.get("DICOMLAKE_COHORTS_DIR") or DEFAULT_COHORTS_DIR).resolve()


def saved_cohort_asset(path: Path) -> dg.AssetsDefinition:
    name = cohort_name(path)

    @dg.asset(name=f"cohort_{name}", group_name="cohorts", kinds={"python", "deltalake"},
              deps=[UPSTREAM["studies"], UPSTREAM["series"], CLINICAL],  # it reads the clinical views
              description=f"The saved cohort {path.name} as the tenant's Delta table cohort_{name}.")
    def saved_cohort(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
        saved = materialize_cohort(lakehouse.tenant_store(), path)
        context.log.info(f"cohort {name}: {saved.patients} patients, {saved.series} series")
        return dg.MaterializeResult(metadata={
            "patient_count": saved.patients,
            "study_count": saved.studies,
            "series_count": saved.series,
            "as_of": saved.as_of.isoformat(),
            "table": saved.table,
            "definition": str(path),
            "dagster/row_count": saved.rows,
            "sql": dg.MetadataValue.md(f"```sql\n{saved.sql}\n```"),
        })

    return saved_cohort


def saved_cohort_assets(folder: Path | None = None) -> list[dg.AssetsDefinition]:
    return [saved_cohort_asset(p) for p in definition_files(folder or cohorts_dir())]
