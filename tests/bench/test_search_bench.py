"""bench/search.py at tiny scale: it runs end to end, our answers are the full scan's answers, and its
generator writes the table write_deltalake would (marked slow: the bounded version of a scale run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import search as bench


@pytest.mark.slow
def test_search_bench_runs_and_ours_equals_the_scan(tmp_path: Path) -> None:
    args = bench.parse_args([
        "--instances", "3000", "--commits", "30", "--repeats", "4", "--root", str(tmp_path),
        "--cold-repeats", "1", "--refresh-commits", "1",
    ])
    report = bench.run(args)

    generated = report.generated
    assert (generated.instances, generated.commits) == (3000, 30)
    assert report.state.version == 30 and report.state.files == 30
    assert [q.name for q in report.queries] == [q.name for q in bench.QUERIES]
    for query in report.queries:
        assert len(query.ours.samples_ms) == len(query.scan.samples_ms) == 4
        assert query.mismatches == [], query.mismatches
    by_name = {q.name: q for q in report.queries}
    # Keys are drawn from the data: these always match something, so the comparison is not vacuous.
    for name in ("study by PatientID", "PatientName fuzzy", "series of one study", "instances of one series"):
        assert by_name[name].mean_matches >= 1, name
    flat = report.flat
    assert flat is not None and flat.state_after.files < flat.state_before.files
    assert len(flat.after) == len(bench.QUERIES)
    json.dumps(report.as_dict())
    assert "PASS" in bench.render(report) or "MISS" in bench.render(report)

    # A second run on the same --root reuses the data set instead of generating it again.
    again = bench.run(bench.parse_args([
        "--instances", "3000", "--commits", "30", "--repeats", "2", "--root", str(tmp_path), "--no-flat",
    ]))
    assert not again.generated_now and again.mismatches == []


@pytest.mark.slow
def test_generated_rows_are_consistent(tmp_path: Path) -> None:
    """Whole studies per commit, seq dense in commit order, typed columns agree with the DICOM JSON."""
    import polars as pl

    from dicomlake.dicom.attributes import normalize_person_name, promoted_values
    from dicomlake.store import Lakehouse

    tenant = Lakehouse(tmp_path).tenant()
    bench.generate(tenant, 600, 8, seed=3, progress=False)
    rows = pl.read_delta(tenant.table_uri("instances")).sort("seq")
    assert rows["seq"].to_list() == list(range(1, 601))
    assert rows["sop_instance_uid"].n_unique() == 600
    per_study = rows.group_by("study_instance_uid").agg(pl.col("changed_at").n_unique())
    assert per_study["changed_at"].max() == 1  # one commit (one changed_at) per study
    for row in rows.sample(50, seed=0).iter_rows(named=True):
        header = json.loads(row["dicom_json"])
        typed = promoted_values(header)
        for column in ("patient_id", "patient_name", "study_instance_uid", "series_instance_uid",
                       "sop_instance_uid", "study_date", "modality", "accession_number", "instance_number",
                       "patient_birth_date", "study_time", "series_number", "patient_name_normalized",
                       "study_datetime", "patient_age_years"):
            assert typed[column] == row[column], column
        assert row["patient_name_normalized"] == normalize_person_name(row["patient_name"])
        assert len(row["sop_instance_uid"]) <= 64 and row["blob_key"].endswith(row["sha256"] + ".dcm")


@pytest.mark.slow
def test_direct_writer_makes_the_table_write_deltalake_makes(tmp_path: Path) -> None:
    """Same rows, versions, txn, file statistics and checkpoints as write_deltalake commits."""
    import polars as pl
    import pyarrow as pa
    from deltalake import DeltaTable

    from dicomlake.store import Lakehouse
    from dicomlake.store.committer import PROJECTION_APP

    tables = {}
    for writer in ("direct", "deltalake"):
        tenant = Lakehouse(tmp_path / writer).tenant()
        bench.generate(tenant, 3000, 110, seed=5, progress=False, writer=writer)
        tables[writer] = DeltaTable(tenant.table_uri("instances"))
    direct, reference = tables["direct"], tables["deltalake"]
    assert direct.version() == reference.version() == 110
    assert direct.transaction_version(PROJECTION_APP) == reference.transaction_version(PROJECTION_APP) == 3000
    checkpoints = {
        w: sorted(p.name for p in (tmp_path / w / "tenants/default/tables/instances/_delta_log").iterdir()
                  if "checkpoint" in p.name)
        for w in tables
    }
    assert checkpoints["direct"] == checkpoints["deltalake"] == [f"{99:020d}.checkpoint.parquet",
                                                                 "_last_checkpoint"]
    rows = {w: pl.read_delta(t.table_uri).sort("seq") for w, t in tables.items()}
    assert rows["direct"].equals(rows["deltalake"])

    def stats(table: DeltaTable) -> pl.DataFrame:
        actions = pl.from_arrow(pa.table(table.get_add_actions(flatten=True)))
        assert isinstance(actions, pl.DataFrame)
        stat = ("min.", "max.", "null_count.")
        wanted = [c for c in actions.columns if c.startswith(stat) or c == "num_records"]
        return actions.select(wanted).sort("min.seq")

    mine, theirs = stats(direct), stats(reference)
    # delta-rs cuts long string maxima and keeps them; we omit a maximum we would have to cut.
    shared = [c for c in theirs.columns if c in mine.columns and mine[c].null_count() == 0]
    assert {"min.seq", "max.seq", "min.study_date", "max.study_date", "min.patient_id",
            "max.study_instance_uid", "null_count.modality", "num_records"} <= set(shared)
    assert "min.patient_name" not in mine.columns  # only the table's statistics columns
    assert mine.select(shared).equals(theirs.select(shared))
