"""Clinical FHIR in Dagster: `clinical_fhir_job` imports the configured FHIR source (folder and/or
server, see resources.FhirSourceResource) into the tenant and runs its check."""

import dagster as dg

from assets.clinical import clinical_fhir

clinical_fhir_job = dg.define_asset_job(
    "clinical_fhir_job",
    selection=dg.AssetSelection.assets(clinical_fhir),
    description="Import clinical FHIR data (NDJSON/Bundles folder, FHIR server), relink it to the DICOM "
    "data, then check for quarantined and unlinked resources.",
)


def clinical_definitions() -> dg.Definitions:
    return dg.Definitions(assets=[clinical_fhir], jobs=[clinical_fhir_job])
