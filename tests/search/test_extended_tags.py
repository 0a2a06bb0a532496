"""Extended query tags are searchable exactly like the built-in keys, at their level."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicomlake.errors import InvalidQuery
from dicomlake.ingest import IngestOptions, ingest
from dicomlake.maintenance import maintain_tables
from dicomlake.search import SearchIndex
from dicomlake.store import Lakehouse
from dicomlake.tags import add_query_tags, reindex, set_query_status
from tests.search.conftest import SERIES, STUDY, sop_uid, write_instance

CREATOR = "ACME 1.0"


def _with_private(path: Path, block: int, value: str) -> Path:
    """Put (0009,xx10) LO = value under CREATOR, with CREATOR reserving block xx."""
    ds = pydicom.dcmread(path)
    ds.add_new(0x00090000 | block, "LO", CREATOR)
    ds.add_new(0x00090010 | (block << 8), "LO", value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def tagged(tmp_path: Path):
    tenant = Lakehouse(tmp_path / "lake").tenant("tags")
    drop = tmp_path / "drop"
    first = write_instance(drop, "A1", 1, PatientWeight="70.5", AcquisitionDate="20200115")
    second = write_instance(drop, "A1", 2, PatientWeight="70.5", AcquisitionDate="20200116")
    _with_private(first, 0x10, "FOO-1")
    _with_private(second, 0x11, "BAR-2")  # the same creator, another block
    write_instance(drop, "B1", 1, PatientWeight="58", AcquisitionDate="20210601")
    write_instance(drop, "C1", 1, AcquisitionDate="20190320")
    ingest([drop], tenant, IngestOptions(workers=1))
    add_query_tags(tenant, [
        {"tag": "PatientWeight", "level": "study"},
        {"tag": "AcquisitionDate", "level": "instance"},
        {"tag": "00091010", "vr": "LO", "private_creator": CREATOR, "level": "instance"},
    ])
    reindex(tenant)
    return tenant, SearchIndex(tenant)


def _uids(results: list[dict], key: str) -> list[str]:
    return [r[key]["Value"][0] for r in results]


def test_standard_and_private_tags_match_like_built_in_keys(tagged) -> None:
    _, index = tagged
    assert _uids(index.search("studies", {"PatientWeight": "70.5"}), "0020000D") == [STUDY["A"]]
    assert _uids(index.search("studies", {"00101030": "58\\70.5"}), "0020000D") == [STUDY["B"], STUDY["A"]]
    found = index.search("instances", {"AcquisitionDate": "20200116-20211231"})
    assert _uids(found, "00080018") == [sop_uid("A1", 2), sop_uid("B1", 1)]
    assert found[0]["00080022"] == {"vr": "DA", "Value": ["20200116"]}  # matched keys are returned
    # The private value is found whichever block its creator reserved in each instance.
    assert _uids(index.search("instances", {"00091010": "FOO*"}), "00080018") == [sop_uid("A1", 1)]
    assert _uids(index.search("instances", {"00091010": "BAR-2"}), "00080018") == [sop_uid("A1", 2)]
    # A study-level tag in a series search narrows by study; combined with built-in keys.
    assert _uids(index.search("series", {"PatientWeight": "70.5", "Modality": "CT"}), "0020000E") == [
        SERIES["A1"]
    ]
    study = index.search("studies", {"StudyInstanceUID": STUDY["A"]}, include=["PatientWeight"])[0]
    assert study["00101030"] == {"vr": "DS", "Value": [70.5]}


def test_level_and_status_rules(tagged) -> None:
    tenant, index = tagged
    with pytest.raises(InvalidQuery, match="instance-level") as caught:
        index.search("studies", {"AcquisitionDate": "20200115"})
    assert caught.value.parameter == "AcquisitionDate"
    with pytest.raises(InvalidQuery, match="not a date"):
        index.search("instances", {"AcquisitionDate": "2020"})
    set_query_status(tenant, "PatientWeight", "disabled")
    with pytest.raises(InvalidQuery, match="not a searchable attribute"):
        index.search("studies", {"PatientWeight": "70.5"})
    set_query_status(tenant, "PatientWeight", "enabled")
    assert index.search("studies", {"PatientWeight": "70.5"})


def test_tag_tables_are_maintained_and_answers_unchanged(tagged) -> None:
    tenant, index = tagged
    query = {"00091010": "*-*", "AcquisitionDate": "20200101-"}
    before = index.search("instances", query, include=["all"])
    done = {m.table: m for m in maintain_tables(tenant, vacuum_retention_hours=0)}
    assert {"query_tags", "tag_values", "tag_errors"} <= set(done)
    assert done["query_tags"].vacuumed > 0  # each catalog change overwrote it: old files go
    assert index.search("instances", query, include=["all"]) == before
    assert SearchIndex(tenant).search("instances", query, include=["all"]) == before
    assert len(before) == 2


def test_new_instances_are_indexed_at_ingest(tagged, tmp_path: Path) -> None:
    tenant, index = tagged
    ingest([write_instance(tmp_path / "more", "C1", 2, PatientWeight="99")], tenant, IngestOptions(workers=1))
    assert _uids(index.search("studies", {"PatientWeight": "99"}), "0020000D") == [STUDY["C"]]
