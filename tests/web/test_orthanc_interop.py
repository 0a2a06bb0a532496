"""Orthanc 1.10 + its DICOMweb plugin, a real peer, with our server as its DICOMweb remote "dicomlake":
Orthanc searches us, retrieves a study from us into itself and sends a study to us by STOW; the bytes
match on both sides. Orthanc runs from the Debian packages (`python3 dev.py test` installs them when
it can); without them these tests FAIL unless DICOMLAKE_SKIP_INTEROP=1 (see conftest.require_orthanc).
"""

from __future__ import annotations

import hashlib
import io
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pydicom
import pytest
import requests

from bench.dicomweb import start_orthanc, stop_process
from dicomlake.samples import generate_sample_drop
from tests.retrieve.dicom_builder import encode, from_testdata, instance, uid
from tests.web.conftest import require_orthanc
from tests.web.test_wado import parts_of

REMOTE = "/dicom-web/servers/dicomlake"  # our server, as Orthanc's DICOMweb remote
ANY_SYNTAX = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dataset(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def for_patient(data: bytes, patient_id: str) -> bytes:
    ds = dataset(data)
    ds.PatientID, ds.PatientName = patient_id, "Interop^Orthanc"
    return encode(ds)


def ours_as_stored(server, study: str, headers: dict[str, str]) -> dict[str, str]:
    """SOP Instance UID -> sha256 of the bytes our WADO-RS returns with transfer-syntax=* (the blob)."""
    response = requests.get(server.url(f"/dicomweb/studies/{study}"), headers={**headers, **ANY_SYNTAX})
    assert response.status_code == 200, response.text
    return {dataset(content).SOPInstanceUID: sha(content) for _, content in parts_of(response)}


def orthanc_files(orthanc, study_uid: str) -> dict[str, str]:
    """SOP Instance UID -> sha256 of Orthanc's stored file, for the instances of one study."""
    found = requests.post(orthanc.url("/tools/find"), json={
        "Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}).json()
    files = {i["MainDicomTags"]["SOPInstanceUID"]: orthanc.url(f"/instances/{i['ID']}/file") for i in found}
    return {sop: sha(requests.get(url).content) for sop, url in files.items()}


def post(orthanc, path: str, body: dict) -> dict | list:
    response = requests.post(orthanc.url(path), json=body, timeout=120)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


@pytest.fixture(scope="module")
def held(server, tmp_path_factory) -> dict:
    """What we hold before Orthanc comes in: generated studies plus a JPEG 2000 one (stored as is, so
    a transcoding WADO answer would not match the bytes)."""
    drop = tmp_path_factory.mktemp("interop-drop")
    summary = generate_sample_drop(drop / "gen", 24, seed=7)
    study = uid()
    compressed = {"j2k.dcm": for_patient(from_testdata("JPEG2000.dcm", study), "INTEROP-1"),
                  "plain.dcm": for_patient(instance(study), "INTEROP-1")}
    for name, data in compressed.items():
        (drop / name).write_bytes(data)
    result = server.ingest([drop])
    assert result.created == summary.n_instances + 2
    files = {p: p.read_bytes() for p in drop.rglob("*.dcm")}
    return {"files": {dataset(data).SOPInstanceUID: sha(data) for data in files.values()},
            "by_study": _by_study(files), "j2k_study": study}


def _by_study(files: dict[Path, bytes]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for data in files.values():
        ds = dataset(data)
        out.setdefault(ds.StudyInstanceUID, set()).add(ds.SOPInstanceUID)
    return out


def test_orthanc_searches_us_at_every_level(server, orthanc_peer, held):
    orthanc, authorization = orthanc_peer
    headers = {"Authorization": authorization}
    ours = requests.get(server.url("/dicomweb/studies"), params={"limit": 1000}, headers=headers).json()
    pid = ours[0]["00100020"]["Value"][0]
    expected = {s["0020000D"]["Value"][0] for s in ours if s["00100020"]["Value"][0] == pid}

    # The plugin's /qido (answers in Orthanc's own simplified JSON) and /get (our DICOM JSON as is).
    answer = post(orthanc, REMOTE + "/qido", {"Uri": "/studies", "Arguments": {"PatientID": pid}})
    assert {s["0020000D"]["Value"] for s in answer} == expected
    raw = post(orthanc, REMOTE + "/get", {"Uri": "/studies", "Arguments": {"PatientID": pid}})
    assert {s["0020000D"]["Value"][0] for s in raw} == expected
    assert all(s["00081190"]["Value"][0].startswith(server.url("/dicomweb/studies/")) for s in raw)

    study = held["j2k_study"]
    series = post(orthanc, REMOTE + "/get", {"Uri": f"/studies/{study}/series"})
    assert len(series) == 2 and {s["0020000D"]["Value"][0] for s in series} == {study}
    instances = post(orthanc, REMOTE + "/get", {
        "Uri": "/instances", "Arguments": {"StudyInstanceUID": study}})
    assert {i["00080018"]["Value"][0] for i in instances} == held["by_study"][study]
    # Nothing matches: our 204 (PS3.18, as Azure) reaches Orthanc's /get as an empty answer. (Its /qido
    # reads an empty body as malformed JSON and answers 400, against Azure too: an Orthanc 1.10 limit.)
    nothing = requests.post(orthanc.url(REMOTE + "/get"), json={
        "Uri": "/studies", "Arguments": {"PatientID": "NOBODY-AT-ALL"}})
    assert nothing.status_code == 200 and nothing.content == b""


def test_orthanc_retrieves_a_study_from_us_byte_for_byte(server, orthanc_peer, held):
    orthanc, authorization = orthanc_peer
    generated = [s for s in held["by_study"] if s != held["j2k_study"]]
    biggest = max(generated, key=lambda s: len(held["by_study"][s]))
    for study in (held["j2k_study"], biggest):
        answer = post(orthanc, REMOTE + "/retrieve", {"Resources": [{"Study": study}]})
        assert int(answer["ReceivedInstancesCount"]) == len(held["by_study"][study])
        theirs = orthanc_files(orthanc, study)
        assert set(theirs) == held["by_study"][study]
        assert theirs == {sop: held["files"][sop] for sop in theirs}  # the bytes we were given
        assert theirs == ours_as_stored(server, study, {"Authorization": authorization})


def test_orthanc_sends_a_study_to_us_by_stow(server, orthanc_peer):
    orthanc, authorization = orthanc_peer
    study = uid()
    sent = [for_patient(from_testdata("JPEG2000.dcm", study), "INTEROP-2"),
            for_patient(from_testdata("rtdose.dcm", study), "INTEROP-2"),
            for_patient(instance(study), "INTEROP-2")]
    parents = {_post_file(orthanc, data)["ParentStudy"] for data in sent}
    assert len(parents) == 1

    answer = post(orthanc, REMOTE + "/stow", {"Resources": list(parents), "Synchronous": True})
    assert int(answer["InstancesCount"]) == 3
    # Committed and searchable before the 200 came back: QIDO finds them at once.
    found = requests.get(server.url(f"/dicomweb/studies/{study}/instances"),
                         headers={"Authorization": authorization})
    assert found.status_code == 200 and len(found.json()) == 3
    expected = {dataset(data).SOPInstanceUID: sha(data) for data in sent}
    assert orthanc_files(orthanc, study) == expected
    assert ours_as_stored(server, study, {"Authorization": authorization}) == expected


def _post_file(orthanc, data: bytes) -> dict:
    response = requests.post(orthanc.url("/instances"), data=data)
    assert response.status_code == 200 and response.json()["Status"] == "Success", response.text
    return response.json()


def test_orthanc_runs_as_configured_and_is_stopped_at_teardown(tmp_path):
    require_orthanc()
    with start_orthanc(tmp_path / "peer") as orthanc:
        assert requests.get(orthanc.url("/plugins")).json().count("dicom-web") == 1
        config = orthanc.config
        assert config["RemoteAccessAllowed"] is False and config["DicomServerEnabled"] is False
        assert config["AuthenticationEnabled"] is False and config["StorageCompression"] is False
        assert Path(config["StorageDirectory"]).is_relative_to(tmp_path)
    assert orthanc.process.poll() is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(orthanc.url("/system"), timeout=2)


def test_a_process_that_ignores_sigterm_is_killed():
    process = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, start_new_session=True)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    started = time.monotonic()
    stop_process(process, timeout=0.5)
    assert process.returncode == -signal.SIGKILL and time.monotonic() - started < 5
