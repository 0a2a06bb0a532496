"""The dbt cohort marts of one tenant (`dbt_project/`): where they live and how they are built.

The marts' DuckDB file is `<tenant>/marts/cohort.duckdb`, inside the tenant's own folder: never
shared between tenants. dbt is told the root and tenant with --vars (see dbt_project/profiles.yml).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomlake.store.lakehouse import TenantStore

PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
MARTS = ("imaging_cohort_base", "patient_timeline", "image_occurrence")


def marts_path(tenant: TenantStore) -> Path:
    if not tenant.lakehouse.is_local:
        raise ValueError("the dbt marts need a local lakehouse root (DuckDB writes a local file)")
    return Path(tenant.uri) / "marts" / "cohort.duckdb"


def dbt_vars(tenant: TenantStore) -> dict[str, str]:
    path = marts_path(tenant)
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"root": tenant.lakehouse.root, "tenant": tenant.name, "marts_path": str(path)}


def dbt_args(command: str, tenant: TenantStore) -> list[str]:
    # Compiled SQL, run results and logs go below the tenant too: tenants never share dbt's files.
    work = marts_path(tenant).parent
    return [
        command,
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--vars",
        json.dumps(dbt_vars(tenant)),
        "--target-path",
        str(work / "target"),
        "--log-path",
        str(work / "logs"),
    ]


@dataclass(frozen=True)
class MartsBuild:
    success: bool
    path: str
    results: list[dict[str, Any]]  # one per model and test: name, status, message

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] not in ("success", "pass")]


def build_marts(tenant: TenantStore) -> MartsBuild:
    """`dbt build` (models, then their tests) for this tenant, in a child process: dbt-duckdb keeps
    its database open for the life of the process, and the caller may want to read the file."""
    import subprocess
    import sys

    dbt = Path(sys.executable).parent / "dbt"
    args = dbt_args("build", tenant)
    run_results = marts_path(tenant).parent / "target" / "run_results.json"
    run_results.unlink(missing_ok=True)  # never report an earlier build's results
    done = subprocess.run([str(dbt), *args, "--quiet"], capture_output=True, text=True)
    rows = []
    if done.returncode in (0, 1) and run_results.exists():
        for r in json.loads(run_results.read_text())["results"]:
            rows.append(
                {
                    "name": r["unique_id"].split(".")[2]
                    if r["unique_id"].startswith("model.")
                    else r["unique_id"].split(".", 2)[2].rsplit(".", 1)[0],
                    "type": r["unique_id"].split(".", 1)[0],
                    "status": r["status"],
                    "message": r["message"],
                }
            )
    if done.returncode not in (0, 1) or not rows:
        rows.append(
            {
                "name": "dbt",
                "type": "error",
                "status": "error",
                "message": (done.stdout + done.stderr).strip()[-2000:],
            }
        )
    return MartsBuild(success=done.returncode == 0, path=str(marts_path(tenant)), results=rows)
