"""WADO-RS over a real socket: instances (as stored, transcoded, 406), metadata + ETag, frames,
rendered images, bulk data; and dicomweb-client storing, searching and retrieving against us."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames

from dicomlake.web.multipart import parse_content_type
from tests.retrieve.dicom_builder import encode, from_testdata, header, instance, uid

TENANT = "wado"
EXPLICIT = "1.2.840.10008.1.2.1"


def read(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def parts_of(response) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/related response (our own reading, independent of the server's writer)."""
    media, params = parse_content_type(response.headers["Content-Type"])
    assert media == "multipart/related", response.headers["Content-Type"]
    delimiter = b"--" + params["boundary"].encode()
    segments = (b"\r\n" + response.content).split(b"\r\n" + delimiter)
    assert segments[-1].startswith(b"--")  # the close delimiter
    parts = []
    for segment in segments[1:-1]:
        assert segment.startswith(b"\r\n")
        head, _, content = segment[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


@pytest.fixture(scope="module")
def dicomweb(server):
    headers = server.auth(TENANT, ["read", "write"])
    base = server.url(f"/tenants/{TENANT}/dicomweb")

    def get(path: str, **kwargs):
        return requests.get(base + path, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)

    def stow(*files: bytes):
        boundary = "b0undary"
        body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f + b"\r\n"
                        for f in files) + f"--{boundary}--\r\n".encode()
        response = requests.post(base + "/studies", data=body, headers={
            **headers, "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
        assert response.status_code == 200, response.text
        return [read(f) for f in files]

    get.stow = stow  # type: ignore[attr-defined]
    get.base = base  # type: ignore[attr-defined]
    get.headers = headers  # type: ignore[attr-defined]
    return get


def path_of(ds: pydicom.Dataset) -> str:
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_study_round_trip_as_stored_is_byte_identical(dicomweb):
    study = uid()
    files = [instance(study, uid()), from_testdata("JPEG2000.dcm", study), from_testdata("rtdose.dcm", study)]
    dicomweb.stow(*files)
    response = dicomweb(f"/studies/{study}",
                        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert response.status_code == 200
    received = [content for _, content in parts_of(response)]
    assert sorted(received) == sorted(files)
    syntaxes = {h["content-type"].split("transfer-syntax=")[1] for h, _ in parts_of(response)}
    assert syntaxes == {EXPLICIT, "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2"}


def test_default_transfer_syntax_is_explicit_vr_little_endian(dicomweb):
    (ds,) = dicomweb.stow(from_testdata("JPEG2000.dcm"))
    for accept in (None, f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}'):
        response = dicomweb(path_of(ds), headers={"Accept": accept} if accept else {})
        assert response.status_code == 200
        ((headers, content),) = parts_of(response)
        assert headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT}"
        got = read(content)
        assert got.file_meta.TransferSyntaxUID == EXPLICIT
        assert got.SOPInstanceUID == ds.SOPInstanceUID
        assert np.array_equal(got.pixel_array, ds.pixel_array)  # lossless: the same pixels


def test_series_of_implicit_and_big_endian_is_transcoded(dicomweb):
    study, series = uid(), uid()
    files = [from_testdata("MR_small_implicit.dcm", study, series), from_testdata("MR_small_bigendian.dcm",
                                                                                  study, series)]
    originals = dicomweb.stow(*files)
    response = dicomweb(f"/studies/{study}/series/{series}")
    got = sorted((read(c) for _, c in parts_of(response)), key=lambda d: d.SOPInstanceUID)
    for ds, original in zip(got, sorted(originals, key=lambda d: d.SOPInstanceUID), strict=True):
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT
        assert np.array_equal(ds.pixel_array, original.pixel_array)


def test_406_when_the_pixel_data_cannot_be_decoded(dicomweb):
    ds = header(uid(), uid(), uid(), syntax="1.2.840.10008.1.2.4.92")  # JPEG 2000 part 2: no decoder here
    ds.PixelData = encapsulate([b"\xff\x0a" + b"\0" * 62])
    data = encode(ds)
    dicomweb.stow(data)
    assert dicomweb(path_of(ds)).status_code == 406
    assert dicomweb(f"/studies/{ds.StudyInstanceUID}").status_code == 406
    stored = dicomweb(path_of(ds), headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                      "transfer-syntax=*"})
    assert stored.status_code == 200 and parts_of(stored)[0][1] == data
    other = dicomweb(path_of(ds), headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                     "transfer-syntax=1.2.840.10008.1.2.4.50"})
    assert other.status_code == 406


