"""The lakehouse on a real S3-compatible server (SeaweedFS, see tests/conftest.py::s3_server)."""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

import polars as pl
import pydicom
import pytest
import s3fs

from dicomlake.ingest import IngestOptions, ingest
from dicomlake.samples import generate_bad_inputs, generate_sample_drop
from dicomlake.store import Lakehouse, TenantStore
from dicomlake.store.committer import Committer, latest_seq, sync_instances
from dicomlake.store.lakehouse import fsspec_s3_kwargs
from dicomlake.store.read import scan
from tests.conftest import S3Server

pytestmark = pytest.mark.timeout(120)


def _fs(server: S3Server) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                             **fsspec_s3_kwargs(server.storage_options))


def _sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _make_drop(base: Path) -> tuple[Path, set[str]]:
    """12 loose instances, a zip of 4 more, and one file that is not DICOM; the expected SOP UIDs."""
    drop = base / "drop"
    loose = generate_sample_drop(drop, n_instances=12, seed=31).files
    zipped = generate_sample_drop(base / "for-zip", n_instances=4, seed=32, layout="flat").files
    with zipfile.ZipFile(drop / "batch.zip", "w") as archive:
        for path in zipped:
            archive.write(path, f"series/{path.name}")
    bad = next(b for b in generate_bad_inputs(base / "bad", seed=33) if b.kind == "not_dicom")
    shutil.copyfile(bad.path, drop / "note.dcm")
    uids = {_sop_uid(p) for p in [*loose, *zipped]}
    assert len(uids) == 16
    return drop, uids


def _sops(tenant: TenantStore, table: str) -> list[str]:
    return scan(tenant.table(table), ["sop_instance_uid"]).column(0).to_pylist()


def test_ingest_into_an_s3_root(s3_server: S3Server, tmp_path: Path) -> None:
    drop, uids = _make_drop(tmp_path)
    prefix = f"lake-{uuid.uuid4().hex[:8]}"
    tenant = Lakehouse(s3_server.uri(prefix), s3_server.storage_options).tenant("t1")

    first = ingest([drop], tenant)
    assert (first.received, first.created, first.quarantined, first.unreadable) == (17, 16, 1, 0)

    fs = _fs(s3_server)
    blobs = fs.find(f"{s3_server.bucket}/{prefix}/tenants/t1/blobs")
    assert len(blobs) == 16
    for key in blobs:
        data = fs.cat_file(key)
        sha = hashlib.sha256(data).hexdigest()
        assert key.endswith(f"/blobs/{sha[:2]}/{sha}.dcm")
    assert len(fs.find(f"{s3_server.bucket}/{prefix}/tenants/t1/quarantine")) == 1

    changes = pl.from_arrow(scan(tenant.table("changes"))).sort("seq")
    assert changes["seq"].to_list() == list(range(1, 17))
    assert set(changes["sop_instance_uid"]) == uids
    assert changes.filter(pl.col("source").str.contains("batch.zip!/")).height == 4
    assert tenant.blobs.get(changes["blob_key"][0]) == fs.cat_file(
        f"{s3_server.bucket}/{prefix}/tenants/t1/{changes['blob_key'][0]}"
    )
    assert sorted(_sops(tenant, "instances")) == sorted(uids)
    quarantine = scan(tenant.table("quarantine"), ["error_code", "source"]).to_pylist()
    assert quarantine == [{"error_code": "not_dicom", "source": str(drop / "note.dcm")}]

    again = ingest([drop], tenant)
    assert (again.created, again.updated, again.unchanged, again.quarantined) == (0, 0, 16, 1)
    assert latest_seq(tenant.table("changes")) == 16
    assert tenant.table("changes").count() == 16
    assert tenant.table("quarantine").count() == 1
    assert len(fs.find(f"{s3_server.bucket}/{prefix}/tenants/t1/blobs")) == 16


def test_ingest_from_an_s3_prefix(s3_server: S3Server, tmp_path: Path) -> None:
    drop, uids = _make_drop(tmp_path)
    incoming = s3_server.uri(f"incoming-{uuid.uuid4().hex[:8]}")
    fs = _fs(s3_server)
    fs.put(f"{drop}/", f"{incoming}/", recursive=True)
    # Skipped like a local dot-folder: an uploader still writing there.
    fs.pipe_file(f"{incoming}/.staging/partial.dcm", (drop / "note.dcm").read_bytes())
    # Quarantined like a local file that only claims to be a zip; it must not abort the ingest.
    fs.pipe_file(f"{incoming}/broken.zip", b"PK\x03\x04 but not really a zip archive")
    # A local tenant has no S3 options: the source carries its own.
    tenant = Lakehouse(tmp_path / "lake").tenant()
    options = IngestOptions(source_storage_options=s3_server.storage_options)

    summary = ingest([incoming], tenant, options)

    assert (summary.received, summary.created, summary.quarantined) == (18, 16, 2)
    assert {e["source"].rsplit("/", 1)[-1] for e in summary.errors} == {"note.dcm", "broken.zip"}
    changes = pl.from_arrow(scan(tenant.table("changes"), ["sop_instance_uid", "source"]))
    assert set(changes["sop_instance_uid"]) == uids
    assert all(s.startswith(f"{incoming}/") for s in changes["source"])
    assert changes.filter(pl.col("source").str.ends_with("batch.zip!/series/0000001.dcm")).height == 1
    assert len(tenant.blobs.keys("blobs")) == 16
    assert ingest([incoming], tenant, options).unchanged == 16


