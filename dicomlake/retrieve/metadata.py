"""WADO-RS metadata: the stored DICOM JSON of each instance, bulk data as URIs of this service.

The header was converted once, at ingest (bulk values above the threshold left out as
`"BulkDataURI": "bulkdata/<tag>"`); here it is only concatenated, with each relative bulk data URI
made absolute under the instance's URL, so a response costs no DICOM parsing.
"""

from __future__ import annotations

import warnings

from dicomlake.retrieve.instances import InvalidRequest, NotFound, StoredInstance
from dicomlake.store.lakehouse import TenantStore

_RELATIVE_BULK = '"BulkDataURI":"bulkdata/'


def instance_url(base_url: str, instance: StoredInstance) -> str:
    return (f"{base_url}/studies/{instance.study_instance_uid}/series/{instance.series_instance_uid}"
            f"/instances/{instance.sop_instance_uid}")


def metadata_json(instances: list[StoredInstance], base_url: str) -> bytes:
    """A DICOM JSON array (PS3.18 F.2), one object per instance (found with with_json=True).

    The relative URIs are the only places where `"BulkDataURI":"bulkdata/` can occur unescaped in
    compact JSON (inside a string value its quotes would be escaped), so a text replace is exact.
    """
    parts = []
    for instance in instances:
        text = instance.dicom_json or "{}"
        if _RELATIVE_BULK in text:
            absolute = f'"BulkDataURI":"{instance_url(base_url, instance)}/bulkdata/'
            text = text.replace(_RELATIVE_BULK, absolute)
        parts.append(text)
    return ("[" + ",".join(parts) + "]").encode("utf-8")


def bulk_value(tenant: TenantStore, instance: StoredInstance, tag: str) -> bytes:
    """The value bytes of the element a metadata BulkDataURI names (`tag` as 8 hex digits): the
    top-level element, else the first one of that tag inside a sequence (depth first)."""
    import pydicom
    from pydicom.tag import Tag

    try:
        wanted = Tag(int(tag, 16))
    except ValueError:
        raise InvalidRequest(f"bulk data is addressed by a tag of 8 hex digits, not {tag!r}") from None
    if wanted == 0x7FE00010:
        raise NotFound("pixel data is retrieved by frames (/frames/{list})")
    with tenant.blobs.open(instance.blob_key) as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(handle, stop_before_pixels=True)
        if wanted in ds:
            raw = ds.get_item(wanted)
            value = raw.value if isinstance(raw.value, bytes) else ds[wanted].value
            return value if isinstance(value, bytes) else str(value).encode()
        for element in ds.iterall():
            if element.tag == wanted and isinstance(element.value, bytes):
                return element.value
    raise NotFound(f"the instance has no bulk data element {tag}")
