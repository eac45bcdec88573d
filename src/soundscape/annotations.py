"""Annotations, the people's ground truth: the one place that reads and writes them.

An annotation is a labelled span of a recording (start/end seconds, optionally a frequency
band) with a verdict (``yes`` the sound is there, ``no`` it is not, ``unsure``), who made it
(author) and how (source: ``cli``, ``import``, ``review``, ``web``). Labels are free text,
independent of any model's classes. A window is labelled by overlap: window [start, end) of a
recording carries every annotation [start, end) of the same recording that it overlaps
(:func:`windows_labelled`, what classifiers train on).

Files are :mod:`soundscape.formats` (``formats.tables.import_file`` and ``export``: Raven
selection tables, Audacity label tracks, CSV); they read and write the text, this module checks
and stores what they read (:func:`check_imported`, :func:`store_imported`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.errors import AnnotationError
from soundscape.queries import Filters, check_filter_names
from soundscape.spaces import get_space, list_spaces

VERDICTS = ("yes", "no", "unsure")
SOURCES = ("cli", "import", "review", "web", "hoplite")

#: Short forms accepted for verdicts in files and on the command line.
VERDICT_ALIASES = {"y": "yes", "n": "no", "?": "unsure", "u": "unsure"}

#: How far (s) an end may pass the recording's duration and still be accepted (then clipped
#: to the duration): files round times (Raven to 3 decimals), durations are not round.
END_TOLERANCE_S = 0.01

#: Two annotations are "the same" for re-import when recording, label, verdict and source are
#: equal and start and end agree to this many decimals (a microsecond).
_KEY_DECIMALS = 6

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


@dataclass(frozen=True)
class Recording:
    """A stored recording as annotations are checked against it."""

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


def _check_window(conn: Connection, rec: Recording, segment_id: int | None) -> int | None:
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
    rec: Recording,
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


def _get_recording(conn: Connection, recording_id: int) -> Recording:
    row = conn.execute(
        sa.text("SELECT id, path, duration_s, sample_rate FROM recordings WHERE id = :i"),
        {"i": int(recording_id)},
    ).fetchone()
    if row is None:
        raise AnnotationError(
            f"no recording with id {recording_id} (see `soundscape recordings list`)"
        )
    return Recording(int(row.id), row.path, float(row.duration_s), int(row.sample_rate))


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
    start_s: float | None = None,
    end_s: float | None = None,
) -> int:
    """A reviewer's verdict on a hit from the web page: checked like ``annotate_hit`` with
    ``conn`` (which may read), inserted through ``writer``, the reviewer's own connection, which
    may only insert annotations (soundscape.roles.create_reviewer). The database sets author
    and source (``web``) of a reviewer's row and replaces that reviewer's earlier verdict on the
    same window and label (migration 0014). Returns the annotation id.

    ``start_s``/``end_s``: the span judged, when it is more than the window (an event of
    several windows, ``results.merge_events``); it must hold the window ``segment_id`` (the
    event's best window). Without them the window's own span is stored."""
    row = conn.execute(
        sa.text("SELECT recording_id, start_s, end_s FROM segments WHERE id = :i"),
        {"i": int(segment_id)},
    ).fetchone()
    if row is None:
        raise AnnotationError(f"no window with id {segment_id}")
    rec = _get_recording(conn, row.recording_id)
    label = _check_label(label)
    note = _check_note(note)
    start = float(row.start_s) if start_s is None else float(start_s)
    stop = float(row.end_s) if end_s is None else float(end_s)
    if start_s is not None or end_s is not None:
        _check_holds_window(start, stop, float(row.start_s), float(row.end_s), segment_id)
    end = _check_span(rec, start, min(stop, rec.duration_s), None, None)
    params = {
        "recording_id": rec.id, "start_s": start, "end_s": end, "low_hz": None,
        "high_hz": None, "label": label, "verdict": normalize_verdict(verdict),
        "author": author, "source": "web", "note": note or None, "segment_id": int(segment_id),
    }  # fmt: skip
    return int(writer.execute(_INSERT, params).scalar_one())


#: How far (s) a judged span's ends may miss its window's (times pass through text and floats).
SPAN_TOLERANCE_S = 1e-3


def _check_holds_window(
    start: float, end: float, w_start: float, w_end: float, segment_id: int
) -> None:
    """An event's span holds its best window (``merge_events``); another span is not what the
    card showed, so it is refused."""
    for what, value in (("start", start), ("end", end)):
        if not math.isfinite(value):
            raise AnnotationError(f"{what} {value} is not a finite number")
    if start > w_start + SPAN_TOLERANCE_S or end < w_end - SPAN_TOLERANCE_S:
        raise AnnotationError(
            f"the span {start:g}-{end:g} s does not hold window {segment_id} "
            f"({w_start:g}-{w_end:g} s); judge the event the window belongs to (reload the page)"
        )


def retract_verdict(writer: Connection, annotation_id: int) -> bool:
    """Take back one of the reviewer's own web verdicts (the review queue's undo) through the
    reviewer's connection ``writer``: ``public.retract_verdict`` (migration 0030) deletes the
    annotation only if it is that reviewer's own (author = the login role, source ``web``).
    Returns whether it was deleted."""
    return bool(
        writer.execute(
            sa.text("SELECT public.retract_verdict(:i)"), {"i": int(annotation_id)}
        ).scalar()
    )


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


# ------------------------------------------------------------------------------- from files
def check_imported(
    conn: Connection,
    rec: Recording,
    start_s: float,
    end_s: float,
    label: str | None,
    verdict: str | None,
    *,
    source: str,
    author: str | None = None,
    note: str | None = None,
    low_hz: float | None = None,
    high_hz: float | None = None,
    window_id: int | None = None,
    exported_id: int | None = None,
) -> dict[str, Any]:
    """One annotation read from a file (soundscape.formats), checked like
    :func:`add_annotation`, as the values :func:`store_imported` stores; AnnotationError if it
    is bad. A full-band selection (0 Hz to the recording's Nyquist frequency, as exported)
    stores no band; a window id that is not a window of the recording is dropped; an end at
    the end of the recording's zero-padded last window is clipped to the recording.
    ``exported_id``: the id the annotation had where it was exported from."""
    checked_label = _check_label(label)
    verdict = normalize_verdict(verdict)
    low, high = low_hz, high_hz
    nyquist = rec.sample_rate / 2
    if (
        low is not None
        and high is not None
        and abs(low) <= NYQUIST_TOLERANCE_HZ
        and abs(high - nyquist) <= NYQUIST_TOLERANCE_HZ
    ):
        low = high = None  # the full band (0 Hz to Nyquist, as exported): no band
    window = None
    if window_id is not None:
        seg = conn.execute(
            sa.text("SELECT end_s FROM segments WHERE recording_id = :r AND id = :i"),
            {"r": rec.id, "i": window_id},
        ).fetchone()
        if seg is not None:
            window = window_id
            if end_s > rec.duration_s and abs(end_s - float(seg.end_s)) < 1e-3:
                end_s = rec.duration_s  # the zero-padded last window of the file
    end = _check_span(rec, start_s, end_s, low, high)
    if high is not None:
        high = min(high, nyquist)
    row_author = _check_author(author)
    note = _check_note(note)
    return {
        "recording_id": rec.id,
        "start_s": start_s,
        "end_s": end,
        "low_hz": low,
        "high_hz": high,
        "label": checked_label,
        "verdict": verdict,
        "author": row_author or None,
        "source": source,
        "note": note,
        "segment_id": window,
        "_was": exported_id,
    }


def _key(recording_id: int, start: float, end: float, label: str, verdict: str) -> tuple:
    return (
        recording_id,
        round(start, _KEY_DECIMALS),
        round(end, _KEY_DECIMALS),
        label,
        verdict,
    )


def store_imported(
    conn: Connection, checked: list[dict[str, Any]], source: str, *, any_source: bool = False
) -> tuple[list[int], int]:
    """Store the annotations :func:`check_imported` returned in one statement, but for those
    already stored (same recording, start, end, label, verdict and ``source``; any source with
    ``any_source``), repeated in ``checked``, or carrying the id of a stored annotation with
    the same recording, span, label and verdict (exported from here and imported back).
    Returns the new ids (sorted) and how many were skipped as duplicates."""
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
            {"s": source, "any": any_source, "ids": rec_ids},
        )
    }
    fresh = []
    duplicates = 0
    for c in checked:
        c = dict(c)
        key = _key(c["recording_id"], c["start_s"], c["end_s"], c["label"], c["verdict"])
        if key in stored or was.get(c.pop("_was")) == key:
            duplicates += 1
            continue
        stored.add(key)
        fresh.append(c)
    if not fresh:
        return [], duplicates
    columns = {k: [c[k] for c in fresh] for k in fresh[0]}  # one statement for the whole file
    return sorted(int(i) for i in conn.execute(_INSERT_MANY, columns).scalars()), duplicates
