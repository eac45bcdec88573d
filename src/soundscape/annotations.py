"""Annotations, the people's ground truth: the one place that reads and writes them.

An annotation is a labelled span of a recording (start/end seconds, optionally a frequency
band) with a verdict (``yes`` the sound is there, ``no`` it is not, ``unsure``), who made it
(author) and how (source: ``cli``, ``import``, ``review``, ``web``). Labels are free text,
independent of any model's classes. A window is labelled by overlap: window [start, end) of a
recording carries every annotation [start, end) of the same recording that it overlaps
(:func:`windows_labelled`, what classifiers train on).

Files: :func:`import_file` reads Raven selection tables (soundscape's own ``search --raven``
output, BirdNET-Analyzer's Raven output, review batches), Audacity label tracks and CSV; one
file is checked completely before anything is written, so a bad row means nothing of that file
is stored. :func:`export` writes the same formats back, losslessly for what each format carries.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time
from pathlib import Path, PurePath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.errors import AnnotationError, AnnotationImportError
from soundscape.export import slug as _slug
from soundscape.output import from_spreadsheet, spreadsheet_safe
from soundscape.queries import Filters, check_filter_names
from soundscape.spaces import get_space, list_spaces

VERDICTS = ("yes", "no", "unsure")
SOURCES = ("cli", "import", "review", "web")
FORMATS = ("raven", "audacity", "csv")

#: Short forms accepted for verdicts in files and on the command line.
VERDICT_ALIASES = {"y": "yes", "n": "no", "?": "unsure", "u": "unsure"}

#: How far (s) an end may pass the recording's duration and still be accepted (then clipped
#: to the duration): files round times (Raven to 3 decimals), durations are not round.
END_TOLERANCE_S = 0.01

#: Two annotations are "the same" for re-import when recording, label, verdict and source are
#: equal and start and end agree to this many decimals (a microsecond).
_KEY_DECIMALS = 6

#: Most bad rows listed in one error message (the count says how many there were).
_MAX_PROBLEMS_SHOWN = 20

#: The longest label and author (characters): a name, not a text; the database checks the same
#: (migration 0025), and a longer one broke the label index ("index row size").
MAX_LABEL = 200
#: The longest note (characters); the database checks the same (migration 0025).
MAX_NOTE = 10_000

#: Control characters (C0, DEL, C1): a label or author is one line of text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

#: How far (Hz) a band may pass the recording's Nyquist frequency and still be accepted (then
#: clipped to it): files round frequencies.
NYQUIST_TOLERANCE_HZ = 1.0


# ------------------------------------------------------------------------------- records
@dataclass
class Annotation:
    """One annotation with its place and the local time of its start (``ranger.annotations``)."""

    id: int
    recording_id: int
    start_s: float
    end_s: float
    label: str
    verdict: str
    author: str | None
    source: str
    note: str | None
    low_hz: float | None
    high_hz: float | None
    segment_id: int | None
    created_at: datetime
    sensor: str
    site: str | None
    quadrant: str | None
    path: str
    local_date: date | None
    local_time: time | None
    starts_at: datetime | None

    @property
    def local(self) -> datetime | None:
        if self.local_date is None or self.local_time is None:
            return None
        return datetime.combine(self.local_date, self.local_time)

    def as_row(self) -> dict[str, Any]:
        d = asdict(self)
        d["local"] = self.local.isoformat(sep=" ", timespec="seconds") if self.local else None
        d["start_s"] = round(float(self.start_s), 6)
        d["end_s"] = round(float(self.end_s), 6)
        return d


@dataclass(frozen=True)
class LabelledWindow:
    """A window of a space that overlaps an annotation (one row per window and annotation)."""

    segment_id: int
    recording_id: int
    start_s: float
    end_s: float
    label: str
    verdict: str
    annotation_id: int
    overlap_s: float


@dataclass
class ImportResult:
    """What :func:`import_file` did with one file."""

    path: Path
    format: str
    source: str
    imported: int = 0
    duplicates: int = 0  # rows already stored (or repeated in the file): skipped
    unreviewed: int = 0  # rows with an empty Verdict cell (an unreviewed review batch row)
    ids: list[int] = field(default_factory=list)
    #: what the reader had to assume (e.g. a file that is not UTF-8 read as Windows-1252)
    warnings: list[str] = field(default_factory=list)

    def as_row(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "format": self.format,
            "source": self.source,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "unreviewed": self.unreviewed,
        }


@dataclass
class ExportResult:
    written: list[Path] = field(default_factory=list)
    annotations: int = 0


@dataclass(frozen=True)
class _Recording:
    id: int
    path: str
    duration_s: float
    sample_rate: int


# ------------------------------------------------------------------------------- checks
def normalize_verdict(value: str | None) -> str:
    """``yes``/``no``/``unsure`` (case-insensitive; ``y``, ``n``, ``?`` too) or AnnotationError."""
    v = (value or "").strip().lower()
    v = VERDICT_ALIASES.get(v, v)
    if v not in VERDICTS:
        raise AnnotationError(f"unknown verdict {value!r}; use yes, no or unsure")
    return v


def _check_label(label: str | None) -> str:
    text = (label or "").strip()
    if not text:
        raise AnnotationError("empty label; give the sound a name (e.g. saw, fireworks)")
    if _CONTROL.search(text):
        raise AnnotationError(
            f"label {text[:40]!r} holds a tab, line break or other control character; a label "
            "is one line (put details in the note)"
        )
    if len(text) > MAX_LABEL:
        raise AnnotationError(
            f"label {text[:40]!r}... has {len(text)} characters; at most {MAX_LABEL} (a name, "
            "not a text: put details in the note)"
        )
    return text


def _check_author(author: str | None) -> str | None:
    if author is None:
        return None
    if _CONTROL.search(author) or len(author) > MAX_LABEL:
        raise AnnotationError(
            f"author {author[:40]!r} is not a name (a control character or over {MAX_LABEL} "
            "characters)"
        )
    return author


def _check_note(note: str | None) -> str | None:
    if note is None:
        return None
    if "\x00" in note:
        raise AnnotationError("the note holds a NUL character (\\x00); remove it")
    if len(note) > MAX_NOTE:
        raise AnnotationError(
            f"the note has {len(note)} characters; at most {MAX_NOTE} (keep long texts "
            "elsewhere and link them)"
        )
    return note


def _check_window(conn: Connection, rec: _Recording, segment_id: int | None) -> int | None:
    """A window an annotation refers to must be a window of its recording."""
    if segment_id is None:
        return None
    owner = conn.execute(
        sa.text("SELECT recording_id FROM segments WHERE id = :i"), {"i": int(segment_id)}
    ).scalar()
    if owner is None:
        raise AnnotationError(f"no window with id {segment_id}")
    if int(owner) != rec.id:
        raise AnnotationError(
            f"window {segment_id} is a window of recording {owner}, not of recording {rec.id}"
        )
    return int(segment_id)


def _check_span(
    rec: _Recording,
    start_s: float,
    end_s: float,
    low_hz: float | None,
    high_hz: float | None,
) -> float:
    """Check a span against its recording; returns the end (clipped to the duration when it
    passes it by less than END_TOLERANCE_S)."""
    for what, value in (
        ("start", start_s),
        ("end", end_s),
        ("low frequency", low_hz),
        ("high frequency", high_hz),
    ):
        if value is not None and not math.isfinite(value):
            raise AnnotationError(f"{what} {value} is not a finite number")
    if start_s < 0:
        raise AnnotationError(f"start {start_s:g} s is negative; times count from 0")
    if end_s <= start_s:
        raise AnnotationError(f"end {end_s:g} s is not after start {start_s:g} s")
    if end_s > rec.duration_s + END_TOLERANCE_S:
        raise AnnotationError(
            f"end {end_s:g} s is beyond the end of recording {rec.id} "
            f"({rec.duration_s:.3f} s, {rec.path})"
        )
    if low_hz is not None and low_hz < 0:
        raise AnnotationError(f"low frequency {low_hz:g} Hz is negative")
    if high_hz is not None and high_hz < 0:
        raise AnnotationError(f"high frequency {high_hz:g} Hz is negative")
    nyquist = rec.sample_rate / 2
    for what, value in (("low", low_hz), ("high", high_hz)):
        if value is not None and value > nyquist + NYQUIST_TOLERANCE_HZ:
            raise AnnotationError(
                f"{what} frequency {value:g} Hz is above {nyquist:g} Hz, the highest frequency "
                f"recording {rec.id} holds (half its sample rate, {rec.sample_rate} Hz)"
            )
    if low_hz is not None and high_hz is not None and high_hz <= low_hz:
        raise AnnotationError(
            f"high frequency {high_hz:g} Hz is not above low frequency {low_hz:g} Hz"
        )
    return min(end_s, rec.duration_s)


def _get_recording(conn: Connection, recording_id: int) -> _Recording:
    row = conn.execute(
        sa.text("SELECT id, path, duration_s, sample_rate FROM recordings WHERE id = :i"),
        {"i": int(recording_id)},
    ).fetchone()
    if row is None:
        raise AnnotationError(
            f"no recording with id {recording_id} (see `soundscape recordings list`)"
        )
    return _Recording(int(row.id), row.path, float(row.duration_s), int(row.sample_rate))


_INSERT = sa.text(
    "INSERT INTO annotations (recording_id, start_s, end_s, low_hz, high_hz, label, verdict, "
    "author, source, note, segment_id) VALUES (:recording_id, :start_s, :end_s, :low_hz, "
    ":high_hz, :label, :verdict, :author, :source, :note, :segment_id) RETURNING id"
)


_INSERT_MANY = sa.text(
    "INSERT INTO annotations (recording_id, start_s, end_s, low_hz, high_hz, label, verdict, "
    "author, source, note, segment_id) SELECT * FROM unnest(CAST(:recording_id AS bigint[]), "
    "CAST(:start_s AS float8[]), CAST(:end_s AS float8[]), CAST(:low_hz AS real[]), "
    "CAST(:high_hz AS real[]), CAST(:label AS text[]), CAST(:verdict AS text[]), "
    "CAST(:author AS text[]), CAST(:source AS text[]), CAST(:note AS text[]), "
    "CAST(:segment_id AS bigint[])) RETURNING id"
)


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise AnnotationError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    return source


# ------------------------------------------------------------------------------- add / hit
def add_annotation(
    conn: Connection,
    recording_id: int,
    start_s: float,
    end_s: float,
    label: str,
    *,
    verdict: str = "yes",
    author: str | None = None,
    source: str = "cli",
    note: str | None = None,
    low_hz: float | None = None,
    high_hz: float | None = None,
    segment_id: int | None = None,
) -> int:
    """Store one annotation after checking it (the recording exists, 0 <= start < end <= its
    duration, a known verdict, a non-empty label); returns its id."""
    rec = _get_recording(conn, recording_id)
    label = _check_label(label)
    verdict = normalize_verdict(verdict)
    _check_source(source)
    author, note = _check_author(author), _check_note(note)
    end = _check_span(rec, float(start_s), float(end_s), low_hz, high_hz)
    if high_hz is not None:
        high_hz = min(high_hz, rec.sample_rate / 2)
    segment_id = _check_window(conn, rec, segment_id)
    return int(
        conn.execute(
            _INSERT,
            {
                "recording_id": rec.id,
                "start_s": float(start_s),
                "end_s": end,
                "low_hz": low_hz,
                "high_hz": high_hz,
                "label": label,
                "verdict": verdict,
                "author": author,
                "source": source,
                "note": note,
                "segment_id": segment_id,
            },
        ).scalar_one()
    )


def annotate_hit(
    conn: Connection,
    segment_id: int,
    label: str,
    verdict: str,
    *,
    author: str | None = None,
    note: str | None = None,
    source: str = "cli",
) -> int:
    """Validate a search hit: annotate the span of window ``segment_id`` (its end clipped to the
    recording's end: the last window of a file is zero-padded) with ``label`` and ``verdict``.

    The same window, label, author and source validated again updates that annotation's
    verdict and note (a corrected judgement, not a second vote); returns the annotation id."""
    row = conn.execute(
        sa.text("SELECT recording_id, start_s, end_s FROM segments WHERE id = :i"),
        {"i": int(segment_id)},
    ).fetchone()
    if row is None:
        raise AnnotationError(
            f"no window with id {segment_id} (use the segment_id of a `soundscape search` hit)"
        )
    label = _check_label(label)
    verdict = normalize_verdict(verdict)
    author, note = _check_author(author), _check_note(note)
    existing = conn.execute(
        sa.text(
            "SELECT id FROM annotations WHERE segment_id = :g AND label = :l "
            "AND author IS NOT DISTINCT FROM :a AND source = :s ORDER BY id LIMIT 1"
        ),
        {"g": int(segment_id), "l": label, "a": author, "s": source},
    ).scalar()
    if existing is not None:
        conn.execute(
            sa.text("UPDATE annotations SET verdict = :v, note = coalesce(:n, note) WHERE id = :i"),
            {"v": verdict, "n": note, "i": existing},
        )
        return int(existing)
    rec = _get_recording(conn, row.recording_id)
    start = float(row.start_s)
    return add_annotation(
        conn,
        rec.id,
        start,
        min(float(row.end_s), rec.duration_s),
        label,
        verdict=verdict,
        author=author,
        source=source,
        note=note,
        segment_id=int(segment_id),
    )


def review_hit(
    conn: Connection,
    writer: Connection,
    segment_id: int,
    label: str,
    verdict: str,
    *,
    author: str,
    note: str | None = None,
) -> int:
    """A reviewer's verdict on a window from the web page: checked like ``annotate_hit`` with
    ``conn`` (which may read), inserted through ``writer``, the reviewer's own connection, which
    may only insert annotations (soundscape.roles.create_reviewer). The database sets author
    and source (``web``) of a reviewer's row and replaces that reviewer's earlier verdict on the
    same window and label (migration 0014). Returns the annotation id."""
    row = conn.execute(
        sa.text("SELECT recording_id, start_s, end_s FROM segments WHERE id = :i"),
        {"i": int(segment_id)},
    ).fetchone()
    if row is None:
        raise AnnotationError(f"no window with id {segment_id}")
    rec = _get_recording(conn, row.recording_id)
    label = _check_label(label)
    note = _check_note(note)
    start = float(row.start_s)
    end = _check_span(rec, start, min(float(row.end_s), rec.duration_s), None, None)
    params = {
        "recording_id": rec.id, "start_s": start, "end_s": end, "low_hz": None,
        "high_hz": None, "label": label, "verdict": normalize_verdict(verdict),
        "author": author, "source": "web", "note": note or None, "segment_id": int(segment_id),
    }  # fmt: skip
    return int(writer.execute(_INSERT, params).scalar_one())


# ------------------------------------------------------------------------------- list / remove
def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return list(value) or None


def list_annotations(
    conn: Connection,
    filters: Filters | None = None,
    *,
    label: str | Sequence[str] | None = None,
    verdict: str | Sequence[str] | None = None,
    recording_id: int | None = None,
    author: str | None = None,
    source: str | None = None,
    ids: Iterable[int] | None = None,
    limit: int | None = None,
) -> list[Annotation]:
    """Annotations that pass the filters, in time order (recordings of unknown start last).

    ``filters`` are search's place and time filters (sensors, sites, quadrants, local time of
    day, possibly across midnight, local dates, instants), applied to each annotation's start
    (a time or date filter leaves out annotations of recordings whose start is unknown).
    """
    filters = filters or Filters()
    check_filter_names(conn, filters)
    where, params = filters.where("v")

    def add(cond: str, **values: Any) -> None:
        where.append(cond)
        params.update(values)

    labels = _as_list(label)
    if labels:
        add("v.label = ANY(:labels)", labels=[x.strip() for x in labels])
    verdicts = _as_list(verdict)
    if verdicts:
        add("v.verdict = ANY(:verdicts)", verdicts=[normalize_verdict(v) for v in verdicts])
    if recording_id is not None:
        add("v.recording_id = :rec", rec=int(recording_id))
    if author is not None:
        add("v.author = :author", author=author)
    if source is not None:
        add("v.source = :source", source=_check_source(source))
    if ids is not None:
        add("v.annotation_id = ANY(:ids)", ids=[int(i) for i in ids])
    sql = (
        "SELECT v.annotation_id AS id, v.recording_id, v.start_s, v.end_s, v.label, v.verdict, "
        "v.author, v.source, v.note, v.low_hz, v.high_hz, v.segment_id, v.created_at, v.sensor, "
        "v.site, v.quadrant, v.path, v.local_date, v.local_time, v.starts_at "
        "FROM ranger.annotations v"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY v.starts_at NULLS LAST, v.recording_id, v.start_s, v.annotation_id"
        + (" LIMIT :limit" if limit else "")
    )
    if limit:
        params["limit"] = int(limit)
    return [Annotation(**dict(r._mapping)) for r in conn.execute(sa.text(sql), params)]


def remove_annotations(conn: Connection, ids: Iterable[int]) -> int:
    """Delete annotations by id; all or nothing (an unknown id is an error). Returns how many."""
    wanted = sorted({int(i) for i in ids})
    if not wanted:
        return 0
    found = set(
        conn.execute(
            sa.text("SELECT id FROM annotations WHERE id = ANY(:ids)"), {"ids": wanted}
        ).scalars()
    )
    missing = [i for i in wanted if i not in found]
    if missing:
        raise AnnotationError(
            f"no annotation with id {', '.join(map(str, missing))}; nothing removed "
            "(see `soundscape annotate list`)"
        )
    return conn.execute(
        sa.text("DELETE FROM annotations WHERE id = ANY(:ids)"), {"ids": wanted}
    ).rowcount


def label_summary(conn: Connection) -> list[dict[str, Any]]:
    """Per label: how many annotations say yes, no and unsure, on how many recordings."""
    rows = conn.execute(
        sa.text(
            "SELECT label, count(*) FILTER (WHERE verdict = 'yes') AS yes, "
            "count(*) FILTER (WHERE verdict = 'no') AS no, "
            "count(*) FILTER (WHERE verdict = 'unsure') AS unsure, "
            "count(DISTINCT recording_id) AS recordings, count(DISTINCT author) AS authors "
            "FROM annotations GROUP BY label ORDER BY label"
        )
    )
    return [dict(r._mapping) for r in rows]


# ------------------------------------------------------------------------------- windows
def windows_labelled(
    conn: Connection,
    space: int | str,
    labels: str | Sequence[str] | None = None,
    *,
    verdicts: str | Sequence[str] | None = None,
    min_overlap: float = 0.0,
) -> list[LabelledWindow]:
    """Every window of ``space`` (id or name) that overlaps an annotation, for training data.

    One row per (window, annotation) pair, ordered by window id, label and annotation id:
    ``segment_id``, the window's recording and span, the annotation's ``label``, ``verdict``
    and id, and ``overlap_s`` (seconds in common). A window and an annotation overlap when
    window.start < annotation.end and window.end > annotation.start (half-open spans of the
    same recording). A window may come back several times: several labels, or several
    annotations of one label (different authors may disagree: ``yes`` and ``no`` for the same
    window and label); how to weigh those is the caller's choice.

    ``labels`` / ``verdicts`` restrict to those labels / verdicts. ``min_overlap`` (0-1) keeps
    only pairs whose overlap is at least that fraction of the shorter of the two spans
    (0: any overlap; 0.5: a short call must lie at least half inside the window, and a long
    annotation must cover at least half the window).
    """
    if not 0.0 <= min_overlap <= 1.0:
        raise AnnotationError(f"min_overlap must be between 0 and 1, not {min_overlap}")
    if isinstance(space, int):
        found = [s for s in list_spaces(conn) if s.id == space]
        if not found:
            raise AnnotationError(f"no space with id {space} (see `soundscape spaces list`)")
        space_ = found[0]
    else:
        space_ = get_space(conn, space)
    labels_ = _as_list(labels)
    verdicts_ = _as_list(verdicts)
    rows = conn.execute(
        sa.text(
            """
            SELECT g.id AS segment_id, g.recording_id, g.start_s, g.end_s, a.label, a.verdict,
                   a.id AS annotation_id,
                   least(g.end_s, a.end_s) - greatest(g.start_s, a.start_s) AS overlap_s
              FROM annotations a
              JOIN segments g ON g.space_id = :space AND g.recording_id = a.recording_id
                             AND g.start_s < a.end_s AND g.end_s > a.start_s
                             AND g.start_s > a.start_s - :window
             WHERE (CAST(:labels AS text[]) IS NULL OR a.label = ANY(:labels))
               AND (CAST(:verdicts AS text[]) IS NULL OR a.verdict = ANY(:verdicts))
               AND least(g.end_s, a.end_s) - greatest(g.start_s, a.start_s)
                   >= :min_overlap * least(g.end_s - g.start_s, a.end_s - a.start_s)
             ORDER BY g.id, a.label, a.id
            """
        ),
        {
            "space": space_.id,
            "window": float(space_.window_s),  # bounds the index range scan per annotation
            "labels": labels_,
            "verdicts": [normalize_verdict(v) for v in verdicts_] if verdicts_ else None,
            "min_overlap": float(min_overlap),
        },
    )
    return [
        LabelledWindow(
            int(r.segment_id),
            int(r.recording_id),
            float(r.start_s),
            float(r.end_s),
            r.label,
            r.verdict,
            int(r.annotation_id),
            float(r.overlap_s),
        )
        for r in rows
    ]


# ------------------------------------------------------------------------------- import
class _Recordings:
    """Finds stored recordings by id, full path, file name or stem for one import. Each
    distinct name is looked up once (by SQL, not by loading every recording: a database may
    hold 100,000 of them and an import may be hundreds of per-file tables)."""

    _COLUMNS = "SELECT id, path, duration_s, sample_rate FROM recordings"

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._by_name: dict[str, list[_Recording]] = {}
        self._by_id: dict[int, _Recording | None] = {}
        self._by_path: dict[str, list[_Recording]] = {}

    def _rows(self, where: str, **params: Any) -> list[_Recording]:
        rows = self.conn.execute(sa.text(f"{self._COLUMNS} WHERE {where} ORDER BY id"), params)
        return [
            _Recording(int(r.id), r.path, float(r.duration_s), int(r.sample_rate)) for r in rows
        ]

    def get(self, recording_id: int) -> _Recording | None:
        if recording_id not in self._by_id:
            found = self._rows("id = :i", i=int(recording_id))
            self._by_id[recording_id] = found[0] if found else None
        return self._by_id[recording_id]

    def _named(self, name: str) -> list[_Recording]:
        """Recordings whose file name (last path component) is ``name``."""
        if name not in self._by_name:
            pattern = "%/" + re.sub(r"([\\%_])", r"\\\1", name)
            self._by_name[name] = [
                r
                for r in self._rows("path = :n OR path LIKE :p", n=name, p=pattern)
                if PurePath(r.path).name == name
            ]
        return self._by_name[name]

    def _unique(self, matches: list[_Recording], what: str) -> _Recording:
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise AnnotationError(
                f"no stored recording has the {what} (see `soundscape recordings list`)"
            )
        shown = ", ".join(f"{m.id} {m.path}" for m in matches[:5])
        raise AnnotationError(
            f"the {what} is ambiguous: {len(matches)} stored recordings have it ({shown}); "
            "give the full path"
        )

    def find(self, path: str) -> _Recording:
        """By its full path, else by its file name when one stored recording has it."""
        text = path.strip()
        if text not in self._by_path:
            self._by_path[text] = self._rows("path = :p", p=text)
        same = self._by_path[text]
        if len(same) == 1:
            return same[0]
        if len(same) > 1:
            raise AnnotationError(
                f"{len(same)} stored recordings have the path {text!r} (ids "
                f"{', '.join(str(r.id) for r in same)}: the file changed between ingests); "
                "import this file with --recording ID"
            )
        name = PurePath(text.replace("\\", "/")).name
        return self._unique(self._named(name), f"path or file name {text!r}")

    def from_table_name(self, table: Path) -> _Recording:
        """The recording a table names by its own file name: ``<stem>.r<id>.selections.txt``
        (soundscape), ``<stem>.BirdNET.selection.table.txt`` (BirdNET-Analyzer),
        ``<stem>.Table.1.selections.txt`` (Raven), ``<stem>.txt`` (Audacity)."""
        stem = table.name
        for suffix in (
            ".birdnet.selection.table.txt",
            ".birdnet.selections.txt",
            ".selection.table.txt",
            ".selections.txt",
            ".txt",
            ".csv",
        ):
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        stem = re.sub(r"\.Table\.\d+$", "", stem)
        m = re.fullmatch(r"(.*)\.r(\d+)", stem)
        if m:
            rec = self.get(int(m.group(2)))
            wanted = m.group(1)
            if rec is None or wanted not in {
                PurePath(rec.path).stem,
                _slug(PurePath(rec.path).stem),
            }:
                raise AnnotationError(
                    f"the file name {table.name!r} names recording {m.group(2)} ({wanted}), "
                    "which is not stored here; give --recording ID or a Begin Path column"
                )
            return rec
        # Candidates whose path contains the stem (soundscape writes slugged stems, which may
        # not appear verbatim: then every recording is a candidate), then exact stem matches.
        like = "%" + re.sub(r"([\\%_])", r"\\\1", stem) + "%"
        candidates = self._rows("path LIKE :p", p=like) or (
            self._rows("true") if _slug(stem) == stem and "-" in stem else []
        )
        matches = [
            r for r in candidates if stem in {PurePath(r.path).stem, _slug(PurePath(r.path).stem)}
        ]
        try:
            return self._unique(matches, f"file name {stem!r} (from {table.name!r})")
        except AnnotationError as exc:
            raise AnnotationError(f"{exc}; or give --recording ID") from None


@dataclass
class _Row:
    line: int
    recording: _Recording
    start_s: float
    end_s: float
    label: str | None
    verdict: str | None
    author: str | None = None
    note: str | None = None
    low_hz: float | None = None
    high_hz: float | None = None
    window_id: int | None = None
    #: the id this annotation had where it was exported from (CSV ``id``, Raven
    #: ``Annotation ID``): the same annotation imported back is a duplicate
    annotation_id: int | None = None


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, message: str) -> None:
        self.items.append((line, message))


def _number(cell: str | None, what: str) -> float:
    text = (cell or "").strip()
    if not text:
        raise AnnotationError(f"{what} is missing")
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{what} {text!r} is not a finite number")
    return value


def _optional_number(cell: str | None, what: str) -> float | None:
    return _number(cell, what) if (cell or "").strip() else None


def _at(cells: list[str], i: int | None) -> str | None:
    return cells[i].strip() if i is not None and i < len(cells) else None


def _is_spectrogram(cells: list[str], view: int | None) -> bool:
    return (_at(cells, view) or "").lower().startswith("spectrogram")


def _unescape_note(cell: str | None) -> str | None:
    """A Raven note as ``_escape_note`` wrote it: ``\\t``, ``\\n``, ``\\r``, ``\\\\``."""
    if not cell or "\\" not in cell:
        return cell
    table = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}
    return re.sub(r"\\([tnr\\])", lambda m: table[m.group(1)], cell)


def _int_or_none(cell: str | None) -> int | None:
    text = (cell or "").strip()
    return int(text) if text.isdigit() else None


def detect_format(path: Path, text: str) -> str:
    """``raven``, ``audacity`` or ``csv`` from a file's first line (or ``.csv``)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    if "\t" in first and "begin time (s)" in first.lower():
        return "raven"
    header = [c.strip().lower() for c in first.split(",")]
    if {"path", "start_s", "end_s"} <= set(header) or path.suffix.lower() == ".csv":
        return "csv"
    cells = first.split("\t")
    if len(cells) >= 2:
        try:
            float(cells[0])
            float(cells[1])
            return "audacity"
        except ValueError:
            pass
    raise AnnotationError(
        f"{path}: cannot tell its format: expected a Raven selection table (tab-separated, with "
        "a 'Begin Time (s)' column), an Audacity label track (start<TAB>end<TAB>label lines) or "
        "a CSV with the header path,start_s,end_s,label"
    )


