"""A cohort definition compiled to DuckDB SQL over the analyst views of `dicomlake.sql`.

The output is plain SQL with every value written in as a quoted literal, so what `--explain` shows
is exactly what runs, and it can be pasted into `dicomlake sql`. `cohort` is a view of the matching
patients (one row per DICOM/FHIR patient pair); each requested collection is one SELECT over it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from dicomlake.cohort.definition import SEXES, ClinicalCriterion, CohortDefinition, ImagingFilter, Window

# DiagnosticReport.category codes by kind: HL7 v2-0074 and the LOINC parts FHIR's examples use.
REPORT_CATEGORY_CODES = {
    "radiology": ("RAD", "LP29684-5", "CT", "RX", "NMR", "US", "XRC", "NMS"),
    "laboratory": ("LAB", "LP29693-6", "CH", "HM"),
    "pathology": ("PAT", "SP", "LP7839-6"),
}


@dataclass(frozen=True)
class CompiledCohort:
    as_of: datetime.date
    cohort_sql: str  # SELECT of the cohort's patient rows
    collections: dict[str, str]  # name -> SELECT over the view `cohort` (and `cohort_studies`)
    studies_sql: str  # SELECT of the studies the return filter keeps (view `cohort_studies`)

    def script(self) -> str:
        """Everything, runnable in order in one DuckDB connection with the tenant's views."""
        parts = [
            f"CREATE OR REPLACE TEMP VIEW cohort AS\n{self.cohort_sql};",
            f"CREATE OR REPLACE TEMP VIEW cohort_studies AS\n{self.studies_sql};",
        ]
        parts += [f"-- {name}\n{sql};" for name, sql in self.collections.items()]
        return "\n\n".join(parts)


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _date(day: datetime.date) -> str:
    return f"DATE '{day.isoformat()}'"


def _in_list(values: tuple[str, ...] | list[str]) -> str:
    return "(" + ", ".join(literal(v) for v in values) + ")"


def _window_sql(column: str, window: Window | None, as_of: datetime.date) -> list[str]:
    if window is None:
        return []
    start, end = window.bounds(as_of)
    # A timestamp column compares by its UTC calendar day.
    day = f"CAST({column} AS DATE)"
    out = [f"{day} <= {_date(end)}"]
    if start is not None:
        out.insert(0, f"{day} >= {_date(start)}")
    return out


