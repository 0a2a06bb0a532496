"""What to export, resolved to the current instances of one Delta version of `instances`.

A selection is given by UIDs (`study`, `study/series`, `study/series/instance`, as Azure's export
takes them), by QIDO-RS filters, or by a cohort (its study UIDs). It resolves against one pinned
version of the `instances` table, recorded with the change feed's latest seq, so a resumed export
reads exactly the same instances as the run it continues.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable

from dicomlake.export.decode import METADATA_COLUMNS, PIXEL_COLUMNS
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.read import scan

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
SEARCH_PAGE = 10_000
_KEYS = [
    "study_instance_uid", "series_instance_uid", "sop_instance_uid", "blob_key", "sha256", "rows",
    "columns", "number_of_frames", "modality",
]  # fmt: skip
# Plus what the decoder takes from the row instead of parsing the header again.
COLUMNS = _KEYS + [c for c in (*METADATA_COLUMNS, *PIXEL_COLUMNS) if c not in _KEYS]


class SelectionError(ValueError):
    """A selection that cannot be resolved (bad UID, bad filter, nothing given)."""


@dataclass(frozen=True)
class Selection:
    """uids: 'study[/series[/instance]]' strings; filters: QIDO-RS parameters; studies: a cohort's."""

    uids: tuple[str, ...] = ()
    filters: dict[str, str] = field(default_factory=dict)
    cohort: str | None = None
    as_of: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"uids": list(self.uids), "filters": dict(self.filters), "cohort": self.cohort,
                "as_of": self.as_of}  # fmt: skip

    @classmethod
    def from_description(cls, data: dict[str, Any]) -> Selection:
        return cls(tuple(data["uids"]), dict(data["filters"]), data["cohort"], data["as_of"])


@dataclass(frozen=True)
class ResolvedSelection:
    instances: pa.Table  # COLUMNS, one row per current instance, ordered by study, series, sop
    instances_version: int
    feed_seq: int
    studies_from_cohort: tuple[str, ...] = ()


def _check_uid(uid: str) -> str:
    if not _UID.match(uid) or len(uid) > 64:
        raise SelectionError(f"not a DICOM UID: {uid!r}")
    return uid


def _uid_predicate(spec: str) -> str:
    parts = [_check_uid(p) for p in spec.strip("/").split("/")]
    if len(parts) > 3:
        raise SelectionError(f"expected study[/series[/instance]], got {spec!r}")
    names = ("study_instance_uid", "series_instance_uid", "sop_instance_uid")
    return "(" + " AND ".join(f"{n} = '{u}'" for n, u in zip(names, parts, strict=False)) + ")"


def _in_list(column: str, uids: list[str]) -> str:
    return f"{column} IN (" + ", ".join(f"'{_check_uid(u)}'" for u in uids) + ")"


def _searched_sops(tenant: TenantStore, filters: dict[str, str]) -> list[str]:
    from dicomlake.search import SearchIndex

    index = SearchIndex(tenant)
    sops: list[str] = []
    while True:
        page = index.search("instances", filters, limit=SEARCH_PAGE, offset=len(sops))
        sops += [item["00080018"]["Value"][0] for item in page]
        if len(page) < SEARCH_PAGE:
            return sops


def resolve(tenant: TenantStore, selection: Selection, version: int | None = None) -> ResolvedSelection:
    """The selection's current instances at `version` of `instances` (default: the latest)."""
    from dicomlake.changefeed.reader import ChangeFeed

    given = [bool(selection.uids), bool(selection.filters), selection.cohort is not None]
    if sum(given) != 1:
        raise SelectionError("give exactly one of: UIDs, filters, a cohort")
    feed_seq = ChangeFeed(tenant).latest_sequence()
    table = tenant.table("instances")
    if version is None:
        version = table.version()
    uri = tenant.table_uri("instances")
    pinned = DeltaTable(uri, version=version, storage_options=tenant.storage_options)
    cohort_studies: tuple[str, ...] = ()
    if selection.uids:
        where = " OR ".join(_uid_predicate(spec) for spec in selection.uids)
    elif selection.filters:
        sops = _searched_sops(tenant, selection.filters)
        where = _in_list("sop_instance_uid", sops) if sops else "FALSE"
    else:
        from dicomlake import cohort

        result = cohort.run(tenant, _cohort_input(selection.cohort or ""), as_of=selection.as_of)
        cohort_studies = tuple(result.studies)
        where = _in_list("study_instance_uid", list(cohort_studies)) if cohort_studies else "FALSE"
    rows = scan(pinned, COLUMNS, where=where,
                order_by="study_instance_uid, series_instance_uid, sop_instance_uid")  # fmt: skip
    return ResolvedSelection(rows, version, feed_seq, cohort_studies)


def _cohort_input(question_or_file: str) -> Any:
    """A definition file (YAML/JSON) when the path exists, else the plain-language question."""
    from pathlib import Path

    path = Path(question_or_file)
    if question_or_file.endswith((".yaml", ".yml", ".json")) and path.is_file():
        from dicomlake.cohort import load_definition

        return load_definition(path)
    return question_or_file