def _has_verdict_column(text: str) -> bool:
    header = next((line for line in text.splitlines() if line.strip()), "")
    return "verdict" in {c.strip().lower() for c in header.split("\t")}


def _parse_raven(
    text: str, table: Path, recs: _Recordings, fixed: _Recording | None, problems: _Problems
) -> tuple[list[_Row], int]:
    lines = text.splitlines()
    header_at = next(i for i, line in enumerate(lines) if line.strip())
    names = [c.strip() for c in lines[header_at].split("\t")]
    index = {n.lower(): i for i, n in enumerate(names)}

    def col(*candidates: str) -> int | None:
        return next((index[c] for c in candidates if c in index), None)

    c_begin, c_end = col("begin time (s)"), col("end time (s)")
    if c_begin is None or c_end is None:
        raise AnnotationError(f"{table}: a Raven table needs 'Begin Time (s)' and 'End Time (s)'")
    c_label = col("label", "annotation", "common name")
    c_verdict, c_author, c_note = col("verdict"), col("author"), col("note", "notes")
    c_path, c_offset = col("begin path"), col("file offset (s)")
    c_low, c_high = col("low freq (hz)"), col("high freq (hz)")
    c_sel, c_view, c_window = col("selection"), col("view"), col("window id")
    c_id = col("annotation id")

    # Raven writes one row per view (Spectrogram 1, Waveform 1) of the same selection: keep
    # one row per selection number (and Begin Path, for tables of several files), preferring
    # the spectrogram view, where the frequency band was drawn.
    chosen: dict[tuple[str, str], tuple[int, list[str]]] = {}
    kept: list[tuple[int, list[str]]] = []
    for i in range(header_at + 1, len(lines)):
        if not lines[i].strip():
            continue
        cells = lines[i].split("\t")
        sel = _at(cells, c_sel)
        if not sel:
            kept.append((i + 1, cells))
            continue
        key = (sel, _at(cells, c_path) or "")
        if key not in chosen or (
            _is_spectrogram(cells, c_view) > _is_spectrogram(chosen[key][1], c_view)
        ):
            chosen[key] = (i + 1, cells)
    kept = sorted(kept + list(chosen.values()), key=lambda item: item[0])

    table_rec: _Recording | AnnotationError | None = fixed
    rows: list[_Row] = []
    unreviewed = 0
    for line_no, cells in kept:

        def cell(c: int | None, cells: list[str] = cells) -> str | None:
            return _at(cells, c)

        verdict_cell = cell(c_verdict)
        if c_verdict is not None and not verdict_cell:
            unreviewed += 1
            continue
        try:
            begin = _number(cell(c_begin), "Begin Time (s)")
            end = _number(cell(c_end), "End Time (s)")
            offset = _optional_number(cell(c_offset), "File Offset (s)")
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
                _Row(
                    line_no,
                    rec,
                    begin,
                    end,
                    from_spreadsheet(cell(c_label)),
                    verdict_cell if c_verdict is not None else "yes",
                    author=from_spreadsheet(cell(c_author)),
                    note=_unescape_note(from_spreadsheet(cell(c_note))) or None,
                    low_hz=_optional_number(cell(c_low), "Low Freq (Hz)"),
                    high_hz=_optional_number(cell(c_high), "High Freq (Hz)"),
                    window_id=_int_or_none(cell(c_window)),
                    annotation_id=_int_or_none(cell(c_id)),
                )
            )
        except AnnotationError as exc:
            problems.add(line_no, str(exc))
    return rows, unreviewed


