"""Cohort definitions: validation errors name the field, files load, and the form round-trips."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from dicomlake.cohort.compile import compile_definition
from dicomlake.cohort.definition import CohortDefinitionError, Window, load_definition, parse_definition

FULL = {
    "name": "full",
    "as_of": "2026-11-01",
    "patients": {"age": {"min": 46, "max": 90}, "sex": ["female", "male"]},
    "conditions": [
        {
            "codes": [{"system": "http://snomed.info/sct", "code": "307548001"}],
            "text": ["osteosarcoma"],
            "window": {"last": {"years": 2}},
        }
    ],
    "imaging": [{"modalities": ["CT"], "body_parts": ["CHEST"], "window": {"start": "2023-01-01"}}],
    "medications": [{"text": ["metformin"]}],
    "exclude": {
        "conditions": [{"text": ["diabetes"], "window": {"last": {"years": 5}}}],
        "imaging": [{"modalities": ["MR"]}],
        "medications": [
            {"codes": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "5640"}]}
        ],
    },
    "return": {
        "patients": {},
        "studies": {"modalities": ["CT"]},
        "series": {"modalities": ["CT"]},
        "medications": {"prescribed": True},
        "reports": {"category": "radiology", "linked_to_studies": True},
        "documents": {"linked_to_studies": True},
    },
}


def test_the_documented_form_round_trips() -> None:
    definition = parse_definition(FULL)
    assert definition.as_json() == FULL
    assert parse_definition(json.loads(json.dumps(definition.as_json()))) == definition


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"patients": {"age": {"min": "old"}}},
            "patients.age.min: expected whole years between 0 and 150, got 'old'",
        ),
        ({"patients": {"age": {"min": 60, "max": 50}}}, "patients.age: min 60 is above max 50"),
        (
            {"patients": {"sex": ["woman"]}},
            "patients.sex[0]: expected one of female, male, other, unknown, got 'woman'",
        ),
        (
            {"conditions": [{"window": {"last": {"years": 1}}}]},
            "conditions[0]: needs at least one of 'codes' or 'text'",
        ),
        (
            {"conditions": [{"text": ["x"], "window": {"last": {"decades": 1}}}]},
            "conditions[0].window.last: unknown field(s) 'decades'; allowed: days, months, years",
        ),
        (
            {"conditions": [{"text": ["x"], "window": {"start": "2024-05-01", "end": "2024-01-01"}}]},
            "conditions[0].window: start 2024-05-01 is after end 2024-01-01",
        ),
        ({"conditions": [{"codes": [{"system": "s"}]}]}, "conditions[0].codes[0]: missing 'code'"),
        (
            {"imaging": [{"modalities": ["C T"]}]},
            "imaging[0].modalities[0]: expected a DICOM modality code like CT",
        ),
        ({"imaging": [{}]}, "imaging[0]: needs at least one of 'modalities', 'body_parts', 'window'"),
        ({"return": ["patients", "x-rays"]}, "return[1]: expected one of patients, studies, series"),
        (
            {"return": {"reports": {"category": "cardiology"}}},
            "return.reports.category: expected one of radiology",
        ),
        ({"as_of": "yesterday"}, "as_of: expected a date YYYY-MM-DD, got 'yesterday'"),
        ({"cohort": 1}, "unknown field(s) 'cohort'"),
        ({"exclude": {"patients": {}}}, "exclude: unknown field(s) 'patients'"),
        ({"exclude": {"imaging": [{}]}}, "exclude.imaging[0]: needs at least one of 'modalities'"),
        ({"exclude": {"conditions": [{"window": {"last": {"years": 1}}}]}},
         "exclude.conditions[0]: needs at least one of 'codes' or 'text'"),
    ],
)
def test_bad_definitions_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(CohortDefinitionError) as caught:
        parse_definition({**{"patients": {}}, **change})
    assert message in str(caught.value)


def test_yaml_and_json_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("patients:\n  age: {min: 18}\nreturn: [patients, studies]\n")
    definition = load_definition(tmp_path / "a.yaml")
    assert (definition.age_min, definition.returns.collections) == (18, ("patients", "studies"))
    (tmp_path / "b.json").write_text(json.dumps(FULL))
    assert load_definition(tmp_path / "b.json") == parse_definition(FULL)
    (tmp_path / "c.yaml").write_text("patients: [unclosed\n")
    with pytest.raises(CohortDefinitionError, match=r"c\.yaml: not valid yaml"):
        load_definition(tmp_path / "c.yaml")


def test_windows_resolve_against_the_as_of_date() -> None:
    as_of = datetime.date(2024, 3, 31)
    assert Window(last_years=2).bounds(as_of) == (datetime.date(2022, 3, 31), as_of)
    assert Window(last_months=1).bounds(as_of) == (datetime.date(2024, 2, 29), as_of)
    assert Window(last_days=14).bounds(as_of) == (datetime.date(2024, 3, 17), as_of)
    assert Window(start=datetime.date(2023, 1, 1)).bounds(as_of) == (datetime.date(2023, 1, 1), as_of)
    assert Window(end=datetime.date(2030, 1, 1)).bounds(as_of) == (None, as_of)  # never past as_of


def test_values_are_quoted_in_the_sql() -> None:
    definition = parse_definition(
        {"conditions": [{"text": ["o'brien's 100%_disease"]}], "as_of": "2026-01-01"}
    )
    sql = compile_definition(definition).cohort_sql
    assert "'%o''brien''s 100\\%\\_disease%'" in sql
