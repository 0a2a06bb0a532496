from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

from dicomlake.deid import Deidentifier, DeidOptions
from dicomlake.export import ExportError, Selection, export
from dicomlake.export.parquet import tensor_to_numpy
from tests.export.conftest import ExportLake

KEY = "export-test-project-key"


def _studies(lake: ExportLake) -> tuple[str, ...]:
    return tuple(sorted({r["study_instance_uid"] for r in lake.instances()}))


def test_dicom_copies_are_the_original_bytes(lake: ExportLake, tmp_path: Path) -> None:
    summary = export(lake.tenant, Selection(uids=_studies(lake)), tmp_path, "dicom")
    assert (summary.exported, summary.failed) == (41, 0)
    for row in lake.instances():
        series = tmp_path / row["study_instance_uid"] / row["series_instance_uid"]
        path = series / f"{row['sop_instance_uid']}.dcm"
        assert path.read_bytes() == lake.tenant.blobs.get(row["blob_key"])


def test_deidentified_copies_hold_no_source_identifiers(lake: ExportLake, tmp_path: Path) -> None:
    summary = export(lake.tenant, Selection(uids=_studies(lake)), tmp_path, "dicom",
                     deid_options=DeidOptions(project_key=KEY))  # fmt: skip
    assert summary.exported == 41
    identifiers = set()
    for row in lake.instances():
        source = lake.source(row["blob_key"])
        identifiers |= {str(source.PatientID), str(source.PatientName), str(source.StudyInstanceUID),
                        str(source.SeriesInstanceUID), str(source.SOPInstanceUID)}  # fmt: skip
    identifiers.discard("")
    files = sorted(tmp_path.glob("*/*/*.dcm"))
    assert len(files) == 41
    for path in files:
        data = path.read_bytes()
        assert not any(i.encode() in data for i in identifiers), path
        assert not any(i in str(path) for i in identifiers)
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert path.stem == ds.SOPInstanceUID and path.parent.name == ds.SeriesInstanceUID
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["deid"]["options"]["retain_patient_characteristics"] is False
    assert KEY not in (tmp_path / "manifest.json").read_text()


def _cli(lake: ExportLake, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dicomlake", "export", "--root", str(lake.root / "lake"),
            "--tenant", "acme", "--study", *_studies(lake), "--format", "parquet", "--out", str(out),
            *extra]  # fmt: skip


def _rows_by_sop(out: Path) -> dict[str, bytes]:
    rows: dict[str, bytes] = {}
    for path in out.glob("*/*.parquet"):
        table = pq.read_table(path)
        pixels = tensor_to_numpy(table.column("pixels"))
        for i, sop in enumerate(table.column("sop_instance_uid").to_pylist()):
            assert sop not in rows, f"{sop} exported twice"
            rows[sop] = pixels[i].tobytes()
    return rows


