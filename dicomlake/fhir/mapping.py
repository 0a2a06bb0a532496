"""DICOM JSON (PS3.18 F.2) -> FHIR R4 resources: Patient, ImagingStudy, Endpoint. Pure functions.

Every resource is built as plain JSON in a fixed order (so output is byte-stable and hand-checkable)
and then validated with the `fhir.resources.R4B` models, plus the cardinalities and code sets those
models do not enforce (ImagingStudy.subject is 1..1, its status is a required code set).
Resource ids are derived from UIDs / identifiers (uuid5), so re-running the mapping is idempotent.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient

DicomJson = Mapping[str, Any]

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
URN_DICOM_UID = "urn:dicom:uid"
RFC3986 = "urn:ietf:rfc:3986"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ENDPOINT_CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
# Namespace of every id this module derives (uuid5 over "<ResourceType>|<key>").
ID_NAMESPACE = uuid.UUID("6f1c1d6e-2b7a-5b0e-9a53-64c0a3e1d1c7")

# DICOM modality (0008,0060) -> display of the DCM code (PS3.16 CID 29 / 33).
MODALITY_DISPLAY = {
    "CR": "Computed Radiography",
    "CT": "Computed Tomography",
    "DX": "Digital Radiography",
    "KO": "Key Object Selection",
    "MG": "Mammography",
    "MR": "Magnetic Resonance",
    "NM": "Nuclear Medicine",
    "OT": "Other",
    "PR": "Presentation State",
    "PT": "Positron emission tomography",
    "RF": "Radiofluoroscopy",
    "SEG": "Segmentation",
    "SM": "Slide Microscopy",
    "SR": "Structured Report Document",
    "US": "Ultrasound",
    "XA": "X-Ray Angiography",
}

# Body Part Examined (0018,0015) defined terms -> SNOMED CT, after DICOM PS3.16 Annex L (the codes
# as dcm4chee's table of Annex L gives them; each concept id checked against pydicom's SCT concepts).
# A term not listed gets no bodySite rather than a guessed code.
BODY_PART_SNOMED: dict[str, tuple[str, str]] = {
    "ABDOMEN": ("818981001", "Abdomen"),
    "ABDOMENPELVIS": ("818982008", "Abdomen and Pelvis"),
    "ANKLE": ("70258002", "Ankle joint"),
    "BRAIN": ("12738006", "Brain"),
    "CHEST": ("43799004", "Chest"),
    "CSPINE": ("122494005", "Cervical spine"),
    "HEAD": ("69536005", "Head"),
    "KNEE": ("72696002", "Knee"),
    "LSPINE": ("122496007", "Lumbar spine"),
    "NECK": ("45048000", "Neck"),
    "PELVIS": ("816092008", "Pelvis"),
    "TSPINE": ("122495006", "Thoracic spine"),
}

GENDER = {"M": "male", "F": "female", "O": "other"}
IMAGING_STUDY_STATUS = {"registered", "available", "cancelled", "entered-in-error", "unknown"}
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")
_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")


class MappingError(ValueError):
    """DICOM attributes that cannot make a valid FHIR resource (the reason says which and why)."""


# -- DICOM JSON access ------------------------------------------------------------------------------
def first(ds: DicomJson, tag: str) -> Any:
    """The first value of `tag` (8 hex digits) or None."""
    values = (ds.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def text(ds: DicomJson, tag: str) -> str | None:
    value = first(ds, tag)
    if isinstance(value, dict):  # a person name
        value = value.get("Alphabetic")
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def integer(ds: DicomJson, tag: str) -> int | None:
    value = first(ds, tag)
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def resource_id(resource_type: str, key: str) -> str:
    """A FHIR id (64 chars max, [A-Za-z0-9-.]) derived from a resource type and a stable key."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{resource_type}|{key}"))


# -- dates and times ------------------------------------------------------------------------------
def fhir_date(da: str | None) -> str | None:
    """DICOM DA (YYYYMMDD) -> FHIR date, or None when absent or not a real date."""
    match = _DATE.match(da or "")
    if not match:
        return None
    try:
        return dt.date(*(int(g) for g in match.groups())).isoformat()
    except ValueError:
        return None


def fhir_datetime(da: str | None, tm: str | None, offset: str | None) -> str | None:
    """DA + TM + TimezoneOffsetFromUTC -> FHIR dateTime.

    FHIR requires a zone whenever a time is given: without TimezoneOffsetFromUTC (or without a
    time) the result is the date alone, never a time in an unknown zone.
    """
    date = fhir_date(da)
    if date is None:
        return None
    time_match = _TIME.match((tm or "").strip())
    zone_match = _OFFSET.match((offset or "").strip())
    if not time_match or not zone_match:
        return date
    hh, mm, ss, frac = time_match.groups()
    hour, minute, second = int(hh), int(mm or 0), int(ss or 0)
    sign, zh, zm = zone_match.groups()
    if hour > 23 or minute > 59 or second > 60 or int(zh) > 14 or int(zm) > 59:
        return date
    fraction = f".{frac}" if frac else ""
    return f"{date}T{hour:02d}:{minute:02d}:{min(second, 59):02d}{fraction}{sign}{zh}:{zm}"


