"""dicomlake.sql: the tenant's tables as DuckDB views, for one tenant only, and `dicomlake sql`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from dicomlake.sql import ANALYST_VIEWS, connect, query
from dicomlake.sql.contract import FHIR_TABLES
from dicomlake.store import Lakehouse
from tests.cohort.demo_lake import DemoLake, age

REPO = Path(__file__).resolve().parents[2]


def test_imaging_views_hold_the_demo(demo: DemoLake) -> None:
    counts = query(demo.tenant, """
        SELECT (SELECT count(*) FROM instances), (SELECT count(*) FROM series),
               (SELECT count(*) FROM studies), (SELECT count(*) FROM patients WHERE patient_id IS NOT NULL)
        """).to_pylist()[0]
    planned_series = sum(s.series_count for s in demo.studies)
    assert list(counts.values()) == [300, planned_series, len(demo.studies), 10]
    rows = query(demo.tenant, "SELECT patient_id, sex, birth_date, number_of_studies FROM patients "
                              "WHERE patient_id IS NOT NULL ORDER BY patient_id").to_pylist()
    planned: dict[str, list] = {}
    for s in demo.studies:
        planned.setdefault(s.patient.patient_id, []).append(s)
    assert [(r["patient_id"], r["sex"], r["birth_date"], r["number_of_studies"]) for r in rows] == [
        (pid, ss[0].patient.sex, ss[0].patient.birth_date, len(ss)) for pid, ss in sorted(planned.items())]


def test_age_at_counts_completed_years(demo: DemoLake) -> None:
    con = connect(demo.tenant)
    pairs = con.sql("SELECT patient_birth_date, study_date, age_at(patient_birth_date, study_date) "
                    "FROM studies").fetchall()
    assert pairs and all(a == age(b, d) for b, d, a in pairs)
    leap = con.sql("SELECT age_at(DATE '2000-02-29', DATE '2001-02-28'), age_at(DATE '2000-02-29', "
                   "DATE '2001-03-01')").fetchall()
    assert leap == [(0, 1)]


def test_every_view_exists_in_an_empty_tenant(tmp_path: Path) -> None:
    con = connect(Lakehouse(tmp_path).tenant("empty"))
    for view in ANALYST_VIEWS:
        assert con.sql(f'SELECT count(*) FROM "{view}"').fetchall() == [(0,)]
    columns = {r[0] for r in con.sql("SELECT column_name FROM information_schema.columns "
                                     "WHERE table_name = 'conditions'").fetchall()}
    assert set(FHIR_TABLES["fhir_view_condition"]) - {"patient_id"} <= columns
    assert {"patient_id", "fhir_patient_id", "diagnosis_date", "codings"} <= columns


def test_an_import_without_a_contract_column_still_gives_every_column(tmp_path: Path) -> None:
    tenant = Lakehouse(tmp_path).tenant("older")
    write_deltalake(tenant.table_uri("fhir_view_condition"),
                    pa.table({"id": ["c1"], "patient_id": ["p1"], "text": ["Asthma"]}))
    rows = query(tenant, "SELECT id, fhir_patient_id, text, onset_date, recorded_date "
                         "FROM conditions").to_pylist()
    assert rows == [{"id": "c1", "fhir_patient_id": "p1", "text": "Asthma", "onset_date": None,
                     "recorded_date": None}]


def test_a_connection_sees_one_tenant_and_opens_no_files(demo: DemoLake, tmp_path: Path) -> None:
    from dicomlake.ingest import ingest
    from dicomlake.samples import generate_sample_drop
    from dicomlake.store.levels import build_levels

    other = Lakehouse(demo.tenant.lakehouse.root).tenant("other-clinic")
    sample = generate_sample_drop(tmp_path / "drop", n_instances=20, seed=3)
    ingest([tmp_path / "drop"], other)
    build_levels(other)
    mine = query(demo.tenant, "SELECT DISTINCT patient_id FROM studies").column("patient_id").to_pylist()
    theirs = query(other, "SELECT DISTINCT patient_id FROM studies").column("patient_id").to_pylist()
    assert len(theirs) == sample.n_patients and not set(mine) & set(theirs)
    con = connect(other)
    victim = next(Path(demo.tenant.table_uri("instances")).glob("*.parquet"))
    with pytest.raises(duckdb.PermissionException):
        con.sql(f"SELECT * FROM read_parquet('{victim}')").fetchall()
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")
    with pytest.raises(duckdb.Error):
        con.sql(f"COPY (SELECT 1) TO '{tmp_path / 'leak.csv'}'").fetchall()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomlake", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_the_sql_command(demo: DemoLake, tmp_path: Path) -> None:
    root = demo.tenant.lakehouse.root
    statement = "SELECT modality, count(*) AS n FROM series GROUP BY modality ORDER BY modality"
    planned: dict[str, int] = {}
    for s in demo.studies:
        planned[s.modality] = planned.get(s.modality, 0) + s.series_count
    done = _cli("sql", statement, "--root", root, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"modality": m, "n": n} for m, n in sorted(planned.items())]
    done = _cli("sql", statement, "--root", root, "--csv")
    assert done.stdout.splitlines() == ["modality,n", *(f"{m},{n}" for m, n in sorted(planned.items()))]
    out = tmp_path / "series.parquet"
    done = _cli("sql", statement, "--root", root, "--parquet", str(out))
    assert done.returncode == 0 and pq.read_table(out).to_pylist() == json.loads(
        _cli("sql", statement, "--root", root, "--json").stdout)
    done = _cli("sql", "SELECT nope FROM studies", "--root", root)
    assert done.returncode == 2 and "nope" in done.stderr
