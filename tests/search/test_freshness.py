"""A long-lived index sees every commit at once, reads only new data files, and survives compaction."""

from __future__ import annotations

from pathlib import Path

from dicomlake.ingest import IngestOptions, ingest
from dicomlake.lifecycle import delete_instances
from dicomlake.maintenance import maintain_tables
from dicomlake.search import SearchIndex
from dicomlake.store import Lakehouse
from tests.search.conftest import SERIES, STUDY, sop_uid, write_instance


def test_new_updated_and_deleted_instances_show_at_once(tmp_path: Path) -> None:
    tenant = Lakehouse(tmp_path / "lake").tenant("fresh")
    index = SearchIndex(tenant)
    assert index.search("studies") == []

    ingest([write_instance(tmp_path / "d1", "A1", 1)], tenant, IngestOptions(workers=1))
    assert [r["0020000D"]["Value"][0] for r in index.search("studies")] == [STUDY["A"]]
    files_after_first = index._instances.files_read

    ingest([write_instance(tmp_path / "d2", "B1", 1)], tenant, IngestOptions(workers=1))
    studies = index.search("studies", {"PatientName": "muller"}, fuzzy=True)
    assert [r["0020000D"]["Value"][0] for r in studies] == [STUDY["B"], STUDY["A"]]
    assert index._instances.files_read == files_after_first + 1  # only the new commit's file was read

    # A corrected re-send (same SOP Instance UID, other bytes) replaces the old values.
    ingest([write_instance(tmp_path / "d3", "A1", 1, PatientName="Mueller^Juergen")], tenant,
           IngestOptions(workers=1))
    found = index.search("studies", {"StudyInstanceUID": STUDY["A"]})
    assert found[0]["00100010"]["Value"] == [{"Alphabetic": "Mueller^Juergen"}]
    assert found[0]["00201208"]["Value"] == [1]  # still one instance, not two versions
    assert index.search("studies", {"PatientName": "jurgen"}, fuzzy=True) == []

    # Levels re-derived for the changed studies only equal levels derived from scratch.
    for level in ("studies", "series"):
        assert index.search(level) == SearchIndex(tenant).search(level)

    delete_instances(tenant, STUDY["B"])
    assert index.search("studies", {"StudyInstanceUID": STUDY["B"]}) == []
    assert index.search("series", {"SeriesInstanceUID": SERIES["B1"]}) == []
    assert [r["00080018"]["Value"][0] for r in index.search("instances")] == [sop_uid("A1", 1)]
    for level in ("studies", "series", "instances"):
        assert index.search(level) == SearchIndex(tenant).search(level)


def test_answers_are_the_same_after_compaction_and_vacuum(tmp_path: Path) -> None:
    tenant = Lakehouse(tmp_path / "lake").tenant("compact")
    for n, (series, number) in enumerate([("A1", 1), ("A1", 2), ("A2", 1), ("B1", 1), ("C1", 1)]):
        ingest([write_instance(tmp_path / f"d{n}", series, number)], tenant, IngestOptions(workers=1))
    index = SearchIndex(tenant)
    queries = [
        ("studies", {}),
        ("studies", {"ModalitiesInStudy": "MR"}),
        ("series", {"StudyInstanceUID": STUDY["A"]}),
        ("instances", {"SeriesInstanceUID": SERIES["A1"]}),
    ]
    before = [index.search(level, params) for level, params in queries]
    maintain_tables(tenant, vacuum_retention_hours=0)
    assert [index.search(level, params) for level, params in queries] == before  # the same index
    assert [SearchIndex(tenant).search(level, params) for level, params in queries] == before  # a new one
