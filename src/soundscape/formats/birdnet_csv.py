"""BirdNET-Analyzer's CSV results (``--rtype csv``): ``Start (s),End (s),Scientific name,Common
name,Confidence,File``, one row per detection, the confidence to four decimals. Written by
``search --birdnet-csv``, ``classify --birdnet-csv`` and ``annotate export --format
birdnet-csv`` as BirdNET-Analyzer names its files: one ``<stem>.BirdNET.results.csv`` per
recording and ``BirdNET_CombinedTable.csv`` with all of them, so scripts written for its output
(R's read.csv over ``*.BirdNET.results.csv``, its own ``combine`` step) read soundscape's.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path, PurePath

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.formats.rows import Detection, ExportResult, clean, slug
from soundscape.output import spreadsheet_safe

#: BirdNET-Analyzer's CSV header (birdnet_analyzer/analyze/utils.py, CSV_HEADER).
COLUMNS = ["Start (s)", "End (s)", "Scientific name", "Common name", "Confidence", "File"]
COMBINED = "BirdNET_CombinedTable.csv"
SUFFIX = ".BirdNET.results.csv"


def scientific_names(conn: Connection, space_id: int | None = None) -> dict[str, str]:
    """Common name -> scientific name of a space's classes (BirdNET's; none for models
    without scientific names), or of every space's (``space_id`` None)."""
    rows = conn.execute(
        sa.text(
            "SELECT DISTINCT common, scientific FROM space_labels "
            "WHERE (space_id = :s OR CAST(:s AS integer) IS NULL) "
            "AND common IS NOT NULL AND scientific IS NOT NULL ORDER BY common, scientific"
        ),
        {"s": space_id},
    )
    return {r.common: r.scientific for r in rows}


def _seconds(value: float) -> str:
    """Seconds as BirdNET-Analyzer writes them (``3.0``, ``4.5``), to the millisecond."""
    return repr(round(float(value), 3))


def cells(d: Detection, scientific: Mapping[str, str]) -> list[str]:
    """One row: a label without a scientific name is both names (as BirdNET-Analyzer writes
    a custom classifier's labels); no score (a person's annotation) is ``1.0000``."""
    common = clean(d.label)
    score = 1.0 if d.score is None else d.score
    return [
        _seconds(d.start_s), _seconds(d.end_s), scientific.get(d.label, common), common,
        f"{score:.4f}", d.path,
    ]  # fmt: skip


def _write(target: Path, rows: list[list[str]]) -> Path:
    with target.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows([[spreadsheet_safe(c) for c in r] for r in rows])
    return target


def write(
    detections: list[Detection], folder: Path, scientific: Mapping[str, str] | None = None
) -> ExportResult:
    """A ``<stem>.BirdNET.results.csv`` per file (``<stem>.<n>.BirdNET.results.csv`` when two
    files share a stem) and ``BirdNET_CombinedTable.csv``, rows in time order."""
    folder.mkdir(parents=True, exist_ok=True)
    names = scientific or {}
    by_path: dict[str, list[Detection]] = {}
    for d in detections:
        by_path.setdefault(d.path, []).append(d)
    out = ExportResult()
    combined: list[list[str]] = []
    used: dict[str, int] = {}
    for path in sorted(by_path):
        group = sorted(by_path[path], key=lambda d: (d.start_s, d.end_s, d.label))
        rows = [cells(d, names) for d in group]
        stem = slug(PurePath(path).stem)
        used[stem] = used.get(stem, 0) + 1
        name = stem if used[stem] == 1 else f"{stem}.{used[stem]}"
        out.written.append(_write(folder / f"{name}{SUFFIX}", rows))
        combined += rows
    out.written.append(_write(folder / COMBINED, combined))
    return out