# -- codes ----------------------------------------------------------------------------------------
def modality_coding(modality: str) -> dict[str, str]:
    coding = {"system": DCM, "code": modality}
    if modality in MODALITY_DISPLAY:
        coding["display"] = MODALITY_DISPLAY[modality]
    return coding


def body_site_coding(body_part: str | None) -> dict[str, str] | None:
    entry = BODY_PART_SNOMED.get((body_part or "").strip().upper())
    if entry is None:
        return None
    return {"system": SNOMED, "code": entry[0], "display": entry[1]}


def sop_class_coding(sop_class_uid: str) -> dict[str, str]:
    coding = {"system": RFC3986, "code": f"urn:oid:{sop_class_uid}"}
    try:
        from pydicom.uid import UID

        name = UID(sop_class_uid).name
        if name and name != sop_class_uid:
            coding["display"] = name
    except Exception:  # pragma: no cover - an unknown UID keeps its code only
        pass
    return coding


# -- Patient --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatientKey:
    """Who a study belongs to: the identifier (system, value), or the study itself when unknown."""

    system: str | None
    value: str | None
    fallback: str  # the study UID, used when there is no PatientID

    @property
    def id(self) -> str:
        if self.value is None:
            return resource_id("Patient", f"study|{self.fallback}")
        return resource_id("Patient", f"{self.system}|{self.value}")


def patient_key(ds: DicomJson, patient_id_system: str) -> PatientKey:
    """IssuerOfPatientID, when it is an OID, is the system (urn:oid:...); else the configured one."""
    value = text(ds, "00100020")
    issuer = text(ds, "00100021")
    system = f"urn:oid:{issuer}" if issuer and _OID.match(issuer) else patient_id_system
    return PatientKey(system=system if value else None, value=value, fallback=text(ds, "0020000D") or "")


