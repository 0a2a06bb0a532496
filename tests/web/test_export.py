"""POST {base}/export over real sockets: 202 -> operation polled to succeeded -> the files on disk."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
import requests

from dicomlake import operations
from dicomlake.samples import generate_sample_drop
from dicomlake.store.read import scan

A, B = "exp-a", "exp-b"


@pytest.fixture(scope="module")
def lake(server, tmp_path_factory):
    for tenant, seed in ((A, 21), (B, 22)):
        drop = generate_sample_drop(tmp_path_factory.mktemp(f"drop-{tenant}"), n_instances=8, seed=seed)
        server.ingest([drop.dest], tenant=tenant)
    return server


def rows(server, tenant: str) -> list[dict]:
    table = server.lakehouse.tenant(tenant).table("instances")
    return scan(table, ["study_instance_uid", "series_instance_uid", "sop_instance_uid", "blob_key",
                        "patient_id", "modality"]).to_pylist()


def post(server, tenant: str, headers: dict, body) -> requests.Response:
    return requests.post(server.url(f"/tenants/{tenant}/dicomweb/export"), headers=headers, json=body)


def wait_for(server, headers: dict, href: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = requests.get(href, headers=headers)
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 202, response.text
        assert response.headers["Location"] == href and response.json()["status"] == "running"
        time.sleep(0.05)
    raise AssertionError("the export did not finish in 60 s")


def exports_of(server, tenant: str) -> Path:
    return Path(server.lakehouse.tenant(tenant).uri) / "exports"


def test_identifiers_to_dicom_files_in_the_tenants_folder(lake) -> None:
    server = lake
    headers = server.auth(A, ["export"])
    mine, theirs = rows(server, A), rows(server, B)
    study = mine[0]["study_instance_uid"]
    single = next(r for r in mine if r["study_instance_uid"] != study)
    dicomweb_path = (f"{single['study_instance_uid']}/series/{single['series_instance_uid']}/instances/"
                     f"{single['sop_instance_uid']}")
    foreign = theirs[0]["study_instance_uid"]
    response = post(server, A, headers, {
        "source": {"type": "identifiers", "settings": {"values": [study, dicomweb_path, foreign]}},
        "destination": {"type": "folder", "settings": {"path": "run-1"}},
    })
    assert response.status_code == 202, response.text
    reference = response.json()
    assert set(reference) == {"id", "href"}
    assert reference["href"] == server.url(f"/tenants/{A}/dicomweb/operations/{reference['id']}")
    assert response.headers["Location"] == reference["href"]

    done = wait_for(server, headers, reference["href"])
    expected = [r for r in mine if r["study_instance_uid"] == study] + [single]
    assert done["operationId"] == reference["id"] and done["type"] == "export"
    assert done["status"] == "succeeded" and done["percentComplete"] == 100
    assert done["createdTime"] <= done["lastUpdatedTime"] and done["destination"] == "run-1"
    results = done["results"]
    assert results == {"exported": len(expected), "skipped": 0, "failed": 0, "notFound": 1, "errors": 1,
                       "errorHref": reference["href"] + "/errors"}

    out = exports_of(server, A) / "run-1"
    files = sorted(out.glob("*/*/*.dcm"))
    assert len(files) == results["exported"]
    blobs = server.lakehouse.tenant(A).blobs
    for row in expected:
        path = out / row["study_instance_uid"] / row["series_instance_uid"] / f"{row['sop_instance_uid']}.dcm"
        assert path.read_bytes() == blobs.local_path(row["blob_key"]).read_bytes()
    assert not (out / foreign).exists()  # tenant b's study is not tenant a's to export
    assert not exports_of(server, B).exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tenant"] == A and manifest["counts"]["exported"] == len(expected)

    errors = requests.get(results["errorHref"], headers=headers)
    assert errors.status_code == 200 and errors.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in errors.text.splitlines()]
    assert lines == [{"identifier": foreign, "status": "not_found",
                      "error": "nothing matches in this tenant"}]


def test_query_source_to_parquet(lake) -> None:
    server = lake
    headers = server.auth(A, ["admin"])  # admin implies export
    response = post(server, A, headers, {
        "Source": {"Type": "query", "Settings": {"Filters": {"Modality": "CT"}}},
        "Destination": {"Type": "folder", "Settings": {"Path": "nested/ct-parquet"}},
        "Format": "parquet",
    })
    assert response.status_code == 202, response.text
    done = wait_for(server, headers, response.json()["href"])
    assert done["status"] == "succeeded", done
    out = exports_of(server, A) / "nested" / "ct-parquet"
    parts = list(out.glob("*/*.parquet"))
    ct = [r for r in rows(server, A) if r["modality"] == "CT"]
    assert done["results"]["exported"] == len(ct) > 0
    assert sum(pq.read_metadata(p).num_rows for p in parts) == len(ct)


BAD_BODIES = [
    {},  # no source
    {"source": {"type": "identifiers", "settings": {"values": []}}},
    {"source": {"type": "identifiers", "settings": {"values": ["1.2.3' OR '1'='1"]}}},
    {"source": {"type": "identifiers", "settings": {"values": ["1.2/3.4/5.6/7.8"]}}},
    {"source": {"type": "identifiers", "settings": {"values": "1.2.3"}}},
    {"source": {"type": "azuresql", "settings": {}}},
    {"source": {"type": "query", "settings": {"filters": {"Modality": 3}}}},
    {"source": {"type": "identifiers", "settings": {"values": ["1.2.3"]}}, "surprise": True},
    {"source": {"type": "identifiers", "settings": {"values": ["1.2.3"]}}, "format": "tiff"},
    {"source": {"type": "identifiers", "settings": {"values": ["1.2.3"]}}, "format": "png", "perFrame": True},
    {"source": {"type": "identifiers", "settings": {"values": ["1.2.3"]}}, "perFrame": True},
    {"source": {"type": "identifiers", "settings": {"values": ["1.2.3"]}}, "deid": "yes"},
    *[{"source": {"type": "identifiers", "settings": {"values": ["1.2.3"]}},
       "destination": {"type": "folder", "settings": {"path": path}}}
      for path in ("../escape", "/etc/x", "a/../../b", ".hidden", "a\\b", "a//b", "", "x/" * 9 + "y")],
    {"source": {"type": "identifiers", "settings": {"values": ["1.2.3"]}},
     "destination": {"type": "azureblob", "settings": {"blobContainerName": "export"}}},
    [],
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_bodies_are_400(lake, body) -> None:
    server = lake
    response = post(server, A, server.auth(A, ["export"]), body)
    assert response.status_code == 400, (body, response.text)
    assert response.json()["error"] == "bad_request"


def test_not_json_is_400_or_415(lake) -> None:
    server = lake
    headers = {**server.auth(A, ["export"]), "Content-Type": "application/json"}
    url = server.url(f"/tenants/{A}/dicomweb/export")
    assert requests.post(url, headers=headers, data=b"{not json").status_code == 400
    headers["Content-Type"] = "text/plain"
    assert requests.post(url, headers=headers, data=b"{}").status_code == 415


def test_export_needs_the_export_role_in_that_tenant(lake) -> None:
    server = lake
    study = rows(server, A)[0]["study_instance_uid"]
    body = {"source": {"type": "identifiers", "settings": {"values": [study]}}}
    for permissions in (["read"], ["read", "write", "delete"]):
        refused = post(server, A, server.auth(A, permissions), body)
        assert refused.status_code == 403, refused.text
    # An exporter of tenant b cannot export from tenant a, even naming a's study.
    assert post(server, A, server.auth(B, ["export"]), body).status_code == 403
    assert not (exports_of(server, A) / "refused").exists()
    # Nor read tenant a's operations; and an exporter cannot read a reindex operation.
    headers = server.auth(A, ["export"])
    started = post(server, A, headers, {**body, "destination": {"type": "folder",
                                                                 "settings": {"path": "for-b"}}})
    href = started.json()["href"]
    wait_for(server, headers, href)
    assert requests.get(href, headers=server.auth(B, ["export", "read"])).status_code == 403
    foreign_href = href.replace(f"/tenants/{A}/", f"/tenants/{B}/")
    assert requests.get(foreign_href, headers=server.auth(B, ["admin"])).status_code == 404
    reindex = requests.post(server.url(f"/tenants/{A}/dicomweb/extendedquerytags"), headers=server.auth(
        A, ["admin"]), json=[{"Path": "PatientWeight", "Level": "Study"}]).json()["href"]  # fmt: skip
    assert requests.get(reindex, headers=headers).status_code == 403
    assert requests.get(reindex + "/errors", headers=server.auth(A, ["admin"])).status_code == 404


def test_deid_needs_the_servers_key_and_gives_new_identities(lake, monkeypatch) -> None:
    server = lake
    headers = server.auth(A, ["export"])
    row = rows(server, A)[0]
    body = {"source": {"type": "identifiers", "settings": {"values": [
        f"{row['study_instance_uid']}/{row['series_instance_uid']}/{row['sop_instance_uid']}"]}},
        "destination": {"type": "folder", "settings": {"path": "deid"}}, "deid": True}
    monkeypatch.delenv("DICOMLAKE_EXPORT_DEID_KEY", raising=False)
    assert post(server, A, headers, body).status_code == 409
    monkeypatch.setenv("DICOMLAKE_EXPORT_DEID_KEY", "a-test-project-key")
    response = post(server, A, headers, body)
    assert response.status_code == 202, response.text
    done = wait_for(server, headers, response.json()["href"])
    assert done["status"] == "succeeded" and done["results"]["exported"] == 1
    [copy] = (exports_of(server, A) / "deid").glob("*/*/*.dcm")
    ds = pydicom.dcmread(copy)
    assert ds.SOPInstanceUID != row["sop_instance_uid"] and ds.PatientID != row["patient_id"]


def test_a_folder_being_written_is_409(lake) -> None:
    server = lake
    tenant = server.lakehouse.tenant(A)
    out = (exports_of(server, A) / "busy").resolve()
    # A running export of this process writing into "busy" (its status document, as launch writes it).
    status = operations.new_operation(tenant, "export", out=str(out), destination="busy")
    status.update(state="running", host=socket.gethostname(), pid=os.getpid(), updated_at=operations.now())
    operations.write(tenant, status)
    study = rows(server, A)[0]["study_instance_uid"]
    body = {"source": {"type": "identifiers", "settings": {"values": [study]}},
            "destination": {"type": "folder", "settings": {"path": "busy"}}}
    response = post(server, A, server.auth(A, ["export"]), body)
    assert response.status_code == 409 and status["id"] in response.json()["detail"]
