"""Run a cohort (a definition, a definition file, or a plain-language question) over one tenant."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomlake.cohort.compile import CompiledCohort, compile_definition
from dicomlake.cohort.definition import CohortDefinition, load_definition, parse_definition
from dicomlake.store.lakehouse import TenantStore


@dataclass
class CohortResult:
    """What a cohort found. `patients`, `studies` and `series` are DICOM identifiers (sorted):
    PatientIDs, StudyInstanceUIDs, SeriesInstanceUIDs; `rows` holds every requested collection.

    `patients` is the cohort: everyone the patient criteria select. The return filter narrows only
    what is returned ("CT scans of women over 30": the women's CT studies), so a cohort patient may
    have no returned study; `patients_with_studies` are those who have one."""

    definition: CohortDefinition
    compiled: CompiledCohort
    patients: list[str]
    studies: list[str]
    series: list[str]
    rows: dict[str, list[dict[str, Any]]]
    unrecognized: list[str] = field(default_factory=list)
    understood: list[str] = field(default_factory=list)
    question: str | None = None
    unlinked_fhir_patients: int = 0
    patients_with_studies: list[str] = field(default_factory=list)

    @property
    def sql(self) -> str:
        return self.compiled.script()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "question": self.question,
            "as_of": self.compiled.as_of.isoformat(),
            "definition": self.definition.as_json(),
            "understood": self.understood,
            "unrecognized": self.unrecognized,
            "sql": self.sql,
            "patients": self.patients,
            "patients_with_studies": self.patients_with_studies,
            "unlinked_fhir_patients": self.unlinked_fhir_patients,
        }
        for name, rows in self.rows.items():
            out[name if name != "patients" else "patient_rows"] = rows
        return out


def resolve(
    tenant: TenantStore,
    definition_or_question: Any,
    as_of: datetime.date | str | None = None,
    llm: Any = None,
) -> tuple[CohortDefinition, list[str], list[str], str | None]:
    """(definition, understood, unrecognized, question) from whatever the caller gave."""
    from dicomlake.cohort.question import parse_question

    question = None
    understood: list[str] = []
    unrecognized: list[str] = []
    if isinstance(definition_or_question, CohortDefinition):
        definition = definition_or_question
    elif isinstance(definition_or_question, dict):
        definition = parse_definition(definition_or_question)
    elif isinstance(definition_or_question, Path):
        definition = load_definition(definition_or_question)
    elif isinstance(definition_or_question, str):
        question = definition_or_question
        parsed = parse_question(question, tenant, llm=llm)
        definition, understood, unrecognized = parsed.definition, parsed.understood, parsed.unrecognized
    else:
        raise TypeError("expected a CohortDefinition, a mapping, a Path or a question string")
    if as_of is not None:
        day = as_of if isinstance(as_of, datetime.date) else datetime.date.fromisoformat(str(as_of))
        definition = _with_as_of(definition, day)
    return definition, understood, unrecognized, question


def _with_as_of(definition: CohortDefinition, day: datetime.date) -> CohortDefinition:
    from dataclasses import replace

    return replace(definition, as_of=day)


def run(
    tenant: TenantStore,
    definition_or_question: Any,
    as_of: datetime.date | str | None = None,
    llm: Any = None,
) -> CohortResult:
    """Resolve, compile and run a cohort over the tenant's views."""
    from dicomlake.sql import connect
    from dicomlake.sql.output import rows_of

    definition, understood, unrecognized, question = resolve(tenant, definition_or_question, as_of, llm)
    compiled = compile_definition(definition)
    con = connect(tenant)
    try:
        con.execute(f"CREATE TEMP VIEW cohort AS {compiled.cohort_sql}")
        con.execute(f"CREATE TEMP VIEW cohort_studies AS {compiled.studies_sql}")
        rows = {name: rows_of(con.sql(sql).to_arrow_table()) for name, sql in compiled.collections.items()}
        patients = sorted(
            {r[0] for r in con.sql("SELECT patient_id FROM cohort WHERE patient_id IS NOT NULL").fetchall()}
        )
        unlinked = con.sql(
            "SELECT count(DISTINCT fhir_patient_id) FROM cohort WHERE patient_id IS NULL"
        ).fetchall()[0][0]
        returned = con.sql("SELECT study_instance_uid, patient_id FROM cohort_studies").fetchall()
        studies = sorted(r[0] for r in returned)
        with_studies = sorted({r[1] for r in returned if r[1] is not None})
        series_sql = compiled.collections.get("series") or (
            "SELECT series_instance_uid FROM series WHERE study_instance_uid IN "
            "(SELECT study_instance_uid FROM cohort_studies)"
        )
        series = sorted({r["series_instance_uid"] for r in rows_of(con.sql(series_sql).to_arrow_table())})
    finally:
        con.close()
    return CohortResult(
        definition=definition,
        compiled=compiled,
        patients=patients,
        studies=studies,
        series=series,
        rows=rows,
        unrecognized=unrecognized,
        understood=understood,
        question=question,
        unlinked_fhir_patients=int(unlinked),
        patients_with_studies=with_studies,
    )
