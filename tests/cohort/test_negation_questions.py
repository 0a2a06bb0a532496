"""Questions with a negation ("without", "not on", "never had", "excluding"), answered for real over the
hand-written clinical record (hand_clinical.py) and the demo's DICOM plan, and checked by hand.

The demo's studies by patient (plan_studies(300, 0); ages on 2026-11-01, see test_imaging_questions.py):
    DL-000001 M 49  MR head 2021-05-17, CT chest 2022-04-29, CT head 2025-03-30
    DL-000002 M 17  CT chest 2017-01-29, MR lspine 2018-06-15, CR cspine 2019-05-22, CT abdomen
                    2021-02-20, CT chest 2021-12-07
    DL-000003 M 84  CR cspine 2017-03-17, CR chest 2021-03-19
    DL-000004 F 33  CR knee 2020-04-29, CR chest 2023-08-29, CT head 2025-04-09, CT chest 2026-10-30
    DL-000005 M 29  CR chest 2016-08-19, US neck 2017-05-06
    DL-000006 M 60  MR head 2018-02-05, MR knee 2022-08-02, CR knee 2026-02-02
    DL-000007 M 88  CT abdomen 2020-08-05
    DL-000008 M 82  CR knee 2017-11-18, CR hand 2020-07-22, CT chest 2023-01-05, CT abdomen 2024-10-08
    DL-000009 F 12  MR lspine 2016-03-12, CR chest 2022-03-04, MR head 2025-01-19, MR knee 2025-06-01
                    and 2025-09-02
    DL-000010 F 60  CR cspine 2025-10-16

An exclusion rules out a person who has such a record; a patient with no record of it at all
(DL-000002, -05, -07, -09 have no clinical record in the hand tenant) is not ruled out.
"""

from __future__ import annotations

import datetime

import pytest

from dicomlake import cohort
from tests.cohort.demo_lake import AS_OF, DemoLake, check_hand_answer
from tests.cohort.test_imaging_questions import uids

D = datetime.date
PLAN = {
    "DL-000001": "MR CT CT",
    "DL-000002": "CT MR CR CT CT",
    "DL-000003": "CR CR",
    "DL-000004": "CR CR CT CT",
    "DL-000005": "CR US",
    "DL-000006": "MR MR CR",
    "DL-000007": "CT",
    "DL-000008": "CR CR CT CT",
    "DL-000009": "MR CR MR MR MR",
    "DL-000010": "CR",
}


def test_the_plan_is_the_one_described_above(demo: DemoLake) -> None:
    by_patient: dict[str, list[str]] = {}
    for s in sorted(demo.studies, key=lambda s: s.study_date):
        by_patient.setdefault(s.patient.patient_id, []).append(s.modality)
    assert {p: " ".join(m) for p, m in by_patient.items()} == PLAN


# (question, expected PatientIDs, (collection, expected ids) or None) over the hand-written record.
HAND_CASES: list[tuple[str, list[str], tuple[str, list[str]] | None]] = [
    # osteosarcoma (not refuted): p-001, p-004, p-006, p-008 (and p-100, no imaging); p-003's is refuted.
    (
        "patients without osteosarcoma",
        ["DL-000002", "DL-000003", "DL-000005", "DL-000007", "DL-000009", "DL-000010"],
        None,
    ),
    # MR: DL-000001 (2021) and DL-000006 (2018, 2022) had one; DL-000004 and DL-000008 never.
    ("patients with osteosarcoma who never had an MRI", ["DL-000004", "DL-000008"], None),
    # heart attack: DL-000008 (2019) and DL-000010 (2025), who is on metformin.
    ("patients with a heart attack not on metformin", ["DL-000008"], None),
    # men over 45 with osteosarcoma: DL-000001, DL-000006, DL-000008 (infarction 2019).
    ("men over 45 with osteosarcoma without a heart attack", ["DL-000001", "DL-000006"], None),
    # DL-000004 has lung cancer; DL-000001: ibuprofen statement 2024 + two 2025 prescriptions; DL-000008: m3.
    (
        "medications of patients with osteosarcoma excluding patients with lung cancer",
        ["DL-000001", "DL-000006", "DL-000008"],
        ("medications", ["s1", "m1", "m2", "m3"]),
    ),
    # diabetes or lung cancer: DL-000010 (metformin), DL-000004.
    ("patients with type 2 diabetes or lung cancer who are not on metformin", ["DL-000004"], None),
    # DL-000010 has diabetes in p-010; her second record p-010b has nothing: she is still ruled out.
    (
        "women without diabetes",
        ["DL-000004", "DL-000009"],
        None,
    ),
    # a window on the exclusion: DL-000008's infarction is of 2019, outside "the last 2 years".
    (
        "patients with osteosarcoma without a myocardial infarction in the last 2 years",
        ["DL-000001", "DL-000004", "DL-000006", "DL-000008"],
        None,
    ),
    # neither: DL-000004 (lung cancer) and DL-000010 (diabetes) out of the women DL-000004/09/10.
    ("women with neither diabetes nor lung cancer", ["DL-000009"], None),
]


