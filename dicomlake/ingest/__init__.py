"""Ingest DICOM objects from folders, files, zip archives and S3 prefixes into a tenant."""

from dicomlake.ingest.pipeline import IngestOptions, IngestSummary, ingest

__all__ = ["IngestOptions", "IngestSummary", "ingest"]
