"""PNG export: one file per frame; 8 bits windowed from the header (as /rendered renders), 16 bits the
stored values (dicomlake/export/png.py's mapping), colour kept RGB; de-identified names; no-pixel
instances skipped with a reason. Every PNG is read back with Pillow."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomlake.deid import Deidentifier, DeidOptions
from dicomlake.export import Selection, export
from dicomlake.samples import TEST_FILES
from dicomlake.store import TenantStore
from tests.export.conftest import ExportLake
from tests.export.synthetic import base, ingest_folder, set_pixels, write

MULTIFRAME_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
KEY = "png-test-project-key"


@dataclass
class PngLake:
    tenant: TenantStore
    studies: tuple[str, ...]
    files: dict[str, Path]  # name -> the file ingested
    no_pixels: tuple[str, ...]  # names of the instances without pixel data

    def ds(self, name: str) -> pydicom.Dataset:
        return pydicom.dcmread(self.files[name])


def _ct(study: str) -> Dataset:
    """A signed CT with a rescale and a soft-tissue window (two windows given: the first counts)."""
    ds = base(study, generate_uid(), rows=16, columns=12)
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.WindowCenter, ds.WindowWidth = ["40", "-600"], ["400", "1500"]
    set_pixels(ds, np.random.default_rng(1).integers(-1000, 3000, size=(16, 12)))
    return ds


def _multiframe(study: str) -> Dataset:
    """Three frames of unsigned 16-bit data with a window (Multi-frame Grayscale Word SC)."""
    ds = base(study, generate_uid(), sop_class=MULTIFRAME_GRAYSCALE_WORD_SC, rows=8, columns=10, signed=False)
    ds.Modality, ds.NumberOfFrames = "OT", 3
    ds.WindowCenter, ds.WindowWidth = "30000", "20001"
    frames = np.random.default_rng(2).integers(0, 65536, size=(3, 8, 10))
    frames[0, 0, :3] = [0, 65535, 30000]  # both ends of the range and the window centre
    set_pixels(ds, frames)
    return ds


def _cr12(study: str) -> Dataset:
    """Unsigned 12 bits stored in 16, MONOCHROME1, no window (the frame's min..max)."""
    ds = base(study, generate_uid(), rows=9, columns=7, signed=False, bits_stored=12)
    ds.Modality, ds.PhotometricInterpretation = "CR", "MONOCHROME1"
    frame = np.random.default_rng(3).integers(0, 4096, size=(9, 7))
    frame[0, :2] = [0, 4095]
    set_pixels(ds, frame)
    return ds


def _signed12(study: str) -> Dataset:
    """Signed 12 bits stored in 16 (-2048..2047), a window around 0."""
    ds = base(study, generate_uid(), rows=6, columns=5, bits_stored=12)
    ds.Modality, ds.WindowCenter, ds.WindowWidth = "MR", "0", "1000"
    frame = np.random.default_rng(4).integers(-2048, 2048, size=(6, 5))
    frame[0, :2] = [-2048, 2047]
    set_pixels(ds, frame)
    return ds


def _header_only(study: str) -> Dataset:
    """An image header (Rows, Columns, bits) whose Pixel Data was left out."""
    return base(study, generate_uid(), rows=4, columns=4)


def _report(study: str) -> Dataset:
    """A Basic Text SR: no Image Pixel module at all."""
    ds = base(study, generate_uid(), sop_class=BASIC_TEXT_SR)
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation"):  # fmt: skip
        delattr(ds, keyword)
    ds.Modality, ds.ValueType = "SR", "CONTAINER"
    return ds


@pytest.fixture(scope="module")
def png_lake(tmp_path_factory: pytest.TempPathFactory) -> PngLake:
    root = tmp_path_factory.mktemp("png")
    drop, study = root / "drop", generate_uid()
    makers = {"ct": _ct, "multiframe": _multiframe, "cr12": _cr12, "signed12": _signed12,
              "header_only": _header_only, "report": _report}  # fmt: skip
    files = {name: write(make(study), drop / name) for name, make in makers.items()}
    # Colour, two frames, 16 bits per sample, RLE: written as 8-bit RGB in both modes.
    files["colour"] = drop / "colour" / "SC_rgb_rle_16bit_2frame.dcm"
    files["colour"].parent.mkdir()
    shutil.copyfile(TEST_FILES / "SC_rgb_rle_16bit_2frame.dcm", files["colour"])
    tenant = ingest_folder(drop, root / "lake")
    studies = (study, str(pydicom.dcmread(files["colour"], stop_before_pixels=True).StudyInstanceUID))
    return PngLake(tenant, studies, files, ("header_only", "report"))


def _export(lake: PngLake, out: Path, bits: int = 8, deid: DeidOptions | None = None) -> dict:
    summary = export(lake.tenant, Selection(uids=lake.studies), out, "png", png_bits=bits, deid_options=deid)
    assert (summary.selected, summary.exported, summary.skipped, summary.failed) == (7, 5, 2, 0)
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def png8(png_lake: PngLake, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("png8")
    return out, _export(png_lake, out, 8)


@pytest.fixture(scope="module")
def png16(png_lake: PngLake, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("png16")
    return out, _export(png_lake, out, 16)


def _frames(ds: pydicom.Dataset) -> list[np.ndarray]:
    pixels = ds.pixel_array
    return list(pixels) if int(ds.get("NumberOfFrames", 1)) > 1 else [pixels]


def _path(ds: pydicom.Dataset, frame: int | None = None) -> str:
    name = str(ds.SOPInstanceUID) + (f"_{frame}" if frame else "")
    return f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{name}.png"


def _read_png(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.mode, np.asarray(image)


def _windowed(frame: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """By hand: rescale, then PS3.3 C.11.2.1.2.1 (linear VOI LUT function, output 0..255) with the
    first WindowCenter/WindowWidth, else the frame's min..max; MONOCHROME1 inverted."""
    x = frame.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    if "WindowCenter" in ds:
        centres, widths = ds.WindowCenter, ds.WindowWidth
        c = float(centres[0] if isinstance(centres, pydicom.multival.MultiValue) else centres)
        w = float(widths[0] if isinstance(widths, pydicom.multival.MultiValue) else widths)
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
        y[x <= c - 0.5 - (w - 1) / 2] = 0
        y[x > c - 0.5 + (w - 1) / 2] = 255
    else:
        y = (x - x.min()) / (x.max() - x.min()) * 255
    y = np.rint(y).astype(np.uint8)
    return 255 - y if ds.PhotometricInterpretation == "MONOCHROME1" else y


def test_one_png_per_frame_with_its_checksum(png_lake: PngLake, png8: tuple[Path, dict]) -> None:
    out, manifest = png8
    expected = {}
    for name in ("ct", "multiframe", "cr12", "signed12", "colour"):
        ds = png_lake.ds(name)
        count = int(ds.get("NumberOfFrames", 1))
        for frame in range(1, count + 1):
            expected[_path(ds, frame if count > 1 else None)] = (str(ds.SOPInstanceUID), frame)
    assert len(expected) == 1 + 3 + 1 + 1 + 2
    assert {str(p.relative_to(out)) for p in out.rglob("*.png")} == set(expected)
    entries = {e["path"]: e for e in manifest["files"]}
    assert set(entries) == set(expected)
    for path, (sop, frame) in expected.items():
        entry = entries[path]
        assert (entry["sop_instance_uid"], entry["frame"], entry["rows"]) == (sop, frame, 1)
        assert entry["sha256"] == hashlib.sha256((out / path).read_bytes()).hexdigest()
    assert manifest["format"] == "png" and manifest["png_bits"] == 8


def test_8bit_is_windowed_from_the_header(png_lake: PngLake, png8: tuple[Path, dict]) -> None:
    out, manifest = png8
    bits = {e["path"]: e["bits"] for e in manifest["files"]}
    for name in ("ct", "multiframe", "cr12", "signed12"):
        ds = png_lake.ds(name)
        frames = _frames(ds)
        for number, frame in enumerate(frames, start=1):
            path = _path(ds, number if len(frames) > 1 else None)
            mode, pixels = _read_png(out / path)
            assert (mode, pixels.dtype, pixels.shape, bits[path]) == ("L", np.uint8, frame.shape, 8)
            np.testing.assert_array_equal(pixels, _windowed(frame, ds), err_msg=path)
    # The window really applies: values below and above it saturate, the centre is mid-grey.
    mode, first = _read_png(out / _path(png_lake.ds("multiframe"), 1))
    assert list(first[0, :3]) == [0, 255, 128]
    mode, cr = _read_png(out / _path(png_lake.ds("cr12")))
    assert list(cr[0, :2]) == [255, 0]  # MONOCHROME1: the lowest value is white


def test_8bit_equals_what_rendered_serves(png_lake: PngLake, png8: tuple[Path, dict]) -> None:
    from dicomlake.retrieve.instances import InstanceLocator
    from dicomlake.retrieve.rendered import render

    out, _ = png8
    locator = InstanceLocator(png_lake.tenant)
    for name in ("ct", "multiframe", "cr12", "signed12", "colour"):
        ds = png_lake.ds(name)
        uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        instance = locator.find(*uids)[0]
        for frame in range(1, instance.frames + 1):
            served = np.asarray(Image.open(io.BytesIO(render(png_lake.tenant, instance, frame))))
            _, exported = _read_png(out / _path(ds, frame if instance.frames > 1 else None))
            np.testing.assert_array_equal(exported, served, err_msg=f"{name} frame {frame}")


def test_16bit_holds_the_stored_values(png_lake: PngLake, png16: tuple[Path, dict]) -> None:
    out, manifest = png16
    entries = {e["path"]: e for e in manifest["files"]}
    assert manifest["png_bits"] == 16

    # Unsigned, 16 bits stored: the PNG is pixel_array itself (no rescale, no window).
    ds = png_lake.ds("multiframe")
    for number, frame in enumerate(_frames(ds), start=1):
        path = _path(ds, number)
        mode, pixels = _read_png(out / path)
        assert mode == "I;16" and pixels.dtype == np.uint16
        np.testing.assert_array_equal(pixels, frame)
        entry = entries[path]
        assert (entry["bits"], entry["stored_bits"], entry["signed"]) == (16, 16, False)

    # Signed (png.py: offset by 2**(BitsStored-1)): 16 bits stored, so png = stored + 32768 exactly.
    ds = png_lake.ds("ct")
    path = _path(ds)
    _, pixels = _read_png(out / path)
    np.testing.assert_array_equal(pixels.astype(np.int64), ds.pixel_array.astype(np.int64) + 32768)
    assert (entries[path]["bits"], entries[path]["stored_bits"], entries[path]["signed"]) == (16, 16, True)

    # 12 bits stored: scaled onto 0..65535 (signed ones offset first); not inverted for MONOCHROME1.
    for name, offset in (("cr12", 0), ("signed12", 2048)):
        ds = png_lake.ds(name)
        _, pixels = _read_png(out / _path(ds))
        stored = ds.pixel_array.astype(np.float64)
        np.testing.assert_array_equal(pixels, np.rint((stored + offset) * 65535 / 4095).astype(np.uint16))
        assert list(pixels[0, :2]) == [0, 65535], name  # both ends of the 12-bit range
        entry = entries[_path(ds)]
        assert (entry["bits"], entry["stored_bits"], entry["signed"]) == (16, 12, offset > 0)

    # The inverse png.py documents gives every stored value back, from the PNG and its manifest entry.
    for name in ("ct", "multiframe", "cr12", "signed12"):
        ds = png_lake.ds(name)
        for number, frame in enumerate(_frames(ds), start=1):
            path = _path(ds, number if len(_frames(ds)) > 1 else None)
            _, pixels = _read_png(out / path)
            np.testing.assert_array_equal(_stored_from_png(pixels, entries[path]), frame, err_msg=path)


def _stored_from_png(pixels: np.ndarray, entry: dict) -> np.ndarray:
    """png.py: stored = png * (2**BitsStored - 1) / 65535 - offset, offset 2**(BitsStored-1) if signed."""
    top = 2 ** entry["stored_bits"] - 1
    offset = 2 ** (entry["stored_bits"] - 1) if entry["signed"] else 0
    return np.rint(pixels.astype(np.float64) * top / 65535 - offset)


@pytest.mark.parametrize("bits", [8, 16])
def test_colour_is_8bit_rgb_in_both_modes(png_lake: PngLake, png8: tuple[Path, dict],
                                          png16: tuple[Path, dict], bits: int) -> None:  # fmt: skip
    out, manifest = png8 if bits == 8 else png16
    ds = png_lake.ds("colour")
    entries = {e["path"]: e for e in manifest["files"]}
    for number, frame in enumerate(_frames(ds), start=1):
        path = _path(ds, number)
        mode, pixels = _read_png(out / path)
        assert mode == "RGB" and entries[path]["bits"] == 8 and "stored_bits" not in entries[path]
        np.testing.assert_array_equal(pixels, np.rint(frame * (255 / 65535)).astype(np.uint8))


def test_instances_without_pixels_are_skipped_with_a_reason(png_lake: PngLake,
                                                            png8: tuple[Path, dict]) -> None:  # fmt: skip
    out, manifest = png8
    assert manifest["counts"] == {"exported": 5, "skipped": 2, "failed": 0}
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    by_sop = {e["identifier"].rsplit("/", 1)[1]: e for e in errors}
    for name in png_lake.no_pixels:
        ds = png_lake.ds(name)
        assert "PixelData" not in ds
        error = by_sop.pop(str(ds.SOPInstanceUID))
        assert error["identifier"] == f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}"
        assert error["status"] == "skipped" and "no pixel data" in error["error"]
        assert not list(out.rglob(f"{ds.SOPInstanceUID}*"))
    assert not by_sop


def test_deidentified_names_use_the_replacement_uids(png_lake: PngLake, tmp_path: Path) -> None:
    options = DeidOptions(project_key=KEY)
    manifest = _export(png_lake, tmp_path / "png", 8, options)
    deid = Deidentifier(options)
    expected, source_uids = set(), set()
    for name in ("ct", "multiframe", "cr12", "signed12", "colour"):
        ds = png_lake.ds(name)
        uids = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
        source_uids |= set(uids)
        study, series, sop = (deid.map_uid(uid) for uid in uids)
        count = int(ds.get("NumberOfFrames", 1))
        names = [f"{sop}_{n}" for n in range(1, count + 1)] if count > 1 else [sop]
        expected |= {f"{study}/{series}/{n}.png" for n in names}
    found = {str(p.relative_to(tmp_path / "png")) for p in (tmp_path / "png").rglob("*.png")}
    assert found == expected == {e["path"] for e in manifest["files"]}
    text = (tmp_path / "png" / "manifest.json").read_text() + (tmp_path / "png" / "errors.jsonl").read_text()
    assert not any(uid in text for uid in source_uids | {str(png_lake.ds(n).SOPInstanceUID)
                                                           for n in png_lake.no_pixels})  # fmt: skip
    assert KEY not in text
    # The same series and instance names as the de-identified DICOM copies of the same instances.
    export(png_lake.tenant, Selection(uids=png_lake.studies), tmp_path / "dcm", "dicom", deid_options=options)
    copies = {str(p.relative_to(tmp_path / "dcm")).removesuffix(".dcm")
              for p in (tmp_path / "dcm").rglob("*.dcm")}  # fmt: skip
    stems = {path.removesuffix(".png").split("_")[0] for path in found}  # UIDs hold no "_"
    assert stems <= copies
    # The pixels are those of the plain export.
    for name in ("ct", "cr12"):
        ds = png_lake.ds(name)
        study, series, sop = (deid.map_uid(str(u)) for u in (ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                                             ds.SOPInstanceUID))  # fmt: skip
        _, pixels = _read_png(tmp_path / "png" / study / series / f"{sop}.png")
        np.testing.assert_array_equal(pixels, _windowed(ds.pixel_array, ds))


def test_sample_lake_pngs_are_windowed_from_each_header(lake: ExportLake, tmp_path: Path) -> None:
    """The sample mix: CT without a window (min..max), MR with one (signed), CR MONOCHROME1 with a
    rescale and a window, US RGB; the undecodable JPEG fails, the rest is one PNG each."""
    studies = tuple(sorted({r["study_instance_uid"] for r in lake.instances()}))
    summary = export(lake.tenant, Selection(uids=studies), tmp_path, "png")
    assert (summary.exported, summary.skipped, summary.failed) == (40, 0, 1)
    modalities = set()
    for row in lake.instances():
        if row["sop_instance_uid"] == lake.broken_sop:
            continue
        ds = lake.source(row["blob_key"])
        mode, pixels = _read_png(tmp_path / _path(ds))
        if ds.PhotometricInterpretation == "RGB":
            assert mode == "RGB"
            np.testing.assert_array_equal(pixels, ds.pixel_array)
        else:
            assert mode == "L"
            np.testing.assert_array_equal(pixels, _windowed(ds.pixel_array, ds), err_msg=ds.Modality)
        modalities.add((ds.Modality, "WindowCenter" in ds))
    assert {("CT", False), ("MR", True), ("CR", True), ("US", False)} <= modalities
    assert len(list(tmp_path.rglob("*.png"))) == 40


def test_8bit_frames_of_an_enhanced_image_use_their_own_windows(tmp_path: Path) -> None:
    from pydicom.sequence import Sequence

    from dicomlake.export.png import export_instance

    def voi(center: float, width: float) -> Dataset:
        window, group = Dataset(), Dataset()
        window.WindowCenter, window.WindowWidth = center, width
        group.FrameVOILUTSequence = Sequence([window])
        return group

    ds = base(generate_uid(), generate_uid(), rows=1, columns=4)
    ds.NumberOfFrames = 2
    ds.SharedFunctionalGroupsSequence = Sequence([voi(150, 100)])
    ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset(), voi(100, 100)])
    set_pixels(ds, np.array([[[0, 100, 150, 200]]] * 2))
    ds = pydicom.dcmread(write(ds, tmp_path / "in"))  # as the exporter reads it: from a file
    entries = export_instance(ds, tmp_path / "out")
    frames = [np.asarray(Image.open(tmp_path / "out" / e["path"])).tolist() for e in entries]
    assert frames == [[[0, 0, 129, 255]], [[0, 129, 255, 255]]]  # shared window, then frame 2's own