_AUDACITY_VERDICT = re.compile(r"^(.*?)\s*\[(yes|no|unsure)\]\s*$", re.IGNORECASE)


def _parse_audacity(
    text: str, table: Path, recs: _Recordings, fixed: _Recording | None, problems: _Problems
) -> list[_Row]:
    rec: _Recording | None = fixed
    if rec is None:
        try:
            rec = recs.from_table_name(table)
        except AnnotationError as exc:
            problems.add(1, str(exc))
            return []
    rows: list[_Row] = []
    for i, line in enumerate(text.splitlines()):
        line_no = i + 1
        if not line.strip():
            continue
        cells = line.split("\t")
        try:
            if line.startswith("\\") or line.startswith("\t"):  # frequencies of the label above
                if not rows:
                    raise AnnotationError("a frequency line before any label")
                rows[-1].low_hz = _number(cells[1] if len(cells) > 1 else "", "low frequency")
                rows[-1].high_hz = _number(cells[2] if len(cells) > 2 else "", "high frequency")
                continue
            if len(cells) < 2:
                raise AnnotationError("expected start<TAB>end<TAB>label")
            start = _number(cells[0], "start")
            end = _number(cells[1], "end")
            text_label = "\t".join(cells[2:]).strip()
            verdict = "yes"
            m = _AUDACITY_VERDICT.match(text_label)
            if m:
                text_label, verdict = m.group(1), m.group(2).lower()
            rows.append(_Row(line_no, rec, start, end, text_label, verdict))
        except AnnotationError as exc:
            problems.add(line_no, str(exc))
    return rows


