"""FHIR group: DICOMcast output (Patient, ImagingStudy, Endpoint as Delta tables + NDJSON files).

Thin: the asset runs dicomlake.fhir.sync.DicomCast for the tenant and reports what it did; the check
compares the ImagingStudy table with the change feed at the DICOMcast cursor.
"""

import os

import dagster as dg

from assets.changefeed import change_feed
from assets.ingest import COMMITTER_POOL
from dicomlake.fhir.rest import FhirServerTarget
from dicomlake.fhir.sync import DicomCast, check_imaging_studies
from resources import LakehouseResource


class DicomCastConfig(dg.Config):
    dicomweb_url: str | None = None  # the Endpoint's DICOMweb server (default $DICOMLAKE_DICOMWEB_URL)
    patient_id_system: str | None = None  # identifier system of PatientID
    replay_dead_letters: bool = False  # also apply the dead letters again after the sync
    fhir_url: str | None = None  # also push to this FHIR server (default $DICOMLAKE_FHIR_URL)


@dg.asset(
    name="fhir_resources",
    deps=[change_feed],
    group_name="fhir",
    kinds={"python", "deltalake"},
    pool=COMMITTER_POOL,  # it commits to the tenant's tables: one committer per tenant
    description="DICOMcast: Patient, ImagingStudy and Endpoint resources (tables fhir_patient, "
    "fhir_imagingstudy, fhir_endpoint and Bulk Data NDJSON files), kept in step with the change feed.",
)
def fhir_resources(context: dg.AssetExecutionContext, config: DicomCastConfig,
                   lakehouse: LakehouseResource) -> dg.MaterializeResult:
    tenant = lakehouse.tenant_store()
    fhir_url = config.fhir_url or os.environ.get("DICOMLAKE_FHIR_URL")
    # The token is read from the environment at run time: never in config, so never in the UI.
    server = FhirServerTarget(fhir_url, os.environ.get("DICOMLAKE_FHIR_TOKEN") or None) if fhir_url else None
    cast = DicomCast(tenant, dicomweb_url=config.dicomweb_url, patient_id_system=config.patient_id_system,
                     fhir_server=server)
    report = cast.sync()
    replayed = cast.replay_dead_letters().entries if config.replay_dead_letters else 0
    context.log.info(f"{tenant.name}: DICOMcast applied {report.entries} entries, at seq {report.position}")
    return dg.MaterializeResult(metadata={
        "entries_applied": report.entries,
        "imaging_studies_written": report.studies_written,
        "imaging_studies_deleted": report.studies_deleted,
        "dead_lettered": report.dead_lettered,
        "dead_letters_replayed": replayed,
        "dead_letters_pending": cast.pending_dead_letters(),
        "cursor_position": report.position,
        "lag": report.lag,  # feed latest seq - cursor position
    })


@dg.asset_check(
    asset=fhir_resources,
    description="Every current study (the feed at the DICOMcast cursor) has an ImagingStudy with the "
    "same numbers of series and instances, and no other ImagingStudy exists.",
)
def imaging_studies_match_feed(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    result = check_imaging_studies(lakehouse.tenant_store())
    return dg.AssetCheckResult(passed=result["passed"], metadata={
        "position": result["position"],
        "studies": result["studies"],
        "imaging_studies": result["imaging_studies"],
        "missing": dg.MetadataValue.json(result["missing"]),
        "extra": dg.MetadataValue.json(result["extra"]),
        "count_mismatch": dg.MetadataValue.json(result["count_mismatch"]),
    })
