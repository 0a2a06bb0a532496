from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dicomlake.changefeed.reader import ChangeFeed
from dicomlake.export import Selection, SelectionError, export, resolve
from dicomlake.export.parquet import pixel_columns, tensor_to_numpy
from tests.export.conftest import ExportLake


def _all_studies(lake: ExportLake) -> tuple[str, ...]:
    return tuple(sorted({r["study_instance_uid"] for r in lake.instances()}))


@pytest.fixture(scope="module")
def exported(lake: ExportLake, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parquet")
    export(lake.tenant, Selection(uids=_all_studies(lake)), out, "parquet", chunk_instances=16)
    return out


def test_tensors_equal_pydicom_pixel_array(lake: ExportLake, exported: Path) -> None:
    by_sop = {r["sop_instance_uid"]: r for r in lake.instances()}
    seen = set()
    for path in sorted(exported.glob("*/*.parquet")):
        table = pq.read_table(path)
        assert isinstance(table.schema.field("pixels").type, pa.FixedShapeTensorType)
        pixels = tensor_to_numpy(table.column("pixels"))
        for i, row in enumerate(table.drop_columns(["pixels"]).to_pylist()):
            source = lake.source(by_sop[row["sop_instance_uid"]]["blob_key"])
            assert pixels[i].dtype == source.pixel_array.dtype
            np.testing.assert_array_equal(pixels[i], source.pixel_array)
            assert row["modality"] == source.Modality
            assert row["rows"] == source.Rows and row["columns"] == source.Columns
            assert row["pixel_spacing"] == [float(v) for v in source.get("PixelSpacing", [])] or not row[
                "pixel_spacing"]  # fmt: skip
            assert row["sha256"] == by_sop[row["sop_instance_uid"]]["sha256"]
            seen.add(row["sop_instance_uid"])
    assert seen == set(by_sop) - {lake.broken_sop}


def test_manifest_and_errors(lake: ExportLake, exported: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["counts"] == {"exported": 40, "skipped": 0, "failed": 1}
    assert manifest["delta_versions"]["instances"] == lake.tenant.table("instances").version()
    assert manifest["change_feed_seq"] == ChangeFeed(lake.tenant).latest_sequence()
    for entry in manifest["files"]:
        data = (exported / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert pq.read_metadata(exported / entry["path"]).num_rows == entry["rows"]
    assert sum(f["rows"] for f in manifest["files"]) == 40
    errors = [json.loads(line) for line in (exported / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["identifier"].endswith("/" + lake.broken_sop)
    assert errors[0]["error"]


def test_files_grouped_by_shape(exported: Path) -> None:
    folders = {p.parent.name for p in exported.glob("*/*.parquet")}
    assert len(folders) > 1  # the sample mix has several image sizes
    for folder in folders:
        dtype, shape = folder.split("-")
        for path in (exported / folder).glob("*.parquet"):
            tensor = pq.read_schema(path).field("pixels").type
            assert list(tensor.shape) == [int(n) for n in shape.split("x")]
            assert tensor.value_type == pa.from_numpy_dtype(np.dtype(dtype))


def test_polars_reads_the_files(lake: ExportLake, exported: Path) -> None:
    path = sorted(exported.glob("*/*.parquet"))[0]
    frame = pl.read_parquet(path)
    assert frame.height == pq.read_metadata(path).num_rows
    first = frame.row(0, named=True)
    source = lake.source(next(r["blob_key"] for r in lake.instances()
                              if r["sop_instance_uid"] == first["sop_instance_uid"]))  # fmt: skip
    # polars reads the tensor as its storage (a flat fixed-size list): reshape with rows x columns.
    flat = np.array(first["pixels"])
    np.testing.assert_array_equal(flat.reshape(source.pixel_array.shape), source.pixel_array)
    assert first["rows"] * first["columns"] == flat.size // max(1, source.get("SamplesPerPixel", 1))


def test_mixed_shapes_fall_back_to_binary() -> None:
    arrays = [np.arange(6, dtype=np.uint16).reshape(2, 3), np.arange(4, dtype=np.int16).reshape(2, 2)]
    columns = pixel_columns(arrays)
    assert set(columns) == {"pixels", "shape", "dtype"}
    for i, array in enumerate(arrays):
        back = np.frombuffer(columns["pixels"][i].as_py(), dtype=columns["dtype"][i].as_py())
        np.testing.assert_array_equal(back.reshape(columns["shape"][i].as_py()), array)


def test_per_frame_rows(lake: ExportLake, tmp_path: Path) -> None:
    study = _all_studies(lake)[0]
    summary = export(lake.tenant, Selection(uids=(study,)), tmp_path, "parquet", per_frame=True)
    table = pq.read_table(next(tmp_path.glob("*/*.parquet")))
    assert table.column("frame_number").to_pylist()[0] == 1
    assert summary.exported >= 1


def test_filters_and_cohort_select_the_same_instances_as_the_table(lake: ExportLake) -> None:
    rows = lake.instances()
    by_filter = resolve(lake.tenant, Selection(filters={"Modality": "CT"}))
    assert set(by_filter.instances.column("sop_instance_uid").to_pylist()) == {
        r["sop_instance_uid"] for r in rows if r["modality"] == "CT"}  # fmt: skip
    by_cohort = resolve(lake.tenant, Selection(cohort="CT scans", as_of="2026-11-01"))
    assert by_cohort.studies_from_cohort
    studies = set(by_cohort.instances.column("study_instance_uid").to_pylist())
    assert studies == set(by_cohort.studies_from_cohort)
    series = rows[0]
    spec = f"{series['study_instance_uid']}/{series['series_instance_uid']}"
    one = resolve(lake.tenant, Selection(uids=(spec,)))
    assert set(one.instances.column("series_instance_uid").to_pylist()) == {series["series_instance_uid"]}
    with pytest.raises(SelectionError):
        resolve(lake.tenant, Selection(uids=("1.2.3' OR '1'='1",)))


def test_train_loop_with_pyarrow_and_numpy(exported: Path) -> None:
    """Logistic regression, CT vs not, on 16x16 downsampled pixels read back with pyarrow only."""
    features, labels = [], []
    for path in sorted(exported.glob("*/*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(columns=["pixels", "modality"]):
            images = batch.column("pixels").to_numpy_ndarray().astype(np.float32)
            if images.ndim != 3:  # colour or multi-frame: this model takes one grey frame
                continue
            n, h, w = images.shape
            small = images[:, :: max(1, h // 16), :: max(1, w // 16)][:, :16, :16]
            small = np.pad(small, ((0, 0), (0, 16 - small.shape[1]), (0, 16 - small.shape[2])))
            features.append(small.reshape(n, -1))
            labels.append(np.array([m == "CT" for m in batch.column("modality").to_pylist()], np.float32))
    x = np.concatenate(features)
    y = np.concatenate(labels)
    assert 0 < y.sum() < len(y)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    weights, bias = np.zeros(x.shape[1], np.float32), 0.0

    def loss() -> float:
        p = 1 / (1 + np.exp(-(x @ weights + bias)))
        return float(-np.mean(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7)))

    losses = [loss()]
    for _ in range(20):
        p = 1 / (1 + np.exp(-(x @ weights + bias)))
        weights -= 0.1 * x.T @ (p - y) / len(y)
        bias -= 0.1 * float(np.mean(p - y))
        losses.append(loss())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("deid", [False, True], ids=["plain", "deid"])
def test_an_image_header_without_pixel_data_is_skipped(tmp_path: Path, deid: bool) -> None:
    """Rows and Columns but no Pixel Data element: skipped with the reason, as an instance without Rows
    (both decode paths: the row's fast path, and the whole header for de-identification)."""
    from pydicom.uid import generate_uid

    from dicomlake.deid import DeidOptions
    from tests.export.synthetic import base, ingest_folder, set_pixels, write

    study = generate_uid()
    image = base(study, generate_uid())
    set_pixels(image, np.arange(20).reshape(4, 5))
    header_only = base(study, image.SeriesInstanceUID)
    for ds in (image, header_only):
        write(ds, tmp_path / "drop")
    tenant = ingest_folder(tmp_path / "drop", tmp_path / "lake")
    options = DeidOptions(project_key="parquet-no-pixels") if deid else None
    summary = export(tenant, Selection(uids=(study,)), tmp_path / "out", "parquet", deid_options=options)
    assert (summary.exported, summary.skipped, summary.failed) == (1, 1, 0)
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [(e["status"], e["error"]) for e in errors] == [("skipped", "the instance has no pixel data")]
    table = pq.read_table(next((tmp_path / "out").glob("*/*.parquet")))
    np.testing.assert_array_equal(tensor_to_numpy(table.column("pixels"))[0], np.arange(20).reshape(4, 5))
