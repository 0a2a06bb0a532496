"""A small hand-written clinical record in the FHIR-import contract's table shapes, for a tenant that
holds the demo's DICOM data: real Delta tables (written with deltalake), every row chosen by hand so
each cohort answer can be read off this file. (The FHIR importer's own generator is used too, in
test_clinical_samples.py, once that branch provides it.)

FHIR patient -> PatientID (age on 2026-11-01), what they have:
    p-001 -> DL-000001 (M 49)  osteosarcoma 2025-06-10; cisplatin + doxorubicin prescribed 2025-07-01,
                               ibuprofen statement; radiology report on the CT head of 2025-03-30, one on
                               the MR brain of 2021-05-17, a lab report; a document on the CT chest of
                               2022-04-29 and one without a study
    p-006 -> DL-000006 (M 60)  osteosarcoma 2023-05-01 (more than two years before)
    p-008 -> DL-000008 (M 82)  osteosarcoma 2025-01-15, myocardial infarction 2019-03-02; morphine
                               prescribed 2025-02-01; radiology report on the CT abdomen of 2024-10-08
    p-004 -> DL-000004 (F 33)  osteosarcoma 2026-01-01, malignant neoplasm of lung 2024-02-10
    p-010 -> DL-000010 (F 60)  type 2 diabetes 2020-04-01, metformin prescribed 2020-04-02, acute
                               myocardial infarction 2025-05-05
    p-010b -> DL-000010        a second FHIR record of the same person (another source), with nothing
                               in it: an exclusion holds for the person, so she is still "with diabetes"
    p-003 -> DL-000003 (M 84)  osteosarcoma 2025-08-08, verification status refuted
    p-100 -> (no imaging, F 70) osteosarcoma 2025-09-09
"""

from __future__ import annotations

import datetime

import pyarrow as pa
from deltalake import write_deltalake

