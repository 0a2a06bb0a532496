"""dciodvfy (dicom3tools) finds de-identified files no worse than their sources: no new errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dicomlake.deid import Deidentifier, DeidOptions
from dicomlake.samples import generate_sample_drop
from tests.deid.realfiles import shipped_part10_files

DCIODVFY = shutil.which("dciodvfy")
pytestmark = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
FLAGS = {
    "basic": {},
    "all options": {
        "retain_longitudinal_modified_dates": True,
        "retain_patient_characteristics": True,
        "clean_descriptors": True,
    },
}


def errors(path: Path) -> set[str]:
    """dciodvfy's error lines, with UIDs and quoted values normalised (they change by design)."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return {
        re.sub(r"UID \S+$|\d+(?:\.\d+)+|= <[^>]*>", "#", line) for line in lines if line.startswith("Error")
    }


def files(tmp: Path) -> list[Path]:
    drop = generate_sample_drop(tmp / "drop", n_instances=10, seed=5).files
    return [*shipped_part10_files(), *drop[:5]]


@pytest.mark.parametrize("mode", list(FLAGS))
def test_no_new_dciodvfy_errors(tmp_path: Path, mode: str) -> None:
    deid = Deidentifier(DeidOptions(project_key="dciodvfy-key", **FLAGS[mode]))
    worse = {}
    checked = 0
    for source in files(tmp_path):
        out = tmp_path / "out.dcm"
        out.write_bytes(deid.deidentify_bytes(source.read_bytes()))
        new = errors(out) - errors(source)
        checked += 1
        if new:
            worse[source.name] = sorted(new)
    assert checked > 50
    assert not worse, worse
