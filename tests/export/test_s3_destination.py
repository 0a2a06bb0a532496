"""Exports to an s3:// destination on a real S3 server (SeaweedFS, tests/conftest.py::s3_server): the
objects are the files a folder export writes, the manifest's checksums are those of the objects,
pyarrow reads the Parquet straight from S3, and a killed export resumes there."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pydicom
import pytest
import s3fs

from dicomlake.deid import DeidOptions
from dicomlake.export import ExportError, Selection, export
from dicomlake.export.parquet import tensor_to_numpy
from dicomlake.store.lakehouse import fsspec_s3_kwargs
from tests.conftest import S3Server
from tests.export.conftest import ExportLake

pytestmark = pytest.mark.timeout(180)


def _fs(server: S3Server) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                             **fsspec_s3_kwargs(server.storage_options))  # fmt: skip


def _arrow_s3(server: S3Server) -> pafs.S3FileSystem:
    """pyarrow's own S3 client: a reader needs nothing of dicomlake."""
    options = server.storage_options
    endpoint = urlsplit(options["AWS_ENDPOINT_URL"])
    return pafs.S3FileSystem(access_key=options["AWS_ACCESS_KEY_ID"],
                             secret_key=options["AWS_SECRET_ACCESS_KEY"], endpoint_override=endpoint.netloc,
                             scheme=endpoint.scheme, region=options["AWS_REGION"])  # fmt: skip


def _studies(lake: ExportLake) -> tuple[str, ...]:
    return tuple(sorted({r["study_instance_uid"] for r in lake.instances()}))


def _objects(fs: s3fs.S3FileSystem, key: str) -> dict[str, bytes]:
    """Every object under `key` (bucket/prefix), by its name relative to it."""
    return {found.removeprefix(key + "/"): fs.cat_file(found) for found in fs.find(key)}


def _staging_folders(tmp: Path) -> set[Path]:
    return set(tmp.glob("dicomlake-export-*"))


