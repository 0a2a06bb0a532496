"""The DICOM JSON -> FHIR R4 mapping, against resources written out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from dicomlake.fhir.mapping import (
    MappingError,
    endpoint,
    fhir_datetime,
    imaging_study,
    patient,
    resource_id,
    validate,
)

SYSTEM = "urn:dicomlake:test:patient-id"


def _el(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)}


def instance(sop: str, series: str, number: int, **extra: dict[str, Any]) -> dict[str, Any]:
    ds = {
        "00080016": _el("UI", "1.2.840.10008.5.1.4.1.1.2"),
        "00080018": _el("UI", sop),
        "00080020": _el("DA", "20240131"),
        "00080030": _el("TM", "143005.25"),
        "00080050": _el("SH", "ACC-7"),
        "00080060": _el("CS", "CT"),
        "00080201": _el("SH", "+0100"),
        "00081030": _el("LO", "CT CHEST"),
        "0008103E": _el("LO", "AXIAL"),
        "00100010": _el("PN", {"Alphabetic": "Muller^Anna^Maria^Dr"}),
        "00100020": _el("LO", "P1"),
        "00100030": _el("DA", "19800229"),
        "00100040": _el("CS", "F"),
        "00180015": _el("CS", "CHEST"),
        "0020000D": _el("UI", "1.2.3"),
        "0020000E": _el("UI", series),
        "00200011": _el("IS", 2 if series == "1.2.3.2" else 1),
        "00200013": _el("IS", number),
    }
    ds.update(extra)
    return ds


def test_patient_by_hand() -> None:
    got = patient(instance("1.2.3.1.1", "1.2.3.1", 1), SYSTEM)
    assert got == {
        "resourceType": "Patient",
        "id": resource_id("Patient", f"{SYSTEM}|P1"),
        "identifier": [{"use": "usual", "system": SYSTEM, "value": "P1"}],
        "name": [{"use": "official", "text": "Dr Anna Maria Muller", "family": "Muller",
                  "given": ["Anna", "Maria"], "prefix": ["Dr"]}],
        "gender": "female",
        "birthDate": "1980-02-29",
    }


def test_patient_issuer_oid_is_the_system_and_text_issuer_the_assigner() -> None:
    oid = patient(instance("1.2.3.1.1", "1.2.3.1", 1, **{"00100021": _el("LO", "1.3.6.1.4.1.9")}), SYSTEM)
    assert oid["identifier"] == [{"use": "usual", "system": "urn:oid:1.3.6.1.4.1.9", "value": "P1"}]
    named = patient(instance("1.2.3.1.1", "1.2.3.1", 1, **{"00100021": _el("LO", "HOSP A")}), SYSTEM)
    assert named["identifier"] == [
        {"use": "usual", "system": SYSTEM, "value": "P1", "assigner": {"display": "HOSP A"}}
    ]
    assert named["id"] != oid["id"]  # another system, another patient


def test_patient_without_id_or_demographics() -> None:
    ds = instance("1.2.3.1.1", "1.2.3.1", 1)
    for tag in ("00100010", "00100020", "00100030", "00100040"):
        del ds[tag]
    own = resource_id("Patient", "study|1.2.3")
    assert patient(ds, SYSTEM) == {
        "resourceType": "Patient", "id": own, "gender": "unknown",
        "identifier": [{"use": "secondary", "system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{own}"}],
    }


def test_imaging_study_by_hand() -> None:
    ep = "Endpoint/e1"
    subject = "Patient/p1"
    got = imaging_study(
        [
            instance("1.2.3.2.1", "1.2.3.2", 1, **{"00180015": _el("CS", "ELBOWX"),
                                                   "00080060": _el("CS", "SR")}),
            instance("1.2.3.1.2", "1.2.3.1", 2),
            instance("1.2.3.1.1", "1.2.3.1", 1, **{"00080021": _el("DA", "20240131"),
                                                   "00080031": _el("TM", "1431")}),
        ],
        subject,
        ep,
    )
    ct = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT",
          "display": "Computed Tomography"}
    sr = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "SR",
          "display": "Structured Report Document"}
    ct_image = {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                "display": "CT Image Storage"}
    assert got == {
        "resourceType": "ImagingStudy",
        "id": resource_id("ImagingStudy", "1.2.3"),
        "identifier": [
            {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                  "code": "ACSN"}]},
             "value": "ACC-7"},
        ],
        "status": "available",
        "modality": [ct, sr],
        "subject": {"reference": subject},
        "started": "2024-01-31T14:30:05.25+01:00",
        "endpoint": [{"reference": ep}],
        "numberOfSeries": 2,
        "numberOfInstances": 3,
        "description": "CT CHEST",
        "series": [
            {"uid": "1.2.3.1", "number": 1, "modality": ct, "description": "AXIAL", "numberOfInstances": 2,
             "endpoint": [{"reference": ep}],
             "bodySite": {"system": "http://snomed.info/sct", "code": "43799004", "display": "Chest"},
             # the series' own date and time are read from its latest version (the last given)
             "started": "2024-01-31T14:31:00+01:00",
             "instance": [{"uid": "1.2.3.1.1", "sopClass": ct_image, "number": 1},
                          {"uid": "1.2.3.1.2", "sopClass": ct_image, "number": 2}]},
            {"uid": "1.2.3.2", "number": 2, "modality": sr, "description": "AXIAL", "numberOfInstances": 1,
             "endpoint": [{"reference": ep}],  # ELBOWX: no SNOMED mapping, so no bodySite
             "instance": [{"uid": "1.2.3.2.1", "sopClass": ct_image, "number": 1}]},
        ],
    }


def test_started_needs_a_zone_for_a_time() -> None:
    assert fhir_datetime("20240131", "0930", "-0500") == "2024-01-31T09:30:00-05:00"
    assert fhir_datetime("20240131", "0930", None) == "2024-01-31"  # no zone: the date alone
    assert fhir_datetime("20240131", None, "+0000") == "2024-01-31"
    assert fhir_datetime("20240231", "0930", "+0000") is None  # not a date
    assert fhir_datetime(None, "0930", "+0000") is None


def test_endpoint_by_hand() -> None:
    base = "http://127.0.0.1:8042/tenants/t1/dicomweb"
    assert endpoint(base, "t1") == {
        "resourceType": "Endpoint",
        "id": resource_id("Endpoint", base),
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": base}],
        "status": "active",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                           "code": "dicom-wado-rs", "display": "DICOM WADO-RS"},
        "name": "dicomlake DICOMweb (t1)",
        "payloadType": [{"text": "DICOM WADO-RS"}],
        "payloadMimeType": ["application/dicom"],
        "address": base,
    }
    with pytest.raises(MappingError):
        endpoint("ftp://x", "t1")


def test_ids_are_deterministic_and_valid_fhir_ids() -> None:
    first = imaging_study([instance("1.2.3.1.1", "1.2.3.1", 1)], "Patient/p")
    again = imaging_study([instance("1.2.3.1.1", "1.2.3.1", 1)], "Patient/p")
    assert first == again
    assert first["id"] == resource_id("ImagingStudy", "1.2.3") != resource_id("ImagingStudy", "1.2.4")
    assert len(first["id"]) <= 64


def test_invalid_input_is_refused_with_a_reason() -> None:
    with pytest.raises(MappingError, match="at least one"):
        imaging_study([], "Patient/p")
    no_modality = instance("1.2.3.1.1", "1.2.3.1", 1)
    del no_modality["00080060"]
    with pytest.raises(MappingError, match="Modality"):
        imaging_study([no_modality], "Patient/p")
    study = imaging_study([instance("1.2.3.1.1", "1.2.3.1", 1)], "Patient/p")
    with pytest.raises(MappingError, match="status"):
        validate({**study, "status": "done"})
    with pytest.raises(MappingError, match="subject"):
        validate({k: v for k, v in study.items() if k != "subject"})
    with pytest.raises(MappingError, match="validation"):
        validate({**study, "numberOfSeries": "many"})
