"""QIDO-RS search over a tenant's current instances: studies, series or instances as DICOM JSON.

A SearchIndex keeps the searchable columns of `instances` in memory (a TableSnapshot: only new data
files are read when the table moves) and derives the study and series levels from it when a search
needs them, with the same rules as the `studies`/`series` tables (newest non-null value wins; counts
and ModalitiesInStudy computed). So a search sees every committed instance at once, without waiting
for a level rebuild. Extended query tags match through their `tag_values` rows, restricted to the
instance versions that are current.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from dicomlake.errors import InvalidQuery
from dicomlake.search.attributes import (
    BUILT_IN,
    BY_KEYWORD,
    BY_TAG,
    DEFAULT_RETURN,
    INSTANCE_AVAILABILITY,
    LEVELS,
    RESOURCE_LEVELS,
    Attribute,
    Level,
    Match,
    level_rank,
    resolve_tag,
)
from dicomlake.search.matching import match_expr
from dicomlake.search.snapshot import TableSnapshot
from dicomlake.store.lakehouse import TenantStore
from dicomlake.store.levels import (
    PATIENT_COLUMNS,
    SERIES_COLUMNS,
    STUDY_COLUMNS,
    derive_series,
    derive_studies,
)
from dicomlake.store.read import scan

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
# QIDO-RS query parameters that are not attributes (PS3.18 §8.3.4.1).
CONTROL_PARAMETERS = ("includefield", "limit", "offset", "fuzzymatching")

INSTANCE_COLUMNS = sorted(
    {
        "seq", "changed_at", "size_bytes", "study_instance_uid", "series_instance_uid",
        *PATIENT_COLUMNS, *STUDY_COLUMNS, *SERIES_COLUMNS,
        *(a.column for a in BUILT_IN if a.level == "instance"),
    }
)
# Value columns of tag_values by the VR of the tag (see dicomlake.tags).
_INT_VRS = {"IS", "SL", "SS", "UL", "US", "SV", "UV"}
_FLOAT_VRS = {"DS", "FL", "FD"}


def _tag_match(vr: str) -> tuple[str, Match]:
    if vr == "DA":
        return "value_date", "date"
    if vr in _INT_VRS:
        return "value_int", "int"
    if vr in _FLOAT_VRS:
        return "value_float", "float"
    if vr == "TM":
        return "value_string", "time"
    if vr == "PN":
        return "value_string", "pn"
    if vr == "UI":
        return "value_string", "uid"
    return "value_string", "str"


@dataclass(frozen=True)
class Query:
    """A parsed QIDO-RS search: what to match, what to return, which page."""

    level: Level
    matches: list[tuple[str, Any, str]]  # (parameter as given, Attribute or extended tag, value)
    include: list[tuple[str, Any]] = field(default_factory=list)  # (tag, Attribute / tag / None)
    include_all: bool = False
    fuzzy: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def _level(level: str) -> Level:
    if level in RESOURCE_LEVELS:
        return RESOURCE_LEVELS[level]
    if level in LEVELS:
        return level  # type: ignore[return-value]
    raise InvalidQuery("level", f"{level!r} is not one of studies, series, instances")


def _single(name: str, value: str | Sequence[str]) -> str:
    if isinstance(value, str):
        return value
    values = list(value)
    if len(values) != 1:
        raise InvalidQuery(name, "given more than once")
    return values[0]


def _integer(name: str, text: str, low: int, high: int) -> int:
    try:
        number = int(text)
    except ValueError:
        raise InvalidQuery(name, f"{text!r} is not an integer") from None
    if not low <= number <= high:
        raise InvalidQuery(name, f"must be between {low} and {high}, not {number}")
    return number


def _flag(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise InvalidQuery(name, f"{text!r} is not true or false")


class SearchIndex:
    """Search one tenant. Create once and keep it (e.g. per web worker): its snapshot is the cache."""

    def __init__(self, tenant: TenantStore) -> None:
        self.tenant = tenant
        filesystem = tenant.lakehouse.filesystem()
        self._instances = TableSnapshot(tenant.table("instances"), filesystem, INSTANCE_COLUMNS)
        self._derived_version = -1
        self._studies: pl.DataFrame | None = None
        self._series: pl.DataFrame | None = None
        self._filesystem = filesystem
        self._tag_values: TableSnapshot | None = None
        self._tag_cache: dict[str, tuple[tuple[str, int, int], pl.DataFrame]] = {}
        self._lock = threading.Lock()

    # -- the API ---------------------------------------------------------------------------------
    def search(
        self,
        level: str,
        params: Mapping[str, str | Sequence[str]] | None = None,
        *,
        fuzzy: bool = False,
        include: Iterable[str] = (),
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Matching studies/series/instances as DICOM JSON objects (PS3.18 F.2), one per match.

        `params` are QIDO-RS query parameters: attribute keywords or tags to values, and may also
        carry includefield, limit, offset and fuzzymatching as strings (as a URL query would).
        """
        query = self.parse(level, params or {}, fuzzy=fuzzy, include=include, limit=limit, offset=offset)
        with self._lock:  # one refresh at a time; the frames are immutable once built
            self._refresh()
            return self._run(query)

    def parse(
        self,
        level: str,
        params: Mapping[str, str | Sequence[str]],
        *,
        fuzzy: bool = False,
        include: Iterable[str] = (),
        limit: int = DEFAULT_LIMIT,
        offset: int = 0,
    ) -> Query:
        """Validate a search; InvalidQuery names the first bad parameter."""
        target = _level(level)
        include = list(include)
        matches: list[tuple[str, Any, str]] = []
        seen: set[str] = set()
        for name, raw in params.items():
            lowered = name.lower()
            if lowered == "includefield":
                values = [raw] if isinstance(raw, str) else list(raw)
                include += [part for value in values for part in value.split(",") if part.strip()]
                continue
            value = _single(name, raw)
            if lowered == "limit":
                limit = _integer(name, value, 1, MAX_LIMIT)
            elif lowered == "offset":
                offset = _integer(name, value, 0, 2**62)
            elif lowered == "fuzzymatching":
                fuzzy = _flag(name, value)
            else:
                attribute = self._attribute(name, target)
                tag = attribute.tag if isinstance(attribute, Attribute) else attribute.path
                if tag in seen:
                    raise InvalidQuery(name, "the attribute is given more than once")
                seen.add(tag)
                matches.append((name, attribute, value))
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidQuery("limit", f"must be between 1 and {MAX_LIMIT}, not {limit}")
        if offset < 0:
            raise InvalidQuery("offset", f"must be >= 0, not {offset}")
        included: list[tuple[str, Any]] = []
        include_all = False
        for name in include:
            if name.strip().lower() == "all":
                include_all = True
                continue
            tag, keyword = resolve_tag(name)
            attribute = (BY_KEYWORD.get(keyword) if keyword else None) or BY_TAG.get(tag)
            if attribute is None:
                extended = self._extended_tags()
                attribute = extended.get(keyword or "") or extended.get(tag)
            included.append((tag, attribute))
        return Query(target, matches, included, include_all, fuzzy, limit, offset)

    # -- attributes ------------------------------------------------------------------------------
    def _attribute(self, name: str, level: Level) -> Any:
        tag, keyword = resolve_tag(name)
        attribute: Any = (BY_KEYWORD.get(keyword) if keyword else None) or BY_TAG.get(tag)
        if attribute is None:
            extended = self._extended_tags()
            attribute = extended.get(keyword or "") or extended.get(tag)
        if attribute is None:
            raise InvalidQuery(
                name,
                "is not a searchable attribute: neither a QIDO-RS key nor an extended query tag "
                "that is ready and enabled (add one with `dicomlake tags add`)",
            )
        if level_rank(attribute.level) > level_rank(level):
            raise InvalidQuery(name, f"is a {attribute.level}-level attribute; it cannot match {level}s")
        return attribute

    def _extended_tags(self) -> dict[str, Any]:
        """Ready and enabled extended query tags by every accepted spelling (cached by the catalog)."""
        from dicomlake.tags import queryable_tags

        return queryable_tags(self.tenant)

    # -- data ------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        if not self._instances.refresh() or self._instances.version == self._derived_version:
            return
        change = self._instances.last_change
        if change is None:
            self._studies = self._series = None  # derived again in full when next needed
        else:  # re-derive only the studies and series whose instances changed
            studies = change.get_column("study_instance_uid").unique()
            if self._studies is not None:
                self._studies = self._rederive(self._studies, "study", studies)
            if self._series is not None:
                self._series = self._rederive(self._series, "series", studies)
        self._derived_version = self._instances.version

    def _rederive(self, frame: pl.DataFrame, level: Level, studies: pl.Series) -> pl.DataFrame:
        in_studies = pl.col("study_instance_uid").is_in(studies.implode())
        fresh = _derive(level, self._instances.frame.filter(in_studies))
        return pl.concat([frame.filter(~in_studies), fresh], how="vertical_relaxed")

    def _frame(self, level: Level) -> pl.DataFrame:
        instances = self._instances.frame
        if level == "instance":
            return instances
        if level == "series":
            if self._series is None:
                self._series = _derive(level, instances)
            return self._series
        if self._studies is None:
            self._studies = _derive(level, instances)
        return self._studies

    def _tag_rows(self, tag: Any) -> pl.DataFrame:
        """tag_values rows of one tag whose seq is a current instance version."""
        if self._tag_values is None:
            self._tag_values = TableSnapshot(
                self.tenant.table("tag_values"),
                self._filesystem,
                ["tag_key", "seq", "value_string", "value_int", "value_float", "value_date"],
            )
        self._tag_values.refresh()
        versions = (tag.key, self._instances.version, self._tag_values.version)
        cached = self._tag_cache.get(tag.key)
        if cached is None or cached[0] != versions:
            rows = self._tag_values.frame.filter(pl.col("tag_key") == tag.key)
            current = self._instances.frame.select(
                "seq", "study_instance_uid", "series_instance_uid", "sop_instance_uid"
            )
            cached = (versions, rows.join(current, on="seq", how="inner"))
            self._tag_cache[tag.key] = cached
        return cached[1]

    # -- running a query -------------------------------------------------------------------------
    def _run(self, query: Query) -> list[dict[str, Any]]:
        level = query.level
        result = self._frame(level)
        by_level: dict[Level, list[pl.Expr]] = {"study": [], "series": [], "instance": []}
        uid_sets: dict[Level, list[pl.Series]] = {"study": [], "series": [], "instance": []}
        for name, attribute, value in query.matches:
            if isinstance(attribute, Attribute):
                normalized = "patient_name_normalized" if attribute.column == "patient_name" else None
                expr = match_expr(name, attribute.column, attribute.match, value, query.fuzzy, normalized)
                if expr is None:
                    continue
                if attribute.match == "uid" and attribute.column in result.columns:
                    # A UID is the same on every row below: match it here, and first (it narrows
                    # the frame to a few rows, so the other filters then cost nothing).
                    by_level[level].insert(0, expr)
                else:
                    by_level[attribute.level].append(expr)
                continue
            column, match = _tag_match(attribute.vr)
            expr = match_expr(name, column, match, value, query.fuzzy)
            if expr is not None:
                uid_column = _UID_COLUMNS[attribute.level]
                hits = self._tag_rows(attribute).filter(expr).get_column(uid_column).unique()
                uid_sets[attribute.level].append(hits)

        # The cheapest filters first: those on this level's own frame (UIDs narrow it at once).
        result = self._apply(result, level, by_level[level], uid_sets[level])
        for upper in LEVELS[: level_rank(level)]:  # constraints from the levels above
            if by_level[upper] or uid_sets[upper]:
                keys = self._filtered(upper, by_level[upper], uid_sets[upper]).get_column(_UID_COLUMNS[upper])
                result = result.filter(pl.col(_UID_COLUMNS[upper]).is_in(keys.implode()))
        return self._render(query, _ordered_page(result, level, query.offset, query.limit))

    def _filtered(self, level: Level, exprs: list[pl.Expr], uid_sets: list[pl.Series]) -> pl.DataFrame:
        return self._apply(self._frame(level), level, exprs, uid_sets)

    @staticmethod
    def _apply(
        frame: pl.DataFrame, level: Level, exprs: list[pl.Expr], uid_sets: list[pl.Series]
    ) -> pl.DataFrame:
        for uids in uid_sets:
            frame = frame.filter(pl.col(_UID_COLUMNS[level]).is_in(uids.implode()))
        if exprs:
            frame = frame.filter(exprs[0])
        return frame.filter(*exprs[1:]) if len(exprs) > 1 else frame

    # -- DICOM JSON ------------------------------------------------------------------------------
    def _render(self, query: Query, page: pl.DataFrame) -> list[dict[str, Any]]:
        level = query.level
        wanted: dict[str, Any] = {}  # tag -> Attribute, extended tag, or None (read from the header)
        for keyword in DEFAULT_RETURN[level]:
            attribute = BY_KEYWORD[keyword]
            wanted[attribute.tag] = attribute
        if query.include_all:
            for attribute in BUILT_IN:
                if level_rank(attribute.level) <= level_rank(level):
                    wanted[attribute.tag] = attribute
        for _, attribute, _ in query.matches:
            wanted[attribute.tag if isinstance(attribute, Attribute) else attribute.path] = attribute
        for tag, attribute in query.include:
            if attribute is None or level_rank(attribute.level) <= level_rank(level):
                wanted.setdefault(tag, attribute)
        if page.height == 0:
            return []

        rows = page.to_dicts()
        # Attributes of the levels above come from their frames (one lookup per page).
        upper_rows: dict[Level, dict[str, dict[str, Any]]] = {}
        for upper in LEVELS[: level_rank(level)]:
            if any(isinstance(a, Attribute) and a.level == upper for a in wanted.values()):
                key = _UID_COLUMNS[upper]
                keys = list({row[key] for row in rows})
                found = self._frame(upper).filter(pl.col(key).is_in(keys))
                upper_rows[upper] = {r[key]: r for r in found.to_dicts()}
        headers = self._headers(rows, level, [t for t, a in wanted.items() if a is None])
        extended = {t: a for t, a in wanted.items() if a is not None and not isinstance(a, Attribute)}
        page_uids = [row[_UID_COLUMNS[level]] for row in rows]
        extended_values = {t: self._extended_elements(a, level, page_uids) for t, a in extended.items()}

        results = []
        for row in rows:
            out: dict[str, Any] = {}
            for tag, attribute in wanted.items():
                if isinstance(attribute, Attribute):
                    source = row if attribute.level == level else upper_rows[attribute.level].get(
                        row[_UID_COLUMNS[attribute.level]], {})
                    out[tag] = _element(attribute, source.get(attribute.column))
            header = headers.get(row.get("seq") if level == "instance" else row.get("last_seq"), {})
            for tag in (t for t, a in wanted.items() if a is None):
                if tag in header:
                    out[tag] = header[tag]
            for tag, attribute in extended.items():
                out[tag] = extended_values[tag].get(row[_UID_COLUMNS[level]]) or {"vr": attribute.vr}
            if level in ("study", "instance"):
                out[INSTANCE_AVAILABILITY] = {"vr": "CS", "Value": ["ONLINE"]}
            results.append(dict(sorted(out.items())))
        return results

    def _headers(
        self, rows: list[dict[str, Any]], level: Level, tags: list[str]
    ) -> dict[int, dict[str, Any]]:
        """The stored DICOM JSON of each row's representative version (its newest instance)."""
        if not tags:
            return {}
        seq_column = "seq" if level == "instance" else "last_seq"
        seqs = sorted({int(row[seq_column]) for row in rows})
        table = scan(self.tenant.table("instances"), ["seq", "dicom_json"],
                     where=f"seq IN ({', '.join(map(str, seqs))})")
        headers = {}
        pairs = zip(table.column("seq").to_pylist(), table.column("dicom_json").to_pylist(), strict=True)
        for seq, text in pairs:
            header = json.loads(text) if text else {}
            headers[seq] = {t: header[t] for t in tags if t in header}
        return headers

    def _extended_elements(self, tag: Any, level: Level, uids: list[str]) -> dict[str, dict[str, Any]]:
        """uid -> the tag's element at `level`: the values of the newest version that has any."""
        key = _UID_COLUMNS[level]
        column, _ = _tag_match(tag.vr)
        rows = self._tag_rows(tag).filter(pl.col(key).is_in(uids) & pl.col(column).is_not_null())
        newest = rows.filter(pl.col("seq") == pl.col("seq").max().over(key))
        elements: dict[str, dict[str, Any]] = {}
        for uid, values in newest.group_by(key, maintain_order=True).agg(pl.col(column)).iter_rows():
            elements[uid] = {"vr": tag.vr, "Value": [_json_value(tag.vr, v) for v in values]}
        return elements


