# ruff: noqa: E501  (data tables of FHIR resources read best one resource element per line)
"""Deterministic clinical FHIR R4 sample data (Bulk NDJSON) consistent with the DICOM samples.

`generate_clinical_data(dest, n_instances, seed)` plans the same studies as
`dicomlake.samples.plan_studies(n_instances, seed)` (the demo: 300 instances, seed 0) and writes
`<Type>.ndjson` per resource type plus `invalid.ndjson` (deliberately invalid resources, for the
quarantine). Reference date AS_OF = 2026-11-01; ages are on that date, from the DICOM birth dates.

Per DICOM patient: a Patient (id `pt-<patientid lower>`, identifiers: MRN `urn:dicomlake:mrn` =
the DICOM PatientID, plus an enterprise id that matches nothing). Per study: an Encounter, a
Procedure (the imaging procedure, SNOMED CT), a radiology DiagnosticReport (LOINC 18748-4, category
RAD, accession number as identifier typed ACSN, a conclusion, a text/plain presentedForm; every
second one also references its ImagingStudy), for every third study an ImagingStudy (urn:dicom:uid)
and for every CT/MR study a DocumentReference (the report document, context.related = the study).
Each patient gets a body weight Observation (LOINC 29463-7) at each study.

Diagnoses (Condition with one SNOMED CT and one ICD-10-CM coding, onset and recorded dates):
- osteosarcoma (SNOMED 307576001; ICD-10-CM C40.21/C40.22, lower limb long bones; ICD-O-3
  morphology 9180/3 as a note), given by rule, in patient-id order, to:
  (a) the first patient over 45 with a CT study in the last two years: onset 7 days before that CT;
  (b) the first other patient over 45 with no CT study at all: onset 200 days before AS_OF;
  (c) the first other patient over 45: onset 5 years before AS_OF (outside a two-year window);
  (d) the youngest patient under 45: onset 100 days before AS_OF;
  plus the FHIR-only patient EXT-900001 (over 45, no imaging): onset 300 days before AS_OF.
  Each osteosarcoma patient has MedicationRequests for methotrexate, cisplatin and doxorubicin.
- by study: CT/XR chest -> pneumonia (J18.9) or, for patients over 60 at the study, lung cancer
  (C34.11, + carboplatin); MR brain -> glioblastoma (C71.1, + temozolomide); XR hand -> distal radius
  fracture (S52.501A, + ibuprofen); MR/XR knee -> knee osteoarthritis (M17.11); MR lumbar spine ->
  low back pain (M54.50); onset on the study date.
- chronic: patients over 50 with an even birth day -> hypertension (I10, lisinopril, and a
  MedicationStatement for amlodipine); over 40 with a birth month > 6 -> type 2 diabetes (E11.9,
  metformin); women over 40 with a birth day divisible by 3 -> breast cancer (C50.911, tamoxifen).
Unlinked on purpose: patients EXT-900001..EXT-900003 (no DICOM), and one DiagnosticReport whose
accession number (ACC99999999) matches no study. Codes: SNOMED CT, ICD-10-CM, RxNorm (ingredient or
clinical drug RxCUIs), LOINC.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomlake.samples import SamplePatient, SampleStudy, plan_studies

AS_OF = dt.date(2026, 11, 1)
SNOMED, ICD10, RXNORM, LOINC = ("http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm",
                                "http://www.nlm.nih.gov/research/umls/rxnorm", "http://loinc.org")
MRN_SYSTEM = "urn:dicomlake:mrn"
ENTERPRISE_SYSTEM = "urn:dicomlake:enterprise-id"
UNMATCHED_ACCESSION = "ACC99999999"

# name -> (SNOMED code, SNOMED display, ICD-10-CM code, ICD-10-CM display)
DIAGNOSES: dict[str, tuple[str, str, str, str]] = {
    "osteosarcoma_right": ("307576001", "Osteosarcoma", "C40.21",
                           "Malignant neoplasm of long bones of right lower limb"),
    "osteosarcoma_left": ("307576001", "Osteosarcoma", "C40.22",
                          "Malignant neoplasm of long bones of left lower limb"),
    "pneumonia": ("233604007", "Pneumonia", "J18.9", "Pneumonia, unspecified organism"),
    "lung_cancer": ("254637007", "Non-small cell lung cancer", "C34.11",
                    "Malignant neoplasm of upper lobe, right bronchus or lung"),
    "glioblastoma": ("393563007", "Glioblastoma multiforme", "C71.1", "Malignant neoplasm of frontal lobe"),
    "radius_fracture": ("263199001", "Fracture of distal end of radius", "S52.501A",
                        "Unspecified fracture of the lower end of right radius, initial encounter for "
                        "closed fracture"),
    "knee_oa": ("239873007", "Osteoarthritis of knee", "M17.11", "Unilateral primary osteoarthritis, right knee"),
    "low_back_pain": ("279039007", "Low back pain", "M54.50", "Low back pain, unspecified"),
    "hypertension": ("59621000", "Essential hypertension", "I10", "Essential (primary) hypertension"),
    "diabetes_t2": ("44054006", "Diabetes mellitus type 2", "E11.9",
                    "Type 2 diabetes mellitus without complications"),
    "breast_cancer": ("254837009", "Malignant neoplasm of breast", "C50.911",
                      "Malignant neoplasm of unspecified site of right female breast"),
}
# name -> (RxNorm code, display)
DRUGS: dict[str, tuple[str, str]] = {
    "methotrexate": ("6851", "methotrexate"), "cisplatin": ("2555", "cisplatin"),
    "doxorubicin": ("3639", "doxorubicin"), "carboplatin": ("40048", "carboplatin"),
    "temozolomide": ("37776", "temozolomide"), "ibuprofen": ("197806", "ibuprofen 600 MG Oral Tablet"),
    "lisinopril": ("314076", "lisinopril 10 MG Oral Tablet"),
    "amlodipine": ("197361", "amlodipine 5 MG Oral Tablet"),
    "metformin": ("861007", "metformin hydrochloride 500 MG Oral Tablet"),
    "tamoxifen": ("10324", "tamoxifen"),
}
TREATMENT = {"osteosarcoma_right": ["methotrexate", "cisplatin", "doxorubicin"],
             "osteosarcoma_left": ["methotrexate", "cisplatin", "doxorubicin"],
             "lung_cancer": ["carboplatin"], "glioblastoma": ["temozolomide"], "radius_fracture": ["ibuprofen"],
             "hypertension": ["lisinopril"], "diabetes_t2": ["metformin"], "breast_cancer": ["tamoxifen"]}
# Imaging procedure per modality (SNOMED CT)
PROCEDURES = {"CT": ("77477000", "Computerized axial tomography"),
              "MR": ("113091000", "Magnetic resonance imaging"),
              "CR": ("363680008", "Radiographic imaging procedure"),
              "US": ("16310003", "Diagnostic ultrasonography"),
              "OT": ("77477000", "Computerized axial tomography")}
EXTRA_PATIENTS = (("EXT-900001", "female", dt.date(1961, 4, 9)), ("EXT-900002", "male", dt.date(1988, 8, 30)),
                  ("EXT-900003", "male", dt.date(1950, 1, 15)))


@dataclass(frozen=True)
class ClinicalSummary:
    dest: Path
    counts: dict[str, int]
    invalid: int
    osteosarcoma_patients: list[str]  # FHIR Patient ids


def age_on(birth: dt.date, on: dt.date = AS_OF) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _fid(text: str) -> str:
    return text.lower().replace("_", "-")


class _Builder:
    def __init__(self) -> None:
        self.out: dict[str, list[dict[str, Any]]] = {}
        self.n = 0

    def add(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.out.setdefault(resource["resourceType"], []).append(resource)
        return resource

    def condition(self, pid: str, name: str, onset: dt.date, encounter: str | None = None) -> None:
        sct, sct_display, icd, icd_display = DIAGNOSES[name]
        cid = f"cond-{pid}-{name.replace('_', '-')}"
        resource: dict[str, Any] = {
            "resourceType": "Condition", "id": cid,
            "meta": {"versionId": "1", "lastUpdated": f"{onset + dt.timedelta(days=3)}T12:00:00Z"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "encounter-diagnosis"}]}],
            "code": {"coding": [{"system": SNOMED, "code": sct, "display": sct_display},
                                {"system": ICD10, "code": icd, "display": icd_display}], "text": sct_display},
            "subject": {"reference": f"Patient/{pid}"},
            "onsetDateTime": onset.isoformat(), "recordedDate": (onset + dt.timedelta(days=3)).isoformat(),
        }
        if name.startswith("osteosarcoma"):
            resource["note"] = [{"text": "Histology: osteosarcoma NOS, ICD-O-3 morphology 9180/3"}]
        if encounter:
            resource["encounter"] = {"reference": f"Encounter/{encounter}"}
        if any(c["id"] == cid for c in self.out.get("Condition", [])):
            return
        self.add(resource)
        for drug in TREATMENT.get(name, []):
            self.medication_request(pid, drug, onset + dt.timedelta(days=5), encounter)
        if name == "hypertension":
            code, display = DRUGS["amlodipine"]
            self.add({"resourceType": "MedicationStatement", "id": f"ms-{pid}-amlodipine", "status": "active",
                      "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code,
                                                                "display": display}], "text": display},
                      "subject": {"reference": f"Patient/{pid}"},
                      "effectivePeriod": {"start": f"{onset + dt.timedelta(days=30)}T09:00:00Z"}})

    def medication_request(self, pid: str, drug: str, on: dt.date, encounter: str | None) -> None:
        code, display = DRUGS[drug]
        resource: dict[str, Any] = {
            "resourceType": "MedicationRequest", "id": f"mr-{pid}-{drug}", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}],
                                          "text": display},
            "subject": {"reference": f"Patient/{pid}"}, "authoredOn": f"{on}T10:00:00Z"}
        if encounter:
            resource["encounter"] = {"reference": f"Encounter/{encounter}"}
        self.add(resource)


def _patient(pid: str, mrn: str, gender: str, birth: dt.date, family: str, given: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "meta": {"versionId": "1", "lastUpdated": "2026-11-01T00:00:00Z"},
            "identifier": [
                {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                 "system": MRN_SYSTEM, "value": mrn},
                {"system": ENTERPRISE_SYSTEM, "value": f"E{mrn.replace('-', '')}"}],
            "name": [{"family": family, "given": given.split(" ")}], "gender": gender, "birthDate": birth.isoformat()}


_GENDER = {"M": "male", "F": "female", "O": "other"}


def _study_datetime(study: SampleStudy) -> str:
    t = study.study_time
    return f"{study.study_date}T{t[:2]}:{t[2:4]}:{t[4:6]}Z"


def build(n_instances: int = 300, seed: int = 0) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The resources by type, and the ids of the osteosarcoma patients (see the module docstring)."""
    studies = plan_studies(n_instances, seed)
    patients: dict[str, SamplePatient] = {}
    by_patient: dict[str, list[SampleStudy]] = {}
    for study in studies:
        patients[study.patient.patient_id] = study.patient
        by_patient.setdefault(study.patient.patient_id, []).append(study)
    b = _Builder()
    pid_of = {k: f"pt-{_fid(k)}" for k in patients}
    for key in sorted(patients):
        p = patients[key]
        b.add(_patient(pid_of[key], key, _GENDER[p.sex], p.birth_date, p.family_name, p.given_name))
    for mrn, gender, birth in EXTRA_PATIENTS:
        b.add(_patient(f"pt-{_fid(mrn)}", mrn, gender, birth, "Extern", "Sample"))

    for index, study in enumerate(studies):
        pid = pid_of[study.patient.patient_id]
        acc, when = study.accession_number, _study_datetime(study)
        enc = f"enc-{_fid(acc)}"
        b.add({"resourceType": "Encounter", "id": enc, "status": "finished",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
                         "display": "ambulatory"},
               "type": [{"coding": [{"system": SNOMED, "code": "185347001", "display": "Encounter for problem"}]}],
               "subject": {"reference": f"Patient/{pid}"},
               "period": {"start": when, "end": f"{study.study_date}T23:00:00Z"}})
        code, display = PROCEDURES[study.modality]
        b.add({"resourceType": "Procedure", "id": f"proc-{_fid(acc)}", "status": "completed",
               "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": study.description},
               "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{enc}"},
               "performedDateTime": when})
        study_ref = f"img-{_fid(acc)}"
        if index % 3 == 0:
            b.add({"resourceType": "ImagingStudy", "id": study_ref, "status": "available",
                   "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_instance_uid}"},
                                  _acsn(acc)],
                   "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": study.modality}],
                   "subject": {"reference": f"Patient/{pid}"}, "started": when,
                   "numberOfSeries": study.series_count, "numberOfInstances": study.n_instances,
                   "description": study.description})
        conclusion = f"{study.description}: findings described for {study.body_part.lower()}."
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport", "id": f"dr-{_fid(acc)}", "status": "final",
            "identifier": [_acsn(acc)],
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
            "code": {"coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
                     "text": study.description},
            "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{enc}"},
            "effectiveDateTime": when, "issued": f"{study.study_date}T23:30:00Z", "conclusion": conclusion,
            "presentedForm": [{"contentType": "text/plain",
                               "data": base64.b64encode(f"REPORT {acc}\n{conclusion}".encode()).decode()}]}
        if index % 3 == 0 and index % 2 == 0:
            report["imagingStudy"] = [{"reference": f"ImagingStudy/{study_ref}"}]
        b.add(report)
        if study.modality in ("CT", "MR"):
            b.add({"resourceType": "DocumentReference", "id": f"doc-{_fid(acc)}", "status": "current",
                   "type": {"coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]},
                   "subject": {"reference": f"Patient/{pid}"}, "date": f"{study.study_date}T23:30:00Z",
                   "description": f"{study.description} report",
                   "content": [{"attachment": {"contentType": "text/plain", "url": f"Binary/{_fid(acc)}",
                                               "title": f"{study.description} report"}}],
                   "context": {"related": [{"identifier": {"system": "urn:dicom:uid",
                                                           "value": f"urn:oid:{study.study_instance_uid}"}}]}})
        weight = 20 + (sum(map(ord, study.patient.patient_id)) * 7 + index) % 80
        b.add({"resourceType": "Observation", "id": f"obs-wt-{_fid(acc)}", "status": "final",
               "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                         "code": "vital-signs"}]}],
               "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body weight"}]},
               "subject": {"reference": f"Patient/{pid}"}, "encounter": {"reference": f"Encounter/{enc}"},
               "effectiveDateTime": when,
               "valueQuantity": {"value": float(weight), "unit": "kg", "system": "http://unitsofmeasure.org",
                                 "code": "kg"}})
        age = age_on(study.patient.birth_date, study.study_date)
        chest = "lung_cancer" if age > 60 else "pneumonia"  # age at the study
        by_desc = {"CT CHEST": chest, "XR CHEST": chest,
                   "MR BRAIN": "glioblastoma", "XR HAND": "radius_fracture", "MR KNEE": "knee_oa",
                   "XR KNEE": "knee_oa", "MR LUMBAR": "low_back_pain"}
        for prefix, name in by_desc.items():
            if study.description.startswith(prefix):
                b.condition(pid, name, study.study_date, enc)

    for key, p in sorted(patients.items()):
        pid, age = pid_of[key], age_on(p.birth_date)
        first = by_patient[key][0]
        if age > 50 and p.birth_date.day % 2 == 0:
            b.condition(pid, "hypertension", first.study_date - dt.timedelta(days=400))
        if age > 40 and p.birth_date.month > 6:
            b.condition(pid, "diabetes_t2", first.study_date - dt.timedelta(days=200))
        if p.sex == "F" and age > 40 and p.birth_date.day % 3 == 0:
            b.condition(pid, "breast_cancer", first.study_date)

    osteo = _osteosarcoma(b, patients, by_patient, pid_of)
    b.condition("pt-ext-900001", "osteosarcoma_left", AS_OF - dt.timedelta(days=300))
    osteo.append("pt-ext-900001")
    b.add({"resourceType": "DiagnosticReport", "id": "dr-unmatched", "status": "final",
           "identifier": [_acsn(UNMATCHED_ACCESSION)],
           "code": {"coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]},
           "subject": {"reference": "Patient/pt-ext-900002"}, "effectiveDateTime": "2026-06-01T10:00:00Z",
           "conclusion": "Outside study: no images in this archive."})
    return b.out, osteo


def _acsn(accession: str) -> dict[str, Any]:
    return {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "system": "urn:dicomlake:accession", "value": accession}


def _osteosarcoma(b: _Builder, patients: dict[str, SamplePatient], by_patient: dict[str, list[SampleStudy]],
                  pid_of: dict[str, str]) -> list[str]:
    window = AS_OF - dt.timedelta(days=730)
    over = [k for k in sorted(patients) if age_on(patients[k].birth_date) > 45]
    chosen: list[str] = []

    def ct(k: str) -> list[SampleStudy]:
        return [s for s in by_patient[k] if s.modality == "CT"]

    recent = next((k for k in over if any(s.study_date >= window for s in ct(k))), None)
    if recent:
        study = next(s for s in ct(recent) if s.study_date >= window)
        b.condition(pid_of[recent], "osteosarcoma_right", study.study_date - dt.timedelta(days=7))
        chosen.append(recent)
    no_ct = next((k for k in over if k not in chosen and not ct(k)), None)
    if no_ct:
        b.condition(pid_of[no_ct], "osteosarcoma_left", AS_OF - dt.timedelta(days=200))
        chosen.append(no_ct)
    old = next((k for k in over if k not in chosen), None)
    if old:
        b.condition(pid_of[old], "osteosarcoma_right", AS_OF - dt.timedelta(days=5 * 365))
        chosen.append(old)
    young = sorted((k for k in patients if age_on(patients[k].birth_date) < 45),
                   key=lambda k: patients[k].birth_date, reverse=True)
    if young:
        b.condition(pid_of[young[0]], "osteosarcoma_left", AS_OF - dt.timedelta(days=100))
        chosen.append(young[0])
    return [pid_of[k] for k in chosen]


INVALID = [
    {"resourceType": "Patient", "id": "bad-birth-date", "birthDate": "not-a-date"},
    {"resourceType": "Observation", "id": "bad-obs", "status": "final"},  # code is required
    {"resourceType": "Condition", "subject": {"reference": "Patient/pt-x"}},  # no id
    {"resourceType": "Basic", "id": "unsupported-type", "code": {"text": "x"}},
]


def generate_clinical_data(dest: str | Path, n_instances: int = 300, seed: int = 0) -> ClinicalSummary:
    """Write `<Type>.ndjson` (sorted by id) and `invalid.ndjson` under `dest`; same inputs, same bytes."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    resources, osteo = build(n_instances, seed)
    counts = {}
    for kind, items in sorted(resources.items()):
        items = sorted(items, key=lambda r: r["id"])
        (dest / f"{kind}.ndjson").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in items))
        counts[kind] = len(items)
    lines = [json.dumps(r, sort_keys=True) for r in INVALID] + ["{not json"]
    (dest / "invalid.ndjson").write_text("\n".join(lines) + "\n")
    return ClinicalSummary(dest, counts, len(lines), osteo)