def test_unknown_uids_are_404_and_bad_ones_400(dicomweb):
    assert dicomweb(f"/studies/{uid()}").status_code == 404
    assert dicomweb(f"/studies/{uid()}/metadata").status_code == 404
    assert dicomweb(f"/studies/{uid()}/series/{uid()}/instances/{uid()}/frames/1").status_code == 404
    assert dicomweb("/studies/1.2.x'--").status_code == 400


def test_metadata_etag_and_304(dicomweb):
    ds = header(uid(), uid(), uid())
    ds.add_new(0x00420011, "OB", bytes(range(256)) * 16)  # a large binary value: left to bulk data
    ds.PixelData = b"\0" * 128
    dicomweb.stow(encode(ds))
    response = dicomweb(f"/studies/{ds.StudyInstanceUID}/metadata")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom+json"
    (meta,) = response.json()
    assert meta["00080018"]["Value"] == [ds.SOPInstanceUID]
    uri = meta["00420011"]["BulkDataURI"]
    assert uri == f"{dicomweb.base}{path_of(ds)}/bulkdata/00420011"
    bulk = requests.get(uri, headers=dicomweb.headers)
    assert parts_of(bulk)[0][1] == bytes(range(256)) * 16
    etag = response.headers["ETag"]
    again = dicomweb(f"/studies/{ds.StudyInstanceUID}/metadata", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag
    # A new version of the instance changes the ETag.
    ds.PatientID = "P-other"
    dicomweb.stow(encode(ds))
    changed = dicomweb(f"/studies/{ds.StudyInstanceUID}/metadata", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.json()[0]["00100020"]["Value"] == ["P-other"]
    series_level = dicomweb(f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata")
    instance_level = dicomweb(path_of(ds) + "/metadata")
    assert series_level.json() == instance_level.json() == changed.json()


def test_frames_of_uncompressed_multiframe_equal_pydicom(dicomweb):
    (ds,) = dicomweb.stow(from_testdata("rtdose.dcm"))  # 15 frames, implicit VR, 32 bits
    response = dicomweb(path_of(ds) + "/frames/1,3,15")
    assert response.status_code == 200
    parts = parts_of(response)
    octets = f"application/octet-stream; transfer-syntax={EXPLICIT}"
    assert [h["content-type"] for h, _ in parts] == [octets] * 3
    pixels = ds.pixel_array
    assert [c for _, c in parts] == [pixels[i].astype("<u4").tobytes() for i in (0, 2, 14)]
    assert dicomweb(path_of(ds) + "/frames/16").status_code == 404
    assert dicomweb(path_of(ds) + "/frames/0").status_code == 400
    assert dicomweb(path_of(ds) + "/frames/a").status_code == 400


@pytest.mark.parametrize(("name", "media"), [("rtdose_rle.dcm", "image/dicom-rle"),
                                             ("examples_ybr_color.dcm", "image/jpeg")])
def test_frames_of_compressed_multiframe_are_the_encapsulated_frames(dicomweb, name, media):
    (ds,) = dicomweb.stow(from_testdata(name))
    count = int(ds.NumberOfFrames)
    expected = list(generate_frames(ds.PixelData, number_of_frames=count))
    wanted = [1, 2, count]
    response = dicomweb(path_of(ds) + f"/frames/{','.join(map(str, wanted))}")
    assert response.status_code == 200
    parts = parts_of(response)
    syntax = ds.file_meta.TransferSyntaxUID
    assert {h["content-type"] for h, _ in parts} == {f"{media}; transfer-syntax={syntax}"}
    assert [c for _, c in parts] == [expected[n - 1] for n in wanted]
    # Decoded on request, as application/octet-stream in explicit VR little endian:
    decoded = dicomweb(path_of(ds) + "/frames/2", headers={
        "Accept": f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT}'})
    assert decoded.status_code == 200
    frame = pydicom.pixels.pixel_array(get_testdata_file(name), index=1)
    assert parts_of(decoded)[0][1] == frame.astype(frame.dtype.newbyteorder("<")).tobytes()
    assert dicomweb(path_of(ds) + "/frames/1", headers={
        "Accept": 'multipart/related; type="image/jp2"'}).status_code == 406


def test_rendered_png_and_jpeg(dicomweb):
    (mono,) = dicomweb.stow(from_testdata("CT_small.dcm"))
    png = dicomweb(path_of(mono) + "/rendered")
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.size == (mono.Columns, mono.Rows) and image.mode == "L"
    jpeg = dicomweb(path_of(mono) + "/rendered", params={"quality": "30"}, headers={"Accept": "image/jpeg"})
    assert jpeg.headers["Content-Type"] == "image/jpeg"
    best = dicomweb(path_of(mono) + "/rendered", params={"quality": "100"}, headers={"Accept": "image/jpeg"})
    assert len(jpeg.content) < len(best.content)
    assert Image.open(io.BytesIO(jpeg.content)).size == (mono.Columns, mono.Rows)
    (color,) = dicomweb.stow(from_testdata("examples_ybr_color.dcm"))
    frame = dicomweb(path_of(color) + "/frames/30/rendered")
    assert frame.status_code == 200
    rgb = Image.open(io.BytesIO(frame.content))
    assert rgb.size == (color.Columns, color.Rows) and rgb.mode == "RGB"
    assert dicomweb(path_of(mono) + "/rendered", headers={"Accept": "image/gif"}).status_code == 406
    assert dicomweb(path_of(mono) + "/rendered", params={"quality": "0"}).status_code == 400


def test_rendering_uses_the_window_and_inverts_monochrome1(dicomweb):
    pixels = np.array([[0, 100, 200, 300]] * 4, dtype=np.uint16)
    study = uid()
    # Window 150/100: 100 and below -> 0, above 199 -> 255, 150 -> 129 (PS3.3 C.11.2.1.2.1)
    ramp = np.array([[0, 100, 150, 200]] * 4)
    windowed = instance(study, pixels=ramp, rows=4, columns=4, window=(150, 100))
    inverted = instance(study, pixels=pixels, rows=4, columns=4, photometric="MONOCHROME1")
    a, b = dicomweb.stow(windowed, inverted)
    first = np.asarray(Image.open(io.BytesIO(dicomweb(path_of(a) + "/rendered").content)))
    assert first[0].tolist() == [0, 0, 129, 255]
    second = np.asarray(Image.open(io.BytesIO(dicomweb(path_of(b) + "/rendered").content)))
    assert second[0].tolist() == [255, 170, 85, 0]  # min/max, inverted


def test_each_frame_of_an_enhanced_image_is_rendered_with_its_own_window(dicomweb):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def group(center: float, width: float) -> Dataset:
        voi, item = Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = center, width
        item.FrameVOILUTSequence = Sequence([voi])
        return item

    ramp = np.array([[0, 100, 150, 200]] * 4)
    ds = header(uid(), uid(), uid(), rows=4, columns=4, frames=2)
    ds.SharedFunctionalGroupsSequence = Sequence([group(150, 100)])
    ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset(), group(100, 100)])  # frame 2: its own
    ds.PixelData = np.stack([ramp, ramp]).astype(np.uint16).tobytes()
    (stored,) = dicomweb.stow(encode(ds))
    shared = np.asarray(Image.open(io.BytesIO(dicomweb(path_of(stored) + "/frames/1/rendered").content)))
    assert shared[0].tolist() == [0, 0, 129, 255]  # window 150/100, as the classic test above
    own = np.asarray(Image.open(io.BytesIO(dicomweb(path_of(stored) + "/frames/2/rendered").content)))
    assert own[0].tolist() == [0, 129, 255, 255]  # window 100/100


def test_read_permission_is_needed(server, dicomweb):
    (ds,) = dicomweb.stow(instance())
    url = dicomweb.base + path_of(ds)
    assert requests.get(url).status_code == 401
    assert requests.get(url, headers=server.auth("some-other-tenant", ["read"])).status_code == 403


def test_dicomweb_client_stores_searches_and_retrieves(dicomweb):
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=dicomweb.base, headers=dicomweb.headers)
    study = uid()
    datasets = [read(from_testdata("rtdose.dcm", study)), read(from_testdata("JPEG2000.dcm", study)),
                read(instance(study))]
    result = client.store_instances(datasets)
    assert len(result.ReferencedSOPSequence) == 3
    assert [s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters={
        "StudyInstanceUID": study})] == [study]
    series = client.search_for_series(study)
    assert len(series) == 3
    found = client.search_for_instances(study)
    assert {i["00080018"]["Value"][0] for i in found} == {d.SOPInstanceUID for d in datasets}

    dose, j2k = datasets[0], datasets[1]
    as_stored = client.retrieve_instance(study, j2k.SeriesInstanceUID, j2k.SOPInstanceUID)  # asks for *
    assert as_stored.file_meta.TransferSyntaxUID == j2k.file_meta.TransferSyntaxUID
    got = client.retrieve_instance(study, j2k.SeriesInstanceUID, j2k.SOPInstanceUID,
                                   media_types=(("application/dicom", EXPLICIT),))
    assert got.file_meta.TransferSyntaxUID == EXPLICIT and np.array_equal(got.pixel_array, j2k.pixel_array)
    whole = client.retrieve_study(study)
    assert {d.SOPInstanceUID for d in whole} == {d.SOPInstanceUID for d in datasets}

    metadata = client.retrieve_study_metadata(study)
    assert {m["00080018"]["Value"][0] for m in metadata} == {d.SOPInstanceUID for d in datasets}
    one = client.retrieve_instance_metadata(study, dose.SeriesInstanceUID, dose.SOPInstanceUID)
    assert one["00280008"]["Value"] == [15]

    frames = client.retrieve_instance_frames(study, dose.SeriesInstanceUID, dose.SOPInstanceUID, [2, 5])
    assert frames == [dose.pixel_array[i].astype("<u4").tobytes() for i in (1, 4)]
    compressed = client.retrieve_instance_frames(study, j2k.SeriesInstanceUID, j2k.SOPInstanceUID, [1])
    assert compressed == [next(generate_frames(j2k.PixelData, number_of_frames=1))]
    rendered = client.retrieve_instance_rendered(study, dose.SeriesInstanceUID, dose.SOPInstanceUID,
                                                 media_types=("image/png",))
    assert Image.open(io.BytesIO(rendered)).size == (dose.Columns, dose.Rows)


