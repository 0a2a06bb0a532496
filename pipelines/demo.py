"""The main job, end to end, for a new user: `python -m pipelines.demo [--instances N] [--json]`.

1. Reads DICOMLAKE_ROOT, DICOMLAKE_DROP_DIR, DICOMLAKE_TENANT (defaults ./lakehouse, ./drops,
   default) and uses DAGSTER_HOME, or ./.dagster_home with pipelines/dagster.yaml, so every run is
   recorded and visible later in `dagster dev`.
2. On a fresh lakehouse with an empty drop folder, writes a deterministic sample drop plus one
   file of each kind of bad input.
3. Evaluates the real drop_folder_sensor, registers the drop batches it asks for, runs ingest_job
   once per batch, then levels_job; on the first run writes the matching clinical FHIR samples
   into the FHIR source folder (DICOMLAKE_FHIR_DIR, default ./clinical) and runs
   clinical_fhir_job; then cohort_marts_job: real Dagster runs in that instance.
4. Prints what happened. Exit status 1 when a run failed. Running it again is safe: with nothing
   new in the drop it ingests nothing and exits 0.

Heavy imports live inside functions: ingest's worker processes re-import this module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

DEFAULT_DAGSTER_HOME = "./.dagster_home"
INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")
BIN = Path(sys.executable).parent  # the environment's own commands, activated or not
REPO_DIR = Path(__file__).resolve().parent.parent
# Runs print only warnings and errors; the summary at the end is the demo's output.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
FILES_LISTED = 20
INGEST_COUNTS = ("received", "created", "updated", "unchanged", "quarantined")


def prepare_dagster_home() -> Path:
    """DAGSTER_HOME, created with the project's instance settings when the demo picks it."""
    if not os.environ.get("DAGSTER_HOME"):
        home = Path(DEFAULT_DAGSTER_HOME).resolve()
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "dagster.yaml").exists():
            shutil.copyfile(INSTANCE_TEMPLATE, home / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(home)
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    return home


def ensure_sample_drop(drop_dir: str, tenant: Any, instances: int, seed: int) -> dict[str, Any] | None:
    """Write sample files into an empty drop folder of a fresh tenant; None when there is data already."""
    from dicomlake.drops import list_drop_files
    from dicomlake.samples import generate_bad_inputs, generate_sample_drop
    from dicomlake.store.committer import latest_seq

    # Files of its own are the user's data; a tenant with data means the samples went in before.
    if list_drop_files(drop_dir, tenant.storage_options) or latest_seq(tenant.table("changes")):
        return None
    drop = Path(drop_dir)
    sample = generate_sample_drop(drop / f"samples-{seed}", n_instances=instances, seed=seed)
    bad = generate_bad_inputs(drop / "bad", seed=seed)
    return {"dest": str(sample.dest), "instances": sample.n_instances, "studies": sample.n_studies,
            "series": sample.n_series, "patients": sample.n_patients, "bad_inputs": len(bad)}


def wait_until_settled(drop_dir: str, settle_seconds: float, storage_options: dict[str, str]) -> None:
    """The sensor skips files younger than settle_seconds (uploads in progress): wait for fresh ones."""
    from dicomlake.drops import list_drop_files

    files = list_drop_files(drop_dir, storage_options)
    if files:
        time.sleep(max(0.0, max(f.mtime for f in files) + settle_seconds - time.time()) + 0.05)


def run_summary(result: Any, job: str, partition: str | None) -> dict[str, Any]:
    import dagster as dg

    failures = [e.step_failure_data.error.message.strip() for e in result.all_events
                if e.event_type == dg.DagsterEventType.STEP_FAILURE and e.step_failure_data.error]
    checks = [{"asset": e.asset_key.to_user_string(), "check": e.check_name, "passed": e.passed,
               "severity": e.severity.value} for e in result.get_asset_check_evaluations()]
    ingested = {}
    for event in result.get_asset_materialization_events():
        if event.asset_key == dg.AssetKey("dicom_instances"):
            metadata = event.materialization.metadata
            ingested = {key: int(metadata[key].value) for key in INGEST_COUNTS}
    return {"job": job, "partition": partition, "run_id": result.run_id, "success": result.success,
            "errors": failures, "ingested": ingested, "checks": checks}


def latest_row_count(instance: Any, asset: str) -> int | None:
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return None
    count = event.asset_materialization.metadata.get("dagster/row_count")
    return int(count.value) if count is not None else None


def quarantine_overview(tenant: Any) -> dict[str, Any]:
    from dicomlake.store.read import scan

    rows = scan(tenant.table("quarantine"), ["source", "error_code", "reason"]).to_pylist()
    return {
        "count": len(rows),
        "by_code": dict(sorted(Counter(r["error_code"] for r in rows).items())),
        "files": [{"source": r["source"], "code": r["error_code"], "reason": r["reason"]} for r in rows],
    }


def write_clinical_samples(fhir_dir: str, instances: int, seed: int) -> str:
    """The clinical FHIR samples matching the DICOM samples, in the FHIR source folder."""
    from dicomlake.fhir.clinical_samples import generate_clinical_data

    dest = Path(fhir_dir) / f"samples-{seed}"
    generate_clinical_data(dest, n_instances=instances, seed=seed)
    return str(dest)


def clinical_summary(result: Any, dest: str) -> dict[str, Any]:
    """What the clinical_fhir asset reported (its materialization metadata)."""
    import dagster as dg

    out: dict[str, Any] = {"dest": dest}
    for event in result.get_asset_materialization_events():
        if event.asset_key == dg.AssetKey("clinical_fhir"):
            metadata = event.materialization.metadata
            for key in ("read", "inserted", "updated", "unchanged", "quarantined", "patients_linked",
                        "patients_unlinked", "resources_linked", "resources_unlinked"):
                out[key] = int(metadata[key].value)
    return out


def marts_overview(tenant: Any) -> dict[str, Any]:
    """Row counts of the dbt cohort marts in the tenant's DuckDB file (empty before the first build)."""
    import duckdb

    from dicomlake.sql.marts import MARTS, marts_path

    path = marts_path(tenant)
    if not path.exists():
        return {"path": str(path), "tables": {}}
    con = duckdb.connect(str(path), read_only=True)
    try:
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        tables = {name: con.execute(f'SELECT count(*) FROM "{name}"').fetchall()[0][0]
                  for name in MARTS if name in present}
    finally:
        con.close()
    return {"path": str(path), "tables": tables}


def run_demo(instances: int, seed: int) -> dict[str, Any]:
    dagster_home = prepare_dagster_home()
    # Imported only now: the definitions read DICOMLAKE_* when built, the instance DAGSTER_HOME.
    import dagster as dg

    from dicomlake.store.status import tenant_status
    from pipelines import defs

    lakehouse, drop_folder = defs.resources["lakehouse"], defs.resources["drop_folder"]
    tenant = lakehouse.tenant_store()
    instance = dg.DagsterInstance.get()

    samples = ensure_sample_drop(drop_folder.path, tenant, instances, seed)
    wait_until_settled(drop_folder.path, drop_folder.settle_seconds, tenant.storage_options)

    sensor = defs.resolve_sensor_def("drop_folder_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        tick = sensor(context)
    requests, partition_requests = [], []
    if isinstance(tick, dg.SensorResult):  # otherwise a SkipReason: nothing new in the drop
        requests, partition_requests = tick.run_requests or [], tick.dynamic_partitions_requests or []
    for partitions in partition_requests:  # what the sensor daemon would do with the tick's result
        instance.add_dynamic_partitions(partitions.partitions_def_name, list(partitions.partition_keys))

    runs: list[dict[str, Any]] = []
    ingest_job = defs.resolve_job_def("ingest_job")
    for request in requests:
        result = ingest_job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=dict(request.tags),
            run_config=QUIET, raise_on_error=False,
        )
        runs.append(run_summary(result, "ingest_job", request.partition_key))
    all_ingested = all(r["success"] for r in runs)
    # Levels follow ingests (in `dagster dev` the automation sensor does this); rerun only when needed.
    if all_ingested and (runs or latest_row_count(instance, "studies") is None):
        result = defs.resolve_job_def("levels_job").execute_in_process(
            instance=instance, tags={"dicomlake/tenant": tenant.name}, run_config=QUIET, raise_on_error=False
        )
        runs.append(run_summary(result, "levels_job", None))
    # Clinical sample data (FHIR Bulk NDJSON matching the DICOM samples), written and imported once
    # with them, by the clinical_fhir asset (its source: the fhir_source resource's folder).
    clinical = None
    if samples and all(r["success"] for r in runs):
        dest = write_clinical_samples(defs.resources["fhir_source"].path, instances, seed)
        result = defs.resolve_job_def("clinical_fhir_job").execute_in_process(
            instance=instance, tags={"dicomlake/tenant": tenant.name}, run_config=QUIET, raise_on_error=False
        )
        runs.append(run_summary(result, "clinical_fhir_job", None))
        clinical = clinical_summary(result, dest)
    # The dbt cohort marts follow the tables they read; rebuilt only when something new arrived.
    marts_built = instance.get_latest_materialization_event(dg.AssetKey("imaging_cohort_base")) is not None
    if all(r["success"] for r in runs) and (runs or not marts_built):
        result = defs.resolve_job_def("cohort_marts_job").execute_in_process(
            instance=instance, tags={"dicomlake/tenant": tenant.name}, run_config=QUIET, raise_on_error=False
        )
        runs.append(run_summary(result, "cohort_marts_job", None))

    status = tenant_status(tenant)
    checks = [c for r in runs for c in r["checks"]]
    env = (f"DAGSTER_HOME={dagster_home} DICOMLAKE_ROOT={lakehouse.root} "
           f"DICOMLAKE_DROP_DIR={drop_folder.path} DICOMLAKE_FHIR_DIR={defs.resources['fhir_source'].path} "
           f"DICOMLAKE_TENANT={tenant.name}")
    return {
        "success": all(r["success"] for r in runs),
        "tenant": tenant.name,
        "lakehouse": lakehouse.root,
        "tenant_uri": tenant.uri,
        "drop_dir": drop_folder.path,
        "dagster_home": str(dagster_home),
        "samples": samples,
        "clinical": clinical,
        "new_batches": [r.partition_key for r in requests],
        "runs": runs,
        "ingested": {key: sum(r["ingested"].get(key, 0) for r in runs) for key in INGEST_COUNTS},
        "instances": status["instances"],
        "studies": latest_row_count(instance, "studies"),
        "series": latest_row_count(instance, "series"),
        "latest_seq": status["latest_seq"],
        "marts": marts_overview(tenant),
        "quarantine": quarantine_overview(tenant),
        "checks": {
            "passed": sum(c["passed"] for c in checks),
            "warned": sum(not c["passed"] and c["severity"] == "WARN" for c in checks),
            "failed": sum(not c["passed"] and c["severity"] != "WARN" for c in checks),
            "results": checks,
        },
        "next": [
            f"cd {REPO_DIR} && {env} {BIN / 'dagster'} dev -h 127.0.0.1 -p 3000",
            f"{BIN / 'dicomlake'} status --root {lakehouse.root} --tenant {tenant.name}",
            f"{BIN / 'dicomlake'} quarantine --root {lakehouse.root} --tenant {tenant.name}",
        ],
    }


def render(report: dict[str, Any]) -> str:
    lines = [f"dicomlake demo: tenant '{report['tenant']}' in {report['lakehouse']}"]
    if report["samples"]:
        s = report["samples"]
        lines.append(f"  samples: {s['instances']} instances ({s['studies']} studies, {s['series']} series, "
                     f"{s['patients']} patients) and {s['bad_inputs']} bad inputs in {report['drop_dir']}")
    if report["clinical"]:
        c = report["clinical"]
        lines.append(f"  clinical samples: {c.get('inserted', 0)} FHIR resources imported, "
                     f"{c.get('quarantined', 0)} quarantined, {c.get('patients_unlinked', 0)} patients and "
                     f"{c.get('resources_unlinked', 0)} resources unlinked, from {c['dest']}")
    if not report["new_batches"]:
        lines.append(f"  nothing new to ingest in {report['drop_dir']}")
    for run in report["runs"]:
        where = f" [{run['partition']}]" if run["partition"] else ""
        outcome = "success" if run["success"] else "FAILED"
        lines.append(f"  run {run['job']}{where}: {outcome} ({run['run_id']})")
        lines += [f"    error: {message}" for message in run["errors"]]
    if report["new_batches"]:
        i = report["ingested"]
        lines.append(f"  ingested: {i['received']} received, {i['created']} created, {i['updated']} updated, "
                     f"{i['unchanged']} unchanged, {i['quarantined']} quarantined")
    levels = (f"{report['studies']} studies, {report['series']} series" if report["studies"] is not None
              else "studies and series not built yet")
    lines.append(f"  tables: {report['instances']} instances, {levels} (latest seq {report['latest_seq']})")
    q = report["quarantine"]
    by_code = ", ".join(f"{code} {count}" for code, count in q["by_code"].items())
    lines.append(f"  quarantined: {q['count']} files" + (f" ({by_code})" if by_code else ""))
    lines += [f"    {f['code']}: {Path(f['source']).name}: {f['reason']}" for f in q["files"][:FILES_LISTED]]
    marts = report["marts"]["tables"]
    if marts:
        lines.append("  cohort marts: " + ", ".join(f"{name} {count} rows" for name, count in marts.items())
                     + f" ({report['marts']['path']})")
    c = report["checks"]
    lines.append(f"  checks: {c['passed']} passed, {c['warned']} warned, {c['failed']} failed")
    lines += [f"    {r['asset']} {r['check']}: {r['severity']}" for r in c["results"] if not r["passed"]]
    lines.append(f"  lakehouse: {report['tenant_uri']}")
    lines.append("next:")
    lines += [f"  {command}" for command in report["next"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300, help="sample instances to generate (first run)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed: same seed, same files")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    # dbt (through dagster-dbt) prints its progress on stdout: keep stdout for the report alone.
    with contextlib.redirect_stdout(sys.stderr):
        report = run_demo(args.instances, args.seed)
    print(json.dumps(report, indent=2, default=str) if args.json else render(report))
    return 0 if report["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
