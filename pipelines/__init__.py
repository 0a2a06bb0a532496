"""The Dagster code location of dicomlake: `dagster dev` loads `pipelines.defs` (see workspace.yaml).

`defs` is built on first access, not at import: `python -m pipelines.demo` spawns ingest worker
processes that re-import this package, and they must not pay for importing Dagster.
"""

from functools import cache
from typing import Any


@cache
def _defs() -> Any:
    from pipelines.definitions import build_defs

    return build_defs()


def __getattr__(name: str) -> Any:
    if name == "defs":
        return _defs()
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


__all__ = ["defs"]
