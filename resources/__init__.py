"""Dagster resources: configuration only. Each one turns its settings into core objects.

Defaults come from the same environment variables the `dicomlake` CLI reads, so a Dagster run and
a CLI command started in the same shell see the same lakehouse, tenant and drop folder.
"""

from __future__ import annotations

import os
from enum import StrEnum

import dagster as dg
from pydantic import Field

from dicomlake.ingest import IngestOptions
from dicomlake.store.lakehouse import DEFAULT_ROOT, DEFAULT_TENANT, Lakehouse, TenantStore

DEFAULT_DROP_DIR = "./drops"
# Beside the drop folder, never inside it: the drop sensor would take the NDJSON files for DICOM.
DEFAULT_FHIR_DIR = "./clinical"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


class LakehouseResource(dg.ConfigurableResource):
    """The lakehouse root and the one tenant this deployment reads and writes."""

    root: str = Field(
        default_factory=lambda: _env("DICOMLAKE_ROOT", DEFAULT_ROOT),
        description="Local folder or s3://bucket/prefix ($DICOMLAKE_ROOT, else ./lakehouse).",
    )
    tenant: str = Field(
        default_factory=lambda: _env("DICOMLAKE_TENANT", DEFAULT_TENANT),
        description="Tenant name ($DICOMLAKE_TENANT, else 'default').",
    )
    # S3 only. Unset fields fall back to the AWS_* environment variables of the run's process.
    endpoint_url: str | None = Field(default=None, description="S3 endpoint, e.g. http://127.0.0.1:8333")
    region: str | None = None
    access_key_id: str | None = Field(default=None, description="Use dg.EnvVar('AWS_ACCESS_KEY_ID').")
    secret_access_key: str | None = Field(default=None, description="Use dg.EnvVar('AWS_SECRET_ACCESS_KEY').")
    session_token: str | None = None
    allow_http: bool = Field(default=False, description="Allow a plain-HTTP endpoint (local test stores).")

    def storage_options(self) -> dict[str, str]:
        """The delta-rs style AWS_* options the core takes (it translates them for s3fs too)."""
        options = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
            "AWS_ALLOW_HTTP": "true" if self.allow_http else None,
        }
        return {key: value for key, value in options.items() if value}

    def tenant_store(self) -> TenantStore:
        # Empty options: the core reads the AWS_* environment variables itself.
        return Lakehouse(self.root, self.storage_options() or None).tenant(self.tenant)


class Disposition(StrEnum):
    MOVE = "move"
    KEEP = "keep"
    DELETE = "delete"


class DropFolderResource(dg.ConfigurableResource):
    """The folder (or s3:// prefix) where uploaders drop DICOM files, and what becomes of them."""

    path: str = Field(
        default_factory=lambda: _env("DICOMLAKE_DROP_DIR", DEFAULT_DROP_DIR),
        description="Drop folder or s3:// prefix ($DICOMLAKE_DROP_DIR, else ./drops).",
    )
    disposition: Disposition = Field(
        default=Disposition.MOVE,
        description="Once a file is committed or quarantined: move it to processed_dir, keep or delete it.",
    )
    processed_dir: str | None = Field(
        default=None, description="Where 'move' puts files (default <drop>/../processed)."
    )
    settle_seconds: float = Field(
        default=2.0, description="Skip files modified more recently than this: uploads in progress."
    )
    max_files_per_batch: int = Field(default=5000, description="Files per batch (per ingest run).")

    def move_to(self) -> str | None:
        if self.disposition != Disposition.MOVE:
            return None
        if self.processed_dir:
            return self.processed_dir
        if "://" in self.path:
            return f"{self.path.rstrip('/').rsplit('/', 1)[0]}/processed"
        # A sibling of the drop, never inside it: moved files must not be batched again.
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), "processed")


class IngestResource(dg.ConfigurableResource):
    """How hard one ingest run works: parser processes and instances per Delta commit."""

    workers: int | None = Field(default=None, description="Parser processes (default: one per core).")
    batch_size: int = Field(default=1000, description="Instances per Delta commit.")

    def options(self) -> IngestOptions:
        return IngestOptions(workers=self.workers, batch_size=self.batch_size)


class FhirSourceResource(dg.ConfigurableResource):
    """Where the clinical FHIR data comes from: a folder of Bulk NDJSON / Bundles, a FHIR server's
    search API, or both (imported together by the `clinical_fhir` asset)."""

    path: str | None = Field(
        default_factory=lambda: _env("DICOMLAKE_FHIR_DIR", DEFAULT_FHIR_DIR),
        description="Folder of .ndjson / .json Bundles (.gz too) ($DICOMLAKE_FHIR_DIR, else ./clinical); "
        "a missing folder is skipped when a server is configured.",
    )
    server_url: str | None = Field(
        default_factory=lambda: os.environ.get("DICOMLAKE_FHIR_SOURCE_URL") or None,
        description="FHIR R4 base URL to pull with the search API ($DICOMLAKE_FHIR_SOURCE_URL).",
    )
    token: str | None = Field(
        default=None, description="Bearer token: use dg.EnvVar('DICOMLAKE_FHIR_SOURCE_TOKEN')."
    )
    resource_types: list[str] | None = Field(
        default=None, description="Types to pull from the server (default: every type the importer reads)."
    )
    page_size: int = Field(default=200, description="_count of each search page.")
    patient_identifier_system: str | None = Field(
        default=None, description="Link FHIR patients to DICOM PatientIDs by identifiers of this system only."
    )