def _parse_csv(
    text: str, table: Path, recs: _Recordings, fixed: _Recording | None, problems: _Problems
) -> tuple[list[_Row], int]:
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
    rows: list[_Row] = []
    unreviewed = 0
    for cells in reader:
        line_no = reader.line_num
        if not any(c.strip() for c in cells):
            continue

        def cell(name: str, cells: list[str] = cells) -> str | None:
            return _at(cells, index.get(name))

        verdict = cell("verdict") if "verdict" in index else "yes"
        if not verdict:
            unreviewed += 1
            continue
        try:
            rec = fixed if fixed is not None else recs.find(from_spreadsheet(cell("path")) or "")
            rows.append(
                _Row(
                    line_no,
                    rec,
                    _number(cell("start_s"), "start_s"),
                    _number(cell("end_s"), "end_s"),
                    from_spreadsheet(cell("label")),
                    verdict,
                    author=from_spreadsheet(cell("author")),
                    note=from_spreadsheet(cell("note")) or None,
                    low_hz=_optional_number(cell("low_hz"), "low_hz"),
                    high_hz=_optional_number(cell("high_hz"), "high_hz"),
                    window_id=_int_or_none(cell("segment_id")),
                    annotation_id=_int_or_none(cell("id")),
                )
            )
        except AnnotationError as exc:
            problems.add(line_no, str(exc))
    return rows, unreviewed


