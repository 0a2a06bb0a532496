"""ML exports in Dagster: `export_job` materializes one `ml_export` partition (an export by name), and
`export_requests_sensor` adds a partition and launches it for each request file.

A request is `<tenant>/exports/_requests/<name>.json` holding the asset's config (ExportConfig), e.g.
{"studies": ["1.2.3"], "format": "parquet"}; `request_export` writes one. The name becomes the
partition key and, unless the config names a destination, the folder `<tenant>/exports/<name>`.
The run key is the name: a request is launched once; a new export needs a new name (rerunning a
partition with the same config from the UI resumes it).
"""

import json
import re
from typing import Any

import dagster as dg

from assets.export import ExportConfig, exports, ml_export
from dicomlake.store.lakehouse import TenantStore
from pipelines.sensors import TENANT_TAG
from resources import LakehouseResource

REQUESTS = "_requests"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

export_job = dg.define_asset_job(
    "export_job", selection=dg.AssetSelection.assets(ml_export),
    description="Export one selection for AI/ML (a partition of ml_export per export name).",
)  # fmt: skip


def requests_folder(tenant: TenantStore) -> str:
    return f"{tenant.uri}/exports/{REQUESTS}"


def check_config(config: Any) -> ExportConfig:
    """The request's config as the asset would take it; ValueError on an unknown field or a bad value."""
    if not isinstance(config, dict):
        raise ValueError("an export request is a JSON object of ExportConfig fields")
    unknown = set(config) - set(ExportConfig.model_fields)
    if unknown:
        raise ValueError(f"unknown ExportConfig field(s): {', '.join(sorted(unknown))}")
    return ExportConfig(**config)


def request_export(tenant: TenantStore, name: str, config: dict[str, Any]) -> str:
    """Write the request file of export `name` (validated as an ExportConfig); return its path."""
    if not _NAME.match(name):
        raise ValueError(f"an export name is letters, digits, '.', '_' or '-', not {name!r}")
    check_config(config)  # refuse a config the asset would refuse
    fs = tenant.lakehouse.filesystem()
    folder = requests_folder(tenant)
    fs.makedirs(folder, exist_ok=True)
    path = f"{folder}/{name}.json"
    fs.pipe_file(path, json.dumps(config, indent=2).encode())
    return path


def run_config(config: dict[str, Any]) -> dict[str, Any]:
    return {"ops": {ml_export.op.name: {"config": config}}}


@dg.sensor(job=export_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def export_requests_sensor(
    context: dg.SensorEvaluationContext, lakehouse: LakehouseResource
) -> dg.SensorResult:
    """Adds a partition and requests a run for each request file whose name is not a partition yet."""
    tenant = lakehouse.tenant_store()
    fs = tenant.lakehouse.filesystem()
    folder = requests_folder(tenant)
    if not fs.exists(folder):
        return dg.SensorResult(skip_reason=f"no export requests in {folder}")
    registered = set(context.instance.get_dynamic_partitions(exports.name))
    runs, names = [], []
    for path in sorted(p for p in fs.ls(folder, detail=False) if p.endswith(".json")):
        name = path.rsplit("/", 1)[-1].removesuffix(".json")
        if name in registered:
            continue
        try:
            config = json.loads(fs.cat_file(path))
            check_config(config)
        except Exception as exc:  # a bad request is reported, never launched
            context.log.warning(f"export request {name}: {type(exc).__name__}: {exc}")
            continue
        if not _NAME.match(name):
            context.log.warning(f"export request {name}: not a valid export name")
            continue
        names.append(name)
        runs.append(dg.RunRequest(run_key=name, partition_key=name, run_config=run_config(config),
                                  tags={TENANT_TAG: tenant.name}))  # fmt: skip
    if not names:
        return dg.SensorResult(skip_reason="no new export request")
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=[exports.build_add_request(names)])


def export_definitions() -> dg.Definitions:
    return dg.Definitions(assets=[ml_export], jobs=[export_job], sensors=[export_requests_sensor])
