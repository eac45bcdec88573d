"""The annotation CSV: one ``annotations.csv`` with a header; :data:`CSV_COLUMNS` is what
export writes (path, span, label, verdict, author, note, band, then source, place and ids,
which import ignores but for ``segment_id`` and ``id``). The reader (:func:`parse`) needs
``path`` (unless the recording is given), ``start_s``, ``end_s`` and ``label``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from soundscape.annotations import Annotation, Recording
from soundscape.errors import AnnotationError
from soundscape.formats.rows import (
    Problems,
    Recordings,
    Row,
    at,
    int_or_none,
    num,
    number,
    optional_number,
)
from soundscape.output import from_spreadsheet, spreadsheet_safe

CSV_NAME = "annotations.csv"

CSV_COLUMNS = [
    "path", "start_s", "end_s", "label", "verdict", "author", "note", "low_hz", "high_hz",
    "source", "sensor", "site", "quadrant", "local", "recording_id", "segment_id", "id",
]  # fmt: skip


def write_annotations(annotations: list[Annotation], folder: Path) -> Path:
    """``folder/annotations.csv``: a header, then a row per annotation (numbers as short text
    that reads back to the same value, formulas quoted for spreadsheets)."""
    target = folder / CSV_NAME
    with target.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for a in annotations:
            row = a.as_row()
            row.update(
                start_s=num(a.start_s),
                end_s=num(a.end_s),
                low_hz=num(a.low_hz),
                high_hz=num(a.high_hz),
            )
            w.writerow(
                ["" if row.get(c) is None else spreadsheet_safe(row.get(c)) for c in CSV_COLUMNS]
            )
    return target


def parse(
    text: str, table: Path, recs: Recordings, fixed: Recording | None, problems: Problems
) -> tuple[list[Row], int]:
    """The rows of an annotation CSV and how many were left unreviewed (an empty ``verdict``
    cell); bad rows go to ``problems``."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = [c.strip().lower() for c in next(reader)]
    except StopIteration:
        return [], 0
    missing = [c for c in ("start_s", "end_s", "label") if c not in header]
    if fixed is None and "path" not in header:
        missing.insert(0, "path")
    if missing:
        raise AnnotationError(
            f"{table}: the CSV header lacks {', '.join(missing)}; it needs "
            "path,start_s,end_s,label (optional: verdict, author, note, low_hz, high_hz)"
        )
    index = {n: i for i, n in enumerate(header)}
    rows: list[Row] = []
    unreviewed = 0
    for cells in reader:
        line_no = reader.line_num
        if not any(c.strip() for c in cells):
            continue

        def cell(name: str, cells: list[str] = cells) -> str | None:
            return at(cells, index.get(name))

        verdict = cell("verdict") if "verdict" in index else "yes"
        if not verdict:
            unreviewed += 1
            continue
        try:
            rec = fixed if fixed is not None else recs.find(from_spreadsheet(cell("path")) or "")
            rows.append(
                Row(
                    line_no,
                    rec,
                    number(cell("start_s"), "start_s"),
                    number(cell("end_s"), "end_s"),
                    from_spreadsheet(cell("label")),
                    verdict,
                    author=from_spreadsheet(cell("author")),
                    note=from_spreadsheet(cell("note")) or None,
                    low_hz=optional_number(cell("low_hz"), "low_hz"),
                    high_hz=optional_number(cell("high_hz"), "high_hz"),
                    window_id=int_or_none(cell("segment_id")),
                    annotation_id=int_or_none(cell("id")),
                )
            )
        except AnnotationError as exc:
            problems.add(line_no, str(exc))
    return rows, unreviewed
