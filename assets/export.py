"""Export group: one ML export per partition (the partition key is the export's name).

Thin: the config becomes a dicomlake.export.Selection and options, dicomlake.export.export writes the
files (resuming when the folder holds this export already), and the asset reports its counts, the
manifest, the change-feed seq it is pinned to and a small PNG of one exported frame. Partitions
are added by the export_requests_sensor (pipelines/export.py), in the UI, or with
`instance.add_dynamic_partitions("exports", [name])`.
"""

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from assets.ingest import dicom_instances
from dicomlake.export import Selection, export
from dicomlake.export.preview import sample_png
from resources import LakehouseResource

exports = dg.DynamicPartitionsDefinition(name="exports")
DEID_KEY_ENV = "DICOMLAKE_DEID_KEY"


class ExportConfig(dg.Config):
    """What to export (one of: studies/series/instances, filters, cohort) and how."""

    studies: list[str] = Field(default=[], description="Study Instance UIDs.")
    series: list[str] = Field(default=[], description="'study/series' UIDs.")
    instances: list[str] = Field(default=[], description="'study/series/sop' UIDs.")
    filters: dict[str, str] = Field(default={}, description="QIDO-RS instance filters, e.g. {Modality: CT}.")
    cohort: str | None = Field(default=None, description="A cohort definition file or question.")
    as_of: str | None = Field(default=None, description="With cohort: the day ages count from.")
    format: str = Field(default="parquet", description="parquet, dicom, nifti or png.")
    per_frame: bool = Field(default=False, description="parquet: one row per frame.")
    deid: bool = Field(
        default=False, description="De-identified (PS3.15 E.1): dicom copies; the others' UIDs, IDs, dates."
    )
    project_key_env: str = Field(default=DEID_KEY_ENV, description="Environment variable of the de-id key.")
    destination: str | None = Field(
        default=None, description="Output folder (default <tenant>/exports/<partition> of a local lakehouse)."
    )
    workers: int = Field(default=1, description="Decoder processes.")

    def selection(self) -> Selection:
        return Selection(uids=(*self.studies, *self.series, *self.instances), filters=dict(self.filters),
                         cohort=self.cohort, as_of=self.as_of)  # fmt: skip

    def deid_options(self) -> Any:  # a DeidOptions, or None
        if not self.deid:
            return None
        from dicomlake.deid import DeidOptions

        key = os.environ.get(self.project_key_env)
        if not key:
            raise dg.Failure(f"deid needs the de-identification key in ${self.project_key_env}")
        return DeidOptions(project_key=key)


def _sample(out: Path) -> dg.MetadataValue:
    png = sample_png(out)
    if png is None:
        return dg.MetadataValue.md("no exported frame to show")
    data = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![one exported frame](data:image/png;base64,{data})")


@dg.asset(
    partitions_def=exports,
    group_name="export",
    kinds={"python", "parquet"},
    deps=[dg.AssetDep(dicom_instances, partition_mapping=dg.AllPartitionMapping())],
)
def ml_export(context: dg.AssetExecutionContext, config: ExportConfig,
              lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """An export for AI/ML: Parquet tensors or DICOM copies of a selection, with manifest.json and
    errors.jsonl, pinned to one version of `instances` and the change feed's seq."""
    tenant = lakehouse.tenant_store()
    if config.destination:
        out = Path(config.destination)
    elif tenant.lakehouse.is_local:
        out = Path(tenant.uri) / "exports" / context.partition_key
    else:
        raise dg.Failure("the lakehouse is not a local folder: set config.destination to a local folder")
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        context.log.info(f"{tenant.name}/{context.partition_key}: {done}/{total} instances")

    summary = export(tenant, config.selection(), out, config.format, per_frame=config.per_frame,
                     deid_options=config.deid_options(), workers=config.workers,
                     progress=progress)  # fmt: skip
    manifest = json.loads(Path(summary.manifest).read_text(encoding="utf-8"))
    return dg.MaterializeResult(metadata={
        "tenant": tenant.name,
        "format": config.format,
        "selected": summary.selected,
        "exported": summary.exported,
        "skipped": summary.skipped,
        "failed": summary.failed,
        "files": len(manifest["files"]),
        "rows": sum(f["rows"] for f in manifest["files"]),
        "change_feed_seq": manifest["change_feed_seq"],
        "instances_version": manifest["delta_versions"]["instances"],
        "manifest": dg.MetadataValue.path(summary.manifest),
        "folder": dg.MetadataValue.path(str(out)),
        "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        "sample": _sample(out),
    })
