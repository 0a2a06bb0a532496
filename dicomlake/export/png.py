"""Format `png`: one PNG per frame, `<out>/<study>/<series>/<sop>.png` (multi-frame: `<sop>_<frame>.png`).

8 bits (default): rendered exactly as WADO-RS /rendered renders (dicomlake.retrieve.rendered.to_8bit):
rescale, then the header's first window (WindowCenter/Width; for an enhanced multi-frame image the
frame's own functional groups), else the frame's min..max; MONOCHROME1 inverted; colour kept RGB.
16 bits (`png_bits=16`, grayscale): the stored values, no rescale and no window, mapped linearly
from their BitsStored range (signed values offset by 2**(BitsStored-1)) onto 0..65535, so
stored = png * (2**BitsStored - 1) / 65535 - offset; the manifest entry records `stored_bits` and
`signed`. Colour frames are written as 8-bit RGB in both modes (the entry says `bits: 8`).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

BITS = (8, 16)


def frames_of(ds: Dataset) -> list[np.ndarray]:
    """The decoded frames of one instance, each (rows, columns) or (rows, columns, samples)."""
    from dicomlake.export.parquet import NoPixelData, has_pixel_data

    if not has_pixel_data(ds):
        raise NoPixelData()
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return list(pixels) if frames > 1 else [pixels]


def to_16bit(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored grayscale values onto 0..65535 (see the module docstring)."""
    stored = int(ds.get("BitsStored", 16) or 16)
    offset = 2 ** (stored - 1) if int(ds.get("PixelRepresentation", 0) or 0) == 1 else 0
    top = 2**stored - 1
    scaled = (frame.astype(np.float64) + offset) * (65535.0 / top)
    return np.clip(np.rint(scaled), 0, 65535).astype(np.uint16)


def encode(pixels: np.ndarray) -> bytes:
    """A PNG of a uint8 (gray or RGB) or uint16 (gray) array, through Pillow."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="PNG")
    return out.getvalue()


def render(frame: np.ndarray, ds: Dataset, bits: int, frame_number: int = 1) -> tuple[np.ndarray, int]:
    """Frame `frame_number` (1-based) as the array written to PNG and its bit depth."""
    from dicomlake.retrieve.rendered import to_8bit

    grayscale = frame.ndim == 2 and str(ds.get("PhotometricInterpretation", "")).upper() != "PALETTE COLOR"
    if bits == 16 and grayscale:
        return to_16bit(frame, ds), 16
    return to_8bit(frame, ds, frame_number), 8


def export_instance(ds: Dataset, out: Path, bits: int = 8, deid: Any = None) -> list[dict[str, Any]]:
    """Write every frame of `ds` as PNG under `out`; the manifest entries of the files."""
    from dicomlake.export.identity import header, identity

    if bits not in BITS:
        raise ValueError(f"PNG bits are {BITS}, not {bits}")
    ids = identity(header(ds, deid))
    frames = frames_of(ds)
    folder = out / ids["study_instance_uid"] / ids["series_instance_uid"]
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for number, frame in enumerate(frames, start=1):
        pixels, depth = render(frame, ds, bits, number)
        data = encode(pixels)
        name = ids["sop_instance_uid"] + (f"_{number}" if len(frames) > 1 else "")
        path = folder / f"{name}.png"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        entry = {"path": str(path.relative_to(out)), "sha256": hashlib.sha256(data).hexdigest(), "rows": 1,
                 "sop_instance_uid": ids["sop_instance_uid"], "frame": number, "bits": depth}  # fmt: skip
        if depth == 16:
            entry["stored_bits"] = int(ds.get("BitsStored", 16) or 16)
            entry["signed"] = int(ds.get("PixelRepresentation", 0) or 0) == 1
        entries.append(entry)
    return entries
