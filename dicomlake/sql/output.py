"""Query results for people and programs: a text table, JSON rows, CSV, or a Parquet file."""

from __future__ import annotations

import csv
import datetime
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    """JSON-ready rows (dates and times as ISO strings)."""
    return json.loads(json.dumps(table.to_pylist(), default=_plain))


def render_table(table: pa.Table, fmt: str, limit: int | None = None) -> str:
    if fmt == "json":
        return json.dumps(rows_of(table), indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(table.column_names)
        for row in table.to_pylist():
            writer.writerow([_cell(row[c]) for c in table.column_names])
        return buffer.getvalue()
    shown = table if limit is None else table.slice(0, limit)
    cells = [[_cell(row[c]) for c in table.column_names] for row in shown.to_pylist()]
    widths = [min(60, max([len(c), *(len(r[i]) for r in cells)])) for i, c in enumerate(table.column_names)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(table.column_names, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(v[:w].ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    more = f" (first {shown.num_rows} shown)" if shown.num_rows < table.num_rows else ""
    lines.append(f"({table.num_rows} rows{more})")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, default=_plain, ensure_ascii=False)
    return str(_plain(value))


def write_table(table: pa.Table, path: str | Path) -> None:
    pq.write_table(table, str(path))