def _key(recording_id: int, start: float, end: float, label: str, verdict: str) -> tuple:
    return (
        recording_id,
        round(start, _KEY_DECIMALS),
        round(end, _KEY_DECIMALS),
        label,
        verdict,
    )


def import_file(
    conn: Connection,
    path: str | Path,
    *,
    author: str | None = None,
    source: str | None = "import",
    default_label: str | None = None,
    label: str | None = None,
    recording_id: int | None = None,
    fmt: str | None = None,
    encoding: str | None = None,
) -> ImportResult:
    """Import one file of annotations (Raven selection table, Audacity label track or CSV).

    Every row is checked before anything is written; if any row is bad (unknown or ambiguous
    recording, a time that is not a number, negative, an end not after the start or beyond the
    recording, an unknown verdict, an empty label) nothing is written and
    :class:`AnnotationImportError` lists the bad rows by line number. Run it inside one
    transaction per file. Rows already stored (same recording, start, end, label, verdict and
    source) and rows repeated in the file are skipped and counted as ``duplicates``, so
    importing a file twice adds nothing. In a table with a ``Verdict`` column, rows whose
    verdict is empty (an unreviewed review batch row) are skipped and counted as ``unreviewed``.

    Which recording: a row's path (Raven ``Begin Path``, CSV ``path``: the full stored path,
    else a file name that only one stored recording has), else ``recording_id``, else the
    table's own file name (``<stem>.r<id>.selections.txt``, ``<stem>.BirdNET.selection.table.txt``,
    ``<audio stem>.txt``). Labels: a ``Label``/``Annotation``/``Common Name`` column (Raven),
    the label text (Audacity; a trailing ``[no]``/``[unsure]`` is the verdict), ``label``
    (CSV); ``default_label`` fills empty ones; ``label`` replaces every row's label (e.g. for
    ``search --raven`` tables, whose Label is the query). ``author`` is the author of files
    without an author column; in a file with one, an empty cell stays an unknown author.
    Full-band selections (0 Hz to the recording's Nyquist frequency) store no band.
    ``source=None`` picks it from the file: ``review`` for a Raven table with a ``Verdict``
    column (a review batch, see soundscape.review), else ``import``.

    Text is UTF-8 unless ``encoding`` says otherwise; a file that is not UTF-8 is read as
    Windows-1252 (what Raven writes on Windows) with a warning in the result, and refused if it
    is not that either. A row that carries the id of a stored annotation with the same
    recording, span, label and verdict (soundscape's own CSV and Raven exports do) is that
    annotation: a duplicate, whatever its source; so is, for an Audacity track (which carries
    no ids), a row whose recording, span, label and verdict are stored by any source.
    """
    path = Path(path)
    if source is not None:
        _check_source(source)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    warnings: list[str] = []
    if encoding is not None:
        try:
            text = raw.decode(encoding)
        except (LookupError, UnicodeDecodeError) as exc:
            raise AnnotationError(f"{path}: cannot read it as {encoding}: {exc}") from None
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:  # Raven on Windows writes the system code page
            try:
                text = raw.decode("cp1252")
            except UnicodeDecodeError:
                raise AnnotationError(
                    f"{path}: neither UTF-8 nor Windows-1252 (byte {raw[exc.start]:#04x} at "
                    f"offset {exc.start}); save it as UTF-8, or name its encoding "
                    "(--encoding latin-1)"
                ) from None
            warnings.append(
                f"{path}: not UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start}); read as "
                "Windows-1252. If labels look wrong, save it as UTF-8 or name its encoding "
                "(--encoding)"
            )
    if not text.strip():
        raise AnnotationError(f"{path}: the file is empty")
    fmt = fmt or detect_format(path, text)
    if fmt not in FORMATS:
        raise AnnotationError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    recs = _Recordings(conn)
    fixed = None
    if recording_id is not None:
        fixed = recs.get(int(recording_id))
        if fixed is None:
            raise AnnotationError(
                f"no recording with id {recording_id} (see `soundscape recordings list`)"
            )
    if source is None:
        source = "review" if fmt == "raven" and _has_verdict_column(text) else "import"
    problems = _Problems()
    unreviewed = 0
    if fmt == "raven":
        rows, unreviewed = _parse_raven(text, path, recs, fixed, problems)
    elif fmt == "audacity":
        rows = _parse_audacity(text, path, recs, fixed, problems)
    else:
        rows, unreviewed = _parse_csv(text, path, recs, fixed, problems)

    checked: list[dict[str, Any]] = []
    for row in rows:
        try:
            checked_label = _check_label(label if label is not None else row.label or default_label)
            verdict = normalize_verdict(row.verdict)
            rec = row.recording
            low, high = row.low_hz, row.high_hz
            nyquist = rec.sample_rate / 2
            if (
                low is not None
                and high is not None
                and abs(low) <= NYQUIST_TOLERANCE_HZ
                and abs(high - nyquist) <= NYQUIST_TOLERANCE_HZ
            ):
                low = high = None  # the full band (0 Hz to Nyquist, as exported): no band
            start, end = row.start_s, row.end_s
            window = None
            if row.window_id is not None:
                seg = conn.execute(
                    sa.text("SELECT end_s FROM segments WHERE recording_id = :r AND id = :i"),
                    {"r": rec.id, "i": row.window_id},
                ).fetchone()
                if seg is not None:
                    window = row.window_id
                    if end > rec.duration_s and abs(end - float(seg.end_s)) < 1e-3:
                        end = rec.duration_s  # the zero-padded last window of the file
            end = _check_span(rec, start, end, low, high)
            if high is not None:
                high = min(high, nyquist)
            row_author = _check_author(row.author if row.author is not None else author)
            note = _check_note(row.note)
        except AnnotationError as exc:
            problems.add(row.line, str(exc))
            continue
        checked.append(
            {
                "recording_id": rec.id,
                "start_s": start,
                "end_s": end,
                "low_hz": low,
                "high_hz": high,
                "label": checked_label,
                "verdict": verdict,
                "author": row_author or None,
                "source": source,
                "note": note,
                "segment_id": window,
                "_was": row.annotation_id,
            }
        )
    if problems.items:
        raise AnnotationImportError(path, sorted(problems.items), limit=_MAX_PROBLEMS_SHOWN)

    result = ImportResult(path, fmt, source, unreviewed=unreviewed, warnings=warnings)
    rec_ids = sorted({c["recording_id"] for c in checked})
    # rows exported from this database: the annotation of that id, if it is still the same
    was = {
        int(r.id): _key(r.recording_id, r.start_s, r.end_s, r.label, r.verdict)
        for r in conn.execute(
            sa.text(
                "SELECT id, recording_id, start_s, end_s, label, verdict FROM annotations "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": sorted({c["_was"] for c in checked if c["_was"] is not None})},
        )
    }
    stored = {
        _key(r.recording_id, r.start_s, r.end_s, r.label, r.verdict)
        for r in conn.execute(
            sa.text(
                "SELECT recording_id, start_s, end_s, label, verdict FROM annotations "
                "WHERE (source = :s OR :any) AND recording_id = ANY(:ids)"
            ),
            # an Audacity track carries no ids: the same span, label and verdict stored by any
            # source is that annotation (its export, imported back)
            {"s": source, "any": fmt == "audacity", "ids": rec_ids},
        )
    }
    fresh = []
    for c in checked:
        key = _key(c["recording_id"], c["start_s"], c["end_s"], c["label"], c["verdict"])
        if key in stored or was.get(c.pop("_was")) == key:
            result.duplicates += 1
            continue
        stored.add(key)
        fresh.append(c)
    if fresh:  # one statement for the whole file
        columns = {k: [c[k] for c in fresh] for k in fresh[0]}
        result.ids = sorted(int(i) for i in conn.execute(_INSERT_MANY, columns).scalars())
    result.imported = len(result.ids)
    return result


# ------------------------------------------------------------------------------- export
def _num(value: float | None) -> str:
    """A number as short text that reads back to the same value (to a nanosecond / nano-Hz)."""
    if value is None:
        return ""
    text = f"{float(value):.9f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _clean(text: str | None) -> str:
    return " ".join((text or "").replace("\t", " ").splitlines())


def _escape_note(text: str | None) -> str:
    """A note in one Raven cell: tabs, line breaks and backslashes as ``\\t``, ``\\n``,
    ``\\r``, ``\\\\`` (``_unescape_note`` reads them back)."""
    table = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}
    return re.sub(r"[\t\n\r\\]", lambda m: table[m.group(0)], text or "")