def human_name(pn: str) -> dict[str, Any]:
    parts = (pn.split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (p.strip() for p in parts)
    full = " ".join(p for p in (prefix, given, middle, family, suffix) if p)
    name: dict[str, Any] = {"use": "official", "text": full}
    if family:
        name["family"] = family
    if given or middle:
        name["given"] = [p for p in (given, middle) if p]
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name


def patient(ds: DicomJson, patient_id_system: str) -> dict[str, Any]:
    """The Patient of an instance's DICOM JSON (its patient module)."""
    key = patient_key(ds, patient_id_system)
    resource: dict[str, Any] = {"resourceType": "Patient", "id": key.id}
    if key.value is not None:
        identifier: dict[str, Any] = {"use": "usual", "system": key.system, "value": key.value}
        issuer = text(ds, "00100021")
        if issuer and key.system != f"urn:oid:{issuer}":
            identifier["assigner"] = {"display": issuer}
        resource["identifier"] = [identifier]
    else:  # no PatientID: the resource's own URN, so a FHIR server can still find it by identifier
        resource["identifier"] = [{"use": "secondary", "system": RFC3986, "value": f"urn:uuid:{key.id}"}]
    pn = text(ds, "00100010")
    if pn and pn.replace("^", "").strip():
        resource["name"] = [human_name(pn)]
    sex = text(ds, "00100040")
    resource["gender"] = GENDER.get((sex or "").upper(), "unknown")
    birth = fhir_date(text(ds, "00100030"))
    if birth:
        resource["birthDate"] = birth
    return validate(resource)


# -- Endpoint -------------------------------------------------------------------------------------
def endpoint(base_url: str, tenant: str) -> dict[str, Any]:
    """The tenant's DICOMweb (WADO-RS) base as an Endpoint."""
    if not re.match(r"^https?://", base_url):
        raise MappingError(f"DICOMweb base URL must be http(s)://..., not {base_url!r}")
    resource = {
        "resourceType": "Endpoint",
        "id": resource_id("Endpoint", base_url),
        "identifier": [{"system": RFC3986, "value": base_url}],
        "status": "active",
        "connectionType": {
            "system": ENDPOINT_CONNECTION, "code": "dicom-wado-rs", "display": "DICOM WADO-RS"
        },
        "name": f"dicomlake DICOMweb ({tenant})",
        # Text only: the R4 endpoint-payload-type code system has no code for DICOM, and no code
        # is better than an invented one.
        "payloadType": [{"text": "DICOM WADO-RS"}],
        "payloadMimeType": ["application/dicom"],
        "address": base_url,
    }
    return validate(resource)


# -- ImagingStudy ---------------------------------------------------------------------------------
def _order(ds: DicomJson, number_tag: str, uid_tag: str) -> tuple[int, int, str]:
    number = integer(ds, number_tag)
    return (number is None, number or 0, text(ds, uid_tag) or "")


def imaging_study(
    instances: Sequence[DicomJson],
    patient_reference: str,
    endpoint_reference: str | None = None,
    status: str = "available",
) -> dict[str, Any]:
    """The ImagingStudy of one study's current instances (the last one in `instances` is the latest
    version: study-level attributes are read from it, series-level ones from each series' latest)."""
    if not instances:
        raise MappingError("an ImagingStudy needs at least one instance")
    latest = instances[-1]
    study_uid = text(latest, "0020000D")
    if not study_uid:
        raise MappingError("StudyInstanceUID (0020,000D) is missing")
    series_latest: dict[str, DicomJson] = {}
    series_instances: dict[str, list[DicomJson]] = {}
    for ds in instances:
        if text(ds, "0020000D") != study_uid:
            raise MappingError(f"instance {text(ds, '00080018')} is not in study {study_uid}")
        series_uid = text(ds, "0020000E")
        if not series_uid:
            raise MappingError(f"SeriesInstanceUID (0020,000E) missing in {text(ds, '00080018')}")
        series_latest[series_uid] = ds
        series_instances.setdefault(series_uid, []).append(ds)

    resource: dict[str, Any] = {"resourceType": "ImagingStudy", "id": resource_id("ImagingStudy", study_uid)}
    identifiers: list[dict[str, Any]] = [{"system": URN_DICOM_UID, "value": f"urn:oid:{study_uid}"}]
    accession = text(latest, "00080050")
    if accession:
        identifiers.append({
            "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
            "value": accession,
        })
    resource["identifier"] = identifiers
    resource["status"] = status
    modalities = sorted({m for ds in series_latest.values() if (m := text(ds, "00080060"))})
    if modalities:
        resource["modality"] = [modality_coding(m) for m in modalities]
    resource["subject"] = {"reference": patient_reference}
    started = fhir_datetime(text(latest, "00080020"), text(latest, "00080030"), text(latest, "00080201"))
    if started:
        resource["started"] = started
    if endpoint_reference:
        resource["endpoint"] = [{"reference": endpoint_reference}]
    resource["numberOfSeries"] = len(series_latest)
    resource["numberOfInstances"] = len(instances)
    description = text(latest, "00081030")
    if description:
        resource["description"] = description

    series_list = []
    by_number = sorted(series_latest.items(), key=lambda kv: _order(kv[1], "00200011", "0020000E"))
    for series_uid, head in by_number:
        members = sorted(series_instances[series_uid], key=lambda ds: _order(ds, "00200013", "00080018"))
        series: dict[str, Any] = {"uid": series_uid}
        number = integer(head, "00200011")
        if number is not None:
            series["number"] = number
        modality = text(head, "00080060")
        if not modality:
            raise MappingError(f"Modality (0008,0060) missing in series {series_uid}")
        series["modality"] = modality_coding(modality)
        description = text(head, "0008103E")
        if description:
            series["description"] = description
        series["numberOfInstances"] = len(members)
        if endpoint_reference:
            series["endpoint"] = [{"reference": endpoint_reference}]
        body_site = body_site_coding(text(head, "00180015"))
        if body_site:
            series["bodySite"] = body_site
        series_started = fhir_datetime(text(head, "00080021"), text(head, "00080031"), text(head, "00080201"))
        if series_started:
            series["started"] = series_started
        entries = []
        for ds in members:
            sop_uid, sop_class = text(ds, "00080018"), text(ds, "00080016")
            if not sop_uid or not sop_class:
                raise MappingError(f"SOPInstanceUID/SOPClassUID missing in series {series_uid}")
            instance: dict[str, Any] = {"uid": sop_uid, "sopClass": sop_class_coding(sop_class)}
            number = integer(ds, "00200013")
            if number is not None:
                instance["number"] = number
            entries.append(instance)
        series["instance"] = entries
        series_list.append(series)
    resource["series"] = series_list
    return validate(resource)


# -- validation -----------------------------------------------------------------------------------
_MODELS = {"Patient": Patient, "ImagingStudy": ImagingStudy, "Endpoint": Endpoint}
# What the R4B models do not check themselves: required elements and required code sets.
_REQUIRED = {
    "ImagingStudy": ("status", "subject"),
    "Endpoint": ("status", "connectionType", "payloadType", "address"),
    "Patient": (),
}


def validate(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate against fhir.resources R4B (plus required elements); return the resource unchanged."""
    kind = resource.get("resourceType")
    model = _MODELS.get(str(kind))
    if model is None:
        raise MappingError(f"unsupported resourceType {kind!r}")
    missing = [name for name in _REQUIRED[str(kind)] if not resource.get(name)]
    if missing:
        raise MappingError(f"{kind} is missing required {', '.join(missing)}")
    if kind == "ImagingStudy":
        if resource["status"] not in IMAGING_STUDY_STATUS:
            raise MappingError(f"ImagingStudy.status {resource['status']!r} is not a FHIR status")
        for series in resource.get("series", []):
            if not series.get("instance") and series.get("numberOfInstances"):
                raise MappingError("series with instances counted but none listed")
    try:
        model.model_validate(resource)
    except Exception as exc:  # pydantic.ValidationError: say what, not the whole traceback
        raise MappingError(f"{kind} failed FHIR R4 validation: {exc}") from exc
    return resource


def validate_all(resources: Iterable[dict[str, Any]]) -> None:
    for resource in resources:
        validate(resource)
