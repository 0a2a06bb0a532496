"""Questions that join imaging with clinical data, over the hand-written record of hand_clinical.py
(the expected answers are read off that file's docstring and the sample plan)."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dicomlake import cohort
from tests.cohort.demo_lake import AS_OF, DemoLake, check_hand_answer

D = datetime.date
SEED = (
    "all medications prescribed, with all CT scan documents and associated radiology reports, "
    "for all patients over 45 diagnosed with osteosarcoma in the last two years"
)


def test_the_seed_question(hand: DemoLake) -> None:
    result = cohort.run(hand.tenant, SEED, as_of=AS_OF)
    assert result.unrecognized == []
    # Over 45 with osteosarcoma since 2024-11-01: p-001 (49) and p-008 (82); not p-006 (2023), p-004 (33),
    # p-003 (refuted); p-100 qualifies but has no imaging.
    assert result.patients == ["DL-000001", "DL-000008"]
    assert result.unlinked_fhir_patients == 1
    assert [(m["patient_id"], m["id"], m["display"]) for m in result.rows["medications"]] == [
        ("DL-000001", "m1", "cisplatin 1 MG/ML Injectable Solution"),
        ("DL-000001", "m2", "doxorubicin 2 MG/ML Injectable Solution"),
        ("DL-000008", "m3", "morphine sulfate 15 MG Oral Tablet"),
    ]  # not the ibuprofen statement
    by_date = {(s.patient.patient_id, s.study_date): s.study_instance_uid for s in hand.studies}
    ct = [
        ("DL-000001", D(2022, 4, 29)),
        ("DL-000001", D(2025, 3, 30)),
        ("DL-000008", D(2023, 1, 5)),
        ("DL-000008", D(2024, 10, 8)),
    ]
    assert [(r["patient_id"], r["study_date"]) for r in result.rows["studies"]] == [
        (p, d.isoformat()) for p, d in ct
    ]
    assert result.studies == sorted(by_date[k] for k in ct)
    # Radiology reports on those CT studies: r1 (CT head) and r4 (CT abdomen); not r2 (MR) nor r3 (lab).
    assert [(r["id"], r["study_instance_uid"]) for r in result.rows["reports"]] == [
        ("r1", by_date[("DL-000001", D(2025, 3, 30))]),
        ("r4", by_date[("DL-000008", D(2024, 10, 8))]),
    ]
    # Documents on those CT studies: d1 (the CT chest of 2022); not d2, which has no study.
    assert [(d["id"], d["study_instance_uid"]) for d in result.rows["documents"]] == [
        ("d1", by_date[("DL-000001", D(2022, 4, 29))])
    ]
    assert len(result.series) == sum(
        s.series_count for s in hand.studies if s.study_instance_uid in result.studies
    )


CASES = [
    ("patients with a heart attack", ["DL-000008", "DL-000010"], None),
    ("women with lung cancer", ["DL-000004"], None),
    ("patients diagnosed with osteosarcoma since 2025", ["DL-000001", "DL-000004", "DL-000008"], None),
    ("patients with osteosarcoma before 2024", ["DL-000006"], None),
    ("medications of diabetic patients", ["DL-000010"], ("medications", ["m4"])),
    ("patients on metformin", ["DL-000010"], None),
    (
        "radiology reports of patients over 80 with a myocardial infarction",
        ["DL-000008"],
        ("reports", ["r4"]),
    ),
    (
        "documents for patients with osteosarcoma in the last 2 years",
        ["DL-000001", "DL-000004", "DL-000008"],
        ("documents", ["d1", "d2"]),
    ),
    (
        "reports of men with osteosarcoma in 2025",
        ["DL-000001", "DL-000008"],
        ("reports", ["r2", "r1", "r3", "r4"]),
    ),
    (
        "lab reports of patients with osteosarcoma",
        ["DL-000001", "DL-000004", "DL-000006", "DL-000008"],
        ("reports", ["r3"]),
    ),
    ("patients with type 2 diabetes or lung cancer", ["DL-000004", "DL-000010"], None),
    ("male patients over 45 with osteosarcoma who had a CT scan", ["DL-000001", "DL-000008"], None),
    (
        "medications prescribed since 2025 for patients with osteosarcoma",
        ["DL-000001", "DL-000004", "DL-000006", "DL-000008"],
        ("medications", ["m1", "m2", "m3"]),
    ),
    ("patients with an MI in the past 2 years", ["DL-000010"], None),
    ("female patients with a heart attack since 2025", ["DL-000010"], None),
]


@pytest.mark.parametrize(("question", "patients", "collection"), CASES, ids=[c[0] for c in CASES])
def test_question(
    hand: DemoLake, question: str, patients: list[str], collection: tuple[str, list[str]] | None
) -> None:
    check_hand_answer(hand, question, patients, collection)


def test_codes_of_the_data_are_used(hand: DemoLake) -> None:
    result = cohort.run(hand.tenant, "patients with osteosarcoma", as_of=AS_OF)
    (condition,) = result.definition.conditions
    assert [(c.system, c.code) for c in condition.codes] == [("http://snomed.info/sct", "307548001")]
    result = cohort.run(hand.tenant, "patients with 57054005", as_of=AS_OF)  # a code, as in the data
    assert result.patients == ["DL-000010"] and result.unrecognized == []


def test_the_cohort_command(hand: DemoLake) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicomlake",
            "cohort",
            SEED,
            "--as-of",
            "2026-11-01",
            "--json",
            "--root",
            hand.tenant.lakehouse.root,
            "--tenant",
            "hand",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["patients"] == ["DL-000001", "DL-000008"] and out["unrecognized"] == []
    assert {"definition", "sql", "studies", "medications", "reports", "documents"} <= set(out)
    assert [m["id"] for m in out["medications"]] == ["m1", "m2", "m3"]
    assert "osteosarcoma" in out["sql"] and out["definition"]["patients"] == {"age": {"min": 46}}
