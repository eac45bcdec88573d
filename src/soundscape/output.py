"""Rendering rows for the CLI: an aligned table (default), JSON lines or CSV, on stdout.

Numbers keep their full precision in JSON and CSV (what scripts and spreadsheets read); only
the aligned table, which is for eyes, rounds them (4 significant figures).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TextIO

FORMATS = ("table", "json", "csv")

#: C0 and C1 control characters and DEL: a name holding ESC [ ... repaints the terminal
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str, keep: str = "") -> str:
    """``text`` safe to print on a terminal: control characters (but those in ``keep``, e.g.
    newlines of a message) written as escapes (``\\x1b``, ``\\n``), so that a sensor or
    label name cannot move the cursor, recolour or retitle the terminal."""

    def escape(m: re.Match[str]) -> str:
        c = m.group(0)
        return c if c in keep else repr(c)[1:-1]

    return _CONTROL.sub(escape, text)


#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet will not run: one starting with ``=``, ``+``, ``-``, ``@``, a
    tab or a carriage return (a formula: ``=cmd|' /C calc'!A0``, ``+SUM(..)``) gets a leading
    ``'`` (OWASP's CSV injection advice), as does one starting with ``'`` so that
    :func:`from_spreadsheet` can remove exactly the one added. A number written as text
    (``-0.25``) stays as it is."""
    if isinstance(value, str) and value[:1] in (*_FORMULA_START, "'") and not _number(value):
        return "'" + value
    return value


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def from_spreadsheet(cell: str | None) -> str | None:
    """A text cell as :func:`spreadsheet_safe` wrote it, the ``'`` it added removed."""
    if cell and cell[0] == "'" and cell[1:2] and cell[1] in (*_FORMULA_START, "'"):
        return cell[1:]
    return cell


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def plain_row(row: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """A row as ``--json`` writes it: the columns in order, times as ISO strings."""
    return {c: _plain(row.get(c)) for c in columns}


def _csv_cell(value: Any) -> str:
    """A CSV cell: floats in full (shortest round-trip) precision, JSON for nested values,
    text that a spreadsheet would run as a formula quoted (:func:`spreadsheet_safe`)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list):
        return str(spreadsheet_safe(json.dumps(value, default=str)))
    if isinstance(value, str):
        return str(spreadsheet_safe(value))
    return str(_plain(value))


def _cell(value: Any) -> str:
    """An aligned-table cell: floats rounded for reading, control characters escaped."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)  # escapes control characters itself
    return printable(str(_plain(value)))


def emit(
    rows: Iterable[dict[str, Any]],
    fmt: str = "table",
    columns: Sequence[str] | None = None,
    out: TextIO | None = None,
) -> None:
    out = out or sys.stdout
    rows = list(rows)
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    if fmt == "json":
        for r in rows:
            out.write(json.dumps(plain_row(r, columns), default=str) + "\n")
    elif fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_csv_cell(r.get(c)) for c in columns])
    else:
        if not rows:
            return
        cells = [[_cell(r.get(c)) for c in columns] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        numeric = [
            all(isinstance(r.get(c), int | float | Decimal) or r.get(c) is None for r in rows)
            for c in columns
        ]

        def line(values: Sequence[str]) -> str:
            parts = [
                v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
            ]
            return "  ".join(parts).rstrip()

        out.write(line(columns) + "\n")
        out.write("  ".join("-" * w for w in widths) + "\n")
        for row in cells:
            out.write(line(row) + "\n")
