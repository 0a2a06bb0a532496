from __future__ import annotations

import pytest

from dicomlake.changefeed import ConsumerCursor, CursorConflict
from dicomlake.errors import InvalidName
from dicomlake.ingest import ingest
from dicomlake.samples import SampleSummary
from dicomlake.store import TenantStore


def test_a_consumer_gets_the_same_entries_until_it_commits(tenant: TenantStore, drop: SampleSummary) -> None:
    ingest([drop.dest], tenant)
    cursor = ConsumerCursor(tenant, "dicomcast")
    assert (cursor.position(), cursor.lag()) == (0, 30)
    first = cursor.read(limit=8)
    assert [e.sequence for e in cursor.read(limit=8)] == [e.sequence for e in first] == list(range(1, 9))
    cursor.commit(first[-1].sequence)
    assert (cursor.position(), cursor.lag()) == (8, 22)
    assert cursor.read(limit=2)[0].sequence == 9
    again = ConsumerCursor(tenant, "dicomcast")  # a restarted consumer resumes where it committed
    assert again.position() == 8
    cursor.commit(8)  # re-committing the same position is harmless
    with pytest.raises(CursorConflict, match="never moves back"):
        cursor.commit(3)
    with pytest.raises(CursorConflict, match="feed ends"):
        cursor.commit(31)


def test_consumers_are_independent(tenant: TenantStore, drop: SampleSummary) -> None:
    ingest([drop.dest], tenant)
    fast, slow = ConsumerCursor(tenant, "export.ml"), ConsumerCursor(tenant, "audit")
    fast.commit(30)
    slow.commit(2)
    assert (fast.position(), slow.position()) == (30, 2)
    assert fast.read() == []


def test_consumer_names_are_checked(tenant: TenantStore) -> None:
    for name in ("", "Bad Name", "../x", "x" * 101):
        with pytest.raises(InvalidName):
            ConsumerCursor(tenant, name)