def test_resume_after_sigkill_equals_an_uninterrupted_export(lake: ExportLake, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    done = subprocess.run([*_cli(lake, whole), "--json"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["exported"] == 40

    killed = tmp_path / "killed"
    process = subprocess.Popen(_cli(lake, killed, "--chunk-instances", "1", "--json"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    progress = killed / "progress.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if progress.exists() and json.loads(progress.read_text())["chunks"] >= 5:
            break
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = json.loads(progress.read_text())
    assert 5 <= len(partial["done"]) < 41, "the export finished before it could be killed"
    assert not (killed / "manifest.json").exists()

    subprocess.run(_cli(lake, killed, "--chunk-instances", "1"), capture_output=True, check=True)
    assert _rows_by_sop(killed) == _rows_by_sop(whole)
    first, second = (json.loads((d / "manifest.json").read_text()) for d in (whole, killed))
    assert first["counts"] == second["counts"] == {"exported": 40, "skipped": 0, "failed": 1}
    assert first["delta_versions"] == second["delta_versions"]
    assert sum(f["rows"] for f in second["files"]) == 40


def test_a_folder_holding_another_export_is_refused(lake: ExportLake, tmp_path: Path) -> None:
    export(lake.tenant, Selection(uids=_studies(lake)[:1]), tmp_path, "parquet")
    result = subprocess.run(_cli(lake, tmp_path), capture_output=True, text=True)
    assert result.returncode == 2 and "different export" in result.stderr


def _source_identifiers(lake: ExportLake) -> set[str]:
    found = set()
    for row in lake.instances():
        source = lake.source(row["blob_key"])
        found |= {str(source.PatientID), str(source.StudyInstanceUID), str(source.SeriesInstanceUID),
                  str(source.SOPInstanceUID)}  # fmt: skip
    return found - {""}


@pytest.mark.parametrize("how", ["uids", "filters", "cohort"])
def test_a_deidentified_export_names_no_source_identifier(lake: ExportLake, tmp_path: Path, how: str) -> None:
    """Not in the files, and not in manifest.json, progress.json or errors.jsonl either (the selection,
    the cohort's studies, the instances done are recorded in the export's own, de-identified terms)."""
    rows = lake.instances()
    ct = [r for r in rows if r["modality"] == "CT"]
    selection = {
        "uids": Selection(uids=(ct[0]["study_instance_uid"],
                                f"{rows[-1]['study_instance_uid']}/{rows[-1]['series_instance_uid']}")),
        "filters": Selection(filters={"PatientID": lake.source(ct[0]["blob_key"]).PatientID}),
        "cohort": Selection(cohort="CT scans", as_of="2026-11-01"),
    }[how]  # fmt: skip
    fmt = {"uids": "dicom", "filters": "parquet", "cohort": "png"}[how]
    summary = export(lake.tenant, selection, tmp_path, fmt, deid_options=DeidOptions(project_key=KEY))
    assert summary.exported >= 1
    identifiers = _source_identifiers(lake)
    names = ("manifest.json", "progress.json", "errors.jsonl")
    records = {name: (tmp_path / name).read_text() for name in names}
    leaks = {name: sorted(i for i in identifiers if i in text) for name, text in records.items()}
    assert leaks == {name: [] for name in records}
    for path in tmp_path.rglob("*"):
        assert not any(i in str(path.relative_to(tmp_path)) for i in identifiers), path
    manifest = json.loads(records["manifest.json"])
    deid = Deidentifier(DeidOptions(project_key=KEY))
    if how == "uids":
        assert manifest["selection"]["uids"] == ["/".join(deid.map_uid(p) for p in spec.split("/"))
                                                 for spec in selection.uids]  # fmt: skip
    if how == "cohort":
        studies = {r["study_instance_uid"] for r in ct}
        assert sorted(manifest["cohort_studies"]) == sorted(deid.map_uid(s) for s in studies)
        assert manifest["selection"]["cohort"] == "CT scans"
    assert len(json.loads(records["progress.json"])["done"]) == summary.selected


def test_a_rerun_with_another_project_key_is_refused(lake: ExportLake, tmp_path: Path) -> None:
    """The same options under another key would resume into UIDs of the first key: refused; the same
    key resumes (here: finds everything done and writes the same manifest)."""
    selection = Selection(uids=_studies(lake)[:1])
    first = export(lake.tenant, selection, tmp_path, "dicom", deid_options=DeidOptions(project_key=KEY))
    manifest = (tmp_path / "manifest.json").read_text()
    other = DeidOptions(project_key=KEY + "-other")
    with pytest.raises(ExportError, match="different export"):
        export(lake.tenant, selection, tmp_path, "dicom", deid_options=other)
    again = export(lake.tenant, selection, tmp_path, "dicom", deid_options=DeidOptions(project_key=KEY))
    assert again == first and (tmp_path / "manifest.json").read_text() == manifest
    assert KEY not in manifest