def test_unsafe_s3_commit_modes_are_refused(s3_server: S3Server) -> None:
    options = dict(s3_server.storage_options, AWS_S3_ALLOW_UNSAFE_RENAME="true")
    with pytest.raises(ValueError, match="lose concurrent commits"):
        Lakehouse(s3_server.uri("unsafe"), options)
    safe = Lakehouse(s3_server.uri("safe"), {k: v for k, v in s3_server.storage_options.items()
                                             if k != "conditional_put"})
    assert safe.storage_options["conditional_put"] == "etag"


# -- concurrent committers ---------------------------------------------------------------------

N_SOPS = 40
BATCH = 2


def _version(i: int) -> dict[str, Any]:
    sha = hashlib.sha256(f"instance {i}".encode()).hexdigest()
    return {"sop_instance_uid": f"2.25.{1000 + i}", "sha256": sha, "blob_key": f"blobs/{sha[:2]}/{sha}.dcm",
            "size_bytes": 1, "source": f"synthetic/{i}"}


def _commit_range(root: str, options: dict[str, str], start: int, stop: int, barrier: Any) -> None:
    committer = Committer(Lakehouse(root, options).tenant("t1"))
    barrier.wait()
    for first in range(start, stop, BATCH):
        committer.commit_versions([_version(i) for i in range(first, min(first + BATCH, stop))])


def test_three_processes_commit_concurrently(s3_server: S3Server) -> None:
    root = s3_server.uri(f"lake-{uuid.uuid4().hex[:8]}")
    ranges = [(0, 25), (10, 35), (15, 40)]  # overlapping: every SOP is offered by one to three writers
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(ranges))
    processes = [
        context.Process(target=_commit_range, args=(root, s3_server.storage_options, a, b, barrier))
        for a, b in ranges
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=90)
        assert process.exitcode == 0

    tenant = Lakehouse(root, s3_server.storage_options).tenant("t1")
    feed = pl.from_arrow(scan(tenant.table("changes"), ["seq", "action", "sop_instance_uid", "sha256"]))
    feed = feed.sort("seq")
    assert feed["seq"].to_list() == list(range(1, N_SOPS + 1))
    assert sorted(feed["sop_instance_uid"]) == sorted(_version(i)["sop_instance_uid"] for i in range(N_SOPS))
    assert set(feed["action"]) == {"create"}
    assert latest_seq(tenant.table("changes")) == N_SOPS
    assert sync_instances(tenant) == N_SOPS
    assert sorted(_sops(tenant, "instances")) == sorted(feed["sop_instance_uid"])


def test_search_follows_an_s3_table(s3_server: S3Server, tmp_path: Path) -> None:
    from dicomlake.search import SearchIndex

    drop = generate_sample_drop(tmp_path / "d1", n_instances=6, seed=41)
    tenant = Lakehouse(s3_server.uri(f"lake-{uuid.uuid4().hex[:8]}"), s3_server.storage_options).tenant("s")
    ingest([tmp_path / "d1"], tenant, IngestOptions(workers=1, batch_size=3))
    index = SearchIndex(tenant)
    found = index.search("instances", limit=100)
    assert sorted(r["00080018"]["Value"][0] for r in found) == sorted(_sop_uid(p) for p in drop.files)
    more = generate_sample_drop(tmp_path / "d2", n_instances=2, seed=42)
    ingest([tmp_path / "d2"], tenant, IngestOptions(workers=1))
    assert len(index.search("instances", limit=100)) == 8  # the new commit, read from the log entry
    assert index._instances.log.reloads == 1
    assert {r["00080018"]["Value"][0] for r in index.search("instances")} >= {_sop_uid(p) for p in more.files}


def test_stow_store_into_an_s3_root(s3_server: S3Server, tmp_path: Path) -> None:
    """STOW's store path on S3: in-memory parts and a spooled file part are uploaded by their
    content hash, a bad part's bytes go to quarantine, and a resend changes nothing."""
    from dicomlake.ingest.stow import UploadedPart, store_instances

    files = generate_sample_drop(tmp_path / "drop", n_instances=3, seed=41).files
    contents = [p.read_bytes() for p in files]
    bad = b"not a DICOM file at all" * 10
    spooled = tmp_path / "spooled.part"
    spooled.write_bytes(contents[2])
    prefix = f"lake-{uuid.uuid4().hex[:8]}"
    tenant = Lakehouse(s3_server.uri(prefix), s3_server.storage_options).tenant("t1")

    def parts() -> list[UploadedPart]:
        return [UploadedPart(path=None, size=len(c), data=c) for c in (contents[0], contents[1], bad)] + [
            UploadedPart(path=spooled, size=len(contents[2]))]

    outcome = store_instances(tenant, parts())
    assert outcome.http_status == 202
    assert [r.stored for r in outcome.results] == [True, True, False, True]
    assert outcome.results[2].error_code == "not_dicom"
    fs = _fs(s3_server)
    for content in contents:
        sha = hashlib.sha256(content).hexdigest()
        assert fs.cat_file(f"{s3_server.bucket}/{prefix}/tenants/t1/blobs/{sha[:2]}/{sha}.dcm") == content
    assert len(fs.find(f"{s3_server.bucket}/{prefix}/tenants/t1/quarantine")) == 1
    assert sorted(_sops(tenant, "instances")) == sorted(_sop_uid(p) for p in files)

    spooled.write_bytes(contents[2])
    again = store_instances(tenant, parts())
    assert [r.action for r in again.results if r.stored] == ["unchanged"] * 3
    assert tenant.table("changes").count() == 3
