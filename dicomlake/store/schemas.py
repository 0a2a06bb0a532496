"""Arrow schemas of the Delta tables (one definition each; every writer uses these)."""

from __future__ import annotations

import pyarrow as pa

from dicomlake.dicom.attributes import DERIVED_KINDS, PROMOTED

UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")
# Column type of each kind of promoted attribute (dicomlake.dicom.attributes).
_KIND_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "uid": pa.string(),
    "pn": pa.string(),
    "date": pa.date32(),
    "time": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "floats": pa.list_(pa.float64()),
    "timestamp": pa.timestamp("us"),
}


def promoted_fields() -> list[pa.Field]:
    """The typed columns every version row carries: promoted attributes, then derived ones."""
    named = [(p.column, p.kind) for p in PROMOTED] + list(DERIVED_KINDS.items())
    return [pa.field(column, _KIND_TYPES[kind]) for column, kind in named]


# One row per stored version of an instance: where its bytes are and what they say.
_VERSION_FIELDS: list[pa.Field] = [
    pa.field("sha256", pa.string()),
    pa.field("blob_key", pa.string()),
    pa.field("size_bytes", pa.int64()),
    pa.field("transfer_syntax_uid", pa.string()),
    *promoted_fields(),
    pa.field("warnings", pa.list_(pa.string())),
    pa.field("dicom_json", pa.large_string()),
]

_CHANGE_FIELDS: list[pa.Field] = [
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("action", pa.string(), nullable=False),  # create | update | delete
    pa.field("changed_at", UTC_TIMESTAMP, nullable=False),
    pa.field("source", pa.string()),  # where the bytes came from: a drop path, a zip member, STOW
    # The seq this change supersedes (the version an update replaces or a delete removes); null for a
    # create. It lets a reader tell current / replaced / deleted from the feed alone.
    pa.field("previous_seq", pa.int64()),
]

# THE change feed: append-only, dense gapless seq from 1. Deletes carry the UIDs only.
CHANGES = pa.schema(_CHANGE_FIELDS + _VERSION_FIELDS)

# Current state: the latest non-deleted version of each SOP instance (a projection of CHANGES).
INSTANCES = pa.schema([f for f in CHANGES if f.name not in ("action", "previous_seq")])

QUARANTINE = pa.schema(
    [
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("quarantine_key", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("error_code", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("quarantined_at", UTC_TIMESTAMP, nullable=False),
    ]
)

# Consumer positions: the position itself is the Delta txn version; rows are the audit trail.
CURSORS = pa.schema(
    [
        pa.field("consumer", pa.string(), nullable=False),
        pa.field("position", pa.int64(), nullable=False),
        pa.field("committed_at", UTC_TIMESTAMP, nullable=False),
    ]
)

# Blobs removed by the retention purge: which version, when, and why it was no longer needed.
PURGED_BLOBS = pa.schema(
    [
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("blob_key", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),  # the change that stored this version
        pa.field("superseded_by_seq", pa.int64(), nullable=False),
        pa.field("superseded_at", UTC_TIMESTAMP, nullable=False),
        pa.field("purged_at", UTC_TIMESTAMP, nullable=False),
    ]
)

# Extended query tags (dicomlake.tags): the catalog, one row per tag. Each change to it is one
# overwrite commit carrying the app transaction "dicomlake.query_tags" (the catalog revision), so two
# concurrent changes conflict instead of one silently undoing the other.
QUERY_TAGS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # "00101030", or "00091010:ACME 1.0" (private)
        pa.field("id", pa.string(), nullable=False),  # unique per addition; names its watermarks
        pa.field("path", pa.string(), nullable=False),  # 8 hex digits, upper case
        pa.field("keyword", pa.string()),  # standard tags only
        pa.field("vr", pa.string(), nullable=False),
        pa.field("private_creator", pa.string()),
        pa.field("level", pa.string(), nullable=False),  # study | series | instance
        pa.field("status", pa.string(), nullable=False),  # adding | ready | deleting
        pa.field("query_status", pa.string(), nullable=False),  # enabled | disabled
        pa.field("error_count", pa.int64(), nullable=False),
        pa.field("indexed_through", pa.int64(), nullable=False),  # seq; the truth is tag_values' txn
        pa.field("created_at", UTC_TIMESTAMP, nullable=False),
        pa.field("updated_at", UTC_TIMESTAMP, nullable=False),
    ]
)

