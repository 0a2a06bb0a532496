"""Format `parquet`: one row per instance (or per frame), metadata columns and the pixels.

Pixels are an `arrow.fixed_shape_tensor` column when every array of the file has one shape and
dtype (the exporter groups files by shape, so it is the usual case), else `pixels` (binary, C
order) + `shape` (list) + `dtype` (numpy name). Row groups hold about ROW_GROUP_BYTES of pixels, so
readers can stream a file group by group.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_BYTES = 64 * 1024 * 1024
COMPRESSION = "lz4"  # pixels compress little; lz4 costs a third of zstd's time here
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
NO_PIXEL_DATA = "the instance has no pixel data"


class NoPixelData(ValueError):
    """The instance holds no pixel data element (an SR, or an image header without its pixels):
    the exporters count it as skipped, not failed."""

    def __init__(self, message: str = NO_PIXEL_DATA) -> None:  # one argument: it pickles
        super().__init__(message)


def has_pixel_data(ds: Any) -> bool:
    return any(keyword in ds for keyword in PIXEL_KEYWORDS)


@dataclass
class Decoded:
    """One instance: its metadata and its pixel array as pydicom decodes it."""

    metadata: dict[str, Any]
    pixels: np.ndarray
    frames: int


def _float(value: Any) -> float | None:
    values = _floats(value)  # multi-valued (e.g. several windows): the first one
    return values[0] if values else None


def _floats(value: Any) -> list[float] | None:
    if value is None or value == "":
        return None
    many = hasattr(value, "__iter__") and not isinstance(value, str)
    return [float(v) for v in (value if many else [value])]


def decode_instance(source: str | bytes, deid: Any = None) -> Decoded:
    """Parse and decode one Part-10 file (a path or its bytes) through pydicom's pixel backends.

    With `deid` (a dicomlake.deid.Deidentifier) every metadata value is read from the de-identified
    dataset (dicomlake.export.identity); the pixels are the same either way.
    """
    import pydicom

    from dicomlake.export.identity import header, identity

    ds = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source)
    if not has_pixel_data(ds):
        raise NoPixelData()
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    ds = header(ds, deid)
    metadata = {
        **identity(ds),
        "patient_age": str(ds.get("PatientAge", "") or "") or None,
        "patient_sex": str(ds.get("PatientSex", "") or "") or None,
        "modality": str(ds.get("Modality", "") or "") or None,
        "body_part_examined": str(ds.get("BodyPartExamined", "") or "") or None,
        "pixel_spacing": _floats(ds.get("PixelSpacing")),
        "image_orientation_patient": _floats(ds.get("ImageOrientationPatient")),
        "image_position_patient": _floats(ds.get("ImagePositionPatient")),
        "rescale_slope": _float(ds.get("RescaleSlope")),
        "rescale_intercept": _float(ds.get("RescaleIntercept")),
        "window_center": _float(ds.get("WindowCenter")),
        "window_width": _float(ds.get("WindowWidth")),
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")) or None,
        "bits_allocated": int(ds.BitsAllocated) if "BitsAllocated" in ds else None,
        "bits_stored": int(ds.BitsStored) if "BitsStored" in ds else None,
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "number_of_frames": frames,
    }
    return Decoded(metadata, np.ascontiguousarray(pixels), frames)


METADATA_SCHEMA = pa.schema([
    ("study_instance_uid", pa.string()), ("series_instance_uid", pa.string()),
    ("sop_instance_uid", pa.string()), ("frame_number", pa.int32()), ("sha256", pa.string()),
    ("patient_id", pa.string()), ("study_date", pa.string()),
    ("patient_age", pa.string()), ("patient_sex", pa.string()), ("modality", pa.string()),
    ("body_part_examined", pa.string()), ("pixel_spacing", pa.list_(pa.float64())),
    ("image_orientation_patient", pa.list_(pa.float64())), ("image_position_patient", pa.list_(pa.float64())),
    ("rescale_slope", pa.float64()), ("rescale_intercept", pa.float64()), ("window_center", pa.float64()),
    ("window_width", pa.float64()), ("photometric_interpretation", pa.string()),
    ("bits_allocated", pa.int32()), ("bits_stored", pa.int32()), ("rows", pa.int32()),
    ("columns", pa.int32()), ("number_of_frames", pa.int32()),
])  # fmt: skip


def rows_of(decoded: Decoded, sha256: str, per_frame: bool) -> list[tuple[dict[str, Any], np.ndarray]]:
    """(metadata row, pixel array) pairs: one per instance, or one per frame with `per_frame`."""
    base = {**decoded.metadata, "sha256": sha256}
    if not per_frame:
        return [({**base, "frame_number": None}, decoded.pixels)]
    frames = decoded.pixels if decoded.frames > 1 else decoded.pixels[np.newaxis]
    return [({**base, "frame_number": i + 1}, np.ascontiguousarray(f)) for i, f in enumerate(frames)]


def shape_key(array: np.ndarray) -> str:
    """The name of an array's file group, e.g. 'uint16-512x512'."""
    return f"{array.dtype.name}-{'x'.join(str(n) for n in array.shape)}"


def pixel_columns(arrays: list[np.ndarray]) -> dict[str, pa.Array]:
    """A fixed-shape tensor column when shapes and dtypes agree, else binary + shape + dtype."""
    if arrays and all(a.shape == arrays[0].shape and a.dtype == arrays[0].dtype for a in arrays):
        first = arrays[0]
        tensor_type = pa.fixed_shape_tensor(pa.from_numpy_dtype(first.dtype), list(first.shape))
        flat = pa.array(np.concatenate([a.reshape(-1) for a in arrays]))
        storage = pa.FixedSizeListArray.from_arrays(flat, first.size)
        return {"pixels": pa.ExtensionArray.from_storage(tensor_type, storage)}
    return {
        "pixels": pa.array([a.tobytes() for a in arrays], pa.large_binary()),
        "shape": pa.array([list(a.shape) for a in arrays], pa.list_(pa.int32())),
        "dtype": pa.array([a.dtype.name for a in arrays], pa.string()),
    }


def build_table(rows: list[tuple[dict[str, Any], np.ndarray]]) -> pa.Table:
    metadata = pa.Table.from_pylist([r for r, _ in rows], schema=METADATA_SCHEMA)
    for name, column in pixel_columns([a for _, a in rows]).items():
        metadata = metadata.append_column(name, column)
    return metadata


def write_table(table: pa.Table, path: Path) -> None:
    """Write atomically (temp file, then rename) with row groups of about ROW_GROUP_BYTES."""
    row_bytes = max(1, table.column("pixels").nbytes // max(1, table.num_rows))
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=max(1, ROW_GROUP_BYTES // row_bytes), compression=COMPRESSION)
    tmp.replace(path)


def tensor_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed_shape_tensor column as one (rows, *shape) numpy array."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    return np.concatenate([c.to_numpy_ndarray() for c in chunks]) if chunks else np.empty(0)
