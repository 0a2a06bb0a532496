#!/usr/bin/env python3
"""Set up and run dicomlake with nothing but python3 (3.11+).

    python3 dev.py demo    # set up, then run the main job on sample data in ./lakehouse
    python3 dev.py test    # set up, then lint and run the whole test suite
    python3 dev.py setup   # only set up .venv

Set-up creates .venv, installs uv into it, and installs this project with its locked dependencies
(requirements.lock). It is skipped when pyproject.toml and the lock file have not changed.
"""

from __future__ import annotations

import hashlib
import os
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
        lint = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=REPO, env=env).returncode
        if lint:
            return lint
        return subprocess.run([str(PYTHON), "-m", "pytest", *argv[1:]], cwd=REPO, env=env).returncode
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
