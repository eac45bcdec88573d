"""Kaleidoscope's ``id.csv`` (Wildlife Acoustics): one row per detection, with the file's folder
and name, the span (``OFFSET``, ``DURATION``), the local date and time of its start (and
Kaleidoscope's "night" columns, 12 hours earlier), the automatic label (``AUTO ID*``) and a
person's (``MANUAL ID``). Written by ``search --kaleidoscope``, ``classify --kaleidoscope``
and ``annotate export --format kaleidoscope``; Kaleidoscope Viewer and the R/Excel workflows
built on id.csv read it. Columns soundscape has nothing for (bat call metrics, zero-crossing
output files) stay empty, in their places.
"""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path, PurePath

from soundscape.formats.rows import Detection, clean
from soundscape.output import spreadsheet_safe

FILE_NAME = "id.csv"

#: Kaleidoscope Pro's id.csv header (Auto ID output), in its order.
COLUMNS = [
    "INDIR", "FOLDER", "IN FILE", "CHANNEL", "OFFSET", "DURATION", "OUT FILE FS", "OUT FILE ZC",
    "DATE", "TIME", "HOUR", "DATE-12", "TIME-12", "HOUR-12", "AUTO ID*", "PULSES", "MATCHING",
    "MATCH RATIO", "MARGIN", "ALTERNATE 1", "ALTERNATE 2", "N", "Fc", "Sc", "Dur", "Fmax",
    "Fmin", "Fmean", "TBC", "Fk", "Tk", "S1", "Tc", "Qual", "FILES", "MANUAL ID",
]  # fmt: skip


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def row(d: Detection) -> dict[str, str]:
    """One detection's cells: the file's parent folder (``INDIR``) and folder name (``FOLDER``)
    as BirdNET-Analyzer's Kaleidoscope output splits them, the local start and the same 12 hours
    earlier (so that a night keeps one date), the label, and the score as ``MATCH RATIO``."""
    where = PurePath(d.path)
    cells = dict.fromkeys(COLUMNS, "")
    cells |= {
        "INDIR": str(where.parent.parent),
        "FOLDER": where.parent.name,
        "IN FILE": where.name,
        "CHANNEL": "0",
        "OFFSET": _seconds(d.start_s),
        "DURATION": _seconds(d.end_s - d.start_s),
        "AUTO ID*": clean(d.label) if d.score is not None else "",
        "MATCH RATIO": "" if d.score is None else f"{d.score:.4f}",
        "MANUAL ID": clean(d.manual),
    }
    if d.local is not None:
        night = d.local - timedelta(hours=12)
        cells |= {
            "DATE": d.local.strftime("%Y-%m-%d"),
            "TIME": d.local.strftime("%H:%M:%S"),
            "HOUR": str(d.local.hour),
            "DATE-12": night.strftime("%Y-%m-%d"),
            "TIME-12": night.strftime("%H:%M:%S"),
            "HOUR-12": str(night.hour),
        }
    return cells


def write(detections: list[Detection], folder: Path) -> Path:
    """``folder/id.csv``: the header, then a row per detection (by file, then time)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / FILE_NAME
    ordered = sorted(detections, key=lambda d: (d.path, d.start_s, d.end_s, d.label))
    with target.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for d in ordered:
            cells = row(d)
            w.writerow([spreadsheet_safe(cells[c]) for c in COLUMNS])
    return target
