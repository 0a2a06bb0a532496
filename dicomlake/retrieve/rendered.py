"""Rendered frames (WADO-RS /rendered): 8-bit PNG or JPEG for people and thumbnails.

Grayscale: modality LUT (rescale slope/intercept), then the first window of the header (Window
Center/Width, linear function of PS3.3 C.11.2.1.2.1), else the frame's own min..max; MONOCHROME1
is inverted so that bright means dense as everywhere else. For an enhanced multi-frame image both
come from the frame's functional groups (PS3.3 C.7.6.16): its Per-Frame Functional Groups item,
else the Shared one, else the top-level attributes of a classic image. Colour: RGB as decoded (pydicom turns
YBR into RGB), palette colour through its lookup tables, scaled to 8 bits when stored wider.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from dicomlake.dicom.functional_groups import functional_value
from dicomlake.retrieve.instances import InvalidRequest, StoredInstance
from dicomlake.retrieve.pixels import decode_frame
from dicomlake.store.lakehouse import TenantStore

PNG = "image/png"
JPEG = "image/jpeg"
RENDERED_MEDIA_TYPES = (PNG, JPEG)
DEFAULT_QUALITY = 90


def _header(tenant: TenantStore, instance: StoredInstance):
    import pydicom

    with tenant.blobs.open(instance.blob_key) as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(handle, stop_before_pixels=True)


def _first(value, default=None):
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return float(value[0]) if len(value) else default
    return float(value)


# Functional group macros holding a frame's display transform (PS3.3 C.7.6.16.2.9, C.7.6.16.2.10).
_MACRO_OF = {
    "RescaleSlope": "PixelValueTransformationSequence",  # (0028,9145)
    "RescaleIntercept": "PixelValueTransformationSequence",
    "WindowCenter": "FrameVOILUTSequence",  # (0028,9132)
    "WindowWidth": "FrameVOILUTSequence",
}


def frame_value(ds, keyword: str, frame_number: int = 1):
    """`keyword` (one of _MACRO_OF) as it applies to frame `frame_number` (1-based): from its
    functional groups (per-frame, else shared), else the top-level attribute of a classic image."""
    value = functional_value(ds, frame_number - 1, _MACRO_OF[keyword], keyword)
    return ds.get(keyword) if value is None or value == "" else value


def to_8bit(frame: np.ndarray, ds, frame_number: int = 1) -> np.ndarray:
    """Frame `frame_number` (1-based) of `ds` as uint8 for display (see the module docstring)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        frame = apply_color_lut(frame, ds)
        photometric = "RGB"
    if frame.ndim == 3:  # colour samples
        data = frame.astype(np.float64)
        top = float(2 ** int(ds.get("BitsStored", 8) or 8) - 1) if frame.dtype != np.uint8 else 255.0
        return np.clip(np.rint(data * (255.0 / max(top, 1.0))), 0, 255).astype(np.uint8)
    data = frame.astype(np.float64)
    slope = _first(frame_value(ds, "RescaleSlope", frame_number), 1.0)
    intercept = _first(frame_value(ds, "RescaleIntercept", frame_number), 0.0)
    data = data * slope + intercept
    center = _first(frame_value(ds, "WindowCenter", frame_number))
    width = _first(frame_value(ds, "WindowWidth", frame_number))
    if center is not None and width is not None and width == 1:
        # PS3.3 C.11.2.1.2.1 with w = 1: the linear part is empty, a threshold at c - 0.5.
        scaled = np.where(data > center - 0.5, 255.0, 0.0)
    elif center is not None and width is not None and width > 1:
        scaled = ((data - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    else:
        low, high = float(data.min()), float(data.max())
        scaled = (data - low) * (255.0 / (high - low)) if high > low else np.zeros_like(data)
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def render(
    tenant: TenantStore,
    instance: StoredInstance,
    frame: int = 1,
    media_type: str = PNG,
    quality: int | None = None,
) -> bytes:
    """One frame rendered as PNG or JPEG (`quality` 1-100 for JPEG)."""
    from PIL import Image

    if media_type not in RENDERED_MEDIA_TYPES:
        raise InvalidRequest(f"rendered media types are {', '.join(RENDERED_MEDIA_TYPES)}, not {media_type}")
    if quality is not None and not 1 <= quality <= 100:
        raise InvalidRequest(f"quality is 1 to 100, not {quality}")
    pixels = to_8bit(decode_frame(tenant, instance, frame), _header(tenant, instance), frame)
    image = Image.fromarray(pixels, mode="RGB" if pixels.ndim == 3 else "L")
    out = io.BytesIO()
    if media_type == JPEG:
        image.save(out, format="JPEG", quality=quality or DEFAULT_QUALITY)
    else:
        image.save(out, format="PNG")
    return out.getvalue()
