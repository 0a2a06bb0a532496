"""One Definitions object: assets, checks, jobs, sensors and resources chosen per deployment.

Deployments, as in Dagster's project_fully_featured example: "local" (the embedded default, a
folder) and "s3" (DICOMLAKE_ROOT=s3://bucket/prefix; credentials read at run time via EnvVar).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from assets import ALL_ASSETS, ALL_CHECKS
from dicomlake.store.lakehouse import DEFAULT_ROOT, DEFAULT_TENANT
from pipelines.clinical import clinical_definitions
from pipelines.cohorts import cohort_definitions
from pipelines.dicomcast import dicomcast_definitions
from pipelines.export import export_definitions
from pipelines.jobs import ingest_job, levels_job, observe_change_feed_job
from pipelines.maintenance import maintenance_job, maintenance_schedule
from pipelines.sensors import TENANT_TAG, drop_folder_sensor
from pipelines.tags import query_tags_sensor, reindex_query_tags
from resources import (
    DEFAULT_DROP_DIR,
    DEFAULT_FHIR_DIR,
    DropFolderResource,
    FhirSourceResource,
    IngestResource,
    LakehouseResource,
)

# LakehouseResource field -> the environment variable holding that secret.
S3_SECRETS = {
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
}


def _absolute(path: str) -> str:
    # Code server, run workers and the CLI may not share a working directory: pin local paths now.
    return path if "://" in path else os.path.abspath(path)


def deployment_name(env: Mapping[str, str]) -> str:
    return "s3" if env.get("DICOMLAKE_ROOT", "").startswith("s3://") else "local"


def resources_for(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The resources of the deployment that `env` describes (DICOMLAKE_*, AWS_* variables)."""
    root = _absolute(env.get("DICOMLAKE_ROOT") or DEFAULT_ROOT)
    tenant = env.get("DICOMLAKE_TENANT") or DEFAULT_TENANT
    if deployment_name(env) == "s3":
        # Secrets stay out of the definitions (and the UI): EnvVar is resolved when a run starts.
        secrets = {field: dg.EnvVar(name) for field, name in S3_SECRETS.items() if env.get(name)}
        lakehouse = LakehouseResource(
            root=root,
            tenant=tenant,
            endpoint_url=env.get("AWS_ENDPOINT_URL"),
            region=env.get("AWS_REGION"),
            allow_http=env.get("AWS_ALLOW_HTTP", "").lower() == "true",
            **secrets,
        )
    else:
        lakehouse = LakehouseResource(root=root, tenant=tenant)
    return {
        "lakehouse": lakehouse,
        "drop_folder": DropFolderResource(path=_absolute(env.get("DICOMLAKE_DROP_DIR") or DEFAULT_DROP_DIR)),
        "ingest_settings": IngestResource(),
        "fhir_source": fhir_source_for(env),
    }


def fhir_source_for(env: Mapping[str, str]) -> FhirSourceResource:
    """The clinical FHIR source: $DICOMLAKE_FHIR_DIR (else ./clinical) and $DICOMLAKE_FHIR_SOURCE_URL;
    the token stays an EnvVar ($DICOMLAKE_FHIR_SOURCE_TOKEN), read when a run starts."""
    token = dg.EnvVar("DICOMLAKE_FHIR_SOURCE_TOKEN") if env.get("DICOMLAKE_FHIR_SOURCE_TOKEN") else None
    return FhirSourceResource(
        path=_absolute(env.get("DICOMLAKE_FHIR_DIR") or DEFAULT_FHIR_DIR),
        server_url=env.get("DICOMLAKE_FHIR_SOURCE_URL") or None,
        token=token,
    )


def automation_sensor(
    name: str, target: dg.AssetSelection, tenant: str, interval_seconds: int
) -> dg.AutomationConditionSensorDefinition:
    """Evaluates the automation conditions of `target`; its runs carry the tenant tag, so the run
    queue's one-run-per-tenant limit applies to them too."""
    return dg.AutomationConditionSensorDefinition(
        name,
        target=target,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval_seconds,
        run_tags={TENANT_TAG: tenant},
    )


def build_defs(resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The project's definitions; `resources` replaces the environment-derived ones (tests)."""
    resources = dict(resources) if resources is not None else resources_for()
    resources.setdefault("fhir_source", fhir_source_for(os.environ))
    tenant = resources["lakehouse"].tenant
    # + DICOMcast and the clinical FHIR import (group fhir), + dbt marts and saved cohorts (group
    # cohorts), + ML exports (group export)
    extras = (dicomcast_definitions(), clinical_definitions(), cohort_definitions(), export_definitions())
    return dg.Definitions.merge(*extras, dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[ingest_job, levels_job, observe_change_feed_job, maintenance_job, reindex_query_tags],
        schedules=[maintenance_schedule(tenant)],
        sensors=[
            drop_folder_sensor,
            query_tags_sensor,  # reindex when extended query tags wait in status 'adding'
            # series/studies follow ingests (their eager automation condition)
            automation_sensor("levels_automation_sensor", dg.AssetSelection.groups("index"), tenant, 30),
            # change_feed is observed every minute, so its data version (latest seq) follows the feed
            automation_sensor("feed_observation_sensor", dg.AssetSelection.assets("change_feed"), tenant, 60),
        ],
        resources=resources,
    ))


__all__ = ["TENANT_TAG", "build_defs", "deployment_name", "resources_for"]
