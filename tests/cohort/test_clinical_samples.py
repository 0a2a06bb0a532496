"""The seed question on the FHIR importer's own clinical sample data (dicomlake.fhir.clinical_samples,
imported with dicomlake.fhir.importer), answered by reading that module's documented rules against
the DICOM sample plan (as of 2026-11-01):

osteosarcoma (a) the first patient over 45 with a CT in the last two years: DL-000001 (49; CT head
2025-03-30), onset 2025-03-23; (b) the first other patient over 45 with no CT at all: DL-000003
(84), onset 200 days before; (c) the next over 45, DL-000006, onset five years before (outside the
window); (d) DL-000009 (12); and EXT-900001 (no imaging). So the cohort is DL-000001 and DL-000003.
Prescriptions: each gets methotrexate, cisplatin, doxorubicin; DL-000001 also temozolomide (MR brain
2021 -> glioblastoma) and metformin (over 40, born in August); DL-000003 metformin (born in July)
and carboplatin: his XR chest of 2021-03-19, at 78, gives lung cancer (CT/XR chest over 60);
DL-000001's CT chest of 2022, at 44, gives pneumonia, which has no drug.
CT studies: DL-000001's CT chest 2022-04-29 and CT head
2025-03-30 (DL-000003 has none); each study has a radiology report and each CT/MR a document.
"""

from __future__ import annotations

import datetime

import pytest

from dicomlake import cohort
from tests.cohort.demo_lake import AS_OF, DemoLake

SEED = (
    "all medications prescribed, with all CT scan documents and associated radiology reports, "
    "for all patients over 45 diagnosed with osteosarcoma in the last two years"
)


def test_the_seed_question_on_the_importers_samples(demo: DemoLake) -> None:
    if demo.clinical_dir is None:
        pytest.fail("dicomlake.fhir.clinical_samples / importer missing: merge the fhir-import branch")
    result = cohort.run(demo.tenant, SEED, as_of=AS_OF)
    assert result.unrecognized == []
    assert result.patients == ["DL-000001", "DL-000003"]
    # EXT-900001 qualifies too but has no imaging: its prescriptions come with patient_id null.
    assert result.unlinked_fhir_patients == 1
    drugs = sorted(
        (m["patient_id"] or "unlinked", (m["display"] or m["text"] or "").split()[0].lower())
        for m in result.rows["medications"]
    )
    assert drugs == sorted(
        [("DL-000001", d) for d in ("methotrexate", "cisplatin", "doxorubicin", "temozolomide", "metformin")]
        + [("DL-000003", d) for d in ("methotrexate", "cisplatin", "doxorubicin", "metformin", "carboplatin")]
        + [("unlinked", d) for d in ("methotrexate", "cisplatin", "doxorubicin")]
    )
    assert {m["resource_type"] for m in result.rows["medications"]} == {"MedicationRequest"}
    by_date = {(s.patient.patient_id, s.study_date): s.study_instance_uid for s in demo.studies}
    ct = sorted(
        [
            by_date[("DL-000001", datetime.date(2022, 4, 29))],
            by_date[("DL-000001", datetime.date(2025, 3, 30))],
        ]
    )
    assert result.studies == ct
    assert result.patients_with_studies == ["DL-000001"]  # DL-000003 is in the cohort, with no CT
    assert sorted(r["study_instance_uid"] for r in result.rows["reports"]) == ct
    assert sorted(d["study_instance_uid"] for d in result.rows["documents"]) == ct
