"""STOW-RS over a real socket: status codes, response module, quarantine, streaming, interruption."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pydicom
import pytest
import requests

from dicomlake.search import SearchIndex
from dicomlake.store.read import scan
from tests.retrieve.dicom_builder import from_testdata, header, instance, pixel_data_header, uid

TENANT = "stow"
REFERENCED = "00081199"
FAILED = "00081198"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
SOP_UID = "00081155"
SOP_CLASS = "00081150"
RETRIEVE_URL = "00081190"
BOUNDARY = "dicomlake-test-boundary"


def multipart(parts: list[bytes], boundary: str = BOUNDARY, close: bool = True,
              content_type: str = "application/dicom") -> bytes:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + part + b"\r\n" for part in parts
    )
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def content_type(boundary: str = BOUNDARY, kind: str = "application/dicom") -> str:
    return f'multipart/related; type="{kind}"; boundary={boundary}'


@pytest.fixture(scope="module")
def post(server):
    headers = server.auth(TENANT, ["read", "write"])

    def send(body, study: str | None = None, ctype: str | None = None, tenant: str = TENANT):
        path = f"/tenants/{tenant}/dicomweb/studies" + (f"/{study}" if study else "")
        return requests.post(server.url(path), data=body,
                             headers={**headers, "Content-Type": ctype or content_type()})

    return send


def sop_uids(response, key: str = REFERENCED) -> list[str]:
    return [item[SOP_UID]["Value"][0] for item in response.json().get(key, {}).get("Value", [])]


def current_instances(server, tenant: str = TENANT) -> dict[str, str]:
    table = server.lakehouse.tenant(tenant).table("instances")
    rows = scan(table, ["sop_instance_uid", "sha256"]).to_pylist()
    return {row["sop_instance_uid"]: row["sha256"] for row in rows}


def quarantine_rows(server, tenant: str = TENANT) -> list[dict]:
    return scan(server.lakehouse.tenant(tenant).table("quarantine")).to_pylist()


def test_multipart_of_several_instances_is_committed_and_searchable_at_once(server, post):
    study, series = uid(), uid()
    files = [instance(study, series) for _ in range(3)]
    sops = [pydicom.dcmread(pydicom.filebase.DicomBytesIO(f)).SOPInstanceUID for f in files]
    index = SearchIndex(server.lakehouse.tenant(TENANT))  # long-lived, as in the app
    response = post(multipart(files), study=study)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/dicom+json"
    body = response.json()
    assert sop_uids(response) == sops
    assert FAILED not in body
    assert body[RETRIEVE_URL]["Value"][0].endswith(f"/tenants/{TENANT}/dicomweb/studies/{study}")
    item = body[REFERENCED]["Value"][0]
    assert item[SOP_CLASS]["Value"] == ["1.2.840.10008.5.1.4.1.1.7"]
    assert item[RETRIEVE_URL]["Value"][0].endswith(f"/studies/{study}/series/{series}/instances/{sops[0]}")
    # Searchable the moment the response arrives: through QIDO and a SearchIndex made before the POST.
    found = index.search("instances", {"StudyInstanceUID": study})
    assert sorted(m["00080018"]["Value"][0] for m in found) == sorted(sops)
    qido = requests.get(server.url(f"/tenants/{TENANT}/dicomweb/studies/{study}/instances"),
                        headers=server.auth(TENANT, ["read"]))
    assert sorted(m["00080018"]["Value"][0] for m in qido.json()) == sorted(sops)
    # The blobs are the exact bytes sent.
    blobs = server.lakehouse.tenant(TENANT).blobs
    rows = scan(server.lakehouse.tenant(TENANT).table("instances"), ["sop_instance_uid", "blob_key"],
                where=f"study_instance_uid = '{study}'").to_pylist()
    by_sop = {row["sop_instance_uid"]: row["blob_key"] for row in rows}
    assert [blobs.get(by_sop[s]) for s in sops] == files
    # Sending the same request again changes nothing and still succeeds (idempotent retry).
    seqs = scan(server.lakehouse.tenant(TENANT).table("changes"), ["seq"]).num_rows
    again = post(multipart(files), study=study)
    assert again.status_code == 200 and sop_uids(again) == sops
    assert scan(server.lakehouse.tenant(TENANT).table("changes"), ["seq"]).num_rows == seqs


def test_single_application_dicom_body(server, post):
    data = instance()
    response = post(data, ctype="application/dicom")
    assert response.status_code == 200, response.text
    sop = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).SOPInstanceUID
    assert sop_uids(response) == [sop]
    assert sop in current_instances(server)


def test_a_bad_part_among_good_ones_is_quarantined_with_its_reason(server, post):
    good = [instance(), instance()]
    truncated = instance()[:-100]
    response = post(multipart([good[0], truncated, good[1]]))
    assert response.status_code == 202, response.text
    assert len(sop_uids(response)) == 2
    failed = response.json()[FAILED]["Value"]
    assert len(failed) == 1 and failed[0][FAILURE_REASON]["Value"] == [43264]
    # Its UIDs are read best-effort from the broken bytes, so the client can tell which one failed.
    assert failed[0][SOP_UID]["Value"][0] == pydicom.dcmread(
        pydicom.filebase.DicomBytesIO(truncated), force=True, stop_before_pixels=True).SOPInstanceUID
    assert "truncated" in response.headers["Warning"]
    import hashlib

    sha = hashlib.sha256(truncated).hexdigest()
    rows = [r for r in quarantine_rows(server) if r["sha256"] == sha]
    assert len(rows) == 1 and rows[0]["error_code"] == "truncated" and "incomplete" in rows[0]["reason"]
    assert server.lakehouse.tenant(TENANT).blobs.get(rows[0]["quarantine_key"]) == truncated


def test_study_uid_mismatch_fails_that_part_with_43265(server, post):
    study = uid()
    inside, outside = instance(study), instance(uid())
    response = post(multipart([inside, outside]), study=study)
    assert response.status_code == 202
    failed = response.json()[FAILED]["Value"]
    assert failed[0][FAILURE_REASON]["Value"] == [43265]
    outside_sop = pydicom.dcmread(pydicom.filebase.DicomBytesIO(outside)).SOPInstanceUID
    assert failed[0][SOP_UID]["Value"] == [outside_sop]
    assert outside_sop not in current_instances(server)
    assert any(r["error_code"] == "study_uid_mismatch" for r in quarantine_rows(server))


def test_all_bad_is_409(server, post):
    before = current_instances(server)
    response = post(multipart([b"not dicom at all", b""]))
    assert response.status_code == 409
    assert [f[FAILURE_REASON]["Value"][0] for f in response.json()[FAILED]["Value"]] == [43264, 43264]
    assert REFERENCED not in response.json()
    assert current_instances(server) == before
    codes = {r["error_code"] for r in quarantine_rows(server)}
    assert {"not_dicom", "zero_bytes"} <= codes


def test_warnings_give_202_with_warning_reason(server, post):
    ds = header(uid(), uid(), uid())
    ds.SliceThickness = "9.87"
    ds.PixelData = b"\0" * 128
    from tests.retrieve.dicom_builder import encode

    data = encode(ds).replace(b"9.87", b"9x87")  # not a number: stored as sent, with a warning
    response = post(multipart([data]))
    assert response.status_code == 202, response.text
    item = response.json()[REFERENCED]["Value"][0]
    assert item[WARNING_REASON]["Value"] == [45063]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(multipart([instance()], close=False), id="no-close-delimiter"),
        pytest.param(b"no delimiter anywhere", id="no-parts"),
        pytest.param(f"--{BOUNDARY}\r\nContent-Type: application/dicom".encode() + b"x" * 20000,
                     id="headers-never-end"),
        pytest.param(f"--{BOUNDARY}garbage\r\n\r\n--{BOUNDARY}--".encode(), id="bad-delimiter-line"),
    ],
)
def test_malformed_multipart_is_400_and_stores_nothing(server, post, body):
    before = current_instances(server)
    response = post(body)
    assert response.status_code == 400, response.text
    assert current_instances(server) == before
    assert not list((Path(server.lakehouse.root) / "tenants" / TENANT / ".tmp").glob("stow-*"))


def test_wrong_content_type_is_415(server, post):
    assert post(instance(), ctype="application/json").status_code == 415
    assert post(multipart([instance()]), ctype=content_type(kind="application/dicom+json")).status_code == 415
    no_type = requests.post(server.url(f"/tenants/{TENANT}/dicomweb/studies"), data=instance(),
                            headers=server.auth(TENANT, ["write"]))
    assert no_type.status_code == 415


def test_write_permission_is_needed(server):
    response = requests.post(server.url(f"/tenants/{TENANT}/dicomweb/studies"), data=multipart([instance()]),
                             headers={**server.auth(TENANT, ["read"]), "Content-Type": content_type()})
    assert response.status_code == 403


def test_parser_handles_preamble_epilogue_padding_and_tiny_chunks(server, post):
    files = [instance(), from_testdata("JPEG2000.dcm")]
    body = (b"this is a preamble\r\n" + multipart(files)[:-2] + b"\r\nan epilogue")
    body = body.replace(f"--{BOUNDARY}\r\n".encode(), f"--{BOUNDARY}  \t\r\n".encode())  # padding

    def trickle():  # 7-byte chunks: every delimiter is split across chunks somewhere
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    response = requests.post(server.url(f"/tenants/{TENANT}/dicomweb/studies"), data=trickle(),
                             headers={**server.auth(TENANT, ["write"]), "Content-Type": content_type()})
    assert response.status_code == 200, response.text
    assert len(sop_uids(response)) == 2
    stored = current_instances(server)
    import hashlib

    assert {hashlib.sha256(f).hexdigest() for f in files} <= set(stored.values())


def test_replacing_with_other_bytes_is_an_update(server, post):
    study, series, sop = uid(), uid(), uid()
    first = instance(study, series, sop, patient_id="P1")
    second = instance(study, series, sop, patient_id="P2")
    assert post(multipart([first])).status_code == 200
    assert post(multipart([second])).status_code == 200
    import hashlib

    assert current_instances(server)[sop] == hashlib.sha256(second).hexdigest()
    # Re-sending the older bytes never rolls the instance back.
    assert post(multipart([first])).status_code == 200
    assert current_instances(server)[sop] == hashlib.sha256(second).hexdigest()


def test_an_interrupted_upload_stores_nothing_and_leaves_no_spool(server):
    good = multipart([instance(), instance()])
    token = server.token(TENANT, ["write"])
    before = current_instances(server)
    changes = scan(server.lakehouse.tenant(TENANT).table("changes"), ["seq"]).num_rows
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        head = (f"POST /tenants/{TENANT}/dicomweb/studies HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: {content_type()}\r\n"
                f"Content-Length: {len(good) + 1_000_000}\r\n\r\n")
        sock.sendall(head.encode() + good)  # every part complete, the body not
        time.sleep(0.3)
    spool = Path(server.lakehouse.root) / "tenants" / TENANT / ".tmp"
    deadline = time.monotonic() + 5
    while list(spool.glob("stow-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(spool.glob("stow-*"))
    assert current_instances(server) == before
    assert scan(server.lakehouse.tenant(TENANT).table("changes"), ["seq"]).num_rows == changes
    # The server is fine afterwards.
    assert requests.get(server.url("/health")).status_code == 200


# -- a large upload, measured on a server in its own process --------------------------------------

SERVER_SCRIPT = """
import sys, uvicorn
from dicomlake.store import Lakehouse
from dicomlake.web.app import build_app
from dicomlake.web.auth import AuthConfig
app = build_app(Lakehouse(sys.argv[1]), AuthConfig(disabled=True))
config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[2]), log_config=None, access_log=False,
                        lifespan="off")
