"""Pages are slices of one total order, whatever their size (a partial selection must be exact)."""

from __future__ import annotations

import pytest

from dicomlake.ingest import IngestOptions, ingest
from dicomlake.samples import generate_sample_drop
from dicomlake.search import SearchIndex
from dicomlake.store import Lakehouse

KEYS = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    base = tmp_path_factory.mktemp("paging")
    generate_sample_drop(base / "drop", n_instances=80, seed=5)
    tenant = Lakehouse(base / "lake").tenant("paging")
    ingest([base / "drop"], tenant, IngestOptions(workers=1, batch_size=20))
    return SearchIndex(tenant)


@pytest.mark.parametrize("level", ["studies", "series", "instances"])
@pytest.mark.parametrize("page", [1, 2, 3, 4])
def test_small_pages_concatenate_to_the_whole_answer(index: SearchIndex, level: str, page: int) -> None:
    whole = [r[KEYS[level]]["Value"][0] for r in index.search(level, limit=10_000)]
    assert len(whole) > 4 * page  # so that pages take the partial-selection path
    pages = []
    for offset in range(0, len(whole), page):
        pages += [r[KEYS[level]]["Value"][0] for r in index.search(level, limit=page, offset=offset)]
    assert pages == whole


def test_the_order_is_the_documented_one(index: SearchIndex) -> None:
    studies = index.search("studies", limit=10_000)
    dates = [r["00080020"]["Value"][0] + r.get("00080030", {}).get("Value", [""])[0] for r in studies]
    assert dates == sorted(dates, reverse=True)  # newest first
    series = index.search("series", limit=10_000)
    order = [(r["0020000D"]["Value"][0], r["00200011"]["Value"][0]) for r in series]
    assert order == sorted(order)
