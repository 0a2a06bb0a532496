"""The dbt marts (dbt_project/) built for real with dbt-duckdb over a tenant, their dbt tests, and
what they hold, checked against the sample plan and the hand-written clinical record."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from dicomlake.sql.marts import build_marts, marts_path
from tests.cohort.demo_lake import DemoLake, age, build_demo_lake
from tests.cohort.hand_clinical import write_hand_clinical


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoLake, object]:
    lake = build_demo_lake(tmp_path_factory.mktemp("marts"), "clinic-a", with_clinical=False)
    write_hand_clinical(lake.tenant, lake.studies)
    return lake, build_marts(lake.tenant)


def _rows(lake: DemoLake, sql: str) -> list[tuple]:
    con = duckdb.connect(str(marts_path(lake.tenant)), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_build_passes_every_dbt_test(built: tuple[DemoLake, object]) -> None:
    lake, build = built
    assert build.success and build.failures == []
    tests = [r for r in build.results if r["type"] == "test"]
    models = sorted(r["name"] for r in build.results if r["type"] == "model")
    assert models == ["image_occurrence", "imaging_cohort_base", "patient_timeline"] and len(tests) >= 20
    assert Path(build.path) == Path(lake.tenant.uri) / "marts" / "cohort.duckdb"


def test_imaging_cohort_base(built: tuple[DemoLake, object]) -> None:
    lake, _ = built
    rows = {
        r[0]: r[1:]
        for r in _rows(
            lake,
            "SELECT study_instance_uid, patient_id, age_at_study, "
            "[c.id for c in conditions], [r.id for r in reports] "
            "FROM imaging_cohort_base",
        )
    }
    assert len(rows) == len(lake.studies)
    for s in lake.studies:
        assert rows[s.study_instance_uid][:2] == (
            s.patient.patient_id,
            age(s.patient.birth_date, s.study_date),
        )
    by_date = {(s.patient.patient_id, s.study_date.isoformat()): s.study_instance_uid for s in lake.studies}
    # DL-000008's CT abdomen of 2024-10-08: the 2019 infarction is known, the 2025 osteosarcoma not yet.
    assert rows[by_date[("DL-000008", "2024-10-08")]][2:] == (["c4"], ["r4"])
    assert rows[by_date[("DL-000001", "2025-03-30")]][2:] == ([], ["r1"])


def test_image_occurrence_follows_omop_mi_cdm(built: tuple[DemoLake, object]) -> None:
    lake, _ = built
    columns = [
        r[0]
        for r in _rows(
            lake,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'image_occurrence' ORDER BY ordinal_position",
        )
    ]
    assert columns[:11] == [
        "image_occurrence_id",
        "person_id",
        "procedure_occurrence_id",
        "visit_occurrence_id",
        "anatomic_site_concept_id",
        "wadors_uri",
        "local_path",
        "image_occurrence_date",
        "image_study_uid",
        "image_series_uid",
        "modality_concept_id",
    ]
    ((count, ids, studies),) = _rows(
        lake,
        "SELECT count(*), count(DISTINCT image_occurrence_id), "
        "count(DISTINCT image_study_uid) FROM image_occurrence",
    )
    assert count == ids == sum(s.series_count for s in lake.studies) and studies == len(lake.studies)
    ((uri,),) = _rows(lake, "SELECT any_value(wadors_uri) FROM image_occurrence")
    assert "/tenants/clinic-a/dicomweb/studies/" in uri


def test_patient_timeline(built: tuple[DemoLake, object]) -> None:
    lake, _ = built
    counts = dict(_rows(lake, "SELECT event_type, count(*) FROM patient_timeline GROUP BY 1"))
    # 30 studies; the hand record: 10 conditions, 4 prescriptions + 1 statement, 4 reports, 2 documents.
    assert counts == {"study": 30, "condition": 10, "medication": 5, "report": 4, "document": 2}
    assert _rows(lake, "SELECT DISTINCT person_key FROM patient_timeline WHERE patient_id IS NULL") == [
        ("fhir:p-100",)
    ]


def test_each_tenant_has_its_own_marts_file(built: tuple[DemoLake, object], tmp_path: Path) -> None:
    lake, _ = built
    other = lake.tenant.lakehouse.tenant("clinic-b")  # no data at all
    build = build_marts(other)
    assert build.success, build.failures
    assert marts_path(other) != marts_path(lake.tenant) and marts_path(other).is_relative_to(other.uri)
    con = duckdb.connect(str(marts_path(other)), read_only=True)
    assert con.execute("SELECT count(*) FROM imaging_cohort_base").fetchall() == [(0,)]
    con.close()
    assert _rows(lake, "SELECT count(*) FROM imaging_cohort_base") == [(30,)]


def test_the_marts_on_the_demo_data(demo: DemoLake) -> None:
    """The marts over the demo: its DICOM samples and the importer's clinical samples (imported for
    real), checked against the generator's resources by plain Python."""
    from dicomlake.fhir.clinical_samples import build

    build_result = build_marts(demo.tenant)
    assert build_result.success, build_result.failures
    resources, _ = build(300, 0)
    counts = dict(_rows(demo, "SELECT event_type, count(*) FROM patient_timeline GROUP BY 1"))
    assert counts == {
        "study": len(demo.studies),
        "condition": len(resources["Condition"]),
        "medication": len(resources["MedicationRequest"]) + len(resources["MedicationStatement"]),
        "report": len(resources["DiagnosticReport"]),  # dr-unmatched too: it has a (FHIR-only) patient
        "observation": len(resources["Observation"]),
        "encounter": len(resources["Encounter"]),
        "procedure": len(resources["Procedure"]),
        "document": len(resources["DocumentReference"]),
    }
    # FHIR-only people with events: EXT-900001 (osteosarcoma, its drugs), EXT-900002 (the unmatched report).
    assert _rows(demo, "SELECT DISTINCT person_key FROM patient_timeline WHERE patient_id IS NULL "
                       "ORDER BY 1") == [("fhir:pt-ext-900001",), ("fhir:pt-ext-900002",)]
    # DL-000001's CT head of 2025-03-30: every diagnosis of pt-dl-000001 with onset on or before it.
    (ct_head,) = [s for s in demo.studies
                  if (s.patient.patient_id, s.study_date.isoformat()) == ("DL-000001", "2025-03-30")]
    known = sorted(c["id"] for c in resources["Condition"]
                   if c["subject"]["reference"] == "Patient/pt-dl-000001"
                   and c["onsetDateTime"] <= "2025-03-30")
    assert "cond-pt-dl-000001-osteosarcoma-right" in known
    uid = ct_head.study_instance_uid
    (row,) = _rows(demo, "SELECT list_sort([c.id for c in conditions]), [r.id for r in reports] "
                         f"FROM imaging_cohort_base WHERE study_instance_uid = '{uid}'")
    assert row == (known, [f"dr-{ct_head.accession_number.lower()}"])
    series = sum(s.series_count for s in demo.studies)
    assert _rows(demo, "SELECT count(*) FROM image_occurrence") == [(series,)]
