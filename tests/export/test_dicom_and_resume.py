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

from dicomlake.deid import DeidOptions
from dicomlake.export import Selection, export
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
