"""bench/export.py at tiny scale: it runs end to end and exports every generated instance."""

from __future__ import annotations

from pathlib import Path

from bench import export as bench


def test_export_bench_runs_and_exports_everything(tmp_path: Path) -> None:
    report = bench.run(instances=30, workers=1, seed=2, root=tmp_path)
    assert report.exported == 30
    assert report.pixel_mb > 0 and report.reference_mb_s > 0 and report.ours_mb_s > 0
    assert "ratio ours / reference" in bench.render(report)
    assert sum(1 for _ in (tmp_path / "out").glob("*/*.parquet")) >= 1
