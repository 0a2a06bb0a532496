"""A SQL-on-FHIR v2 ViewDefinition runner over fhirpathpy, and the views dicomlake ships.

Implemented semantics (SQL-on-FHIR v2): `resource`, `constant` (as %name), `where` (every path must
be true), `select` with `column` (name, path, type, collection), nested `select`, `forEach`,
`forEachOrNull` and `unionAll`; the rows of a select are the cartesian product of its columns, its
nested selects and its unionAll; `forEach` yields the rows once per item (none when empty),
`forEachOrNull` one row of nulls when empty. A column that is not `collection: true` and yields
more than one value is an error. `getResourceKey()` is the resource id, `getReferenceKey(Type)` the
id of a relative reference ("Patient/abc" -> "abc"; empty when it points to another type).
Every FHIRPath expression is compiled once, when the view is loaded.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa

VIEWS_DIR = Path(__file__).with_name("views")
_UTC_TS = pa.timestamp("us", tz="UTC")
# ViewDefinition column type -> Arrow type of the Delta column.
ARROW_TYPES: dict[str, pa.DataType] = {
    "date": pa.date32(), "dateTime": _UTC_TS, "instant": _UTC_TS, "boolean": pa.bool_(),
    "integer": pa.int64(), "unsignedInt": pa.int64(), "positiveInt": pa.int64(), "decimal": pa.float64(),
}


class ViewError(ValueError):
    """A ViewDefinition is malformed, or a row breaks it (several values in a non-collection column)."""


def _type_name(spec: Any) -> str | None:
    name = getattr(spec, "name", None)
    return str(name) if name is not None else None


def _reference_key(inputs: list[Any], type_spec: Any = None) -> list[str]:
    wanted = _type_name(type_spec)
    out = []
    for ref in inputs:
        text = ref.get("reference") if isinstance(ref, Mapping) else None
        if not text or text.startswith(("#", "urn:")):
            continue
        parts = text.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2 and (wanted is None or parts[-2] == wanted):
            out.append(parts[-1])
    return out


def _resource_key(inputs: list[Any]) -> list[str]:
    return [r["id"] for r in inputs if isinstance(r, Mapping) and "id" in r]


_FUNCTIONS = {
    "getReferenceKey": {"fn": _reference_key, "arity": {0: [], 1: ["TypeSpecifier"]}},
    "getResourceKey": {"fn": _resource_key, "arity": {0: []}},
}


@cache
def _model() -> dict[str, Any]:
    from fhirpathpy.models import models

    return models["r4"]


def _compile(path: str) -> Any:
    import fhirpathpy

    try:
        return fhirpathpy.compile(path, _model(), {"userInvocationTable": _FUNCTIONS})
    except Exception as exc:
        raise ViewError(f"cannot compile FHIRPath {path!r}: {exc}") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)  # FHIRPath date/time/quantity objects


@dataclass
class Column:
    name: str
    path: str
    type: str
    collection: bool
    fn: Any


@dataclass
class Select:
    columns: list[Column] = field(default_factory=list)
    selects: list[Select] = field(default_factory=list)
    union_all: list[Select] = field(default_factory=list)
    for_each: Any = None
    or_null: bool = False

    def names(self) -> list[str]:
        out = [c.name for c in self.columns]
        for sub in self.selects:
            out += sub.names()
        if self.union_all:
            out += self.union_all[0].names()
        return out


def _parse_select(spec: Mapping[str, Any]) -> Select:
    if "forEach" in spec and "forEachOrNull" in spec:
        raise ViewError("a select may not have both forEach and forEachOrNull")
    select = Select(
        columns=[Column(c["name"], c["path"], c.get("type", "string"), bool(c.get("collection")),
                        _compile(c["path"])) for c in spec.get("column", [])],
        selects=[_parse_select(s) for s in spec.get("select", [])],
        union_all=[_parse_select(s) for s in spec.get("unionAll", [])],
    )
    each = spec.get("forEach", spec.get("forEachOrNull"))
    if each is not None:
        select.for_each, select.or_null = _compile(each), "forEachOrNull" in spec
    if select.union_all:
        first = select.union_all[0].names()
        if any(branch.names() != first for branch in select.union_all):
            raise ViewError("every unionAll branch must have the same columns")
    return select


@dataclass
class ViewDefinition:
    name: str
    version: str
    resource: str
    root: Select
    wheres: list[Any]
    constants: dict[str, Any]
    definition: dict[str, Any]

    @classmethod
    def parse(cls, definition: Mapping[str, Any]) -> ViewDefinition:
        if definition.get("resourceType") != "ViewDefinition":
            raise ViewError("not a ViewDefinition")
        constants = {}
        for const in definition.get("constant", []):
            values = [v for k, v in const.items() if k.startswith("value")]
            if len(values) != 1:
                raise ViewError(f"constant {const.get('name')!r} needs exactly one value[x]")
            constants[const["name"]] = values[0]
        root = _parse_select({"select": definition.get("select", [])})
        names = root.names()
        if len(names) != len(set(names)):
            raise ViewError(f"view {definition.get('name')!r} has duplicate column names")
        return cls(definition["name"], str(definition.get("version", "")), definition["resource"], root,
                   [_compile(w["path"]) for w in definition.get("where", [])], constants, dict(definition))

    def columns(self) -> list[Column]:
        def walk(select: Select) -> Iterable[Column]:
            yield from select.columns
            for sub in select.selects:
                yield from walk(sub)
            if select.union_all:
                yield from walk(select.union_all[0])
        return list(walk(self.root))

    def arrow_schema(self) -> pa.Schema:
        fields = []
        for column in self.columns():
            kind = ARROW_TYPES.get(column.type, pa.string())
            fields.append(pa.field(column.name, pa.list_(kind) if column.collection else kind))
        return pa.schema(fields)

    def rows(self, resource: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The view's rows for one resource (none when it is another type or fails `where`)."""
        if resource.get("resourceType") != self.resource:
            return []
        for where in self.wheres:
            result = where(resource, self.constants)
            if result != [True]:
                if not all(isinstance(v, bool) for v in result):
                    raise ViewError("a where path must give a boolean")
                return []
        return self._select_rows(self.root, resource)

    def _select_rows(self, select: Select, node: Any) -> list[dict[str, Any]]:
        if select.for_each is not None:
            items = select.for_each(node, self.constants)
            if not items:
                return [dict.fromkeys(select.names())] if select.or_null else []
        else:
            items = [node]
        out: list[dict[str, Any]] = []
        for item in items:
            row: dict[str, Any] = {}
            for column in select.columns:
                values = [_plain(v) for v in column.fn(item, self.constants)]
                if column.collection:
                    row[column.name] = values
                elif len(values) > 1:
                    raise ViewError(f"column {column.name!r} ({column.path}) gave {len(values)} values")
                else:
                    row[column.name] = values[0] if values else None
            partial = [row]
            parts = [self._select_rows(sub, item) for sub in select.selects]
            if select.union_all:
                parts.append([r for branch in select.union_all for r in self._select_rows(branch, item)])
            for part in parts:
                partial = [{**left, **right} for left in partial for right in part]
            out.extend(partial)
        return out


