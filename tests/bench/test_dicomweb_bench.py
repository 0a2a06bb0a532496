"""bench/dicomweb.py at a few hundred instances: it runs end to end against a real Orthanc, and both
servers give the same answers for every QIDO key and the same WADO bytes (marked slow: the bounded
version of a scale run). Without Orthanc it fails unless DICOMLAKE_SKIP_INTEROP=1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import dicomweb as bench
from tests.web.conftest import require_orthanc


@pytest.mark.slow
def test_dicomweb_bench_runs_and_both_servers_answer_the_same(tmp_path: Path) -> None:
    require_orthanc()
    args = bench.parse_args(["--instances", "300", "--skip-second", "--repeats", "4", "--wado-repeats", "1",
                             "--root", str(tmp_path)])
    report = bench.run(args)

    first = report.first
    assert first.instances == 300 and report.second is None
    for load in (first.ours_load, first.orthanc_load, first.orthanc_rest):
        assert load is not None and load.instances == 300 and load.failed == 0 and load.rate > 0
    assert [q.name for q in first.queries] == list(bench.QUERY_NAMES)
    for query in first.queries:
        assert len(query.ours.samples_ms) == len(query.orthanc.samples_ms) == 4
        assert query.mismatches == [], query.mismatches
    by_name = {q.name: q for q in first.queries}
    # Keys are drawn from the data: these always match something, so the comparison is not vacuous.
    for name in ("study by PatientID", "StudyDate range + Modality", "series of one study",
                 "instances of one series"):
        assert by_name[name].mean_matches >= 1, name
    assert first.wado is not None and first.wado.same_bytes and first.wado.instances > 1
    assert report.mismatches == []
    # Ours reports where each STOW request's time went; Orthanc sends no Server-Timing.
    assert list(first.ours_load.stages_ms) == ["receive", "parse", "blobs", "queue", "commit", "project"]
    assert first.ours_load.latency_ms > 0 and first.orthanc_load.stages_ms == {}
    text = bench.render(report)
    assert "STOW instances/s" in text and ("PASS" in text or "MISS" in text)
    assert "ours STOW, mean ms per request (its Server-Timing): receive" in text
    json.dumps(report.as_dict())


def test_server_timing_headers_are_averaged_per_stage() -> None:
    means = bench.mean_server_timing(["receive;dur=2.0, parse;dur=10.0", "receive;dur=4.0, parse;dur=20.0"])
    assert means == {"receive": 3.0, "parse": 15.0}


@pytest.mark.slow
def test_second_pass_loads_both_and_compares_qido(tmp_path: Path) -> None:
    require_orthanc()
    args = bench.parse_args(["--instances", "120", "--second-size", "300", "--repeats", "3",
                             "--wado-repeats", "1", "--root", str(tmp_path)])
    report = bench.run(args)
    second = report.second
    assert second is not None and second.instances == 300
    assert second.ours_load is not None and second.orthanc_load is not None
    assert second.orthanc_load.failed == 0
    assert all(q.mismatches == [] for q in second.queries)
    assert any(row["figure"].endswith("@300") and row["target"] == ">= 3x" for row in report.rows())


@pytest.mark.slow
def test_ceiling_variants_take_out_exactly_their_stage(tmp_path: Path) -> None:
    """bench/stow_ceiling.py: no-projection commits the feed but not `instances`; no-commit neither,
    while the bytes are still written; both answer as if stored (that is what they measure)."""
    from bench.stow_ceiling import VARIANTS
    from dicomlake.samples import generate_sample_drop
    from dicomlake.store import Lakehouse
    from dicomlake.store.read import scan

    files = generate_sample_drop(tmp_path / "drop", 40, seed=3, layout="flat").files
    expected = {"no-projection": (40, 0), "no-commit": (0, 0)}
    for variant in VARIANTS:
        root = tmp_path / variant
        with bench.start_ours(root, 1, ceiling=variant) as server:
            load = bench.stow(server.base + "/dicomweb/studies", server.headers, files, 20, 2)
        assert load.failed == 0 and "parse" in load.stages_ms
        tenant = Lakehouse(root).tenant()
        rows = tuple(scan(tenant.table(name), ["seq"]).num_rows for name in ("changes", "instances"))
        assert rows == expected[variant], variant
        assert sum(1 for p in (root / "tenants/default/blobs").rglob("*") if p.is_file()) == 40
