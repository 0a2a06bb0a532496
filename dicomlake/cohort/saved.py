"""Saved cohorts: definition files in a folder, each materialized as a Delta table of the tenant.

    cohorts/osteosarcoma_ct.yaml  ->  <tenant>/tables/cohort_osteosarcoma_ct

The table has one row per returned series (or per patient without any): cohort, patient_id,
fhir_patient_id, study_instance_uid, series_instance_uid, as_of, built_at. Each build overwrites it
in one commit, so readers see either the old cohort or the new one; `dicomlake sql` shows it as
`lake.cohort_<name>`.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from dicomlake.cohort.definition import CohortDefinitionError, load_definition
from dicomlake.store.lakehouse import TenantStore

SUFFIXES = (".yaml", ".yml", ".json")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")
SCHEMA = pa.schema([
    pa.field("cohort", pa.string(), nullable=False),
    pa.field("patient_id", pa.string()),
    pa.field("fhir_patient_id", pa.string()),
    pa.field("study_instance_uid", pa.string()),
    pa.field("series_instance_uid", pa.string()),
    pa.field("as_of", pa.date32(), nullable=False),
    pa.field("built_at", pa.timestamp("us", tz="UTC"), nullable=False),
])


@dataclass(frozen=True)
class SavedCohort:
    name: str
    table: str
    patients: int
    studies: int
    series: int
    rows: int
    sql: str
    as_of: datetime.date


def cohort_name(path: Path) -> str:
    name = path.stem.lower().replace("-", "_")
    if not _NAME.match(name):
        raise CohortDefinitionError(str(path), "file names of saved cohorts are letters, digits, '_' or '-'")
    return name


def definition_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


def materialize_cohort(tenant: TenantStore, path: str | Path,
                       as_of: datetime.date | None = None) -> SavedCohort:
    """Run the definition in `path` and overwrite the tenant's table `cohort_<name>` with its result."""
    from deltalake import write_deltalake

    from dicomlake.cohort.runner import run

    path = Path(path)
    name = cohort_name(path)
    result = run(tenant, load_definition(path), as_of=as_of)
    built_at = datetime.datetime.now(datetime.UTC)
    rows = []
    studies_of = {}
    series_rows = result.rows.get("series")
    if series_rows is None:
        from dicomlake.sql import query

        uids = ", ".join("'" + s.replace("'", "''") + "'" for s in result.series) or "NULL"
        series_rows = query(tenant, "SELECT series_instance_uid, study_instance_uid FROM series "
                                    f"WHERE series_instance_uid IN ({uids})").to_pylist()
    patient_of_study = {}
    fhir_of_patient = {}
    for study in _studies(tenant, result.studies):
        patient_of_study[study["study_instance_uid"]] = study["patient_id"]
    for row in result.rows.get("patients", []):
        fhir_of_patient.setdefault(row["patient_id"], row["fhir_patient_id"])
    for s in series_rows:
        studies_of.setdefault(patient_of_study.get(s["study_instance_uid"]), []).append(s)
    for patient in result.patients:
        for s in studies_of.get(patient, []) or [None]:
            rows.append({"cohort": name, "patient_id": patient,
                         "fhir_patient_id": fhir_of_patient.get(patient),
                         "study_instance_uid": s and s["study_instance_uid"],
                         "series_instance_uid": s and s["series_instance_uid"],
                         "as_of": result.compiled.as_of, "built_at": built_at})
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    write_deltalake(tenant.table_uri(f"cohort_{name}"), table, mode="overwrite", schema_mode="overwrite",
                    storage_options=tenant.storage_options or None)
    return SavedCohort(name=name, table=f"cohort_{name}", patients=len(result.patients),
                       studies=len(result.studies), series=len(result.series), rows=len(rows), sql=result.sql,
                       as_of=result.compiled.as_of)


def _studies(tenant: TenantStore, uids: list[str]) -> list[dict]:
    if not uids:
        return []
    from dicomlake.sql import query

    listed = ", ".join("'" + u.replace("'", "''") + "'" for u in uids)
    return query(tenant, "SELECT study_instance_uid, patient_id FROM studies "
                         f"WHERE study_instance_uid IN ({listed})").to_pylist()
