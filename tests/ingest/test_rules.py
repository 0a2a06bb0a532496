"""The ingest rules: create, unchanged, update (old version kept), quarantine, dispositions."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import polars as pl
import pytest

from dicomlake.cli import main as cli
from dicomlake.errors import InvalidName
from dicomlake.ingest import IngestOptions, ingest
from dicomlake.samples import SampleSummary, generate_bad_inputs, generate_sample_drop
from dicomlake.store import Lakehouse, TenantStore
from dicomlake.store.read import scan
from tests.ingest.conftest import rewrite


def frame(tenant: TenantStore, name: str) -> pl.DataFrame:
    return pl.from_arrow(scan(tenant.table(name)))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_ingest_creates_every_instance_with_dense_seq(tenant: TenantStore, drop: SampleSummary) -> None:
    summary = ingest([drop.dest], tenant)
    assert (summary.received, summary.created, summary.updated, summary.unchanged) == (24, 24, 0, 0)
    assert (summary.first_seq, summary.last_seq) == (1, 24)
    changes = frame(tenant, "changes").sort("seq")
    assert changes["seq"].to_list() == list(range(1, 25))
    assert set(changes["action"]) == {"create"}
    instances = frame(tenant, "instances")
    assert instances.height == 24
    for path in drop.files:
        row = instances.filter(pl.col("sha256") == sha(path))
        assert row.height == 1
        assert tenant.blobs.get(row["blob_key"][0]) == path.read_bytes()  # the original bytes, exactly


def test_identical_bytes_again_are_unchanged(tenant: TenantStore, drop: SampleSummary) -> None:
    ingest([drop.dest], tenant)
    again = ingest([drop.dest], tenant)
    assert (again.created, again.updated, again.unchanged, again.first_seq) == (0, 0, 24, None)
    assert frame(tenant, "changes").height == 24


def test_other_bytes_for_the_same_uid_are_an_update_and_the_old_version_is_kept(
    tenant: TenantStore, drop: SampleSummary, tmp_path: Path
) -> None:
    ingest([drop.dest], tenant)
    original = drop.files[0]
    corrected = rewrite(original, tmp_path / "fix" / "corrected.dcm", SeriesDescription="CORRECTED")
    summary = ingest([corrected], tenant)
    assert (summary.created, summary.updated, summary.first_seq) == (0, 1, 25)
    changes = frame(tenant, "changes")
    update = changes.filter(pl.col("action") == "update").row(0, named=True)
    assert update["sha256"] == sha(corrected) and update["series_description"] == "CORRECTED"
    current = frame(tenant, "instances").filter(pl.col("sop_instance_uid") == update["sop_instance_uid"])
    assert current["sha256"].to_list() == [sha(corrected)]
    assert tenant.blobs.exists(f"blobs/{sha(original)[:2]}/{sha(original)}.dcm")  # old version kept
    # Re-delivering the replaced version never rolls the instance back.
    stale = ingest([original], tenant)
    assert (stale.updated, stale.unchanged) == (0, 1)
    assert frame(tenant, "instances").filter(pl.col("sop_instance_uid") == update["sop_instance_uid"])[
        "sha256"
    ].to_list() == [sha(corrected)]


def test_bad_inputs_are_quarantined_with_bytes_and_reason(tenant: TenantStore, tmp_path: Path) -> None:
    bad = generate_bad_inputs(tmp_path / "bad")
    summary = ingest([tmp_path / "bad"], tenant)
    assert summary.quarantined == len(bad) and summary.created == 0
    quarantine = frame(tenant, "quarantine")
    for item in bad:
        row = quarantine.filter(pl.col("source") == str(item.path)).row(0, named=True)
        assert row["error_code"] == item.expected_code
        assert row["reason"]
        assert tenant.blobs.get(row["quarantine_key"]) == item.path.read_bytes()
    assert {e["code"] for e in summary.errors} == {b.expected_code for b in bad}
    ingest([tmp_path / "bad"], tenant)  # a rerun records nothing twice
    assert frame(tenant, "quarantine").height == len(bad)
    assert frame(tenant, "changes").height == 0


def test_zip_archives_are_ingested_member_by_member(
    tenant: TenantStore, drop: SampleSummary, tmp_path: Path
) -> None:
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for number, path in enumerate(drop.files[:5]):
            zf.write(path, arcname=f"series/{number}-{path.name}")
        zf.writestr("notes.txt", "not an image")
    summary = ingest([archive], tenant)
    assert (summary.created, summary.quarantined) == (5, 1)
    sources = frame(tenant, "changes")["source"].to_list()
    assert all(s.startswith(f"{archive}!/series/") for s in sources)


@pytest.mark.parametrize("disposition", ["keep", "delete", "move"])
def test_drop_disposition_happens_after_commit(tenant: TenantStore, tmp_path: Path, disposition: str) -> None:
    drop = generate_sample_drop(tmp_path / "in", n_instances=6, seed=1)
    generate_bad_inputs(tmp_path / "in" / "bad")
    done = tmp_path / "done"
    ingest([drop.dest], tenant, IngestOptions(disposition=disposition, move_to=str(done)))
    remaining = [p for p in drop.dest.rglob("*") if p.is_file()]
    if disposition == "keep":
        assert len(remaining) == 6 + 11
    else:
        assert remaining == []  # quarantined files are safe in quarantine/, so they leave the drop too
    if disposition == "move":
        moved = sorted(p.relative_to(done) for p in done.rglob("*") if p.is_file())
        assert sorted(p.relative_to(drop.dest) for p in drop.files) == [
            m for m in moved if m.parts[0] != "bad"
        ]
    assert frame(tenant, "instances").height == 6


def test_hidden_files_being_uploaded_are_left_alone(tenant: TenantStore, drop: SampleSummary) -> None:
    partial = drop.dest / ".upload-in-progress.dcm"
    partial.write_bytes(drop.files[0].read_bytes()[:500])
    summary = ingest([drop.dest], tenant, IngestOptions(disposition="delete"))
    assert summary.received == 24 and summary.quarantined == 0
    assert partial.exists()


def test_parallel_workers_give_the_same_feed_as_one_process(tmp_path: Path) -> None:
    drop = generate_sample_drop(tmp_path / "drop", n_instances=150, seed=11)
    feeds = []
    for workers in (1, 2):
        tenant = Lakehouse(tmp_path / f"lake{workers}").tenant()
        ingest([drop.dest], tenant, IngestOptions(workers=workers, batch_size=40))
        feed = frame(tenant, "changes").sort("seq").select("seq", "sop_instance_uid", "sha256", "action")
        feeds.append(feed)
    assert feeds[0].equals(feeds[1])
    assert feeds[0].height == 150


def test_tenants_are_isolated(tmp_path: Path, drop: SampleSummary) -> None:
    lake = Lakehouse(tmp_path / "lake")
    ingest([drop.dest], lake.tenant("north"))
    assert frame(lake.tenant("south"), "instances").height == 0
    assert lake.tenants() == ["north", "south"]
    for bad_name in ("../north", "North", "", "a/b", "x" * 64):
        with pytest.raises(InvalidName):
            lake.tenant(bad_name)


def test_cli_ingest_json(tmp_path: Path, drop: SampleSummary, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "lake"
    assert cli(["ingest", str(drop.dest), "--root", str(root), "--tenant", "t1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in (
        "received",
        "created",
        "updated",
        "unchanged",
        "quarantined",
        "first_seq",
        "last_seq",
        "seconds",
        "instances_per_second",
    ):
        assert key in out
    assert (out["created"], out["first_seq"], out["last_seq"]) == (24, 1, 24)
    assert cli(["status", "--root", str(root), "--tenant", "t1", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["latest_seq"], status["instances"], status["instances_reflect_seq"]) == (24, 24, 24)
    assert cli(["ingest", str(tmp_path / "missing"), "--root", str(root)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_explicit_files_are_accepted(tenant: TenantStore, drop: SampleSummary) -> None:
    summary = ingest(drop.files[:3], tenant)
    assert summary.created == 3
    shutil.rmtree(drop.dest)
    assert frame(tenant, "instances").height == 3  # nothing depends on the drop once committed


def test_moving_files_given_one_by_one_keeps_their_layout_and_never_overwrites(
    tenant: TenantStore, tmp_path: Path
) -> None:
    drop = generate_sample_drop(tmp_path / "in", n_instances=12, seed=4)  # tree layout: names repeat
    names = [p.name for p in drop.files]
    assert len(set(names)) < len(names)
    done = tmp_path / "done"
    ingest(drop.files, tenant, IngestOptions(disposition="move", move_to=str(done),
                                             move_relative_to=str(drop.dest)))
    assert sorted(p.relative_to(done) for p in done.rglob("*") if p.is_file()) == sorted(
        p.relative_to(drop.dest) for p in drop.files)
    second = generate_sample_drop(tmp_path / "again", n_instances=12, seed=5)
    ingest(second.files, tenant, IngestOptions(disposition="move", move_to=str(done)))  # flat: names collide
    assert len([p for p in done.rglob("*") if p.is_file()]) == 24  # nothing overwritten


def test_a_file_rewritten_during_ingest_stays_in_the_drop(
    tenant: TenantStore, drop: SampleSummary, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dicomlake.ingest.worker as worker

    victim = drop.files[3]
    original_read = worker.read_item

    def read_then_rewrite(item, options=None):
        data = original_read(item, options)
        if item.container == str(victim):  # an uploader replaces the file right after we read it
            victim.write_bytes(data + b"\0\0")
        return data

    monkeypatch.setattr(worker, "read_item", read_then_rewrite)
    summary = ingest([drop.dest], tenant, IngestOptions(disposition="delete"))
    assert summary.left_in_place == [str(victim)]
    assert victim.exists()  # its new bytes were never read, so it must not be deleted
    assert [p for p in drop.dest.rglob("*") if p.is_file()] == [victim]
