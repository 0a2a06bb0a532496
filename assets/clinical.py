"""FHIR group, clinical side: FHIR R4 data imported into the tenant (dicomlake.fhir.importer).

Thin: the asset imports what FhirSourceResource names (a folder of Bulk NDJSON / Bundles and/or a
FHIR server's search API) in one import, reports its counts, and warns through its check when
resources went to quarantine or could not be linked to the tenant's DICOM data. The dbt marts
read the tables it writes (see assets.cohorts), so lineage runs FHIR -> marts -> cohorts.
"""

import os

import dagster as dg

from assets.ingest import COMMITTER_POOL, table_link
from dicomlake.fhir.importer import SUPPORTED_TYPES, ImportOptions, ImportSummary, import_sources
from resources import FhirSourceResource, LakehouseResource

CLINICAL_CHECK = "no_quarantined_or_unlinked"


def clinical_check(summary: ImportSummary) -> dg.AssetCheckResult:
    """WARN (never fail the run): invalid resources are kept in quarantine, unlinked ones are
    imported but join no imaging; both deserve a look, neither stops the marts."""
    links = summary.links or {}
    unlinked = {kind: counts.get("unlinked", 0) for kind, counts in (links.get("studies") or {}).items()}
    unlinked_patients = int(links.get("patients_unlinked", 0))
    return dg.AssetCheckResult(
        check_name=CLINICAL_CHECK,
        passed=summary.quarantined == 0 and unlinked_patients == 0 and not any(unlinked.values()),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "quarantined": summary.quarantined,
            "patients_unlinked": unlinked_patients,
            "resources_unlinked": dg.MetadataValue.json(unlinked),
        },
    )


@dg.asset(
    name="clinical_fhir",
    deps=["studies"],  # linking reads the tenant's DICOM patients and studies
    group_name="fhir",
    kinds={"python", "deltalake"},
    pool=COMMITTER_POOL,  # it commits to the tenant's tables: one committer per tenant
    check_specs=[
        dg.AssetCheckSpec(
            CLINICAL_CHECK,
            asset="clinical_fhir",
            description="Warns when the import sent resources to quarantine (table fhir_import_quarantine) "
            "or left FHIR patients / reports / documents / imaging studies unlinked to DICOM data.",
        )
    ],
    description="Clinical FHIR R4 data (Patient, Condition, MedicationRequest, DiagnosticReport, ...) "
    "imported from a folder of NDJSON/Bundles and/or a FHIR server: tables fhir_resources, fhir_view_*, "
    "fhir_patient_link, fhir_study_link.",
)
def clinical_fhir(
    context: dg.AssetExecutionContext, lakehouse: LakehouseResource, fhir_source: FhirSourceResource
) -> dg.MaterializeResult:
    tenant = lakehouse.tenant_store()
    paths = [fhir_source.path] if fhir_source.path and os.path.exists(fhir_source.path) else []
    if not paths and not fhir_source.server_url:
        raise dg.Failure(
            description=f"No FHIR source: the folder {fhir_source.path!r} does not exist and no server is "
            "configured (set DICOMLAKE_FHIR_DIR or DICOMLAKE_FHIR_SOURCE_URL, or the fhir_source resource)."
        )
    summary = import_sources(
        tenant,
        paths,
        fhir_source.server_url,
        fhir_source.token,
        resource_types=fhir_source.resource_types or SUPPORTED_TYPES,
        page_size=fhir_source.page_size,
        options=ImportOptions(patient_identifier_system=fhir_source.patient_identifier_system),
    )
    links = summary.links or {}
    studies = links.get("studies") or {}
    context.log.info(
        f"{tenant.name}: {summary.read} FHIR resources read, {summary.inserted} inserted, {summary.updated} "
        f"updated, {summary.unchanged} unchanged, {summary.quarantined} quarantined"
    )
    return dg.MaterializeResult(
        metadata={
            "tenant": tenant.name,
            "folder": fhir_source.path if paths else None,
            "server": fhir_source.server_url,  # the token never goes into metadata
            "sources": summary.sources,
            "read": summary.read,
            "inserted": summary.inserted,
            "updated": summary.updated,
            "unchanged": summary.unchanged,
            "stale": summary.stale,
            "quarantined": summary.quarantined,
            "by_type": dg.MetadataValue.json(summary.by_type),
            "view_rows": dg.MetadataValue.json(summary.view_rows),
            "patients_linked": int(links.get("patients_linked", 0)),
            "patients_unlinked": int(links.get("patients_unlinked", 0)),
            "resources_linked": sum(int(v.get("linked", 0)) for v in studies.values()),
            "resources_unlinked": sum(int(v.get("unlinked", 0)) for v in studies.values()),
            "links": dg.MetadataValue.json(studies),
            "seconds": dg.MetadataValue.float(summary.seconds),
            "resources_table": table_link(tenant, "fhir_resources"),
            "quarantine_table": table_link(tenant, "fhir_import_quarantine"),
        },
        check_results=[clinical_check(summary)],
    )