RAVEN_COLUMNS = [
    "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
    "High Freq (Hz)", "Begin Path", "File Offset (s)", "Label", "Verdict", "Author", "Note",
    "Source", "Local Time", "Annotation ID", "Window ID",
]  # fmt: skip

CSV_COLUMNS = [
    "path", "start_s", "end_s", "label", "verdict", "author", "note", "low_hz", "high_hz",
    "source", "sensor", "site", "quadrant", "local", "recording_id", "segment_id", "id",
]  # fmt: skip


def export(
    conn: Connection,
    fmt: str,
    folder: str | Path,
    filters: Filters | None = None,
    **selection: Any,
) -> ExportResult:
    """Write the annotations that pass ``filters`` (and :func:`list_annotations`' keyword
    selection: label, verdict, recording_id, author, source, ids) into ``folder``:

    - ``raven``: one selection table per recording, ``<stem>.r<id>.selections.txt`` with
      ``Begin Path``, ``Label``, ``Verdict``, ``Author``, ``Note`` (a missing band is written as
      the full band, 0 Hz to the recording's Nyquist frequency, which reads back as no band);
    - ``audacity``: one label track per recording, ``<stem>.txt`` (``<stem>.r<id>.txt`` when two
      exported recordings share a stem): ``start<TAB>end<TAB>label`` with ``[no]``/``[unsure]``
      after the label for those verdicts and a ``\\<TAB>low<TAB>high`` line for a band. It
      carries no author or note;
    - ``csv``: one ``annotations.csv`` with a header (path, start_s, end_s, label, verdict,
      author, note, low_hz, high_hz, then place and ids, which import ignores).

    Importing what was exported gives back the same annotations (what the format carries).
    """
    if fmt not in FORMATS:
        raise AnnotationError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    folder = Path(folder)
    annotations = list_annotations(conn, filters, **selection)
    out = ExportResult(annotations=len(annotations))
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        target = folder / "annotations.csv"
        with target.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(CSV_COLUMNS)
            for a in annotations:
                row = a.as_row()
                row.update(
                    start_s=_num(a.start_s),
                    end_s=_num(a.end_s),
                    low_hz=_num(a.low_hz),
                    high_hz=_num(a.high_hz),
                )
                w.writerow(
                    [
                        "" if row.get(c) is None else spreadsheet_safe(row.get(c))
                        for c in CSV_COLUMNS
                    ]
                )
        out.written.append(target)
        return out

    by_rec: dict[int, list[Annotation]] = {}
    for a in annotations:
        by_rec.setdefault(a.recording_id, []).append(a)
    rates: dict[int, int] = dict(
        conn.execute(
            sa.text("SELECT id, sample_rate FROM recordings WHERE id = ANY(:ids)"),
            {"ids": list(by_rec)},
        ).fetchall()
    )
    # Audacity files are named after the audio; a stem that several stored recordings share
    # gets the recording id too (``<stem>.r<id>.txt``), which import reads back.
    stems: dict[str, int] = {}
    for (stored,) in conn.execute(sa.text("SELECT path FROM recordings")):
        stem = _slug(PurePath(stored).stem)
        stems[stem] = stems.get(stem, 0) + 1
    for rec_id, group in by_rec.items():
        group.sort(key=lambda a: (a.start_s, a.end_s, a.id))
        stem = _slug(PurePath(group[0].path).stem)
        if fmt == "raven":
            nyquist = rates[rec_id] / 2
            lines = ["\t".join(RAVEN_COLUMNS)]
            for n, a in enumerate(group, start=1):
                full = a.low_hz is None and a.high_hz is None
                cells = [
                    n, "Spectrogram 1", 1, _num(a.start_s), _num(a.end_s),
                    "0" if full else _num(a.low_hz), _num(nyquist) if full else _num(a.high_hz),
                    spreadsheet_safe(a.path), _num(a.start_s), spreadsheet_safe(_clean(a.label)), a.verdict,
                    spreadsheet_safe(_clean(a.author)), spreadsheet_safe(_escape_note(a.note)), a.source,
                    a.local.isoformat(sep=" ", timespec="seconds") if a.local else "",
                    a.id, "" if a.segment_id is None else a.segment_id,
                ]  # fmt: skip
                lines.append("\t".join(str(c) for c in cells))
            target = folder / f"{stem}.r{rec_id}.selections.txt"
        else:
            lines = []
            for a in group:
                label = _clean(a.label) + ("" if a.verdict == "yes" else f" [{a.verdict}]")
                lines.append(f"{_num(a.start_s)}\t{_num(a.end_s)}\t{label}")
                if a.low_hz is not None or a.high_hz is not None:
                    lines.append(f"\\\t{_num(a.low_hz or 0.0)}\t{_num(a.high_hz)}")
            name = stem if stems[stem] == 1 else f"{stem}.r{rec_id}"
            target = folder / f"{name}.txt"
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out.written.append(target)
    return out
