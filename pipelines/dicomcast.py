"""DICOMcast in Dagster: `dicomcast_job` materializes `fhir_resources` (and runs its check);
`dicomcast_sensor` requests it whenever the change feed has moved past the DICOMcast cursor.

The run key is the feed's latest seq: one run per feed position, never two piled onto one change.
"""

import dagster as dg

from assets.fhir import fhir_resources, imaging_studies_match_feed
from dicomlake.changefeed import ConsumerCursor
from dicomlake.fhir.sync import CONSUMER
from pipelines.sensors import TENANT_TAG
from resources import LakehouseResource

dicomcast_job = dg.define_asset_job(
    "dicomcast_job",
    selection=dg.AssetSelection.assets(fhir_resources),
    description="Apply the change feed to the FHIR resources (DICOMcast), then check them.",
)


@dg.sensor(job=dicomcast_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def dicomcast_sensor(context: dg.SensorEvaluationContext, lakehouse: LakehouseResource) -> dg.SensorResult:
    tenant = lakehouse.tenant_store()
    cursor = ConsumerCursor(tenant, CONSUMER)
    latest, position = cursor.feed.latest_sequence(), cursor.position()
    if latest <= position:
        return dg.SensorResult(skip_reason=f"DICOMcast is at the end of the feed (seq {position})")
    return dg.SensorResult(run_requests=[dg.RunRequest(
        run_key=f"{tenant.name}:dicomcast:{latest}",
        tags={TENANT_TAG: tenant.name},
    )])


def dicomcast_definitions() -> dg.Definitions:
    return dg.Definitions(assets=[fhir_resources], asset_checks=[imaging_studies_match_feed],
                          jobs=[dicomcast_job], sensors=[dicomcast_sensor])
