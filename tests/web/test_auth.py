"""Authentication and authorization: tokens, 401, 403 across tenants and permissions, the CLI, serve."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from dicomlake.store import Lakehouse
from dicomlake.web.auth import TokenError, TokenStore
from tests.conftest import free_ports
from tests.search.conftest import INSTANCES, SERIES, STUDY, sop_uid, write_instance


@pytest.fixture(scope="module")
def two_tenants(server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth-drop")
    for series, number in INSTANCES:
        write_instance(folder, series, number)
    for tenant in ("a", "b"):
        server.ingest([folder], tenant=tenant)
    return server


def test_no_token_bad_token_or_other_scheme_is_401(two_tenants):
    server = two_tenants
    url = server.url("/tenants/a/dicomweb/studies")
    missing = requests.get(url)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == 'Bearer realm="dicomlake"'
    assert missing.json()["error"] == "unauthorized"
    wrong = requests.get(url, headers={"Authorization": "Bearer dlk_not-a-real-token"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    basic = requests.get(url, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    # Nothing of the data leaks in a 401, on any route (unknown ones too).
    assert requests.get(server.url("/dicomweb/nothing-here")).status_code == 401


CROSS_TENANT = [
    ("GET", "/studies"), ("GET", "/series"), ("GET", "/instances"),
    ("GET", f"/studies/{STUDY['A']}/series"), ("GET", f"/studies/{STUDY['A']}/instances"),
    ("GET", f"/studies/{STUDY['A']}/series/{SERIES['A1']}/instances"),
    ("GET", "/changefeed"), ("GET", "/changefeed/latest"),
    ("DELETE", f"/studies/{STUDY['C']}"), ("GET", "/extendedquerytags"), ("POST", "/extendedquerytags"),
    ("GET", "/operations/0123abcd"), ("POST", "/export"),
]


@pytest.mark.parametrize(("method", "path"), CROSS_TENANT)
def test_a_token_of_tenant_a_cannot_touch_tenant_b(two_tenants, method, path):
    server = two_tenants
    everything_in_a = server.auth("a", ["admin"])  # admin implies every permission, in a only
    assert requests.request(method, server.url(f"/tenants/a/dicomweb{path}"), headers=everything_in_a,
                            json=[]).status_code not in (401, 403)
    for tenant_path in ("/tenants/b/dicomweb", "/dicomweb", "/tenants/no-such-tenant/dicomweb"):
        refused = requests.request(method, server.url(tenant_path + path), headers=everything_in_a, json=[])
        assert refused.status_code == 403, (tenant_path, refused.text)
    # The same 403 whether or not the tenant exists.
    existing = requests.request(method, server.url(f"/tenants/b/dicomweb{path}"), headers=everything_in_a)
    missing = requests.request(method, server.url(f"/tenants/zz-none/dicomweb{path}"),
                               headers=everything_in_a)
    assert existing.content == missing.content


# (Study C of tenant a is deleted by the test above; B stays.)
WADO = [f"/studies/{STUDY['B']}", f"/studies/{STUDY['B']}/metadata",
        f"/studies/{STUDY['B']}/series/{SERIES['B1']}/instances/{sop_uid('B1', 1)}"]


@pytest.mark.parametrize("path", WADO)
def test_wado_paths_are_refused_across_tenants(two_tenants, path):
    server = two_tenants
    reader_of_a = server.auth("a", ["read"])
    assert requests.get(server.url(f"/tenants/a/dicomweb{path}"), headers=reader_of_a).status_code == 200
    assert requests.get(server.url(f"/tenants/b/dicomweb{path}"), headers=reader_of_a).status_code == 403


def test_permissions_are_checked_per_action(two_tenants):
    server = two_tenants
    base = server.url("/tenants/a/dicomweb")
    reader = server.auth("a", ["read"])
    assert requests.get(f"{base}/studies", headers=reader).status_code == 200
    assert requests.delete(f"{base}/studies/{STUDY['C']}", headers=reader).status_code == 403
    assert requests.post(f"{base}/extendedquerytags", json=[{"Path": "PatientWeight"}],
                         headers=reader).status_code == 403
    assert requests.get(f"{base}/extendedquerytags", headers=reader).status_code == 403
    deleter = server.auth("a", ["delete"])
    assert requests.get(f"{base}/studies", headers=deleter).status_code == 403
    writer = server.auth("a", ["write"])
    assert requests.get(f"{base}/changefeed", headers=writer).status_code == 403
    # One token across two tenants; and all tenants.
    both = server.auth(["a", "b"], ["read"])
    assert all(requests.get(server.url(f"/tenants/{t}/dicomweb/studies"), headers=both).status_code == 200
               for t in ("a", "b"))
    assert requests.get(server.url("/dicomweb/changefeed"), headers=both).status_code == 403
    anywhere = server.auth("*", ["read"])
    assert requests.get(server.url("/dicomweb/changefeed"), headers=anywhere).status_code == 200


def test_revoked_and_expired_tokens_are_refused(two_tenants):
    server = two_tenants
    store = server.tokens
    token, _ = store.create("short-lived", ["a"], ["read"])
    url = server.url("/tenants/a/dicomweb/changefeed/latest")
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    store.revoke("short-lived")
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    expired, _ = store.create("expired", ["a"], ["read"], dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    assert requests.get(url, headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    # A revoke made by another process (another TokenStore) reaches the server within its refresh.
    other, _ = store.create("other-process", ["a"], ["read"])
    assert requests.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 200
    TokenStore(server.lakehouse).revoke("other-process")
    deadline = time.monotonic() + 5
    while requests.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 200:
        assert time.monotonic() < deadline, "revoke not seen within 5 s"
        time.sleep(0.1)


def test_token_store_keeps_only_hashes_and_refuses_bad_requests(tmp_path):
    lakehouse = Lakehouse(tmp_path / "lake")
    store = TokenStore(lakehouse)
    token, record = store.create("ci", ["a", "b"], ["read", "write"])
    assert token.startswith("dlk_") and len(token) > 40
    assert record.tenants == {"a", "b"} and store.authenticate(token).name == "ci"
    stored = b"".join(p.read_bytes() for p in (tmp_path / "lake" / "auth").rglob("*") if p.is_file())
    assert token.encode() not in stored and record.token_sha256.encode() in stored
    with pytest.raises(TokenError, match="exists"):
        store.create("ci", ["a"], ["read"])
    with pytest.raises(TokenError, match="permissions"):
        store.create("x", ["a"], ["superuser"])
    with pytest.raises(ValueError, match="tenant"):
        store.create("x", ["../etc"], ["read"])
    with pytest.raises(TokenError, match="name"):
        store.create("bad name!", ["a"], ["read"])
    with pytest.raises(TokenError, match="no token"):
        store.revoke("nobody")
    assert [r.name for r in store.list()] == ["ci"]


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _cli(capsys, *args: str, root: Path) -> Ran:
    """The command line, in this process (main() as the `dicomlake` script runs it)."""
    from dicomlake.cli import main

    capsys.readouterr()
    try:
        code = main([*args, "--root", str(root)])
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return Ran(code, out.out, out.err)


def test_tokens_cli_create_list_revoke(tmp_path, capsys):
    root = tmp_path / "lake"
    created = _cli(capsys, "tokens", "create", "--name", "viewer", "--tenant", "a", "--tenant", "b",
                   "--permission", "read", "--expires-in-days", "30", "--json", root=root)
    assert created.returncode == 0, created.stderr
    payload = json.loads(created.stdout)
    assert payload["token"].startswith("dlk_") and payload["tenants"] == ["a", "b"]
    listed = _cli(capsys, "tokens", "list", "--json", root=root)
    assert payload["token"] not in listed.stdout
    assert [t["name"] for t in json.loads(listed.stdout)] == ["viewer"]
    assert json.loads(listed.stdout)[0]["expires_at"] is not None
    both = _cli(capsys, "tokens", "create", "--name", "x", "--tenant", "a", "--all-tenants",
                "--permission", "read", root=root)
    assert both.returncode == 2 and "--all-tenants" in both.stderr
    human = _cli(capsys, "tokens", "create", "--name", "ops", "--all-tenants", "--permission", "admin",
                 root=root)
    assert human.stdout.startswith("dlk_") and "shown once" in human.stdout
    assert _cli(capsys, "tokens", "revoke", "viewer", root=root).returncode == 0
    assert _cli(capsys, "tokens", "revoke", "viewer", root=root).returncode == 1
    remaining = json.loads(_cli(capsys, "tokens", "list", "--json", root=root).stdout)
    assert [t["name"] for t in remaining] == ["ops"]


def test_serve_refuses_no_auth_off_loopback(tmp_path, capsys):
    refused = _cli(capsys, "serve", "--host", "0.0.0.0", "--no-auth", root=tmp_path / "lake")
    assert refused.returncode == 2 and "refused" in refused.stderr
    assert _cli(capsys, "serve", "--host", "10.1.2.3", "--no-auth", root=tmp_path / "lake").returncode == 2


def test_dicomlake_serve_runs_with_auth_and_logs_json_lines(tmp_path):
    root = tmp_path / "lake"
    token, _ = TokenStore(Lakehouse(root)).create("svc", ["*"], ["read"])
    (port,) = free_ports(1)
    process = subprocess.Popen([sys.executable, "-m", "dicomlake", "serve", "--root", str(root), "--port",
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}/dicomweb"
        assert requests.get(f"{base}/changefeed").status_code == 401
        ok = requests.get(f"{base}/changefeed?limit=5", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json() == []
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(x["route"], x["status"], x["principal"]) for x in lines[-2:]] == [
        ("/dicomweb/changefeed", 401, None), ("/dicomweb/changefeed", 200, "svc")]
    assert "limit" not in out  # never the query string
