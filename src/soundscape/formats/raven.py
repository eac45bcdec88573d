"""Raven Pro selection tables (tab-separated; BirdNET-Analyzer writes them too): the one set
of columns soundscape reads and writes, the reader (:func:`parse`) and the three writers:
annotations (:func:`write_annotations`, ``annotate export --format raven``), search results
(:func:`export_raven`, ``search --raven``) and review batches (:func:`write_review_table`).

Every table starts with Raven's own columns (:data:`BASE_COLUMNS`); each use adds the columns
it needs (:data:`ANNOTATION_COLUMNS`, :data:`SEARCH_COLUMNS`, :data:`REVIEW_COLUMNS`), all
named here once, and :func:`parse` reads the same names back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path, PurePath

from soundscape.annotations import Annotation, Recording
from soundscape.audio import probe
from soundscape.errors import AnnotationError, SoundscapeError
from soundscape.export import band_hz
from soundscape.formats.rows import (
    ExportResult,
    Problems,
    Recordings,
    Row,
    at,
    by_recording,
    clean,
    int_or_none,
    num,
    number,
    optional_number,
    slug,
    table_cell,
)
from soundscape.output import from_spreadsheet, spreadsheet_safe
from soundscape.results import Hit
from soundscape.spaces import Space

# ------------------------------------------------------------------------------- columns
# Raven's own: every selection table has them.
SELECTION = "Selection"
VIEW = "View"
CHANNEL = "Channel"
BEGIN_TIME = "Begin Time (s)"
END_TIME = "End Time (s)"
LOW_FREQ = "Low Freq (Hz)"
HIGH_FREQ = "High Freq (Hz)"
# Where the selection is when a table spans files (Raven's and BirdNET-Analyzer's names).
BEGIN_PATH = "Begin Path"
FILE_OFFSET = "File Offset (s)"
# BirdNET-Analyzer's: what was detected, how sure.
COMMON_NAME = "Common Name"
SPECIES_CODE = "Species Code"
CONFIDENCE = "Confidence"
# soundscape's: the annotation, and where it came from.
LABEL = "Label"
VERDICT = "Verdict"
AUTHOR = "Author"
NOTE = "Note"
SOURCE = "Source"
ANNOTATION_ID = "Annotation ID"
# soundscape's: the window and the hit.
WINDOW_ID = "Window ID"
LOCAL_TIME = "Local Time"
SENSOR = "Sensor"
RANK = "Rank"
SCORE = "Score"
STRATEGY = "Strategy"
CLIP = "Clip"

BASE_COLUMNS = [SELECTION, VIEW, CHANNEL, BEGIN_TIME, END_TIME, LOW_FREQ, HIGH_FREQ]

#: ``annotate export --format raven``: everything an annotation carries, so that import gives
#: it back.
ANNOTATION_COLUMNS = [
    *BASE_COLUMNS, BEGIN_PATH, FILE_OFFSET, LABEL, VERDICT, AUTHOR, NOTE, SOURCE, LOCAL_TIME,
    ANNOTATION_ID, WINDOW_ID,
]  # fmt: skip

#: ``search --raven``: the first twelve columns are BirdNET-Analyzer's (its Raven output); the
#: rest let ``soundscape annotate import`` find the window again.
SEARCH_COLUMNS = [
    *BASE_COLUMNS, COMMON_NAME, SPECIES_CODE, CONFIDENCE, BEGIN_PATH, FILE_OFFSET, RANK, SENSOR,
    LOCAL_TIME, WINDOW_ID,
]  # fmt: skip

#: Review batches (soundscape.review): an empty Verdict to fill in, and the clip to listen to.
REVIEW_COLUMNS = [
    *BASE_COLUMNS, BEGIN_PATH, FILE_OFFSET, LABEL, VERDICT, SCORE, STRATEGY, RANK, WINDOW_ID,
    SENSOR, LOCAL_TIME, CLIP,
]  # fmt: skip


# ------------------------------------------------------------------------------- writing
def _selection(n: int, begin: object, end: object, low: object, high: object) -> dict[str, object]:
    """The base columns of selection ``n`` (drawn on the spectrogram, channel 1)."""
    return {
        SELECTION: n, VIEW: "Spectrogram 1", CHANNEL: 1, BEGIN_TIME: begin, END_TIME: end,
        LOW_FREQ: low, HIGH_FREQ: high,
    }  # fmt: skip


def _local(when: datetime | None) -> str:
    return when.isoformat(sep=" ", timespec="seconds") if when else ""


def write_table(
    path: Path,
    columns: Sequence[str],
    rows: Iterable[Mapping[str, object]],
    cell: Callable[[object], str] = table_cell,
) -> Path:
    """Write a selection table: a header of ``columns``, then each row's cells in that order
    (``cell`` makes a cell's text)."""
    lines = ["\t".join(columns)]
    lines += ["\t".join(cell(row[c]) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _escape_note(text: str | None) -> str:
    """A note in one Raven cell: tabs, line breaks and backslashes as ``\\t``, ``\\n``,
    ``\\r``, ``\\\\`` (``_unescape_note`` reads them back)."""
    table = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}
    return re.sub(r"[\t\n\r\\]", lambda m: table[m.group(0)], text or "")


def write_annotations(
    group: list[Annotation], folder: Path, stem: str, recording_id: int, nyquist: float
) -> Path:
    """One recording's annotations as ``<stem>.r<id>.selections.txt`` (a missing band is
    written as the full band, 0 Hz to ``nyquist``, which reads back as no band)."""
    rows = []
    for n, a in enumerate(group, start=1):
        full = a.low_hz is None and a.high_hz is None
        low = "0" if full else num(a.low_hz)
        high = num(nyquist) if full else num(a.high_hz)
        rows.append(
            _selection(n, num(a.start_s), num(a.end_s), low, high)
            | {
                BEGIN_PATH: spreadsheet_safe(a.path),
                FILE_OFFSET: num(a.start_s),
                LABEL: spreadsheet_safe(clean(a.label)),
                VERDICT: a.verdict,
                AUTHOR: spreadsheet_safe(clean(a.author)),
                NOTE: spreadsheet_safe(_escape_note(a.note)),
                SOURCE: a.source,
                LOCAL_TIME: _local(a.local),
                ANNOTATION_ID: a.id,
                WINDOW_ID: "" if a.segment_id is None else a.segment_id,
            }
        )
    target = folder / f"{stem}.r{recording_id}.selections.txt"
    return write_table(target, ANNOTATION_COLUMNS, rows, cell=str)


def export_raven(
    hits: list[Hit], folder: Path, label: str, space: Space | None = None
) -> ExportResult:
    """Write one Raven selection table per recording (``<stem>.r<recording id>.selections.txt``,
    tab-separated) in BirdNET-Analyzer's columns: a selection per hit in time order, the
    hit's class (label queries) or ``label`` as ``Common Name``, its score as ``Confidence``,
    the band of ``space``'s model (``band_hz``), then rank, sensor, local time and window id.
    ``Species Code`` stays empty: soundscape has no eBird taxonomy to look codes up in."""
    folder.mkdir(parents=True, exist_ok=True)
    out = ExportResult()
    for recording_id, ranked in by_recording(hits).items():
        path = ranked[0][1].path
        try:
            low, high = band_hz(float(probe(path).sample_rate), space)
        except (SoundscapeError, OSError) as exc:
            low, high = band_hz(48000.0, space)  # the audio is gone: assume 48 kHz
            out.errors.append(f"{path}: {exc}; High Freq set to {high:g} Hz")
        rows = [
            _selection(selection, f"{hit.start_s:.3f}", f"{hit.end_s:.3f}", f"{low:g}", f"{high:g}")
            | {
                COMMON_NAME: hit.label or label,
                SPECIES_CODE: "",
                CONFIDENCE: f"{hit.score:.4f}",
                BEGIN_PATH: path,
                FILE_OFFSET: f"{hit.start_s:.3f}",
                RANK: rank,
                SENSOR: hit.sensor,
                LOCAL_TIME: _local(hit.local),
                WINDOW_ID: hit.segment_id,
            }
            for selection, (rank, hit) in enumerate(ranked, start=1)
        ]
        table = folder / f"{slug(PurePath(path).stem)}.r{recording_id}.selections.txt"
        out.written.append(write_table(table, SEARCH_COLUMNS, rows))
    return out


def write_review_table(
    table: Path, hits: list[Hit], label: str, strategy: str, high_hz: Mapping[str, float]
) -> Path:
    """A review batch's table: a row per hit in rank order with ``label``, an empty Verdict,
    score, ``strategy`` and the clip's file name; the band 0 Hz to ``high_hz[hit.path]``."""
    rows = [
        _selection(rank, f"{hit.start_s:.3f}", f"{hit.end_s:.3f}", 0, f"{high_hz[hit.path]:g}")
        | {
            BEGIN_PATH: hit.path,
            FILE_OFFSET: f"{hit.start_s:.3f}",
            LABEL: label,
            VERDICT: "",
            SCORE: f"{hit.score:.4f}",
            STRATEGY: strategy,
            RANK: rank,
            WINDOW_ID: hit.segment_id,
            SENSOR: hit.sensor,
            LOCAL_TIME: _local(hit.local),
            CLIP: Path(hit.clip).name if hit.clip else "",
        }
        for rank, hit in enumerate(hits, start=1)
    ]
    return write_table(table, REVIEW_COLUMNS, rows)


# ------------------------------------------------------------------------------- reading
def has_verdict_column(text: str) -> bool:
    """Whether a table has a Verdict column (a review batch)."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    return VERDICT.lower() in {c.strip().lower() for c in header.split("\t")}


def _is_spectrogram(cells: list[str], view: int | None) -> bool:
    return (at(cells, view) or "").lower().startswith("spectrogram")


def _unescape_note(cell: str | None) -> str | None:
    """A Raven note as ``_escape_note`` wrote it: ``\\t``, ``\\n``, ``\\r``, ``\\\\``."""
    if not cell or "\\" not in cell:
        return cell
    table = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}
    return re.sub(r"\\([tnr\\])", lambda m: table[m.group(1)], cell)


def _one_per_selection(
    lines: list[str], header_at: int, c_sel: int | None, c_path: int | None, c_view: int | None
) -> list[tuple[int, list[str]]]:
    """The data rows (line number, cells) in file order. Raven writes one row per view
    (Spectrogram 1, Waveform 1) of the same selection: keep one row per selection number (and
    Begin Path, for tables of several files), preferring the spectrogram view, where the
    frequency band was drawn."""
    chosen: dict[tuple[str, str], tuple[int, list[str]]] = {}
    kept: list[tuple[int, list[str]]] = []
    for i in range(header_at + 1, len(lines)):
        if not lines[i].strip():
            continue
        cells = lines[i].split("\t")
        sel = at(cells, c_sel)
        if not sel:
            kept.append((i + 1, cells))
            continue
        key = (sel, at(cells, c_path) or "")
        if key not in chosen or (
            _is_spectrogram(cells, c_view) > _is_spectrogram(chosen[key][1], c_view)
        ):
            chosen[key] = (i + 1, cells)
    return sorted(kept + list(chosen.values()), key=lambda item: item[0])


def parse(
    text: str, table: Path, recs: Recordings, fixed: Recording | None, problems: Problems
) -> tuple[list[Row], int]:
    """The rows of a selection table (soundscape's, BirdNET-Analyzer's, Raven's own, a review
    batch) and how many were left unreviewed (an empty Verdict cell); bad rows go to
    ``problems``."""
    lines = text.splitlines()
    header_at = next(i for i, line in enumerate(lines) if line.strip())
    names = [c.strip() for c in lines[header_at].split("\t")]
    index = {n.lower(): i for i, n in enumerate(names)}

    def col(*candidates: str) -> int | None:
        return next((index[c.lower()] for c in candidates if c.lower() in index), None)

    c_begin, c_end = col(BEGIN_TIME), col(END_TIME)
    if c_begin is None or c_end is None:
        raise AnnotationError(f"{table}: a Raven table needs 'Begin Time (s)' and 'End Time (s)'")
    c_label = col(LABEL, "Annotation", COMMON_NAME)
    c_verdict, c_author, c_note = col(VERDICT), col(AUTHOR), col(NOTE, "Notes")
    c_path, c_offset = col(BEGIN_PATH), col(FILE_OFFSET)
    c_low, c_high = col(LOW_FREQ), col(HIGH_FREQ)
    c_sel, c_view, c_window = col(SELECTION), col(VIEW), col(WINDOW_ID)
    c_id = col(ANNOTATION_ID)

    table_rec: Recording | AnnotationError | None = fixed
    rows: list[Row] = []
    unreviewed = 0
    for line_no, cells in _one_per_selection(lines, header_at, c_sel, c_path, c_view):

        def cell(c: int | None, cells: list[str] = cells) -> str | None:
            return at(cells, c)

        verdict_cell = cell(c_verdict)
        if c_verdict is not None and not verdict_cell:
            unreviewed += 1
            continue
        try:
            begin = number(cell(c_begin), "Begin Time (s)")
            end = number(cell(c_end), "End Time (s)")
            offset = optional_number(cell(c_offset), "File Offset (s)")
            if offset is not None:  # BirdNET's combined tables: Begin Time runs across files
                begin, end = offset, offset + (end - begin)
            path_cell = from_spreadsheet(cell(c_path))
            if path_cell and fixed is None:
                rec = recs.find(path_cell)
            else:
                if table_rec is None:
                    try:
                        table_rec = recs.from_table_name(table)
                    except AnnotationError as exc:
                        table_rec = exc
                if isinstance(table_rec, AnnotationError):
                    raise table_rec
                rec = table_rec
            rows.append(
                Row(
                    line_no,
                    rec,
                    begin,
                    end,
                    from_spreadsheet(cell(c_label)),
                    verdict_cell if c_verdict is not None else "yes",
                    author=from_spreadsheet(cell(c_author)),
                    note=_unescape_note(from_spreadsheet(cell(c_note))) or None,
                    low_hz=optional_number(cell(c_low), "Low Freq (Hz)"),
                    high_hz=optional_number(cell(c_high), "High Freq (Hz)"),
                    window_id=int_or_none(cell(c_window)),
                    annotation_id=int_or_none(cell(c_id)),
                )
            )
        except AnnotationError as exc:
            problems.add(line_no, str(exc))
    return rows, unreviewed