def test_dicomweb_client_searches_series_and_instances_at_every_level(dicomweb):
    """The levels the test above leaves out: /series and /instances at the top, series-level
    /instances, with filters, limit/offset and includefield; and retrieving a series and its metadata."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=dicomweb.base, headers=dicomweb.headers)
    study, series = uid(), uid()
    patient = f"DWC-{uid()[-8:]}"
    datasets = [read(instance(study, series, patient_id=patient)) for _ in range(3)]
    other = read(instance(study, patient_id=patient))  # a second series of the study
    client.store_instances([*datasets, other])

    found = client.search_for_series(search_filters={"PatientID": patient})
    assert {s["0020000E"]["Value"][0] for s in found} == {series, other.SeriesInstanceUID}
    one = client.search_for_series(search_filters={"SeriesInstanceUID": series, "PatientID": patient},
                                   fields=["SeriesDescription"])
    assert [s["0020000E"]["Value"][0] for s in one] == [series]
    assert one[0]["00201209"]["Value"] == [3]  # NumberOfSeriesRelatedInstances

    everywhere = client.search_for_instances(search_filters={"PatientID": patient})
    assert {i["00080018"]["Value"][0] for i in everywhere} == {d.SOPInstanceUID for d in [*datasets, other]}
    in_series = client.search_for_instances(study, series)
    assert {i["00080018"]["Value"][0] for i in in_series} == {d.SOPInstanceUID for d in datasets}
    page = client.search_for_instances(study, series, limit=2, offset=1)
    assert len(page) == 2
    assert {i["00080018"]["Value"][0] for i in page} <= {d.SOPInstanceUID for d in datasets}
    assert client.search_for_instances(search_filters={"PatientID": "NOBODY-" + patient}) == []

    retrieved = client.retrieve_series(study, series)
    assert sorted(d.SOPInstanceUID for d in retrieved) == sorted(d.SOPInstanceUID for d in datasets)
    assert all(np.array_equal(r.pixel_array, d.pixel_array) for r, d in
               zip(sorted(retrieved, key=lambda d: d.SOPInstanceUID),
                   sorted(datasets, key=lambda d: d.SOPInstanceUID), strict=True))
    metadata = client.retrieve_series_metadata(study, series)
    assert {m["00080018"]["Value"][0] for m in metadata} == {d.SOPInstanceUID for d in datasets}
    assert {m["00100020"]["Value"][0] for m in metadata} == {patient}
