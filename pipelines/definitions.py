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
from pipelines.jobs import ingest_job, levels_job, observe_change_feed_job
from pipelines.maintenance import maintenance_job, maintenance_schedule
from pipelines.sensors import TENANT_TAG, drop_folder_sensor
from resources import DEFAULT_DROP_DIR, DropFolderResource, IngestResource, LakehouseResource

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
    }


def levels_automation_sensor(tenant: str) -> dg.AutomationConditionSensorDefinition:
    """Keeps series/studies following ingests (their eager automation condition)."""
    return dg.AutomationConditionSensorDefinition(
        "levels_automation_sensor",
        target=dg.AssetSelection.groups("index"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        run_tags={TENANT_TAG: tenant},  # the run queue's per-tenant limit applies to these runs too
    )


def feed_observation_sensor(tenant: str) -> dg.AutomationConditionSensorDefinition:
    """Observes `change_feed` every minute, so its data version (latest seq) follows the feed."""
    return dg.AutomationConditionSensorDefinition(
        "feed_observation_sensor",
        target=dg.AssetSelection.assets("change_feed"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        run_tags={TENANT_TAG: tenant},
    )


def build_defs(resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The project's definitions; `resources` replaces the environment-derived ones (tests)."""
    resources = dict(resources) if resources is not None else resources_for()
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=[ingest_job, levels_job, observe_change_feed_job, maintenance_job],
        schedules=[maintenance_schedule(resources["lakehouse"].tenant)],
        sensors=[drop_folder_sensor, levels_automation_sensor(resources["lakehouse"].tenant),
                 feed_observation_sensor(resources["lakehouse"].tenant)],
        resources=resources,
    )


__all__ = ["TENANT_TAG", "build_defs", "deployment_name", "resources_for"]
