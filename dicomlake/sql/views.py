"""One tenant's tables as DuckDB views: the raw Delta tables in schema `lake`, analyst views in `main`.

A connection sees exactly one tenant. Each Delta table is handed to DuckDB as an Arrow dataset over
the table's current Parquet files (local roots: lazy, DuckDB pushes projections and filters down) or
as an Arrow table read by delta-rs's own engine (`dicomlake.store.read.scan`, S3 roots). Once the
views exist, file access is switched off and the configuration locked, so a query cannot open
anything else (`read_parquet('/other/tenant/...')` fails with a permission error).

The analyst views rename FHIR's patient references: in every view `patient_id` is the DICOM
PatientID (null when the FHIR patient is not linked to any imaging) and `fhir_patient_id` the FHIR
Patient id, so clinical rows join to `studies` on `patient_id` directly.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from dicomlake.sql.contract import FHIR_TABLES
from dicomlake.store.lakehouse import TenantStore

# The imaging tables every view layer needs, even in an empty tenant.
IMAGING_TABLES = ("instances", "series", "studies")

# Analyst views, in creation order (later ones use earlier ones). Each is documented in README.md.
ANALYST_VIEWS: dict[str, str] = {
    "instances": "SELECT * FROM lake.instances",
    "series": "SELECT * FROM lake.series",
    "studies": "SELECT * FROM lake.studies",
    # One row per FHIR patient (its first linked PatientID, if any).
    "patient_links": """
        SELECT fhir_patient_id, min(dicom_patient_id) AS dicom_patient_id
        FROM lake.fhir_patient_link GROUP BY fhir_patient_id""",
    "study_links": "SELECT * FROM lake.fhir_study_link",
    # DICOM patients (from their studies) joined with the FHIR patients linked to them, plus FHIR
    # patients without imaging; demographics from DICOM when present, else from FHIR.
    "patients": """
        WITH dicom AS (
            SELECT patient_id, arg_max(patient_name, study_date) AS patient_name,
                   arg_max(patient_birth_date, study_date) AS dicom_birth_date,
                   arg_max(patient_sex, study_date) AS dicom_sex,
                   count(*) AS number_of_studies,
                   min(study_date) AS first_study_date, max(study_date) AS last_study_date
            FROM lake.studies WHERE patient_id IS NOT NULL GROUP BY patient_id),
        fhir AS (
            SELECT p.*, l.dicom_patient_id
            FROM lake.fhir_view_patient p LEFT JOIN patient_links l ON l.fhir_patient_id = p.id)
        SELECT coalesce(d.patient_id, f.dicom_patient_id) AS patient_id, f.id AS fhir_patient_id,
               d.patient_name, f.family, f.given,
               coalesce(d.dicom_birth_date, f.birth_date) AS birth_date,
               coalesce(d.dicom_sex, CASE f.gender WHEN 'male' THEN 'M' WHEN 'female' THEN 'F'
                                                   WHEN 'other' THEN 'O' END) AS sex,
               f.gender, f.deceased, coalesce(d.number_of_studies, 0) AS number_of_studies,
               d.first_study_date, d.last_study_date
        FROM dicom d FULL OUTER JOIN fhir f ON f.dicom_patient_id = d.patient_id""",
    "patient_identifiers": """
        SELECT i.* EXCLUDE (patient_id), i.patient_id AS fhir_patient_id, l.dicom_patient_id AS patient_id
        FROM lake.fhir_view_patient_identifier i
        LEFT JOIN patient_links l ON l.fhir_patient_id = i.patient_id""",
    "encounters": """
        SELECT e.* EXCLUDE (patient_id), e.patient_id AS fhir_patient_id, l.dicom_patient_id AS patient_id
        FROM lake.fhir_view_encounter e LEFT JOIN patient_links l ON l.fhir_patient_id = e.patient_id""",
    "condition_codings": """
        SELECT c.* EXCLUDE (patient_id), c.patient_id AS fhir_patient_id, l.dicom_patient_id AS patient_id
        FROM lake.fhir_view_condition_coding c
        LEFT JOIN patient_links l ON l.fhir_patient_id = c.patient_id""",
    # Conditions with their codings as a list, and the date a diagnosis counts from.
    "conditions": """
        SELECT c.* EXCLUDE (patient_id), c.patient_id AS fhir_patient_id, l.dicom_patient_id AS patient_id,
               coalesce(c.onset_date, c.recorded_date) AS diagnosis_date,
               (SELECT list(struct_pack(system := k.system, code := k.code, display := k.display))
                FROM lake.fhir_view_condition_coding k WHERE k.condition_id = c.id) AS codings
        FROM lake.fhir_view_condition c
        LEFT JOIN patient_links l ON l.fhir_patient_id = c.patient_id""",
    "procedures": """
        SELECT p.* EXCLUDE (patient_id), p.patient_id AS fhir_patient_id, l.dicom_patient_id AS patient_id
        FROM lake.fhir_view_procedure p LEFT JOIN patient_links l ON l.fhir_patient_id = p.patient_id""",
    # MedicationRequests (prescriptions) and MedicationStatements in one shape.
    "medications": """
        WITH m AS (
            SELECT 'MedicationRequest' AS resource_type, id, patient_id, encounter_id, status, intent,
                   authored_on AS date, system, code, display, text
            FROM lake.fhir_view_medication_request
            UNION ALL
            SELECT 'MedicationStatement', id, patient_id, NULL, status, NULL, effective_start,
                   system, code, display, text
            FROM lake.fhir_view_medication_statement)
        SELECT m.* EXCLUDE (patient_id), m.patient_id AS fhir_patient_id, l.dicom_patient_id AS patient_id
        FROM m LEFT JOIN patient_links l ON l.fhir_patient_id = m.patient_id""",
    "observations": """
        SELECT o.* EXCLUDE (patient_id), o.patient_id AS fhir_patient_id, l.dicom_patient_id AS patient_id
        FROM lake.fhir_view_observation o LEFT JOIN patient_links l ON l.fhir_patient_id = o.patient_id""",
    # DiagnosticReports with the DICOM study they were linked to (by UID or accession number).
    "reports": """
        SELECT r.* EXCLUDE (patient_id), r.patient_id AS fhir_patient_id, l.dicom_patient_id AS patient_id,
               s.study_instance_uid
        FROM lake.fhir_view_diagnostic_report r
        LEFT JOIN patient_links l ON l.fhir_patient_id = r.patient_id
        LEFT JOIN (SELECT resource_id, min(study_instance_uid) AS study_instance_uid FROM study_links
                   WHERE resource_type = 'DiagnosticReport' GROUP BY resource_id)
                  s ON s.resource_id = r.id""",
    "imaging_studies": """
        SELECT i.* EXCLUDE (patient_id, study_instance_uid), i.patient_id AS fhir_patient_id,
               l.dicom_patient_id AS patient_id, coalesce(s.study_instance_uid, i.study_instance_uid)
               AS study_instance_uid, s.study_instance_uid IS NOT NULL AS linked
        FROM lake.fhir_view_imaging_study i
        LEFT JOIN patient_links l ON l.fhir_patient_id = i.patient_id
        LEFT JOIN (SELECT resource_id, min(study_instance_uid) AS study_instance_uid FROM study_links
                   WHERE resource_type = 'ImagingStudy' GROUP BY resource_id)
                  s ON s.resource_id = i.id""",
    "documents": """
        SELECT d.* EXCLUDE (patient_id, study_instance_uid), d.patient_id AS fhir_patient_id,
               l.dicom_patient_id AS patient_id,
               coalesce(s.study_instance_uid, d.study_instance_uid) AS study_instance_uid
        FROM lake.fhir_view_document_reference d
        LEFT JOIN patient_links l ON l.fhir_patient_id = d.patient_id
        LEFT JOIN (SELECT resource_id, min(study_instance_uid) AS study_instance_uid FROM study_links
                   WHERE resource_type = 'DocumentReference' GROUP BY resource_id)
                  s ON s.resource_id = d.id""",
}

# Completed years between a birth date and a day (what "aged 45" means).
AGE_MACRO = """
CREATE OR REPLACE MACRO age_at(birth, on_day) AS
    date_diff('year', birth, on_day)
    - CASE WHEN strftime(on_day, '%m%d') < strftime(birth, '%m%d') THEN 1 ELSE 0 END"""


def tenant_table_names(tenant: TenantStore) -> list[str]:
    """The Delta tables below the tenant's own `tables/` folder."""
    from deltalake import DeltaTable

    fs = tenant.lakehouse.filesystem()
    base = f"{tenant.uri}/tables"
    if not fs.exists(base):
        return []
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False))
    return [n for n in names if DeltaTable.is_deltatable(tenant.table_uri(n), tenant.storage_options or None)]


