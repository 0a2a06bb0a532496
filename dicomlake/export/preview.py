"""A small PNG of one exported frame, for a look at an export (the Dagster asset shows it).

It renders what was written, not the stored instance: the first frame of the first Parquet row (its
window/rescale columns) or of the first DICOM copy, through the same windowing as WADO-RS
/rendered (dicomlake.retrieve.rendered.to_8bit). Formats it does not know are passed over.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from dicomlake.export.run import MANIFEST
from dicomlake.retrieve.rendered import to_8bit

MAX_SIDE = 256


def _parquet_frame(path: Path) -> tuple[np.ndarray, dict[str, Any]] | None:
    import pyarrow.parquet as pq

    from dicomlake.export.parquet import tensor_to_numpy

    row = pq.ParquetFile(path).read_row_group(0).slice(0, 1)
    meta = row.drop_columns([c for c in ("pixels", "shape", "dtype") if c in row.column_names]).to_pylist()[0]
    if "shape" in row.column_names:
        pixels = np.frombuffer(row.column("pixels")[0].as_py(), dtype=row.column("dtype")[0].as_py())
        pixels = pixels.reshape(row.column("shape")[0].as_py())
    else:
        pixels = tensor_to_numpy(row.column("pixels"))[0]
    photometric = str(meta.get("photometric_interpretation") or "MONOCHROME2").upper()
    if photometric == "PALETTE COLOR":  # its lookup tables are not in the Parquet columns
        return None
    if meta.get("frame_number") is None and (meta.get("number_of_frames") or 1) > 1:
        pixels = pixels[0]
    header = {"PhotometricInterpretation": photometric, "BitsStored": meta.get("bits_stored"),
              "RescaleSlope": meta.get("rescale_slope"), "RescaleIntercept": meta.get("rescale_intercept"),
              "WindowCenter": meta.get("window_center"), "WindowWidth": meta.get("window_width")}  # fmt: skip
    return pixels, {k: v for k, v in header.items() if v is not None}


def _dicom_frame(path: Path) -> tuple[np.ndarray, Any]:
    import pydicom

    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    return pixels, ds


def sample_png(out: str | Path, max_side: int = MAX_SIDE) -> bytes | None:
    """A PNG (at most `max_side` pixels a side) of one exported frame, or None when there is none."""
    from PIL import Image

    out = Path(out)
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    for entry in manifest["files"]:
        path = out / entry["path"]
        try:
            if path.suffix == ".parquet":
                found = _parquet_frame(path)
            elif path.suffix == ".dcm":
                found = _dicom_frame(path)
            else:
                continue
        except Exception:  # an unreadable file: try the next one (the manifest's sha256 tells the truth)
            continue
        if found is None:
            continue
        pixels = to_8bit(*found)
        image = Image.fromarray(pixels, mode="RGB" if pixels.ndim == 3 else "L")
        image.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    return None