def _like(column: str, text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"lower({column}) LIKE {literal('%' + escaped + '%')} ESCAPE '\\'"


def _condition_exists(c: ClinicalCriterion, as_of: datetime.date, negate: bool = False) -> str:
    matches = []
    for code in c.codes:
        system = f" AND k.system = {literal(code.system)}" if code.system else ""
        matches.append(
            f"EXISTS (SELECT 1 FROM condition_codings k WHERE k.condition_id = c.id"
            f" AND k.code = {literal(code.code)}{system})"
        )
    for text in c.text:
        matches.append(_like("c.text", text))
        matches.append(
            f"EXISTS (SELECT 1 FROM condition_codings k WHERE k.condition_id = c.id"
            f" AND {_like('k.display', text)})"
        )
    where = [_same_person("c", negate), "(" + "\n             OR ".join(matches) + ")"]
    where += _window_sql("c.diagnosis_date", c.window, as_of)
    # Refuted or entered-in-error diagnoses are not diagnoses.
    where.append("coalesce(c.verification_status, '') NOT IN ('refuted', 'entered-in-error')")
    return _exists("conditions c", where, negate)


def _same_person(alias: str, negate: bool) -> str:
    # A criterion holds for one DICOM/FHIR patient pair (a row of `patients`); an exclusion for the
    # whole person: any FHIR patient linked to the same DICOM PatientID rules the patient out.
    if negate:
        return f"({alias}.fhir_patient_id = p.fhir_patient_id OR {alias}.patient_id = p.patient_id)"
    return f"{alias}.fhir_patient_id = p.fhir_patient_id"


def _exists(source: str, where: list[str], negate: bool) -> str:
    return (
        ("NOT " if negate else "")
        + f"EXISTS (SELECT 1 FROM {source}\n        WHERE "
        + "\n          AND ".join(where)
        + ")"
    )


def _medication_match(alias: str, c: ClinicalCriterion) -> str:
    matches = []
    for code in c.codes:
        system = f" AND {alias}.system = {literal(code.system)}" if code.system else ""
        matches.append(f"({alias}.code = {literal(code.code)}{system})")
    for text in c.text:
        matches += [_like(f"{alias}.display", text), _like(f"{alias}.text", text)]
    return "(" + " OR ".join(matches) + ")"


def _medication_exists(c: ClinicalCriterion, as_of: datetime.date, negate: bool = False) -> str:
    where = [_same_person("m", negate), _medication_match("m", c)]
    where += _window_sql("m.date", c.window, as_of)
    return _exists("medications m", where, negate)


def _series_filter(alias: str, f: ImagingFilter) -> list[str]:
    out = []
    if f.modalities:
        out.append(f"{alias}.modality IN {_in_list(f.modalities)}")
    if f.body_parts:
        out.append(f"upper({alias}.body_part_examined) IN {_in_list(f.body_parts)}")
    return out


def _imaging_exists(f: ImagingFilter, as_of: datetime.date, negate: bool = False) -> str:
    where = ["st.patient_id = p.patient_id", *_window_sql("st.study_date", f.window, as_of)]
    series = _series_filter("se", f)
    if series:
        where.append(
            "EXISTS (SELECT 1 FROM series se WHERE se.study_instance_uid = st.study_instance_uid AND "
            + " AND ".join(series)
            + ")"
        )
    return _exists("studies st", where, negate)


def compile_definition(definition: CohortDefinition) -> CompiledCohort:
    as_of = definition.resolved_as_of()
    age = f"age_at(p.birth_date, {_date(as_of)})"
    where: list[str] = []
    if definition.age_min is not None:
        where.append(f"{age} >= {definition.age_min}")
    if definition.age_max is not None:
        where.append(f"{age} <= {definition.age_max}")
    if definition.sexes:
        codes = [SEXES[s] for s in definition.sexes if SEXES[s]]
        clauses = [f"p.sex IN {_in_list(codes)}"] if codes else []
        if "unknown" in definition.sexes:
            clauses.append("p.sex IS NULL")
        where.append("(" + " OR ".join(clauses) + ")")
    where += [_condition_exists(c, as_of) for c in definition.conditions]
    where += [_imaging_exists(f, as_of) for f in definition.imaging]
    where += [_medication_exists(c, as_of) for c in definition.medications]
    where += [_condition_exists(c, as_of, negate=True) for c in definition.exclude_conditions]
    where += [_imaging_exists(f, as_of, negate=True) for f in definition.exclude_imaging]
    where += [_medication_exists(c, as_of, negate=True) for c in definition.exclude_medications]
    cohort_sql = (
        f"SELECT p.patient_id, p.fhir_patient_id, p.patient_name, p.sex, p.birth_date, {age} AS age\n"
        "FROM patients p"
    )
    if where:
        cohort_sql += "\nWHERE " + "\n  AND ".join(where)

    returns = definition.returns
    study_filter = [
        "st.patient_id IN (SELECT patient_id FROM cohort)",
        *_window_sql("st.study_date", returns.studies.window, as_of),
    ]
    series_filter = _series_filter("se", returns.studies)
    if series_filter:
        study_filter.append(
            "EXISTS (SELECT 1 FROM series se WHERE se.study_instance_uid = st.study_instance_uid"
            " AND " + " AND ".join(series_filter) + ")"
        )
    studies_sql = (
        "SELECT st.study_instance_uid, st.patient_id, st.study_date, st.accession_number,\n"
        "       st.study_description, st.modalities_in_study, st.number_of_study_related_series,\n"
        "       st.number_of_study_related_instances\n"
        "FROM studies st\nWHERE " + "\n  AND ".join(study_filter)
    )

    collections: dict[str, str] = {}
    for name in returns.collections:
        if name == "patients":
            collections[name] = (
                "SELECT DISTINCT patient_id, fhir_patient_id, patient_name, sex, birth_date, age\n"
                "FROM cohort ORDER BY patient_id, fhir_patient_id"
            )
        elif name == "studies":
            collections[name] = (
                "SELECT * FROM cohort_studies ORDER BY patient_id, study_date, study_instance_uid"
            )
        elif name == "series":
            keep = " AND ".join(
                ["se.study_instance_uid IN (SELECT study_instance_uid FROM cohort_studies)", *series_filter]
            )
            collections[name] = (
                "SELECT se.series_instance_uid, se.study_instance_uid, se.modality,\n"
                "       se.body_part_examined, se.series_number, se.series_description,\n"
                "       se.number_of_series_related_instances\n"
                f"FROM series se\nWHERE {keep}\n"
                "ORDER BY se.study_instance_uid, se.series_number, se.series_instance_uid"
            )
        elif name == "medications":
            keep = ["m.fhir_patient_id IN (SELECT fhir_patient_id FROM cohort)"]
            if returns.medications_prescribed:
                keep.append("m.resource_type = 'MedicationRequest'")
            keep += _window_sql("m.date", returns.medications_window, as_of)
            collections[name] = (
                "SELECT m.patient_id, m.fhir_patient_id, m.resource_type, m.id, m.status, m.date,\n"
                "       m.system, m.code, m.display, m.text\n"
                "FROM medications m\nWHERE " + "\n  AND ".join(keep) + "\nORDER BY m.patient_id, m.date, m.id"
            )
        elif name == "reports":
            keep = ["r.fhir_patient_id IN (SELECT fhir_patient_id FROM cohort)"]
            if returns.report_category != "any":
                codes = REPORT_CATEGORY_CODES[returns.report_category]
                keep.append(f"upper(r.category_code) IN {_in_list(codes)}")
            keep += _window_sql("coalesce(r.effective, r.issued)", returns.reports_window, as_of)
            if returns.reports_linked_to_studies:
                keep.append("r.study_instance_uid IN (SELECT study_instance_uid FROM cohort_studies)")
            collections[name] = (
                "SELECT r.patient_id, r.fhir_patient_id, r.id, r.status, r.category_code, r.code,\n"
                "       r.display, r.effective, r.issued, r.study_instance_uid, r.accession_number,\n"
                "       r.conclusion\n"
                "FROM reports r\nWHERE "
                + "\n  AND ".join(keep)
                + "\nORDER BY r.patient_id, r.effective, r.id"
            )
        elif name == "documents":
            keep = ["d.fhir_patient_id IN (SELECT fhir_patient_id FROM cohort)"]
            keep += _window_sql("d.date", returns.documents_window, as_of)
            if returns.documents_linked_to_studies:
                keep.append("d.study_instance_uid IN (SELECT study_instance_uid FROM cohort_studies)")
            collections[name] = (
                "SELECT d.patient_id, d.fhir_patient_id, d.id, d.status, d.type_code, d.type_display,\n"
                "       d.date, d.description, d.content_type, d.content_url, d.study_instance_uid\n"
                "FROM documents d\nWHERE " + "\n  AND ".join(keep) + "\nORDER BY d.patient_id, d.date, d.id"
            )
    return CompiledCohort(
        as_of=as_of, cohort_sql=cohort_sql, collections=collections, studies_sql=studies_sql
    )
