"""Audacity label tracks: ``start<TAB>end<TAB>label`` lines, a ``\\<TAB>low<TAB>high`` line
after a label for its frequency band. The reader (:func:`parse`) and two writers: annotations
(:func:`write_annotations`; the verdict as ``[no]``/``[unsure]`` after the label) and search
results (:func:`export_audacity`, ``search --audacity``). A track carries no author or note.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from soundscape.annotations import Annotation, Recording
from soundscape.errors import AnnotationError
from soundscape.formats.rows import (
    ExportResult,
    Problems,
    Recordings,
    Row,
    by_recording,
    clean,
    num,
    number,
    slug,
    table_cell,
)
from soundscape.results import Hit

#: A verdict other than yes, after the label: ``saw [no]``.
_VERDICT = re.compile(r"^(.*?)\s*\[(yes|no|unsure)\]\s*$", re.IGNORECASE)


def write_annotations(group: list[Annotation], target: Path) -> Path:
    """One recording's annotations as a label track at ``target``."""
    lines = []
    for a in group:
        label = clean(a.label) + ("" if a.verdict == "yes" else f" [{a.verdict}]")
        lines.append(f"{num(a.start_s)}\t{num(a.end_s)}\t{label}")
        if a.low_hz is not None or a.high_hz is not None:
            lines.append(f"\\\t{num(a.low_hz or 0.0)}\t{num(a.high_hz)}")
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def export_audacity(hits: list[Hit], folder: Path, label: str) -> ExportResult:
    """Write one Audacity label track per recording (``<stem>.txt``; ``<stem>.r<id>.txt`` when
    several exported recordings share a stem): ``start<TAB>end<TAB>label`` lines in time
    order, the label being the hit's class (label queries) or ``label``. Import a track in
    Audacity with File > Import > Labels beside the recording."""
    folder.mkdir(parents=True, exist_ok=True)
    out = ExportResult()
    groups = by_recording(hits)
    stems: dict[str, int] = {}
    for ranked in groups.values():
        stem = slug(PurePath(ranked[0][1].path).stem)
        stems[stem] = stems.get(stem, 0) + 1
    for recording_id, ranked in groups.items():
        stem = slug(PurePath(ranked[0][1].path).stem)
        name = stem if stems[stem] == 1 else f"{stem}.r{recording_id}"
        lines = [
            f"{hit.start_s:.3f}\t{hit.end_s:.3f}\t{table_cell(hit.label or label)}"
            for _, hit in ranked
        ]
        track = folder / f"{name}.txt"
        track.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out.written.append(track)
    return out


def parse(
    text: str, table: Path, recs: Recordings, fixed: Recording | None, problems: Problems
) -> list[Row]:
    """The labels of a track (every one of the recording ``fixed`` or the one the track's file
    name names); bad lines go to ``problems``."""
    rec: Recording | None = fixed
    if rec is None:
        try:
            rec = recs.from_table_name(table)
        except AnnotationError as exc:
            problems.add(1, str(exc))
            return []
    rows: list[Row] = []
    for i, line in enumerate(text.splitlines()):
        line_no = i + 1
        if not line.strip():
            continue
        cells = line.split("\t")
        try:
            if line.startswith("\\") or line.startswith("\t"):  # frequencies of the label above
                if not rows:
                    raise AnnotationError("a frequency line before any label")
                rows[-1].low_hz = number(cells[1] if len(cells) > 1 else "", "low frequency")
                rows[-1].high_hz = number(cells[2] if len(cells) > 2 else "", "high frequency")
                continue
            if len(cells) < 2:
                raise AnnotationError("expected start<TAB>end<TAB>label")
            start = number(cells[0], "start")
            end = number(cells[1], "end")
            text_label = "\t".join(cells[2:]).strip()
            verdict = "yes"
            m = _VERDICT.match(text_label)
            if m:
                text_label, verdict = m.group(1), m.group(2).lower()
            rows.append(Row(line_no, rec, start, end, text_label, verdict))
        except AnnotationError as exc:
            problems.add(line_no, str(exc))
    return rows
