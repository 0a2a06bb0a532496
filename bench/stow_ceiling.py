"""A measuring device for `bench/dicomweb.py --ceiling`, never a mode of the product: our STOW path
with parts of its commit taken out, to measure how fast STOW could be without them.

    python -m bench.stow_ceiling --variant no-projection|no-commit --root R --port P [--workers N]

Serves the very app `dicomlake serve` runs (auth on, same HTTP path, same parsing, same durable blob
writes), with one change made to `dicomlake.ingest.stow` in each worker:
  no-projection  the change-feed commit happens; `instances` and the tag index do not follow it, so
                 a 200 no longer means searchable;
  no-commit      no Delta commit at all: parts are parsed and their bytes written durably, then
                 reported stored although nothing refers to them.
Both break a promise STOW makes; that is the point: each gives an upper bound on what removing that
stage could buy.
"""

from __future__ import annotations

import argparse
import os

# Each variant and how the benchmark report names it.
VARIANTS = {"no-projection": "without the projection", "no-commit": "without any Delta commit"}
ENV_VARIANT = "DICOMLAKE_BENCH_CEILING"


def _without_projection() -> None:
    from dicomlake.ingest import stow
    from dicomlake.store.committer import Committer

    Committer.sync_instances = lambda self, just_committed=None: 0  # type: ignore[method-assign]
    stow.index_after_commit = lambda tenant, outcome: None  # type: ignore[assignment]


def _without_commit() -> None:
    from dicomlake.ingest.stow import InstanceStore

    def commit(self, prepared, clock):  # InstanceStore._commit's signature
        for item in prepared:
            if item.version:
                item.result.stored, item.result.action = True, "create"
        return None

    InstanceStore._commit = commit  # type: ignore[method-assign]


def app():  # uvicorn's app factory
    """uvicorn's app factory, in each worker: patch, then build the app as `dicomlake serve` does."""
    variant = os.environ[ENV_VARIANT]
    {"no-projection": _without_projection, "no-commit": _without_commit}[variant]()
    from dicomlake.web.app import app_from_environment

    return app_from_environment()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    import uvicorn

    os.environ[ENV_VARIANT] = args.variant
    os.environ["DICOMLAKE_ROOT"] = args.root
    uvicorn.run("bench.stow_ceiling:app", factory=True, host="127.0.0.1", port=args.port,
                workers=args.workers, access_log=False, log_level="warning", server_header=False)


if __name__ == "__main__":
    main()
