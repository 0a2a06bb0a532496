"""Find the current instances of a study, series or SOP instance, and open their stored bytes.

Locating reads the locator columns of `instances` (the current version of every SOP instance) from
an in-memory snapshot that follows the table's log (`dicomlake.search.snapshot`): a lookup costs a
filter over memory, not a scan of every data file the table has gathered. Metadata (the stored
DICOM JSON, too large to hold for every instance) is read through delta-rs's own engine
(`dicomlake.store.read.scan`), filtered by UID so the engine prunes files by their statistics.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import BinaryIO

import polars as pl

from dicomlake.dicom.uid import uid_problem
from dicomlake.errors import DicomlakeError
from dicomlake.search.snapshot import TableSnapshot
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.read import scan


class NotFound(DicomlakeError, LookupError):
    """No current instance at that study / series / SOP instance (or frame)."""


class InvalidRequest(DicomlakeError, ValueError):
    """A UID, frame list or parameter that cannot be used as given."""


class NotAcceptable(DicomlakeError):
    """The instance cannot be given in any representation the client accepts (e.g. its pixel data
    cannot be decoded to transcode it)."""


_COLUMNS = [
    "study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid", "seq",
    "sha256", "blob_key", "size_bytes", "transfer_syntax_uid", "instance_number", "rows", "columns",
    "number_of_frames", "samples_per_pixel", "bits_allocated", "photometric_interpretation",
]  # fmt: skip


@dataclass(frozen=True)
class StoredInstance:
    """The current version of one SOP instance: where its bytes are and what they hold."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    seq: int
    sha256: str
    blob_key: str
    size_bytes: int
    transfer_syntax_uid: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    samples_per_pixel: int | None
    bits_allocated: int | None
    photometric_interpretation: str | None
    dicom_json: str | None = None  # only when asked for (metadata)

    @property
    def frames(self) -> int:
        return max(1, self.number_of_frames or 1)


def check_uid(name: str, value: str) -> str:
    problem = uid_problem(value)
    if problem:
        raise InvalidRequest(f"{name} {problem}")
    return value


class InstanceLocator:
    """UIDs -> current instances of one tenant. Keep one per tenant (its Delta table stays open and
    only reads the log's new entries); safe to share between threads."""

    def __init__(self, tenant: TenantStore) -> None:
        self.tenant = tenant
        self._table = tenant.table("instances")
        self._snapshot = TableSnapshot(tenant.table("instances"), tenant.lakehouse.filesystem(), _COLUMNS)
        self._lock = threading.Lock()

    def find(
        self,
        study: str,
        series: str | None = None,
        sop: str | None = None,
        *,
        with_json: bool = False,
    ) -> list[StoredInstance]:
        """The current instances under the given UIDs, ordered by series, instance number and UID;
        NotFound when there are none."""
        conditions = [f"study_instance_uid = '{check_uid('StudyInstanceUID', study)}'"]
        if series is not None:
            conditions.append(f"series_instance_uid = '{check_uid('SeriesInstanceUID', series)}'")
        if sop is not None:
            conditions.append(f"sop_instance_uid = '{check_uid('SOPInstanceUID', sop)}'")
        if with_json:
            with self._lock:  # one refresh and query at a time on the shared table object
                self._table.update_incremental()
                where = " AND ".join(conditions)
                rows = scan(self._table, [*_COLUMNS, "dicom_json"], where=where).to_pylist()
        else:
            self._snapshot.refresh()
            match = pl.col("study_instance_uid") == study
            if series is not None:
                match &= pl.col("series_instance_uid") == series
            if sop is not None:
                match &= pl.col("sop_instance_uid") == sop
            rows = self._snapshot.frame.filter(match).select(_COLUMNS).to_dicts()
        if not rows:
            level = "SOP instance" if sop else "series" if series else "study"
            raise NotFound(f"no such {level}")
        found = [StoredInstance(**row) for row in rows]
        found.sort(key=lambda i: (i.series_instance_uid, i.instance_number is None, i.instance_number or 0,
                                  i.sop_instance_uid))
        return found


def versions_tag(instances: list[StoredInstance], *extra: str) -> str:
    """An ETag for a response built from exactly these versions (and `extra`, e.g. the base URL)."""
    digest = hashlib.sha256()
    for part in extra:
        digest.update(part.encode() + b"\0")
    for instance in sorted(instances, key=lambda i: i.sop_instance_uid):
        digest.update(f"{instance.sop_instance_uid}:{instance.sha256}\n".encode())
    return '"' + digest.hexdigest()[:32] + '"'


def open_blob(tenant: TenantStore, instance: StoredInstance) -> BinaryIO:
    """The stored Part-10 bytes, as a binary file object (local file or object store stream)."""
    return tenant.blobs.open(instance.blob_key)