@pytest.mark.parametrize(("question", "patients", "collection"), HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_hand_question(
    hand: DemoLake, question: str, patients: list[str], collection: tuple[str, list[str]] | None
) -> None:
    check_hand_answer(hand, question, patients, collection)


def test_an_exclusion_without_it_would_answer_otherwise(hand: DemoLake) -> None:
    # The same question without the negation, to show the exclusion is what removes them.
    assert cohort.run(hand.tenant, "patients with osteosarcoma who had an MRI", as_of=AS_OF).patients == [
        "DL-000001",
        "DL-000006",
    ]
    # FHIR-only p-100 (osteosarcoma, no imaging) never had an MRI: counted, without a PatientID.
    result = cohort.run(hand.tenant, "patients with osteosarcoma who never had an MRI", as_of=AS_OF)
    assert result.unlinked_fhir_patients == 1
    assert "NOT EXISTS (SELECT 1 FROM studies st" in result.sql


IMAGING_CASES = [
    # CT since 2024: DL-000008 (2024-10-08), DL-000001 (2025-03-30), DL-000004 (2025, 2026).
    (
        "patients who had no CT since 2024",
        ["DL-000002", "DL-000003", "DL-000005", "DL-000006", "DL-000007", "DL-000009", "DL-000010"],
        None,
    ),
    # the women are DL-000004, DL-000009 (MR) and DL-000010.
    ("women who never had an MRI", ["DL-000004", "DL-000010"], None),
    # knee x-rays: DL-000004 (a woman), DL-000006 (2026), DL-000008 (2017).
    (
        "CT scans of men without a knee x-ray",
        ["DL-000001", "DL-000002", "DL-000003", "DL-000005", "DL-000007"],
        lambda s: s.modality == "CT" and s.patient.patient_id in ("DL-000001", "DL-000002", "DL-000007"),
    ),
    # over 80: DL-000003, DL-000007, DL-000008; a chest study: DL-000003 (CR), DL-000008 (CT).
    ("patients over 80 who didn't have a chest CT or a chest x-ray", ["DL-000007"], None),
]


@pytest.mark.parametrize(
    ("question", "patients", "studies"), IMAGING_CASES, ids=[c[0] for c in IMAGING_CASES]
)
def test_imaging_question(demo: DemoLake, question: str, patients: list[str], studies: object) -> None:
    result = cohort.run(demo.tenant, question, as_of=AS_OF)
    assert result.unrecognized == []
    assert result.patients == patients
    if studies is not None:
        assert result.studies == uids(demo, studies)  # type: ignore[arg-type]


def test_the_seed_question_with_a_negation(demo: DemoLake) -> None:
    # The seed cohort on the importer's samples is DL-000001 (CT 2022, 2025) and DL-000003 (no CT at all).
    result = cohort.run(
        demo.tenant,
        "patients over 45 diagnosed with osteosarcoma in the last two years who never had a CT scan",
        as_of=AS_OF,
    )
    assert result.unrecognized == []
    assert result.patients == ["DL-000003"]
    assert result.unlinked_fhir_patients == 1  # EXT-900001: no imaging at all
