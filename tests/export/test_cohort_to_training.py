"""The issue's "done when": from a cohort question to a Parquet dataset, then a training loop over it
with only pyarrow and numpy. The real CLI runs in one subprocess; the README's own training snippet
runs in another that must not import dicomlake (or pydicom)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.export.conftest import ExportLake

README = Path(__file__).resolve().parents[2] / "README.md"
QUESTION = "CT scans"
AS_OF = "2026-11-01"
# Appended to the README snippet: what it computed, and what it imported.
REPORT = """
import sys as _sys
_sys.stdout.write("\\nRESULT " + json.dumps({
    "means": {sop: float(mean) for sop, mean in means.items()},
    "losses": losses,
    "imported": sorted(name for name in _sys.modules if name.split(".")[0] in ("dicomlake", "pydicom")),
}) + "\\n")
"""


def _readme_block(language: str, first_line: str) -> str:
    """The README's fenced `language` block whose first line is `first_line`."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)
    found = [block for block in blocks if block.startswith(first_line)]
    assert len(found) == 1, f"README.md has no single ```{language} block starting {first_line!r}"
    return found[0]


def test_cohort_question_to_parquet_to_a_pyarrow_only_training_loop(lake: ExportLake, tmp_path: Path) -> None:
    # 1. The README's command, run as shown (plus where the lake is).
    command = _readme_block("bash", "# 1. a cohort question")
    export_line = next(line for line in command.splitlines() if line.startswith("dicomlake export --cohort"))
    args = shlex.split(export_line)
    assert args == ["dicomlake", "export", "--cohort", QUESTION, "--as-of", AS_OF, "--format", "parquet",
                    "--out", "ct/", "--json"]  # fmt: skip
    cli = [sys.executable, "-m", *args, "--root", str(lake.root / "lake"), "--tenant", "acme"]
    done = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    rows = lake.instances()
    ct_studies = {r["study_instance_uid"] for r in rows if r["modality"] == "CT"}
    selected = {r["sop_instance_uid"]: r for r in rows if r["study_instance_uid"] in ct_studies}
    assert ct_studies and len(selected) < len(rows)  # the question selects some of the sample data
    assert (summary["selected"], summary["exported"], summary["failed"]) == (len(selected), len(selected), 0)
    manifest = json.loads((tmp_path / "ct" / "manifest.json").read_text())
    assert manifest["selection"]["cohort"] == QUESTION and set(manifest["cohort_studies"]) == ct_studies

    # 2. The README's training snippet, in a fresh interpreter (-I: no PYTHONPATH, no cwd on sys.path).
    snippet = _readme_block("python", "# pyarrow and numpy only")
    trained = subprocess.run([sys.executable, "-I", "-c", snippet + REPORT], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout.rsplit("RESULT ", 1)[1])
    assert report["imported"] == []
    assert report["losses"][-1] < report["losses"][0] / 10  # the loop learns
    # Per instance, the mean of the pixels it read equals pydicom's of the same SOP instance.
    assert set(report["means"]) == set(selected)
    for sop, mean in report["means"].items():
        expected = float(np.mean(lake.source(selected[sop]["blob_key"]).pixel_array))
        assert mean == pytest.approx(expected, rel=1e-12), sop
