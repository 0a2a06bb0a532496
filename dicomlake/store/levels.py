"""Study and series level tables, derived from `instances` (QIDO's computed attributes live here).

Each rebuild is one overwrite commit tagged with the seq it reflects (app id LEVELS_APP), so a
reader can tell how fresh it is and a rebuild at the same seq is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from dicomlake.store.committer import sync_instances
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.read import scan

LEVELS_APP = "dicomlake.levels"

PATIENT_COLUMNS = [
    "patient_id",
    "issuer_of_patient_id",
    "patient_name",
    "patient_name_normalized",
    "patient_birth_date",
    "patient_sex",
]
STUDY_COLUMNS = [
    "study_date",
    "study_time",
    "study_datetime",
    "study_id",
    "accession_number",
    "referring_physician_name",
    "study_description",
    "timezone_offset_from_utc",
    "institution_name",
    "patient_age",
    "patient_age_years",
]
SERIES_COLUMNS = [
    "modality",
    "series_number",
    "series_description",
    "series_date",
    "series_time",
    "body_part_examined",
    "protocol_name",
    "performed_procedure_step_start_date",
    "performed_procedure_step_start_time",
    "manufacturer",
    "manufacturer_model_name",
    "station_name",
]


@dataclass(frozen=True)
class LevelsSummary:
    seq: int
    studies: int
    series: int
    rebuilt: bool


def _latest_first(columns: list[str]) -> list[pl.Expr]:
    # The newest version's value wins; nulls do not hide an older non-null value.
    return [pl.col(c).drop_nulls().first().alias(c) for c in columns]


def derive_series(instances: pl.DataFrame) -> pl.DataFrame:
    ordered = instances.sort("seq", descending=True)
    return (
        ordered.group_by("series_instance_uid")
        .agg(
            pl.col("study_instance_uid").first(),
            *_latest_first(SERIES_COLUMNS),
            pl.len().cast(pl.Int64).alias("number_of_series_related_instances"),
            pl.col("size_bytes").sum().alias("size_bytes"),
            pl.col("seq").max().alias("last_seq"),
            pl.col("changed_at").max().alias("last_changed_at"),
        )
        .sort("study_instance_uid", "series_number", "series_instance_uid", nulls_last=True)
    )


def derive_studies(instances: pl.DataFrame) -> pl.DataFrame:
    ordered = instances.sort("seq", descending=True)
    return (
        ordered.group_by("study_instance_uid")
        .agg(
            *_latest_first(PATIENT_COLUMNS + STUDY_COLUMNS),
            pl.col("modality").drop_nulls().unique().sort().alias("modalities_in_study"),
            pl.col("sop_class_uid").drop_nulls().unique().sort().alias("sop_classes_in_study"),
            pl.col("series_instance_uid").n_unique().cast(pl.Int64).alias("number_of_study_related_series"),
            pl.len().cast(pl.Int64).alias("number_of_study_related_instances"),
            pl.col("size_bytes").sum().alias("size_bytes"),
            pl.col("seq").max().alias("last_seq"),
            pl.col("changed_at").max().alias("last_changed_at"),
        )
        .sort("study_datetime", "study_instance_uid", nulls_last=True)
    )


def build_levels(tenant: TenantStore, force: bool = False) -> LevelsSummary:
    """Rebuild `series` and `studies` from the current `instances` unless already at that seq."""
    seq = sync_instances(tenant)
    series_uri, studies_uri = tenant.table_uri("series"), tenant.table_uri("studies")
    options = tenant.storage_options or None
    if not force:
        try:
            done = DeltaTable(studies_uri, storage_options=options).transaction_version(LEVELS_APP)
            series_done = DeltaTable(series_uri, storage_options=options).transaction_version(LEVELS_APP)
        except Exception:  # not built yet
            done = series_done = None
        if done == seq and series_done == seq:
            counts = [DeltaTable(u, storage_options=options).count() for u in (studies_uri, series_uri)]
            return LevelsSummary(seq, counts[0], counts[1], rebuilt=False)
    columns = [
        "seq",
        "changed_at",
        "study_instance_uid",
        "series_instance_uid",
        "sop_class_uid",
        "size_bytes",
        *PATIENT_COLUMNS,
        *STUDY_COLUMNS,
        *SERIES_COLUMNS,
    ]
    instances = pl.from_arrow(scan(tenant.table("instances"), columns))
    series, studies = derive_series(instances), derive_studies(instances)
    for uri, frame in ((series_uri, series), (studies_uri, studies)):
        write_deltalake(
            uri,
            frame.to_arrow(),
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=options,
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id=LEVELS_APP, version=seq)],
                custom_metadata={"dicomlake.operation": "levels", "dicomlake.seq": str(seq)},
            ),
        )
    return LevelsSummary(seq, studies.height, series.height, rebuilt=True)
