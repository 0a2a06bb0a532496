"""dciodvfy (dicom3tools) on `--format dicom` exports: no exported file has an Error its source has not,
copied as stored or de-identified. The error lines are normalised as in tests/deid/test_dciodvfy.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomlake.deid import Deidentifier, DeidOptions
from dicomlake.export import Selection, export
from tests.deid.test_dciodvfy import DCIODVFY, errors
from tests.export.conftest import ExportLake

pytestmark = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
KEY = "dciodvfy-export-key"


@pytest.mark.parametrize("deid", [False, True], ids=["copies", "deid"])
def test_exported_files_have_no_new_dciodvfy_errors(lake: ExportLake, tmp_path: Path, deid: bool) -> None:
    options = DeidOptions(project_key=KEY) if deid else None
    studies = tuple(sorted({r["study_instance_uid"] for r in lake.instances()}))
    summary = export(lake.tenant, Selection(uids=studies), tmp_path / "out", "dicom", deid_options=options)
    assert (summary.exported, summary.failed) == (41, 0)
    rename = Deidentifier(options).map_uid if options else str
    worse, checked, sources_with_errors = {}, 0, 0
    for row in lake.instances():
        uids = (row["study_instance_uid"], row["series_instance_uid"], row["sop_instance_uid"])
        study, series, sop = (rename(uid) for uid in uids)
        exported = tmp_path / "out" / study / series / f"{sop}.dcm"
        source = lake.tenant.blobs.local_path(row["blob_key"])
        assert exported.exists() and source is not None
        before = errors(source)
        sources_with_errors += bool(before)
        new = errors(exported) - before
        checked += 1
        if new:
            worse[row["sop_instance_uid"]] = sorted(new)
    assert checked == 41
    assert sources_with_errors  # dciodvfy ran and reports something on these files
    assert not worse, worse
