"""Link imported FHIR resources to the tenant's DICOM data (tables `fhir_patient_link`, `fhir_study_link`).

- Patient: linked to a DICOM PatientID (from `instances`) when any of its identifiers has that value;
  a configured identifier system narrows it to identifiers of that system. One row per match; a
  Patient with no match keeps one row with null DICOM keys.
- ImagingStudy: by its StudyInstanceUID (urn:dicom:uid), else by accession number.
  DiagnosticReport: by its imagingStudy reference (that ImagingStudy's UID), else by accession
  number (identifier typed ACSN). DocumentReference: by the StudyInstanceUID of its context.
  An accession number matching several studies is narrowed to the studies of the resource's patient.
  Unmatched resources keep a row with `study_instance_uid` null.
Both tables are rewritten whole on every relink, so the result depends only on the current data.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.read import scan
from dicomlake.store.schemas import FHIR_PATIENT_LINK, FHIR_STUDY_LINK


@dataclass
class LinkSummary:
    patients: int = 0
    patients_linked: int = 0
    patients_unlinked: int = 0
    studies: dict[str, dict[str, int]] = field(default_factory=dict)  # type -> linked / unlinked

    @property
    def unlinked(self) -> int:
        return self.patients_unlinked + sum(v["unlinked"] for v in self.studies.values())

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "unlinked": self.unlinked}


def relink(tenant: TenantStore, identifier_system: str | None = None) -> LinkSummary:
    from deltalake import write_deltalake

    keys = ["patient_id", "study_instance_uid", "accession_number"]
    dicom = scan(tenant.table("instances"), keys).to_pylist()
    dicom_patients = {r["patient_id"] for r in dicom if r["patient_id"]}
    uids = {r["study_instance_uid"] for r in dicom}
    by_accession: dict[str, set[str]] = defaultdict(set)
    study_patient: dict[str, str | None] = {}
    for r in dicom:
        study_patient[r["study_instance_uid"]] = r["patient_id"]
        if r["accession_number"]:
            by_accession[r["accession_number"]].add(r["study_instance_uid"])

    summary = LinkSummary()
    patient_rows: list[dict[str, Any]] = []
    idents = scan(tenant.table("fhir_view_patient_identifier"), ["patient_id", "system", "value"]).to_pylist()
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ident in idents:
        by_patient[ident["patient_id"]].append(ident)
    fhir_to_dicom: dict[str, set[str]] = defaultdict(set)
    for pid in sorted(scan(tenant.table("fhir_view_patient"), ["id"]).column(0).to_pylist()):
        matches = sorted({(i["value"], i["system"]) for i in by_patient.get(pid, [])
                          if i["value"] in dicom_patients
                          and (identifier_system is None or i["system"] == identifier_system)},
                         key=lambda m: (m[0], m[1] or ""))
        summary.patients += 1
        if matches:
            summary.patients_linked += 1
        else:
            summary.patients_unlinked += 1
            patient_rows.append({"fhir_patient_id": pid, "dicom_patient_id": None, "matched_system": None,
                                 "matched_value": None})
        for value, system in matches:
            fhir_to_dicom[pid].add(value)
            patient_rows.append({"fhir_patient_id": pid, "dicom_patient_id": value, "matched_system": system,
                                 "matched_value": value})

    def by_acc(accession: str | None, patient: str | None) -> str | None:
        found = by_accession.get(accession or "", set())
        if len(found) > 1:  # accession numbers are unique per issuer only: prefer the patient's own
            found = {u for u in found if study_patient.get(u) in fhir_to_dicom.get(patient or "", set())}
        return next(iter(found)) if len(found) == 1 else None

    study_rows: list[dict[str, Any]] = []
    imaging_uid: dict[str, str | None] = {}
    for row in scan(tenant.table("fhir_view_imaging_study"),
                    ["id", "patient_id", "study_instance_uid", "accession_number"],
                    order_by="id").to_pylist():
        imaging_uid[row["id"]] = row["study_instance_uid"]
        if row["study_instance_uid"] in uids:
            uid, how = row["study_instance_uid"], "study_instance_uid"
        else:
            uid = by_acc(row["accession_number"], row["patient_id"])
            how = "accession_number" if uid else None
        study_rows.append(_study_row("ImagingStudy", row, uid, how))
    for row in scan(tenant.table("fhir_view_diagnostic_report"),
                    ["id", "patient_id", "imaging_study_id", "accession_number"], order_by="id").to_pylist():
        uid = imaging_uid.get(row["imaging_study_id"] or "")
        how: str | None = "study_instance_uid"
        if uid not in uids:
            uid = by_acc(row["accession_number"], row["patient_id"])
            how = "accession_number" if uid else None
        study_rows.append(_study_row("DiagnosticReport", row, uid, how))
    for row in scan(tenant.table("fhir_view_document_reference"),
                    ["id", "patient_id", "study_instance_uid"], order_by="id").to_pylist():
        ok = row["study_instance_uid"] in uids
        study_rows.append(_study_row("DocumentReference", row, row["study_instance_uid"] if ok else None,
                                     "study_instance_uid" if ok else None))
    for row in study_rows:
        counts = summary.studies.setdefault(row["resource_type"], {"linked": 0, "unlinked": 0})
        counts["linked" if row["study_instance_uid"] else "unlinked"] += 1

    write_deltalake(tenant.table("fhir_patient_link"),
                    pa.Table.from_pylist(patient_rows, schema=FHIR_PATIENT_LINK), mode="overwrite")
    write_deltalake(tenant.table("fhir_study_link"), pa.Table.from_pylist(study_rows, schema=FHIR_STUDY_LINK),
                    mode="overwrite")
    return summary


def _study_row(kind: str, row: dict[str, Any], uid: str | None, how: str | None) -> dict[str, Any]:
    return {"resource_type": kind, "resource_id": row["id"], "patient_id": row["patient_id"],
            "study_instance_uid": uid, "matched_by": how}
