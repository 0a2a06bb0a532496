"""Ingest DICOM objects from folders, files, zip archives and S3 prefixes into a tenant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicomlake.ingest.pipeline import IngestOptions, IngestSummary, ingest

__all__ = ["IngestOptions", "IngestSummary", "ingest"]


def __getattr__(name: str) -> Any:
    # Lazy, so that spawned workers importing dicomlake.ingest.worker skip the committer's imports.
    if name in __all__:
        from dicomlake.ingest import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
