"""Data-quality rules: a clean ingest passes; tables broken on purpose fail with the rule named."""

import datetime as dt
import re
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from dicomlake.dicom import uid
from dicomlake.ingest import IngestOptions, ingest
from dicomlake.quality import UID_PATTERN, check_changes, check_instances, check_studies
from dicomlake.samples import generate_sample_drop
from dicomlake.store.lakehouse import Lakehouse, TenantStore
from dicomlake.store.levels import build_levels
from dicomlake.store.schemas import CHANGES, INSTANCES

CHANGED_AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def failed(report) -> set[tuple[str, str | None]]:
    return {(r["expectation"], r["column"]) for r in report.failed}


@pytest.fixture(scope="module")
def clean_tenant(tmp_path_factory: pytest.TempPathFactory) -> TenantStore:
    base = tmp_path_factory.mktemp("quality")
    generate_sample_drop(base / "drop", n_instances=12, seed=5)
    tenant = Lakehouse(base / "lakehouse").tenant()
    ingest([base / "drop"], tenant, IngestOptions(workers=1))
    build_levels(tenant)
    return tenant


@pytest.fixture
def scratch(tmp_path: Path) -> TenantStore:
    return Lakehouse(tmp_path / "lakehouse").tenant()


def instance_row(sop: str, **values) -> dict:
    row = {"seq": 1, "changed_at": CHANGED_AT, "study_instance_uid": "1.2.3",
           "series_instance_uid": "1.2.3.4", "sop_instance_uid": sop,
           "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "sha256": "ab" * 32,
           "blob_key": "blobs/ab/x.dcm", "study_date": dt.date(2024, 5, 1),
           "patient_birth_date": dt.date(1970, 1, 1)}
    return {**row, **values}


UID_EXAMPLES = ["0", "1.2.840.10008.1.2", "1.02", "1..2", "1.2.", ".1", "01", "1.a", "1.0"]


@pytest.mark.parametrize("value", UID_EXAMPLES)
def test_the_uid_rule_is_the_one_ingest_applies(value: str) -> None:
    assert bool(re.match(UID_PATTERN, value)) == bool(uid._UID.match(value))


def test_a_clean_ingest_passes(clean_tenant: TenantStore) -> None:
    for report in (check_instances(clean_tenant), check_changes(clean_tenant), check_studies(clean_tenant)):
        assert report.success, report.failed
        assert report.rows > 0 and report.results
    names = {r["expectation"] for r in check_instances(clean_tenant).results}
    assert {"expect_column_values_to_match_regex", "expect_column_values_to_be_unique"} <= names


def test_empty_tables_pass(scratch: TenantStore) -> None:
    assert check_changes(scratch).success
    assert check_instances(scratch).success


def test_broken_instances_fail_with_the_rule_named(scratch: TenantStore) -> None:
    rows = [
        instance_row("1.2.3.4.1"),
        instance_row("1.2.03.abc"),  # not a UID
        instance_row("1.2.3.4.1", series_instance_uid=None),  # duplicate SOP UID, missing series UID
        instance_row("1.2.3.4.2", study_date=dt.date(1800, 1, 1)),  # before 1850, and before the birth
        instance_row("1.2.3.4.3", patient_birth_date=None, blob_key=None),
    ]
    write_deltalake(scratch.table_uri("instances"), pa.Table.from_pylist(rows, schema=INSTANCES))
    report = check_instances(scratch)
    assert not report.success
    assert failed(report) == {
        ("expect_column_values_to_match_regex", "sop_instance_uid"),
        ("expect_column_values_to_be_unique", "sop_instance_uid"),
        ("expect_column_values_to_not_be_null", "series_instance_uid"),
        ("expect_column_values_to_not_be_null", "blob_key"),
        ("expect_column_values_to_be_between", "study_date"),
        ("expect_column_values_to_be_in_set", "birth_not_after_study"),
    }
    regex = next(r for r in report.failed if r["expectation"] == "expect_column_values_to_match_regex")
    assert regex["unexpected_count"] == 1 and regex["details"]["examples"] == ["1.2.03.abc"]


def test_a_gap_in_the_change_feed_fails(scratch: TenantStore) -> None:
    rows = [{**instance_row(f"1.2.3.{seq}"), "seq": seq, "action": action}
            for seq, action in ((1, "create"), (2, "create"), (4, "merge"))]
    write_deltalake(scratch.table_uri("changes"), pa.Table.from_pylist(rows, schema=CHANGES))
    report = check_changes(scratch)
    assert failed(report) == {
        ("expect_column_max_to_be_between", "seq"),
        ("expect_column_values_to_be_in_set", "action"),
    }
    gap = next(r for r in report.failed if r["expectation"] == "expect_column_max_to_be_between")
    assert gap["details"]["observed_value"] == 4 and report.rows == 3