from dicomlake.samples import SampleStudy
from dicomlake.sql.contract import FHIR_TABLES
from dicomlake.store.lakehouse import TenantStore

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
_TYPES = {
    "VARCHAR": pa.string(),
    "DATE": pa.date32(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "BOOLEAN": pa.bool_(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "VARCHAR[]": pa.list_(pa.string()),
}
D = datetime.date


def _ts(day: datetime.date) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, 10, 0, tzinfo=datetime.UTC)


def _write(tenant: TenantStore, name: str, rows: list[dict]) -> None:
    schema = pa.schema([(c, _TYPES[t]) for c, t in FHIR_TABLES[name].items()])
    full = [{c: row.get(c) for c in schema.names} for row in rows]
    write_deltalake(tenant.table_uri(name), pa.Table.from_pylist(full, schema=schema), mode="overwrite")


def write_hand_clinical(tenant: TenantStore, studies: list[SampleStudy]) -> None:
    study = {(s.patient.patient_id, s.study_date): s.study_instance_uid for s in studies}
    patients = {
        "p-001": ("DL-000001", "male", D(1977, 8, 26)),
        "p-006": ("DL-000006", "male", D(1966, 7, 17)),
        "p-008": ("DL-000008", "male", D(1944, 9, 19)),
        "p-004": ("DL-000004", "female", D(1993, 3, 6)),
        "p-010": ("DL-000010", "female", D(1965, 12, 12)),
        "p-010b": ("DL-000010", "female", D(1965, 12, 12)),
        "p-003": ("DL-000003", "male", D(1942, 7, 29)),
        "p-100": (None, "female", D(1956, 1, 20)),
    }
    _write(
        tenant,
        "fhir_view_patient",
        [{"id": p, "gender": g, "birth_date": b, "deceased": False} for p, (_, g, b) in patients.items()],
    )
    _write(
        tenant,
        "fhir_patient_link",
        [
            {"fhir_patient_id": p, "dicom_patient_id": d, "matched_value": d}
            for p, (d, _, _) in patients.items()
        ],
    )
    conditions = [
        ("c1", "p-001", "Osteosarcoma of bone", "307548001", D(2025, 6, 10), "confirmed"),
        ("c2", "p-006", "Osteosarcoma of bone", "307548001", D(2023, 5, 1), "confirmed"),
        ("c3", "p-008", "Osteosarcoma of bone", "307548001", D(2025, 1, 15), "confirmed"),
        ("c4", "p-008", "Myocardial infarction", "22298006", D(2019, 3, 2), "confirmed"),
        ("c5", "p-004", "Osteosarcoma of bone", "307548001", D(2026, 1, 1), "confirmed"),
        ("c6", "p-004", "Malignant neoplasm of lung", "363358000", D(2024, 2, 10), "confirmed"),
        ("c7", "p-010", "Type 2 diabetes mellitus", "44054006", D(2020, 4, 1), "confirmed"),
        ("c8", "p-010", "Acute myocardial infarction", "57054005", D(2025, 5, 5), "confirmed"),
        ("c9", "p-003", "Osteosarcoma of bone", "307548001", D(2025, 8, 8), "refuted"),
        ("c10", "p-100", "Osteosarcoma of bone", "307548001", D(2025, 9, 9), "confirmed"),
    ]
    _write(
        tenant,
        "fhir_view_condition",
        [
            {
                "id": i,
                "patient_id": p,
                "clinical_status": "active",
                "verification_status": v,
                "text": t,
                "onset_date": d,
                "recorded_date": d,
            }
            for i, p, t, _, d, v in conditions
        ],
    )
    _write(
        tenant,
        "fhir_view_condition_coding",
        [
            {"condition_id": i, "patient_id": p, "system": SNOMED, "code": c, "display": t}
            for i, p, t, c, _, _ in conditions
        ],
    )
    _write(
        tenant,
        "fhir_view_medication_request",
        [
            {
                "id": "m1",
                "patient_id": "p-001",
                "status": "active",
                "intent": "order",
                "authored_on": _ts(D(2025, 7, 1)),
                "system": RXNORM,
                "code": "2555",
                "display": "cisplatin 1 MG/ML Injectable Solution",
            },
            {
                "id": "m2",
                "patient_id": "p-001",
                "status": "active",
                "intent": "order",
                "authored_on": _ts(D(2025, 7, 1)),
                "system": RXNORM,
                "code": "3639",
                "display": "doxorubicin 2 MG/ML Injectable Solution",
            },
            {
                "id": "m3",
                "patient_id": "p-008",
                "status": "active",
                "intent": "order",
                "authored_on": _ts(D(2025, 2, 1)),
                "system": RXNORM,
                "code": "7052",
                "display": "morphine sulfate 15 MG Oral Tablet",
            },
            {
                "id": "m4",
                "patient_id": "p-010",
                "status": "active",
                "intent": "order",
                "authored_on": _ts(D(2020, 4, 2)),
                "system": RXNORM,
                "code": "860975",
                "display": "metformin 500 MG Oral Tablet",
            },
        ],
    )
    _write(
        tenant,
        "fhir_view_medication_statement",
        [
            {
                "id": "s1",
                "patient_id": "p-001",
                "status": "active",
                "effective_start": _ts(D(2024, 1, 1)),
                "system": RXNORM,
                "code": "5640",
                "display": "ibuprofen 200 MG Oral Tablet",
            }
        ],
    )
    reports = [
        ("r1", "p-001", "RAD", "CT Head", study[("DL-000001", D(2025, 3, 30))], D(2025, 3, 30)),
        ("r2", "p-001", "RAD", "MR Brain", study[("DL-000001", D(2021, 5, 17))], D(2021, 5, 17)),
        ("r3", "p-001", "LAB", "Complete blood count", None, D(2025, 7, 2)),
        ("r4", "p-008", "RAD", "CT Abdomen and Pelvis", study[("DL-000008", D(2024, 10, 8))], D(2024, 10, 8)),
    ]
    _write(
        tenant,
        "fhir_view_diagnostic_report",
        [
            {
                "id": i,
                "patient_id": p,
                "status": "final",
                "category_code": cat,
                "system": LOINC,
                "display": disp,
                "effective": _ts(d),
                "issued": _ts(d),
                "conclusion": f"{disp}: see text",
            }
            for i, p, cat, disp, _, d in reports
        ],
    )
    documents = [
        ("d1", "p-001", study[("DL-000001", D(2022, 4, 29))], D(2022, 4, 29)),
        ("d2", "p-001", None, D(2025, 7, 3)),
    ]
    _write(
        tenant,
        "fhir_view_document_reference",
        [
            {
                "id": i,
                "patient_id": p,
                "status": "current",
                "type_code": "18748-4",
                "type_display": "Diagnostic imaging study",
                "date": _ts(d),
                "content_type": "application/pdf",
                "study_instance_uid": s,
            }
            for i, p, s, d in documents
        ],
    )
    _write(
        tenant,
        "fhir_study_link",
        [
            *(
                {
                    "resource_type": "DiagnosticReport",
                    "resource_id": i,
                    "patient_id": p,
                    "study_instance_uid": s,
                    "matched_by": "study_instance_uid" if s else None,
                }
                for i, p, _, _, s, _ in reports
            ),
            *(
                {
                    "resource_type": "DocumentReference",
                    "resource_id": i,
                    "patient_id": p,
                    "study_instance_uid": s,
                    "matched_by": "study_instance_uid" if s else None,
                }
                for i, p, s, _ in documents
            ),
        ],
    )