def _derive(level: Level, instances: pl.DataFrame) -> pl.DataFrame:
    return derive_studies(instances) if level == "study" else derive_series(instances)


# Result order per level, without nulls (so that a partial selection is exact): studies newest
# first, series by study then number, instances by series then number; UIDs break ties.
_LAST_INT = 2**62
_ORDER: dict[Level, tuple[list[pl.Expr], list[bool]]] = {
    "study": (
        [pl.col("study_datetime").fill_null(pl.datetime(1, 1, 1)), pl.col("study_instance_uid")],
        [True, False],
    ),
    "series": (
        [pl.col("study_instance_uid"), pl.col("series_number").fill_null(_LAST_INT),
         pl.col("series_instance_uid")],
        [False, False, False],
    ),
    "instance": (
        [pl.col("study_instance_uid"), pl.col("series_instance_uid"),
         pl.col("instance_number").fill_null(_LAST_INT), pl.col("sop_instance_uid")],
        [False, False, False, False],
    ),
}


def _ordered_page(frame: pl.DataFrame, level: Level, offset: int, limit: int) -> pl.DataFrame:
    """Rows offset..offset+limit of `frame` in result order, without sorting all of a large frame."""
    keys, descending = _ORDER[level]
    wanted = offset + limit
    if frame.height > 4 * wanted:  # select the first `wanted` in linear time, then sort only those
        frame = frame.top_k(wanted, by=keys, reverse=[not d for d in descending])
    return frame.sort(keys, descending=descending).slice(offset, limit)


_UID_COLUMNS: dict[Level, str] = {
    "study": "study_instance_uid",
    "series": "series_instance_uid",
    "instance": "sop_instance_uid",
}


def _json_value(vr: str, value: Any) -> Any:
    if vr == "PN":
        return {"Alphabetic": value}
    if vr == "DA" and hasattr(value, "strftime"):
        return value.strftime("%Y%m%d")
    return value


def _element(attribute: Attribute, value: Any) -> dict[str, Any]:
    if value is None or (isinstance(value, list) and not value):
        return {"vr": attribute.vr}
    values = value if isinstance(value, list) else [value]
    return {"vr": attribute.vr, "Value": [_json_value(attribute.vr, v) for v in values]}


def search(
    tenant: TenantStore,
    level: str,
    params: Mapping[str, str | Sequence[str]] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """One search with a fresh index (use a long-lived SearchIndex to search repeatedly)."""
    return SearchIndex(tenant).search(level, params, **options)


__all__ = ["CONTROL_PARAMETERS", "Query", "SearchIndex", "search"]
