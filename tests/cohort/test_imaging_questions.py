"""Plain-language questions over the demo's DICOM data, answered for real and checked by hand.

Each expected answer is worked out from the sample plan (`plan_studies(300, 0)`: who is who, which
study is what and when), in plain Python or written out literally; never with the SQL under test.
Ages are on the as-of date 2026-11-01. The demo's ten patients:

    DL-000001 M 1977-08-26 (49)   DL-000006 M 1966-07-17 (60)
    DL-000002 M 2009-03-04 (17)   DL-000007 M 1938-04-29 (88)
    DL-000003 M 1942-07-29 (84)   DL-000008 M 1944-09-19 (82)
    DL-000004 F 1993-03-06 (33)   DL-000009 F 2014-04-19 (12)
    DL-000005 M 1997-03-17 (29)   DL-000010 F 1965-12-12 (60)
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest

from dicomlake import cohort
from dicomlake.samples import SampleStudy
from tests.cohort.demo_lake import AS_OF, DemoLake, age

D = datetime.date
ALL_PATIENTS = [f"DL-{i:06d}" for i in range(1, 11)]


def uids(demo: DemoLake, keep: Callable[[SampleStudy], bool]) -> list[str]:
    return sorted(s.study_instance_uid for s in demo.studies if keep(s))


def test_the_plan_is_the_one_described_above(demo: DemoLake) -> None:
    patients = {s.patient.patient_id: s.patient for s in demo.studies}
    assert sorted(patients) == ALL_PATIENTS
    assert {pid: (p.sex, age(p.birth_date, AS_OF)) for pid, p in patients.items()} == {
        "DL-000001": ("M", 49), "DL-000002": ("M", 17), "DL-000003": ("M", 84), "DL-000004": ("F", 33),
        "DL-000005": ("M", 29), "DL-000006": ("M", 60), "DL-000007": ("M", 88), "DL-000008": ("M", 82),
        "DL-000009": ("F", 12), "DL-000010": ("F", 60)}


# (question, expected PatientIDs, which planned studies come back)
CASES: list[tuple[str, list[str], Callable[[SampleStudy], bool] | None]] = [
    ("CT scans of women over 30", ["DL-000004", "DL-000010"],
     lambda s: s.modality == "CT" and s.patient.patient_id in ("DL-000004", "DL-000010")),
    ("brain MR studies of children under 18", ["DL-000002", "DL-000009"],
     lambda s: (s.modality, s.body_part) == ("MR", "HEAD")
     and s.patient.patient_id in ("DL-000002", "DL-000009")),
    ("male patients aged 80 or older", ["DL-000003", "DL-000007", "DL-000008"], None),
    ("chest x-rays in the last 5 years", ALL_PATIENTS,
     lambda s: (s.modality, s.body_part) == ("CR", "CHEST") and D(2021, 11, 1) <= s.study_date <= AS_OF),
    ("MRI of the knee since 2025", ALL_PATIENTS,
     lambda s: (s.modality, s.body_part) == ("MR", "KNEE") and s.study_date >= D(2025, 1, 1)),
    ("patients who had a CT of the abdomen in 2024", ["DL-000008"], None),
    ("women who had a brain MRI", ["DL-000009"], None),
    ("patients between 45 and 65 with a chest CT before 2023", ["DL-000001"], None),
    ("US studies of patients under 30", ["DL-000002", "DL-000005", "DL-000009"],
     lambda s: s.modality == "US" and s.patient.patient_id in ("DL-000002", "DL-000005", "DL-000009")),
    ("patients over 45 with a head CT in the past 2 years", ["DL-000001"], None),
    ("hand x-rays", ALL_PATIENTS, lambda s: (s.modality, s.body_part) == ("CR", "HAND")),
    ("lumbar spine MR of girls", ["DL-000009"],
     lambda s: (s.modality, s.body_part) == ("MR", "LSPINE") and s.patient.patient_id == "DL-000009"),
    ("patients aged 60", ["DL-000006", "DL-000010"], None),
    ("cervical spine x-rays between 2017 and 2019", ALL_PATIENTS,
     lambda s: (s.modality, s.body_part) == ("CR", "CSPINE")
     and D(2017, 1, 1) <= s.study_date <= D(2019, 12, 31)),
    ("knee imaging before March 2020", ALL_PATIENTS,
     lambda s: s.body_part == "KNEE" and s.study_date <= D(2020, 2, 29)),
    ("all CT studies in 2023", ALL_PATIENTS, lambda s: s.modality == "CT" and s.study_date.year == 2023),
    ("patients 80+ who had an ultrasound", [], None),
    ("elderly men with a knee x-ray", ["DL-000008"], None),
]


@pytest.mark.parametrize(("question", "patients", "studies"), CASES, ids=[c[0] for c in CASES])
def test_question(demo: DemoLake, question: str, patients: list[str],
                  studies: Callable[[SampleStudy], bool] | None) -> None:
    result = cohort.run(demo.tenant, question, as_of=AS_OF)
    assert result.unrecognized == []
    assert result.patients == patients
    if studies is not None:
        assert result.studies == uids(demo, studies)
        assert result.patients_with_studies == sorted(
            {s.patient.patient_id for s in demo.studies if studies(s)}
        )
        assert [r["study_instance_uid"] for r in result.rows["studies"]] != [] or not result.studies


def test_written_out_answers(demo: DemoLake) -> None:
    # Two answers spelled out from the plan listing (dates and descriptions), not via predicates.
    by_date = {(s.patient.patient_id, s.study_date): s.study_instance_uid for s in demo.studies}
    result = cohort.run(demo.tenant, "CT scans of women over 30", as_of=AS_OF)
    assert [(r["patient_id"], r["study_date"], r["study_description"]) for r in result.rows["studies"]] == [
        ("DL-000004", "2025-04-09", "CT HEAD WO CONTRAST"),
        ("DL-000004", "2026-10-30", "CT CHEST W CONTRAST")]
    result = cohort.run(demo.tenant, "MRI of the knee since 2025", as_of=AS_OF)
    assert result.studies == sorted([by_date[("DL-000009", D(2025, 6, 1))],
                                     by_date[("DL-000009", D(2025, 9, 2))]])


def test_ct_series_of_men_over_80(demo: DemoLake) -> None:
    # DL-000008 (82): CT chest 2023 (4 series) and CT abdomen 2024 (2); DL-000007 (88): CT abdomen 2020 (4).
    result = cohort.run(demo.tenant, "CT series of men over 80", as_of=AS_OF)
    assert result.patients == ["DL-000003", "DL-000007", "DL-000008"]
    planned = [s for s in demo.studies
               if s.modality == "CT" and s.patient.patient_id in ("DL-000007", "DL-000008")]
    assert sum(s.series_count for s in planned) == 10 == len(result.series) == len(result.rows["series"])
    assert {r["study_instance_uid"] for r in result.rows["series"]} == {s.study_instance_uid for s in planned}
    assert {r["modality"] for r in result.rows["series"]} == {"CT"}


def test_the_as_of_date_moves_ages_and_windows(demo: DemoLake) -> None:
    # On 2019-01-01 DL-000006 (born 1966-07-17) was 52 and DL-000010 (born 1965-12-12) 53.
    result = cohort.run(demo.tenant, "patients between 50 and 55", as_of=D(2019, 1, 1))
    assert result.patients == ["DL-000006", "DL-000010"]
    result = cohort.run(demo.tenant, "CT studies in the last year", as_of=D(2023, 6, 30))
    assert result.studies == uids(
        demo, lambda s: s.modality == "CT" and D(2022, 6, 30) <= s.study_date <= D(2023, 6, 30))


def test_words_it_does_not_understand_are_reported_verbatim(demo: DemoLake) -> None:
    result = cohort.run(demo.tenant, "CT scans of patients without Contrast, please", as_of=AS_OF)
    assert result.unrecognized == ["without Contrast"]
    result = cohort.run(demo.tenant, "women in their sixties with a chest CT", as_of=AS_OF)
    assert result.unrecognized == ["sixties"]


def test_returned_imaging_narrows_what_is_returned_not_the_cohort(demo: DemoLake) -> None:
    # Both children are in the cohort; only DL-000009 has a brain MR (2025-01-19). DL-000002's MR is
    # of the lumbar spine.
    result = cohort.run(demo.tenant, "brain MR studies of children under 18", as_of=AS_OF)
    assert result.patients == ["DL-000002", "DL-000009"]
    assert result.patients_with_studies == ["DL-000009"]
    assert result.as_json()["patients_with_studies"] == ["DL-000009"]
    # Named after the patients, the same imaging is a criterion: the cohort shrinks.
    result = cohort.run(demo.tenant, "children under 18 who had a brain MR", as_of=AS_OF)
    assert result.patients == ["DL-000009"]
