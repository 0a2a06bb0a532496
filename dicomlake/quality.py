"""Data-quality rules for the tenant tables, run with great-expectations on pandas frames.

great-expectations is imported inside the functions, never at module level: its import takes
~10 s here and nothing that merely imports this module (CLI start-up, Dagster code loading)
should pay for it. Tables are read through `store.read.scan` with only the columns a rule needs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from dicomlake.dicom.uid import MAX_UID_LENGTH, UID_PATTERN
from dicomlake.store.committer import IDENTITY, sync_instances
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.levels import LEVELS_APP
from dicomlake.store.read import scan

if TYPE_CHECKING:  # pandas costs seconds to import; it is loaded with great-expectations when needed
    import pandas as pd

UID_COLUMNS = IDENTITY  # the four UIDs that identify an instance
EARLIEST_DATE = dt.date(1850, 1, 1)
CHANGE_ACTIONS = ("create", "update", "delete")
EXAMPLES = 5  # unexpected values quoted per failed expectation


@dataclass
class QualityReport:
    success: bool
    # One dict per expectation: expectation, column, success, unexpected_count, details.
    results: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["success"]]


def _gx() -> ModuleType:
    import great_expectations as gx

    return gx


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a value great-expectations hands back (numpy scalars, dates, NaN)."""
    if isinstance(value, dt.date):  # also datetime and pandas.Timestamp
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _result_row(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    outcome = result.result or {}
    details: dict[str, Any] = {}
    if "observed_value" in outcome:
        details["observed_value"] = _plain(outcome["observed_value"])
    examples = outcome.get("partial_unexpected_list") or []
    if examples:
        details["examples"] = [_plain(v) for v in examples[:EXAMPLES]]
    for key in ("min_value", "max_value", "value_set", "regex"):
        if config.kwargs.get(key) is not None:
            details[key] = _plain(config.kwargs[key]) if key != "value_set" else sorted(config.kwargs[key])
    if result.exception_info and result.exception_info.get("raised_exception"):
        details["exception"] = result.exception_info.get("exception_message")
    return {
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "success": bool(result.success),
        "unexpected_count": int(outcome.get("unexpected_count") or 0),
        "details": details,
    }


def validate(name: str, frame: pd.DataFrame, expectations: Sequence[Any]) -> QualityReport:
    """Run `expectations` (great_expectations.expectations objects) on `frame` in a throwaway context."""
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In memory, no usage statistics sent, no progress bars on stderr (they would flood run logs).
    config = DataContextConfig(
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        store_backend_defaults=InMemoryStoreBackendDefaults(),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    batch = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(name)
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    outcome = batch.validate(suite)
    return QualityReport(bool(outcome.success), [_result_row(r) for r in outcome.results], len(frame))


def _uid_rules(columns: Sequence[str]) -> list[Any]:
    e = _gx().expectations
    return [
        *(e.ExpectColumnValuesToNotBeNull(column=c) for c in columns),
        *(e.ExpectColumnValuesToMatchRegex(column=c, regex=UID_PATTERN) for c in columns),
        *(e.ExpectColumnValueLengthsToBeBetween(column=c, min_value=1, max_value=MAX_UID_LENGTH)
          for c in columns),
    ]


def check_instances(tenant: TenantStore, today: dt.date | None = None) -> QualityReport:
    """UIDs present and well-formed, one row per SOP instance, bytes referenced, plausible dates."""
    sync_instances(tenant)
    columns = [*UID_COLUMNS, "sha256", "blob_key", "study_date", "patient_birth_date"]
    table = scan(tenant.table("instances"), columns)
    # Null when either date is missing; great-expectations skips nulls, so only real contradictions count.
    table = table.append_column(
        "birth_not_after_study", pc.less_equal(table["patient_birth_date"], table["study_date"])
    )
    latest = (today or dt.date.today()) + dt.timedelta(days=1)  # a study dated today in an earlier zone
    e = _gx().expectations
    rules = [
        *_uid_rules(UID_COLUMNS),
        e.ExpectColumnValuesToBeUnique(column="sop_instance_uid"),
        e.ExpectColumnValuesToNotBeNull(column="sha256"),
        e.ExpectColumnValuesToNotBeNull(column="blob_key"),
        *(e.ExpectColumnValuesToBeBetween(column=c, min_value=EARLIEST_DATE, max_value=latest)
          for c in ("study_date", "patient_birth_date")),
        e.ExpectColumnValuesToBeInSet(column="birth_not_after_study", value_set=[True]),
    ]
    return validate("instances", table.to_pandas(), rules)


def check_changes(tenant: TenantStore) -> QualityReport:
    """The change feed's seq is dense and gapless from 1 (unique, min 1, max = rows); known actions."""
    table = scan(tenant.table("changes"), ["seq", "action"])
    rows = table.num_rows
    e = _gx().expectations
    rules = [
        e.ExpectColumnValuesToNotBeNull(column="seq"),
        e.ExpectColumnValuesToBeUnique(column="seq"),
        e.ExpectColumnValuesToBeInSet(column="action", value_set=list(CHANGE_ACTIONS)),
    ]
    if rows:  # min/max of an empty column are undefined (they fail); an empty feed is a valid feed
        rules += [
            e.ExpectColumnMinToBeBetween(column="seq", min_value=1, max_value=1),
            e.ExpectColumnMaxToBeBetween(column="seq", min_value=rows, max_value=rows),
        ]
    return validate("changes", table.to_pandas(), rules)


def _live_instances_at(tenant: TenantStore, seq: int) -> int:
    """How many SOP instances existed right after change `seq` (their last action is not a delete)."""
    changes = pl.from_arrow(
        scan(tenant.table("changes"), ["seq", "sop_instance_uid", "action"], where=f"seq <= {int(seq)}")
    )
    last = changes.sort("seq").group_by("sop_instance_uid").agg(pl.col("action").last())
    return last.filter(pl.col("action") != "delete").height


def check_studies(tenant: TenantStore) -> QualityReport:
    """One row per well-formed Study UID, non-empty studies, and exactly the instances of its seq."""
    uri = tenant.table_uri("studies")
    try:
        studies = DeltaTable(uri, storage_options=tenant.storage_options or None)
    except TableNotFoundError:
        missing = {"expectation": "table_exists", "column": None, "success": False, "unexpected_count": 0,
                   "details": {"table": uri}}
        return QualityReport(False, [missing], 0)
    columns = ["study_instance_uid", "number_of_study_related_series", "number_of_study_related_instances"]
    frame = scan(studies, columns).to_pandas()
    e = _gx().expectations
    rules = [
        *_uid_rules(["study_instance_uid"]),
        e.ExpectColumnValuesToBeUnique(column="study_instance_uid"),
        e.ExpectColumnValuesToBeBetween(column="number_of_study_related_series", min_value=1),
        e.ExpectColumnValuesToBeBetween(column="number_of_study_related_instances", min_value=1),
    ]
    seq = studies.transaction_version(LEVELS_APP)
    if seq is not None:  # built by levels.build_levels: it must count every instance live at that seq
        expected = _live_instances_at(tenant, seq)
        rules.append(e.ExpectColumnSumToBeBetween(
            column="number_of_study_related_instances", min_value=expected, max_value=expected))
    return validate("studies", frame, rules)