uvicorn.Server(config).run()
"""


def test_a_300_mb_upload_is_streamed_not_held_in_memory(tmp_path):
    from tests.conftest import free_ports

    port = free_ports(1)[0]
    root = tmp_path / "lake"
    process = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(root), str(port)],
                               cwd=Path(__file__).resolve().parents[2])
    base = f"http://127.0.0.1:{port}/dicomweb"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        warm = requests.post(f"{base}/studies", data=multipart([instance()]),
                             headers={"Content-Type": content_type()})
        assert warm.status_code == 200, warm.text  # imports and tables loaded: the baseline
        monitor = psutil.Process(process.pid)
        baseline = monitor.memory_info().rss

        frames, rows, columns = 150, 1024, 1024  # 16-bit: 300 MiB of pixel data
        ds = header(uid(), uid(), uid(), rows=rows, columns=columns, frames=frames)
        from tests.retrieve.dicom_builder import encode

        pixel_bytes = frames * rows * columns * 2
        head = encode(ds) + pixel_data_header(pixel_bytes)
        block = os.urandom(1024 * 1024)
        digest = __import__("hashlib").sha256(head)
        for _ in range(pixel_bytes // len(block)):
            digest.update(block)

        def body():
            yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + head
            for _ in range(pixel_bytes // len(block)):
                yield block
            yield f"\r\n--{BOUNDARY}--\r\n".encode()

        peak = [baseline]
        done = threading.Event()

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], monitor.memory_info().rss)
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            response = requests.post(f"{base}/studies", data=body(), headers={"Content-Type": content_type()})
        finally:
            done.set()
            watcher.join()
        assert response.status_code == 200, response.text
        assert pixel_bytes > 300_000_000
        grew = peak[0] - baseline
        print(f"server RSS: baseline {baseline / 2**20:.0f} MiB, peak growth {grew / 2**20:.1f} MiB")
        assert grew < 64 * 1024 * 1024, f"server RSS grew by {grew / 2**20:.0f} MiB for a 300 MiB upload"
        blob = root / "tenants" / "default" / "blobs" / digest.hexdigest()[:2] / f"{digest.hexdigest()}.dcm"
        assert blob.stat().st_size == len(head) + pixel_bytes
    finally:
        process.terminate()
        process.wait(10)


# -- the multipart parser on its own ---------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 3, 17, 64 * 1024])
def test_multipart_parser_splits_at_any_chunking(tmp_path, chunk):
    import asyncio
    import hashlib

    from dicomlake.web.multipart import spool_multipart

    contents = [b"", b"\r\n--not-the-boundary\r\n", os.urandom(5000), b"--" + BOUNDARY.encode()[:-1]]
    body = b"preamble" + b"\r\n" + b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\nX-A: 1\r\n\r\n".encode() + c + b"\r\n"
        for c in contents) + f"--{BOUNDARY}--".encode()

    async def chunks():
        for i in range(0, len(body), chunk):
            yield body[i : i + chunk]

    parts = asyncio.run(spool_multipart(chunks(), BOUNDARY, tmp_path))
    assert [p.data for p in parts] == contents  # small parts stay in memory: no file written
    assert [p.path for p in parts] == [None] * len(contents) and not list(tmp_path.iterdir())
    assert {p.content_type for p in parts} == {"application/dicom"}
    assert hashlib.sha256(parts[2].data).hexdigest() == hashlib.sha256(contents[2]).hexdigest()


def _spool(body: bytes, directory: Path, **options):
    import asyncio

    from dicomlake.web.multipart import spool_multipart

    async def chunks():
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    return asyncio.run(spool_multipart(chunks(), BOUNDARY, directory, **options))


def test_parts_past_the_memory_budget_or_flush_size_go_to_hashed_files(tmp_path):
    import hashlib

    from dicomlake.web.multipart import FLUSH_BYTES

    small = [os.urandom(30_000) for _ in range(4)]
    large = os.urandom(FLUSH_BYTES * 2 + 123)
    parts = _spool(multipart([*small, large]), tmp_path, memory_budget=70_000)
    # The first two small parts fit the budget; the next two do not; the large one never does.
    assert [p.data is not None for p in parts] == [True, True, False, False, False]
    for part, content in zip(parts, [*small, large], strict=True):
        if part.data is None:
            assert part.path.read_bytes() == content
            assert part.sha256 == hashlib.sha256(content).hexdigest()
        assert part.size == len(content)
    assert len(list(tmp_path.iterdir())) == 3


def test_a_malformed_body_leaves_no_spooled_file(tmp_path):
    from dicomlake.web.multipart import FLUSH_BYTES, MalformedMultipart

    body = multipart([os.urandom(1000), os.urandom(FLUSH_BYTES + 10)], close=False)
    with pytest.raises(MalformedMultipart):
        _spool(body, tmp_path)
    assert not list(tmp_path.iterdir())


def test_store_takes_in_memory_and_file_parts_in_one_batch(tmp_path):
    from dicomlake.ingest.stow import UploadedPart, store_instances
    from dicomlake.store import Lakehouse

    tenant = Lakehouse(tmp_path / "lake").tenant()
    in_memory, on_disk = instance(), instance()
    spooled = tenant.blobs.staging_dir() / "one.part"
    spooled.write_bytes(on_disk)
    outcome = store_instances(tenant, [UploadedPart(path=None, size=len(in_memory), data=in_memory),
                                       UploadedPart(path=spooled, size=len(on_disk))])
    assert outcome.http_status == 200 and [r.action for r in outcome.results] == ["create", "create"]
    stored = {row["sop_instance_uid"]: row["blob_key"] for row in scan(tenant.table("instances")).to_pylist()}
    for content in (in_memory, on_disk):
        uid_of = pydicom.dcmread(__import__("io").BytesIO(content)).SOPInstanceUID
        assert tenant.blobs.get(stored[uid_of]) == content
    assert not spooled.exists()  # renamed into the blob store, not copied
    with pytest.raises(ValueError):
        UploadedPart(path=None, size=0)


def _timings(header: str) -> dict[str, float]:
    stages = {}
    for entry in header.split(","):
        name, _, duration = entry.strip().partition(";dur=")
        stages[name] = float(duration)
    return stages


def test_server_timing_and_the_access_log_say_where_a_stow_spent_its_time(server, post, access_log):
    study = uid()
    response = post(multipart([instance(study, uid()) for _ in range(2)]), study=study)
    assert response.status_code == 200
    stages = _timings(response.headers["Server-Timing"])
    assert list(stages) == ["receive", "parse", "blobs", "queue", "commit", "project"]
    assert all(ms >= 0 for ms in stages.values()) and stages["commit"] > 0
    line = next(json.loads(text) for text in access_log.lines if '"POST"' in text)
    assert line["route"] == "/tenants/{tenant}/dicomweb/studies/{study}"
    assert list(line["timings"]) == list(stages)
    bad = post(multipart([b"not dicom"]))  # nothing to commit: no commit stages
    assert bad.status_code == 409
    assert list(_timings(bad.headers["Server-Timing"])) == ["receive", "parse", "blobs"]


def test_requests_sharing_a_commit_round_report_its_commit_once_each(tmp_path):
    from dicomlake.ingest.stow import STAGES, InstanceStore, UploadedPart
    from dicomlake.store import Lakehouse

    store = InstanceStore(Lakehouse(tmp_path / "lake").tenant())
    outcomes = []

    def send() -> None:
        content = instance()
        outcomes.append(store.store([UploadedPart(path=None, size=len(content), data=content)]))

    threads = [threading.Thread(target=send) for _ in range(3)]
    with store._commit_lock:  # a round in progress: all three queue for the next one
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(store._queue) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert [o.http_status for o in outcomes] == [200, 200, 200]
    assert len({(o.commit.first_seq, o.commit.last_seq) for o in outcomes}) == 1  # one round
    for outcome in outcomes:
        assert list(outcome.timings) == list(STAGES)
        assert outcome.timings["queue"] >= 40  # the round held up above counts as queueing
    assert len({o.timings["commit"] for o in outcomes}) == 1
    assert len({o.timings["project"] for o in outcomes}) == 1
