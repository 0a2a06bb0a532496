#!/usr/bin/env python3
"""Set up and run dicomlake with nothing but python3 (3.11+).

    python3 dev.py demo    # set up, then run the main job on sample data in ./lakehouse
    python3 dev.py test    # set up, then lint and run the whole test suite
    python3 dev.py setup   # only set up .venv

Set-up creates .venv, installs uv into it, and installs this project with its locked dependencies
(requirements.lock). It is skipped when pyproject.toml and the lock file have not changed.

`test` also needs the real peers of the interop tests, Orthanc + its DICOMweb plugin and dicom3tools
(Debian packages orthanc, orthanc-dicomweb, dicom3tools): when they are missing and this runs as
root with apt-get, it installs them (once, quietly, saying so). Without them those tests fail, unless
DICOMLAKE_SKIP_INTEROP=1 is set to skip them explicitly. Likewise the DICOMcast tests push to a real
FHIR server, Medplum's FHIR router (npm packages in tests/fhir/medplum, installed with `npm ci` when
missing); without Node/npm they fail unless DICOMLAKE_SKIP_FHIR_SERVER=1.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".dicomlake-installed"
LOCK = REPO / "requirements.lock"
PACKAGES = ("dicomlake", "assets", "resources", "pipelines")


def run(*command: str | Path, **kwargs) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    subprocess.run([str(c) for c in command], check=True, cwd=REPO, **kwargs)


def fingerprint() -> str:
    digest = hashlib.sha256()
    for path in (REPO / "pyproject.toml", LOCK):
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def setup() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"dicomlake needs Python >= 3.11, this is {sys.version.split()[0]}")
    if STAMP.exists() and STAMP.read_text() == fingerprint():
        return
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    run(PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "uv")
    constraints = ["--constraint", str(LOCK)] if LOCK.exists() else []
    # Compiled bytecode up front: every spawned worker, Dagster run and test process then starts in
    # about half the time, also where PYTHONDONTWRITEBYTECODE is set (nothing would be cached).
    run(BIN / "uv", "pip", "install", "--python", PYTHON, "--quiet", "--compile-bytecode", "-e", ".[dev]",
        *constraints)
    STAMP.write_text(fingerprint())


# Real peers of the tests: Orthanc + DICOMweb (tests/web/test_orthanc_interop.py) and dicom3tools'
# dciodvfy, the IOD validator exported DICOM files are checked with (tests/export).
INTEROP_PACKAGES = ("orthanc", "orthanc-dicomweb", "dicom3tools")
SKIP_INTEROP = "DICOMLAKE_SKIP_INTEROP"


def interop_peers_installed() -> bool:
    if shutil.which("dpkg-query"):
        out = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status}\n", *INTEROP_PACKAGES],
                             capture_output=True, text=True, check=False).stdout.split()
        return out == ["installed"] * len(INTEROP_PACKAGES)
    return shutil.which("Orthanc") is not None or Path("/usr/sbin/Orthanc").exists()


def install_interop_peers() -> None:
    """Orthanc + its DICOMweb plugin for the interop tests, from apt, when missing and possible."""
    if os.environ.get(SKIP_INTEROP) == "1" or interop_peers_installed():
        return
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"interop tests need {' and '.join(INTEROP_PACKAGES)} (apt-get install, as root); not root or "
              f"no apt-get here, so they will fail: install them, or set {SKIP_INTEROP}=1 to skip them",
              flush=True)
        return
    print(f"installing {', '.join(INTEROP_PACKAGES)} for the interop tests (apt-get, once)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *INTEROP_PACKAGES]
    print("+", " ".join(install), flush=True)
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        # A fresh container often has no package lists yet.
        run("apt-get", "update", "-qq", env=env)
        run(*install, env=env, stdout=subprocess.DEVNULL)


FHIR_PEER = REPO / "tests" / "fhir" / "medplum"  # Medplum's FHIR router (npm), for tests/fhir
SKIP_FHIR_SERVER = "DICOMLAKE_SKIP_FHIR_SERVER"


def install_fhir_peer() -> None:
    """The npm packages of the FHIR server the DICOMcast tests push to, when missing (npm ci)."""
    installed = (FHIR_PEER / "node_modules" / "@medplum" / "fhir-router").is_dir()
    if os.environ.get(SKIP_FHIR_SERVER) == "1" or installed:
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        print(f"the FHIR server tests need Node.js 20 and npm (not found), so they will fail: install them, "
              f"or set {SKIP_FHIR_SERVER}=1 to skip them", flush=True)
        return
    print(f"installing the Medplum FHIR router for the FHIR server tests (npm ci in {FHIR_PEER}, once)",
          flush=True)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=FHIR_PEER, check=True)


def compile_project() -> None:
    """Bytecode for our own (editable) packages; only files changed since the last call compile."""
    import compileall

    for package in PACKAGES:
        compileall.compile_dir(REPO / package, quiet=1)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "demo"
    setup()
    compile_project()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if command == "setup":
        return 0
    if command == "demo":
        return subprocess.run([str(BIN / "dicomlake"), "demo", *argv[1:]], cwd=REPO, env=env).returncode
    if command == "test":
        install_interop_peers()
        install_fhir_peer()
        lint = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=REPO, env=env).returncode
        if lint:
            return lint
        return subprocess.run([str(PYTHON), "-m", "pytest", *argv[1:]], cwd=REPO, env=env).returncode
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