def _to_date(value: str) -> dt.date:
    parts = value[:10].split("-")  # partial dates ("1970", "1970-05") give the first day
    month, day = (int(parts[1]) if len(parts) > 1 else 1), (int(parts[2]) if len(parts) > 2 else 1)
    return dt.date(int(parts[0]), month, day)


def _to_timestamp(value: str) -> dt.datetime:
    if len(value) <= 10:
        return dt.datetime.combine(_to_date(value), dt.time(), dt.UTC)
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def to_arrow(view: ViewDefinition, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as an Arrow table of the view's schema: dates and dateTimes cast from their ISO strings."""
    converters = {"date32[day]": _to_date, "timestamp[us, tz=UTC]": _to_timestamp}
    schema = view.arrow_schema()
    columns = {}
    for f in schema:
        kind = f.type.value_type if pa.types.is_list(f.type) else f.type
        convert = converters.get(str(kind))
        values = [row.get(f.name) for row in rows]
        if convert is not None:
            if pa.types.is_list(f.type):
                values = [None if v is None else [convert(x) for x in v] for v in values]
            else:
                values = [None if v is None else convert(v) for v in values]
        columns[f.name] = pa.array(values, type=f.type)
    return pa.table(columns, schema=schema)


@cache
def shipped_views() -> dict[str, ViewDefinition]:
    """The ViewDefinitions in dicomlake/fhir/views/*.json, by name (table `fhir_view_<name>`)."""
    out = {}
    for path in sorted(VIEWS_DIR.glob("*.json")):
        view = ViewDefinition.parse(json.loads(path.read_text()))
        out[view.name] = view
    return out


def view_schemas() -> dict[str, pa.Schema]:
    """Table name -> Arrow schema of every shipped view, without compiling (for store.schemas)."""
    out = {}
    for path in sorted(VIEWS_DIR.glob("*.json")):
        definition = json.loads(path.read_text())
        fields = []

        def walk(select: Mapping[str, Any], fields: list[pa.Field] = fields) -> None:
            for c in select.get("column", []):
                kind = ARROW_TYPES.get(c.get("type", "string"), pa.string())
                fields.append(pa.field(c["name"], pa.list_(kind) if c.get("collection") else kind))
            for sub in select.get("select", []):
                walk(sub)
            if select.get("unionAll"):
                walk(select["unionAll"][0])

        walk({"select": definition.get("select", [])})
        out[f"fhir_view_{definition['name']}"] = pa.schema(fields)
    return out
