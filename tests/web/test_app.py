"""The app's frame over real sockets: health, docs, OpenAPI, request ids, gzip, CORS, access logs."""

from __future__ import annotations

import gzip
import json
import socket
import uuid

import requests

from dicomlake.web.auth import AuthConfig
from tests.search.conftest import INSTANCES, SERIES, STUDY, sop_uid, write_instance
from tests.web.conftest import start_server


def test_health_needs_no_token_and_says_nothing_else(server):
    response = requests.get(server.url("/health"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_docs_and_openapi_describe_every_dicomweb_path(server):
    docs = requests.get(server.url("/docs"))
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "openapi.json" in docs.text
    schema = requests.get(server.url("/openapi.json")).json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in ("/tenants/{tenant}/dicomweb/studies", "/dicomweb/studies/{study}/series/{series}/instances",
                 "/dicomweb/changefeed", "/dicomweb/changefeed/latest", "/dicomweb/extendedquerytags",
                 "/dicomweb/extendedquerytags/{tag_path}/errors", "/dicomweb/operations/{operation_id}"):
        assert path in paths, path
    assert "get" in paths["/dicomweb/studies"] and "delete" in paths["/dicomweb/studies/{study}"]
    assert "limit" in json.dumps(paths["/dicomweb/studies"]["get"]["parameters"])
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_request_id_is_honoured_when_sane_and_generated_otherwise(server):
    mine = requests.get(server.url("/health"), headers={"X-Request-Id": "abc-123.x"})
    assert mine.headers["X-Request-Id"] == "abc-123.x"
    generated = requests.get(server.url("/health"), headers={"X-Request-Id": "bad id\twith <junk>"})
    assert uuid.UUID(generated.headers["X-Request-Id"]).hex == generated.headers["X-Request-Id"]
    none = requests.get(server.url("/health"))
    assert none.headers["X-Request-Id"] != generated.headers["X-Request-Id"]
    refused = requests.get(server.url("/dicomweb/studies"))  # errors carry it too
    assert refused.status_code == 401 and refused.headers["X-Request-Id"]


def test_json_is_gzipped_above_a_kilobyte_only_when_asked(server, tmp_path):
    for series, number in INSTANCES:
        write_instance(tmp_path, series, number)
    server.ingest([tmp_path], tenant="gz")
    headers = server.auth("gz", ["read"])
    # The raw bytes on the wire: requests would decompress them silently.
    raw = requests.get(server.url("/tenants/gz/dicomweb/instances?includefield=all"),
                       headers={**headers, "Accept-Encoding": "gzip"}, stream=True)
    assert raw.status_code == 200 and raw.headers["Content-Encoding"] == "gzip"
    body = json.loads(gzip.decompress(raw.raw.read()))
    assert len(body) == len(INSTANCES)
    plain = requests.get(server.url("/tenants/gz/dicomweb/instances?includefield=all"),
                         headers={**headers, "Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.json() == body
    small = requests.get(server.url("/health"), headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers  # under 1 kB


def test_cors_headers_only_for_configured_origins(server, tmp_path):
    # None by default:
    plain = requests.get(server.url("/health"), headers={"Origin": "https://viewer.example"})
    assert "Access-Control-Allow-Origin" not in plain.headers
    with start_server(server.lakehouse, cors_origins=["https://viewer.example"]) as cors:
        token = cors.token("default", ["read"])
        preflight = requests.options(cors.url("/dicomweb/studies"), headers={
            "Origin": "https://viewer.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization"})
        assert preflight.status_code == 200  # no token needed for a preflight
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://viewer.example"
        assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
        got = requests.get(cors.url("/dicomweb/studies"), headers={
            "Origin": "https://viewer.example", "Authorization": f"Bearer {token}"})
        assert got.headers["Access-Control-Allow-Origin"] == "https://viewer.example"
        assert "X-Request-Id" in got.headers["Access-Control-Expose-Headers"]
        other = requests.get(cors.url("/health"), headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers


def test_access_log_has_route_templates_and_no_uid_or_query(server, tmp_path, access_log):
    for series, number in INSTANCES:
        write_instance(tmp_path, series, number)
    server.ingest([tmp_path], tenant="logs")
    headers = server.auth("logs", ["read"])
    study, series = STUDY["A"], SERIES["A1"]
    url = (f"/tenants/logs/dicomweb/studies/{study}/series/{series}/instances"
           "?PatientName=M%C3%BCller*&PatientID=P1")
    requests.get(server.url(url), headers={**headers, "X-Request-Id": "r-1"})
    requests.get(server.url(f"/dicomweb/studies/{study}/series"), headers=headers)  # 403: other tenant
    requests.get(server.url("/tenants/logs/dicomweb/studies?PatientID=P1"))  # 401
    lines = [json.loads(line) for line in access_log.lines]
    assert len(lines) == 3
    first = lines[0]
    assert first["route"] == "/tenants/{tenant}/dicomweb/studies/{study}/series/{series}/instances"
    assert first["request_id"] == "r-1" and first["method"] == "GET" and first["status"] == 200
    assert first["tenant"] == "logs" and first["principal"].startswith("test-")
    assert first["bytes"] > 0 and first["duration_ms"] >= 0
    assert lines[1]["route"] == "/dicomweb/studies/{study}/series" and lines[1]["status"] == 403
    assert lines[1]["tenant"] == "default"
    assert lines[2]["status"] == 401 and lines[2]["principal"] is None  # refused before routing, yet:
    assert lines[2]["route"] == "/tenants/{tenant}/dicomweb/studies" and lines[2]["tenant"] == "logs"
    text = "\n".join(access_log.lines)
    for secret in [*STUDY.values(), *SERIES.values(), sop_uid("A1", 1), "P1", "ller", "PatientID", "?"]:
        assert secret not in text, secret


def test_no_auth_serves_everything_as_a_local_developer(server):
    with start_server(server.lakehouse, auth=AuthConfig(disabled=True)) as open_server:
        response = requests.get(open_server.url("/tenants/anything/dicomweb/changefeed"))
        assert response.status_code == 200 and response.json() == []


def test_binds_only_where_told(server):
    host = server.base.split("//")[1].split(":")[0]
    assert host == "127.0.0.1"
    port = int(server.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