def _delta_relation(tenant: TenantStore, name: str) -> pa.Table | object:
    """An Arrow object DuckDB can scan for one Delta table's current version."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    from dicomlake.store.read import scan

    table = DeltaTable(tenant.table_uri(name), storage_options=tenant.storage_options or None)
    schema = pa.schema(table.schema().to_arrow())
    partitioned = bool(table.metadata().partition_columns)
    if tenant.lakehouse.is_local and not partitioned:
        files = [uri.removeprefix("file://") for uri in table.file_uris()]
        if not files:
            return schema.empty_table()
        # Files written before a column was added lack it: the table's schema fills it with nulls.
        return ds.dataset(files, schema=schema, format="parquet")
    return scan(table)


def _empty_sql(columns: dict[str, str]) -> str:
    return "SELECT " + ", ".join(f"NULL::{kind} AS {name}" for name, kind in columns.items()) + " WHERE false"


def connect(tenant: TenantStore) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection with the tenant's views; no file access beyond them."""
    con = duckdb.connect(":memory:")
    con.execute("CREATE SCHEMA lake")
    present = set(tenant_table_names(tenant))
    for name in sorted(present):
        con.register(f"_delta_{name}", _delta_relation(tenant, name))
        con.execute(f'CREATE VIEW lake."{name}" AS SELECT * FROM "_delta_{name}"')
    _add_missing(con, tenant, present)
    con.execute(AGE_MACRO)
    for view, sql in ANALYST_VIEWS.items():
        con.execute(f'CREATE VIEW main."{view}" AS {sql}')
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _add_missing(con: duckdb.DuckDBPyConnection, tenant: TenantStore, present: set[str]) -> None:
    """Empty stand-ins (and null columns) for contract tables an import has not written yet."""
    from dicomlake.store.levels import derive_series, derive_studies
    from dicomlake.store.schemas import INSTANCES

    if "instances" not in present:
        con.register("_delta_instances", INSTANCES.empty_table())
        con.execute('CREATE VIEW lake."instances" AS SELECT * FROM "_delta_instances"')
    for name, derive in (("series", derive_series), ("studies", derive_studies)):
        if name not in present:  # levels not built yet: derive them from instances here
            import polars as pl

            frame = pl.from_arrow(con.sql("SELECT * FROM lake.instances").to_arrow_table())
            con.register(f"_derived_{name}", derive(frame).to_arrow())
            con.execute(f'CREATE VIEW lake."{name}" AS SELECT * FROM "_derived_{name}"')
    for name, columns in FHIR_TABLES.items():
        if name not in present:
            con.execute(f'CREATE VIEW lake."{name}" AS {_empty_sql(columns)}')
            continue
        have = {
            row[0]
            for row in con.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'lake' AND table_name = ?",
                [name],
            ).fetchall()
        }
        missing = {c: kind for c, kind in columns.items() if c not in have}
        if missing:  # an older import: the view still has every contract column
            extra = ", ".join(f"NULL::{kind} AS {c}" for c, kind in missing.items())
            con.execute(f'CREATE OR REPLACE VIEW lake."{name}" AS SELECT *, {extra} FROM "_delta_{name}"')