def test_parquet_to_s3_equals_the_folder_export(lake: ExportLake, s3_server: S3Server, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the local staging folder goes
    prefix = f"exports/parquet-{uuid.uuid4().hex[:8]}"
    url, key = s3_server.uri(prefix), f"{s3_server.bucket}/{prefix}"
    selection = Selection(uids=_studies(lake))
    summary = export(lake.tenant, selection, url, "parquet", storage_options=s3_server.storage_options,
                     chunk_instances=16)  # fmt: skip
    assert (summary.out, summary.manifest) == (url, f"{url}/manifest.json")
    assert (summary.selected, summary.exported, summary.skipped, summary.failed) == (41, 40, 0, 1)
    assert not _staging_folders(tmp_path), "the local staging folder is removed"

    objects = _objects(_fs(s3_server), key)
    manifest = json.loads(objects.pop("manifest.json"))
    assert manifest["counts"] == {"exported": 40, "skipped": 0, "failed": 1}
    errors = [json.loads(line) for line in objects.pop("errors.jsonl").decode().splitlines()]
    assert [e["identifier"].rsplit("/", 1)[1] for e in errors] == [lake.broken_sop]
    assert json.loads(objects.pop("progress.json"))["chunks"] == 3
    # Exactly the files of the manifest (no temp or staging leftovers), each with its checksum.
    assert set(objects) == {entry["path"] for entry in manifest["files"]}
    for entry in manifest["files"]:
        assert hashlib.sha256(objects[entry["path"]]).hexdigest() == entry["sha256"]
        assert pq.read_metadata(io.BytesIO(objects[entry["path"]])).num_rows == entry["rows"]
    assert sum(entry["rows"] for entry in manifest["files"]) == 40

    # The same export into a folder writes the same files, byte for byte.
    local = export(lake.tenant, selection, tmp_path / "local", "parquet", chunk_instances=16)
    assert local.exported == 40
    here = json.loads((tmp_path / "local" / "manifest.json").read_text())
    assert here["files"] == manifest["files"]

    # pyarrow reads the dataset from S3 with its own client; the tensors are pydicom's pixel_array.
    by_sop = {r["sop_instance_uid"]: r for r in lake.instances()}
    s3 = _arrow_s3(s3_server)
    seen = set()
    for folder in sorted({entry["path"].split("/")[0] for entry in manifest["files"]}):
        dataset = pads.dataset(f"{key}/{folder}", filesystem=s3, format="parquet")
        for batch in dataset.to_batches(columns=["sop_instance_uid", "pixels"]):
            pixels = tensor_to_numpy(batch.column("pixels"))
            for i, sop in enumerate(batch.column("sop_instance_uid").to_pylist()):
                np.testing.assert_array_equal(pixels[i], lake.source(by_sop[sop]["blob_key"]).pixel_array)
                seen.add(sop)
    assert seen == set(by_sop) - {lake.broken_sop}

    # Another export into the same prefix is refused, as for a folder.
    with pytest.raises(ExportError, match="different export"):
        export(lake.tenant, selection, url, "dicom", storage_options=s3_server.storage_options)


def test_dicom_to_s3(lake: ExportLake, s3_server: S3Server) -> None:
    prefix = f"exports/dicom-{uuid.uuid4().hex[:8]}"
    url, key = s3_server.uri(prefix), f"{s3_server.bucket}/{prefix}"
    summary = export(lake.tenant, Selection(uids=_studies(lake)), url, "dicom",
                     storage_options=s3_server.storage_options)  # fmt: skip
    assert (summary.exported, summary.failed) == (41, 0)
    fs = _fs(s3_server)
    objects = _objects(fs, key)
    manifest = json.loads(objects.pop("manifest.json"))
    objects.pop("errors.jsonl"), objects.pop("progress.json")
    assert set(objects) == {entry["path"] for entry in manifest["files"]}
    by_path = {entry["path"]: entry for entry in manifest["files"]}
    for row in lake.instances():
        name = f"{row['study_instance_uid']}/{row['series_instance_uid']}/{row['sop_instance_uid']}.dcm"
        assert objects[name] == lake.tenant.blobs.get(row["blob_key"])  # the stored bytes
        assert by_path[name]["sha256"] == hashlib.sha256(objects[name]).hexdigest() == row["sha256"]

    # De-identified copies to S3: the files under their new UIDs, the checksums theirs.
    prefix = f"exports/dicom-deid-{uuid.uuid4().hex[:8]}"
    study = _studies(lake)[0]
    summary = export(lake.tenant, Selection(uids=(study,)), s3_server.uri(prefix), "dicom",
                     deid_options=DeidOptions(project_key="s3-export-key"),
                     storage_options=s3_server.storage_options)  # fmt: skip
    objects = _objects(fs, f"{s3_server.bucket}/{prefix}")
    manifest = json.loads(objects.pop("manifest.json"))
    assert summary.exported == len(manifest["files"]) == sum(r["study_instance_uid"] == study
                                                             for r in lake.instances())  # fmt: skip
    for entry in manifest["files"]:
        data = objects[entry["path"]]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.PatientIdentityRemoved == "YES"
        assert entry["path"] == f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        assert study not in entry["path"]


def _cli(lake: ExportLake, url: str) -> list[str]:
    return [sys.executable, "-m", "dicomlake", "export", "--root", str(lake.root / "lake"),
            "--tenant", "acme", "--study", *_studies(lake), "--format", "parquet", "--out", url,
            "--chunk-instances", "1", "--json"]  # fmt: skip


def _rows_by_sop(fs: s3fs.S3FileSystem, key: str, manifest: dict) -> dict[str, bytes]:
    rows: dict[str, bytes] = {}
    for entry in manifest["files"]:
        table = pq.read_table(io.BytesIO(fs.cat_file(f"{key}/{entry['path']}")))
        pixels = tensor_to_numpy(table.column("pixels"))
        for i, sop in enumerate(table.column("sop_instance_uid").to_pylist()):
            assert sop not in rows, f"{sop} exported twice"
            rows[sop] = pixels[i].tobytes()
    return rows


def test_a_killed_export_to_s3_resumes_there(lake: ExportLake, s3_server: S3Server, tmp_path: Path) -> None:
    """destination.py keeps progress.json on S3 and publishes each chunk's files before recording them:
    a SIGKILLed run leaves no manifest; rerunning the command deletes objects no progress record lists
    and exports only the rest, ending equal to an uninterrupted export. The killed run's local staging
    folder (at most a chunk's files) stays behind until the next S3 export removes it: its owner is
    gone."""
    env = {**os.environ, **{k: v for k, v in s3_server.storage_options.items() if k.startswith("AWS_")},
           "TMPDIR": str(tmp_path)}  # fmt: skip
    fs = _fs(s3_server)
    whole_url = s3_server.uri(f"exports/whole-{uuid.uuid4().hex[:8]}")
    done = subprocess.run(_cli(lake, whole_url), capture_output=True, text=True, env=env, check=True)
    assert json.loads(done.stdout)["exported"] == 40
    whole_key = whole_url.removeprefix("s3://")
    whole = json.loads(fs.cat_file(f"{whole_key}/manifest.json"))
    assert not _staging_folders(tmp_path)

    url = s3_server.uri(f"exports/killed-{uuid.uuid4().hex[:8]}")
    key = url.removeprefix("s3://")
    process = subprocess.Popen(_cli(lake, url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            progress = f"{key}/progress.json"
            if fs.exists(progress) and json.loads(fs.cat_file(progress))["chunks"] >= 5:
                break
            time.sleep(0.02)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    partial = json.loads(fs.cat_file(f"{key}/progress.json"))
    assert 5 <= len(partial["done"]) < 41, "the export finished before it could be killed"
    assert not fs.exists(f"{key}/manifest.json")
    assert len(_staging_folders(tmp_path)) == 1  # the killed run's
    # As a run killed between publishing a chunk and recording it leaves: objects no record lists.
    recorded = {entry["path"] for entry in partial["files"]}
    stray = [f"{recorded.pop().split('/')[0]}/part-99999-0.parquet", "uint8-1x1/part-99999-0.parquet"]
    for name in stray:
        fs.pipe_file(f"{key}/{name}", b"not parquet: a file a killed run wrote")

    resumed = subprocess.run(_cli(lake, url), capture_output=True, text=True, env=env, check=True)
    assert json.loads(resumed.stdout)["exported"] == 40
    manifest = json.loads(fs.cat_file(f"{key}/manifest.json"))
    assert not any(fs.exists(f"{key}/{name}") for name in stray)
    assert manifest["counts"] == whole["counts"] == {"exported": 40, "skipped": 0, "failed": 1}
    assert manifest["delta_versions"] == whole["delta_versions"]
    assert _rows_by_sop(fs, key, manifest) == _rows_by_sop(fs, whole_key, whole)
    names = {found.removeprefix(key + "/") for found in fs.find(key)}
    assert names == {entry["path"] for entry in manifest["files"]} | {"manifest.json", "progress.json",
                                                                      "errors.jsonl"}  # fmt: skip
    for entry in manifest["files"]:
        assert hashlib.sha256(fs.cat_file(f"{key}/{entry['path']}")).hexdigest() == entry["sha256"]
    assert not _staging_folders(tmp_path)  # the resumed run swept the killed one's and removed its own


def test_only_staging_folders_of_dead_exports_are_swept(tmp_path: Path) -> None:
    from dicomlake.export.destination import STAGING_OWNER, STAGING_PREFIX, sweep_abandoned_staging

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    folders = {name: tmp_path / f"{STAGING_PREFIX}{name}" for name in ("dead", "live", "foreign")}
    for folder in folders.values():
        folder.mkdir()
        (folder / "part-00000-0.parquet").write_bytes(b"staged")
    (folders["dead"] / STAGING_OWNER).write_text(str(gone.pid))
    (folders["live"] / STAGING_OWNER).write_text(str(os.getpid()))
    assert sweep_abandoned_staging(tmp_path) == 1
    assert not folders["dead"].exists()
    assert folders["live"].exists() and folders["foreign"].exists()  # a live export's; not one of ours
