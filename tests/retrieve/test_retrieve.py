"""dicomlake.retrieve without HTTP: locating, metadata, frames (native, 1-bit, big endian), transcoding."""

from __future__ import annotations

import hashlib
import io
import json
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomlake.ingest.stow import InstanceStore, UploadedPart
from dicomlake.retrieve import (
    InstanceLocator,
    InvalidRequest,
    NotAcceptable,
    NotFound,
    decoded_frames,
    metadata_json,
    parse_frame_numbers,
    stored_frames,
    transcoded,
    versions_tag,
)
from dicomlake.store import Lakehouse
from tests.retrieve.dicom_builder import encode, from_testdata, header, instance, uid


@pytest.fixture
def tenant(tmp_path):
    return Lakehouse(tmp_path / "lake").tenant("r")


def store(tenant, *files: bytes) -> list[pydicom.Dataset]:
    parts = []
    for data in files:
        path = tenant.blobs.staging_dir() / f"{uid()}.part"
        path.write_bytes(data)
        parts.append(UploadedPart(path, len(data), hashlib.sha256(data).hexdigest()))
    assert InstanceStore(tenant).store(parts).http_status in (200, 202)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [pydicom.dcmread(io.BytesIO(data)) for data in files]


def test_locate_orders_by_series_and_instance_number_and_refuses_bad_uids(tenant):
    study, s1 = uid(), uid()
    files = [instance(study, s1) for _ in range(3)]
    store(tenant, *reversed(files))
    locator = InstanceLocator(tenant)
    found = locator.find(study)
    numbers = [f.instance_number for f in found]
    assert numbers == sorted(numbers) and len(found) == 3
    assert locator.find(study, s1, found[1].sop_instance_uid) == [found[1]]
    with pytest.raises(NotFound):
        locator.find(uid())
    with pytest.raises(InvalidRequest):
        locator.find("1.2' OR '1'='1")
    # The locator follows new commits without being rebuilt.
    store(tenant, instance(study, s1))
    assert len(locator.find(study)) == 4


def test_metadata_is_the_stored_json_with_absolute_bulk_uris(tenant):
    ds = header(uid(), uid(), uid())
    ds.add_new(0x00420011, "OB", b"\1" * 5000)
    ds.PixelData = b"\0" * 128
    store(tenant, encode(ds))
    (found,) = InstanceLocator(tenant).find(ds.StudyInstanceUID, with_json=True)
    (meta,) = json.loads(metadata_json([found], "http://h/dicomweb"))
    assert meta["00420011"] == {"vr": "OB", "BulkDataURI": (
        f"http://h/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
        f"{ds.SOPInstanceUID}/bulkdata/00420011")}
    assert versions_tag([found], "a") != versions_tag([found], "b")


def test_native_frames_including_one_bit_and_big_endian(tenant):
    bits = np.random.default_rng(1).integers(0, 2, size=(3, 5, 5), dtype=np.uint8)  # 25 bits a frame
    ds = header(uid(), uid(), uid(), rows=5, columns=5, frames=3, bits=1)
    ds.PixelData = np.packbits(bits.ravel(), bitorder="little").tobytes()
    (one_bit,) = store(tenant, encode(ds))
    (found,) = InstanceLocator(tenant).find(one_bit.StudyInstanceUID)
    for frame in stored_frames(tenant, found, [1, 2, 3]):
        unpacked = np.unpackbits(np.frombuffer(frame.data, np.uint8), bitorder="little")[:25]
        assert unpacked.tolist() == bits[frame.number - 1].ravel().tolist()

    (big,) = store(tenant, from_testdata("rtdose_expb.dcm"))
    (found,) = InstanceLocator(tenant).find(big.StudyInstanceUID)
    frames = stored_frames(tenant, found, [2, 15])
    assert [f.data for f in frames] == [big.pixel_array[i].astype("<u4").tobytes() for i in (1, 14)]
    with pytest.raises(NotFound):
        stored_frames(tenant, found, [16])


def test_decoded_frames_and_transcoding_match_pydicom(tenant):
    (rle,) = store(tenant, from_testdata("SC_rgb_rle_2frame.dcm"))
    (found,) = InstanceLocator(tenant).find(rle.StudyInstanceUID)
    decoded = decoded_frames(tenant, found, [2])
    expected = pydicom.pixels.pixel_array(get_testdata_file("SC_rgb_rle_2frame.dcm"), index=1)
    assert decoded[0].data == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    with transcoded(tenant, found) as handle:
        out = pydicom.dcmread(handle)
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert out.SOPInstanceUID == rle.SOPInstanceUID
    assert np.array_equal(out.pixel_array, rle.pixel_array)


def test_not_decodable_is_not_acceptable(tenant):
    from pydicom.encaps import encapsulate

    ds = header(uid(), uid(), uid(), syntax="1.2.840.10008.1.2.4.92")
    ds.PixelData = encapsulate([b"\0" * 64])
    store(tenant, encode(ds))
    (found,) = InstanceLocator(tenant).find(ds.StudyInstanceUID)
    with pytest.raises(NotAcceptable):
        transcoded(tenant, found)
    with pytest.raises(NotAcceptable):
        decoded_frames(tenant, found, [1])
    assert stored_frames(tenant, found, [1])[0].data == b"\0" * 64  # as stored it is fine


@pytest.mark.parametrize("text", ["0", "1,", "a", "-1", ""])
def test_frame_numbers_are_positive_integers(text):
    with pytest.raises(InvalidRequest):
        parse_frame_numbers(text)
    assert parse_frame_numbers("1, 3,5") == [1, 3, 5]