# Indexed values of extended query tags: one row per value. Read by dicomlake.search; the
# contract (names and types) is fixed. Rows of superseded versions may stay: search keeps only
# rows whose seq is a current `instances` seq.
TAG_VALUES = pa.schema(
    [
        pa.field("tag_key", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("study_instance_uid", pa.string()),
        pa.field("series_instance_uid", pa.string()),
        pa.field("sop_instance_uid", pa.string()),
        pa.field("value_string", pa.string()),
        pa.field("value_int", pa.int64()),
        pa.field("value_float", pa.float64()),
        pa.field("value_date", pa.date32()),
    ]
)

# Values of extended query tags that could not be indexed, per instance version.
TAG_ERRORS = pa.schema(
    [
        pa.field("tag_key", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("sop_instance_uid", pa.string()),
        pa.field("error_code", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("recorded_at", UTC_TIMESTAMP, nullable=False),
    ]
)

# API tokens of the DICOMweb service (<root>/auth/tokens, not per tenant): an append-only log of
# create and revoke events; the live set is its fold (dicomlake.web.auth). Never the token itself.
TOKENS = pa.schema(
    [
        pa.field("revision", pa.int64(), nullable=False),  # the commit's app-transaction version
        pa.field("event", pa.string(), nullable=False),  # create | revoke
        pa.field("name", pa.string(), nullable=False),
        pa.field("token_sha256", pa.string()),  # hex; null on a revoke
        pa.field("tenants", pa.list_(pa.string())),  # "*" for every tenant
        pa.field("permissions", pa.list_(pa.string())),
        pa.field("expires_at", UTC_TIMESTAMP),
        pa.field("at", UTC_TIMESTAMP, nullable=False),
    ]
)

# DICOMcast output (dicomlake.fhir): the current FHIR resources, one row per resource id, with the
# resource JSON and flattened columns to join on. `source_seq` is the change-feed seq the version
# reflects; `content_sha256` hashes the resource without `meta` (an unchanged re-apply is a no-op).
_FHIR_COMMON: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("version_id", pa.int64(), nullable=False),
    pa.field("last_updated", UTC_TIMESTAMP, nullable=False),
    pa.field("source_seq", pa.int64(), nullable=False),
    pa.field("content_sha256", pa.string(), nullable=False),
    pa.field("resource_json", pa.large_string(), nullable=False),
]
FHIR_PATIENT = pa.schema(
    [
        *_FHIR_COMMON,
        pa.field("identifier_system", pa.string()),
        pa.field("identifier_value", pa.string()),
        pa.field("family", pa.string()),
        pa.field("given", pa.string()),
        pa.field("gender", pa.string()),
        pa.field("birth_date", pa.date32()),
    ]
)
FHIR_IMAGINGSTUDY = pa.schema(
    [
        *_FHIR_COMMON,
        pa.field("study_instance_uid", pa.string(), nullable=False),
        pa.field("accession_number", pa.string()),
        pa.field("subject", pa.string(), nullable=False),  # "Patient/<id>"
        pa.field("patient_identifier", pa.string()),  # the PatientID
        pa.field("started", pa.string()),  # FHIR dateTime, as emitted
        pa.field("modalities", pa.list_(pa.string())),
        pa.field("number_of_series", pa.int64(), nullable=False),
        pa.field("number_of_instances", pa.int64(), nullable=False),
        pa.field("description", pa.string()),
    ]
)
FHIR_ENDPOINT = pa.schema([*_FHIR_COMMON, pa.field("address", pa.string(), nullable=False)])
# Change-feed entries DICOMcast could not apply: one row per entry (seq), with the reason; replayed
# entries keep their row with `replayed_at` set.
FHIR_DEAD_LETTERS = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("study_instance_uid", pa.string(), nullable=False),
        pa.field("series_instance_uid", pa.string()),
        pa.field("sop_instance_uid", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("attempts", pa.int64(), nullable=False),
        pa.field("failed_at", UTC_TIMESTAMP, nullable=False),
        pa.field("replayed_at", UTC_TIMESTAMP),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "changes": CHANGES,
    "instances": INSTANCES,
    "quarantine": QUARANTINE,
    "cursors": CURSORS,
    "purged_blobs": PURGED_BLOBS,
    "query_tags": QUERY_TAGS,
    "tag_values": TAG_VALUES,
    "tag_errors": TAG_ERRORS,
    "fhir_patient": FHIR_PATIENT,
    "fhir_imagingstudy": FHIR_IMAGINGSTUDY,
    "fhir_endpoint": FHIR_ENDPOINT,
    "fhir_dead_letters": FHIR_DEAD_LETTERS,
}

# Imported clinical FHIR data (dicomlake.fhir.importer): the current version of each resource.
FHIR_RESOURCES = pa.schema(
    [
        pa.field("resource_type", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("version_id", pa.string()),
        pa.field("last_updated", UTC_TIMESTAMP),
        pa.field("content_sha256", pa.string(), nullable=False),  # of the resource without `meta`
        pa.field("resource_json", pa.large_string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("imported_at", UTC_TIMESTAMP, nullable=False),
    ]
)
# Resources the import refused, with the reason and the original text (never dropped).
FHIR_IMPORT_QUARANTINE = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("resource_type", pa.string()),
        pa.field("id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.large_string(), nullable=False),
        pa.field("quarantined_at", UTC_TIMESTAMP, nullable=False),
    ]
)
# Links of imported FHIR resources to DICOM (dicomlake.fhir.links); unmatched rows have null keys.
FHIR_PATIENT_LINK = pa.schema(
    [
        pa.field("fhir_patient_id", pa.string(), nullable=False),
        pa.field("dicom_patient_id", pa.string()),
        pa.field("matched_system", pa.string()),
        pa.field("matched_value", pa.string()),
    ]
)
FHIR_STUDY_LINK = pa.schema(
    [
        pa.field("resource_type", pa.string(), nullable=False),
        pa.field("resource_id", pa.string(), nullable=False),
        pa.field("patient_id", pa.string()),
        pa.field("study_instance_uid", pa.string()),
        pa.field("matched_by", pa.string()),
    ]
)


def _fhir_import_schemas() -> dict[str, pa.Schema]:
    from dicomlake.fhir.views import view_schemas  # the ViewDefinition JSON files are the source

    return {"fhir_resources": FHIR_RESOURCES, "fhir_import_quarantine": FHIR_IMPORT_QUARANTINE,
            "fhir_patient_link": FHIR_PATIENT_LINK, "fhir_study_link": FHIR_STUDY_LINK, **view_schemas()}


SCHEMAS.update(_fhir_import_schemas())
