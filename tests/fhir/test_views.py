"""The ViewDefinition runner against SQL-on-FHIR v2 semantics, and the shipped views."""

from __future__ import annotations

import pytest

from dicomlake.fhir.views import ViewDefinition, ViewError, shipped_views, to_arrow, view_schemas
from dicomlake.store.schemas import SCHEMAS

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "active": True,
    "name": [{"family": "F1", "given": ["A", "B"]}, {"family": "F2"}],
    "identifier": [{"system": "s1", "value": "v1"}, {"system": "s2", "value": "v2"}],
}


def view(select: list[dict], **extra: object) -> ViewDefinition:
    return ViewDefinition.parse(
        {"resourceType": "ViewDefinition", "name": "t", "resource": "Patient", "select": select, **extra}
    )


def test_for_each_gives_a_row_per_item_and_crosses_with_the_parent() -> None:
    v = view(
        [
            {"column": [{"name": "id", "path": "getResourceKey()"}]},
            {"forEach": "name", "column": [{"name": "family", "path": "family"}]},
        ]
    )
    assert v.rows(PATIENT) == [{"id": "p1", "family": "F1"}, {"id": "p1", "family": "F2"}]
    assert v.rows({"resourceType": "Patient", "id": "p2"}) == []  # forEach over nothing: no row


def test_for_each_or_null_keeps_one_null_row() -> None:
    v = view(
        [
            {"column": [{"name": "id", "path": "id"}]},
            {"forEachOrNull": "telecom", "column": [{"name": "tel", "path": "value"}]},
        ]
    )
    assert v.rows(PATIENT) == [{"id": "p1", "tel": None}]


def test_where_constants_collections_union_and_errors() -> None:
    v = view(
        [
            {
                "column": [
                    {"name": "id", "path": "id"},
                    {"name": "given", "path": "name.given", "collection": True},
                ]
            }
        ],
        where=[{"path": "identifier.where(system = %sys).exists()"}],
        constant=[{"name": "sys", "valueString": "s2"}],
    )
    assert v.rows(PATIENT) == [{"id": "p1", "given": ["A", "B"]}]
    assert v.rows({**PATIENT, "identifier": []}) == []
    union = view(
        [
            {
                "unionAll": [
                    {"forEach": "identifier", "column": [{"name": "v", "path": "value"}]},
                    {"forEach": "name", "column": [{"name": "v", "path": "family"}]},
                ]
            }
        ]
    )
    assert [r["v"] for r in union.rows(PATIENT)] == ["v1", "v2", "F1", "F2"]
    with pytest.raises(ViewError, match="2 values"):
        view([{"column": [{"name": "f", "path": "name.family"}]}]).rows(PATIENT)
    assert view([{"column": [{"name": "x", "path": "id"}]}]).rows({"resourceType": "Observation"}) == []


def test_reference_key_and_typed_arrow_output() -> None:
    v = ViewDefinition.parse(
        {
            "resourceType": "ViewDefinition",
            "name": "o",
            "resource": "Observation",
            "select": [
                {
                    "column": [
                        {"name": "pid", "path": "subject.getReferenceKey(Patient)"},
                        {"name": "gid", "path": "subject.getReferenceKey(Group)"},
                        {"name": "at", "path": "effective.ofType(dateTime)", "type": "dateTime"},
                    ]
                }
            ],
        }
    )
    rows = v.rows(
        {
            "resourceType": "Observation",
            "subject": {"reference": "Patient/abc"},
            "effectiveDateTime": "2026-01-02T03:04:05+02:00",
        }
    )
    assert rows == [{"pid": "abc", "gid": None, "at": "2026-01-02T03:04:05+02:00"}]
    table = to_arrow(v, rows)
    assert str(table.column("at")[0].as_py()) == "2026-01-02 01:04:05+00:00"


def test_shipped_views_are_versioned_and_registered() -> None:
    views = shipped_views()
    assert len(views) == 12 and all(v.version for v in views.values())
    for name, schema in view_schemas().items():
        assert SCHEMAS[name] == schema
    assert SCHEMAS["fhir_view_imaging_study"].field("modalities").type.value_type.equals("string")
    report = views["diagnostic_report"].rows(
        {
            "resourceType": "DiagnosticReport",
            "id": "d",
            "status": "final",
            "code": {"text": "x"},
            "identifier": [{"type": {"coding": [{"code": "ACSN"}]}, "value": "A1"}],
            "imagingStudy": [{"reference": "ImagingStudy/i1"}],
            "presentedForm": [{"contentType": "text/plain", "data": "aGVsbG8="}],
        }
    )
    assert (
        report[0]["accession_number"],
        report[0]["imaging_study_id"],
        report[0]["presented_form_text"],
    ) == ("A1", "i1", "hello")
