"""Search: turn a query (text, audio, a stored window, a concept) into ranked windows.

The ranking itself is one SQL statement inside ``ranger.search_vector`` /
``ranger.search_labels`` (see ``sql/search_0003.sql``), so the CLI, stored concepts and BI
tools share one implementation. This module resolves what to search (which space, which vector
or label set), parses filters, merges hits into events and exports clips.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.audio import decode_span, probe, window_array
from soundscape.db import register_vector
from soundscape.embedders import get_model_class, load_model
from soundscape.embedders.base import l2_normalize
from soundscape.embedders.birdnet import NON_SPECIES_CLASSES
from soundscape.errors import SoundscapeError
from soundscape.spaces import Space, get_space, list_spaces

STRATEGIES = ("auto", "hnsw", "exact")
#: SQLSTATE of the ranger functions' input checks (a bad k, ef_search or query vector)
INVALID_PARAMETER_VALUE = "22023"

#: Preference when no space is named: general text-audio models, then bioacoustics, then the
#: baseline; spaces of other (plugin) models come last, in creation order.
MODEL_PREFERENCE = ("clap", "birdnet", "spectral")

#: Field words that map to BirdNET's non-species classes (or to all birds).
FIELD_WORDS: dict[str, tuple[str, ...]] = {
    "bird": ("*birds*",),
    "birds": ("*birds*",),
    "birdsong": ("*birds*",),
    "bird song": ("*birds*",),
    "chainsaw": ("Power tools",),
    "chainsaws": ("Power tools",),
    "saw": ("Power tools",),
    "power tools": ("Power tools",),
    "gunshot": ("Gun",),
    "gunshots": ("Gun",),
    "gun": ("Gun",),
    "shot": ("Gun",),
    "vehicle": ("Engine",),
    "vehicles": ("Engine",),
    "car": ("Engine",),
    "cars": ("Engine",),
    "truck": ("Engine",),
    "engine": ("Engine",),
    "voice": ("Human vocal",),
    "voices": ("Human vocal",),
    "people": ("Human vocal",),
    "human": ("Human vocal", "Human non-vocal", "Human whistle"),
    "speech": ("Human vocal",),
    "whistle": ("Human whistle",),
    "siren": ("Siren",),
    "sirens": ("Siren",),
    "dog": ("Dog",),
    "dogs": ("Dog",),
    "barking": ("Dog",),
    "bark": ("Dog",),
    "firework": ("Fireworks",),
    "fireworks": ("Fireworks",),
    "noise": ("Noise",),
}


# ------------------------------------------------------------------------------- filters
@dataclass
class Filters:
    """Where and when. Times of day and dates are local to each sensor."""

    sensors: list[str] | None = None
    sites: list[str] | None = None
    quadrants: list[str] | None = None
    time_from: time | None = None
    time_to: time | None = None
    date_from: date | None = None
    date_to: date | None = None
    at_from: datetime | None = None
    at_to: datetime | None = None
    min_score: float | None = None

    def params(self) -> dict[str, Any]:
        return {
            "sensors": self.sensors or None,
            "sites": self.sites or None,
            "quadrants": self.quadrants or None,
            "time_from": self.time_from,
            "time_to": self.time_to,
            "date_from": self.date_from,
            "date_to": self.date_to,
            "at_from": self.at_from,
            "at_to": self.at_to,
            "min_score": self.min_score,
        }


_CLOCK = re.compile(r"^\s*(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?\s*$")


def parse_clock(text: str) -> time:
    m = _CLOCK.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a time of day; use HH:MM (24-hour)")
    h, mi, s = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    if h == 24 and mi == 0 and s == 0:
        return time(23, 59, 59, 999999)
    if not (0 <= h < 24 and 0 <= mi < 60 and 0 <= s < 60):
        raise ValueError(f"{text!r} is not a valid time of day")
    return time(h, mi, s)


def parse_time_range(text: str) -> tuple[time, time]:
    """``"02:00-04:00"`` -> (02:00, 04:00); ``"22:00-04:00"`` crosses midnight.

    The range is half-open: a window is in it when its local start time t satisfies
    from <= t < to (or, across midnight, t >= from or t < to).
    """
    parts = text.split("-")
    if len(parts) != 2:
        raise ValueError(f"{text!r} is not a time range; use HH:MM-HH:MM, e.g. 22:00-04:00")
    start, end = parse_clock(parts[0]), parse_clock(parts[1])
    if start == end:
        raise ValueError(f"{text!r} is an empty time range")
    return start, end


def parse_when(text: str, *, today: date | None = None) -> date | datetime:
    """A ``--from``/``--to`` value: a local date (``2024-05-01``, ``today``, ``yesterday``,
    ``7d`` = seven days ago) or an ISO timestamp with an offset (``2024-05-01T03:00:00+02:00``)."""
    today = today or date.today()
    t = text.strip().lower()
    if t == "today":
        return today
    if t == "yesterday":
        return today - timedelta(days=1)
    m = re.fullmatch(r"(\d+)\s*(d(?:ays?)?|w(?:eeks?)?)", t)
    if m:
        days = int(m.group(1)) * (7 if m.group(2).startswith("w") else 1)
        if days > (today - date.min).days:
            raise ValueError(f"{text!r} reaches back before year 1; give fewer days or a date")
        return today - timedelta(days=days)
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        pass
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is neither a date (YYYY-MM-DD, today, yesterday, 7d) nor an ISO "
            "timestamp with an offset (2024-05-01T03:00:00+02:00)"
        ) from exc
    if ts.tzinfo is None:
        raise ValueError(
            f"{text!r} has no UTC offset; add one (e.g. +02:00 or Z), or give a local date"
        )
    return ts


def date_bounds(
    start: date | datetime | None, end: date | datetime | None
) -> tuple[date | None, date | None, datetime | None, datetime | None]:
    """Split --from/--to into (local date from, local date to inclusive, instant from, instant to)."""
    d_from = start if isinstance(start, date) and not isinstance(start, datetime) else None
    d_to = end if isinstance(end, date) and not isinstance(end, datetime) else None
    a_from = start if isinstance(start, datetime) else None
    a_to = end if isinstance(end, datetime) else None
    return d_from, d_to, a_from, a_to


def check_filter_names(conn: Connection, filters: Filters) -> None:
    """Unknown sensor/site/quadrant names are errors (with the known ones), not empty results."""
    for column, values, what in (
        ("name", filters.sensors, "sensor"),
        ("site", filters.sites, "site"),
        ("quadrant", filters.quadrants, "quadrant"),
    ):
        if not values:
            continue
        known = set(
            conn.execute(
                sa.text(f"SELECT DISTINCT {column} FROM sensors WHERE {column} IS NOT NULL")
            ).scalars()
        )
        missing = [v for v in values if v not in known]
        if missing:
            raise SoundscapeError(
                f"unknown {what} {', '.join(map(repr, missing))}; known: "
                f"{', '.join(sorted(known)) or 'none'}"
            )


# ------------------------------------------------------------------------------- queries
@dataclass
class Query:
    """What to rank by, in which space."""

    space: Space
    description: str
    vector: np.ndarray | None = None
    label_ids: list[int] | None = None
    exclude: int | None = None
    kind: str = "text"
    #: a score floor implied by the query (a concept's threshold)
    min_score: float | None = None
    #: kind "classifier": (name, version, label) of a trained classifier (soundscape.classifiers)
    classifier: tuple[str, int, str] | None = None

    @property
    def is_labels(self) -> bool:
        return self.label_ids is not None


def _spaces_with_data(conn: Connection) -> list[Space]:
    filled = set(conn.execute(sa.text("SELECT DISTINCT space_id FROM recording_spaces")).scalars())
    spaces = [s for s in list_spaces(conn) if s.id in filled]

    def rank(s: Space) -> tuple[int, int]:
        pref = MODEL_PREFERENCE.index(s.model) if s.model in MODEL_PREFERENCE else 99
        return pref, s.id

    return sorted(spaces, key=rank)


def _supports_text(space: Space) -> bool:
    try:
        cls = get_model_class(space.model)
    except SoundscapeError:
        return False
    return bool(cls.supports_text) and cls.unavailable_reason() is None


def _has_labels(conn: Connection, space: Space) -> bool:
    return bool(
        conn.execute(
            sa.text("SELECT EXISTS (SELECT 1 FROM space_labels WHERE space_id = :s)"),
            {"s": space.id},
        ).scalar()
    )


def pick_space(conn: Connection, space_name: str | None, *, text: bool) -> Space:
    """The named space, or the best one that can answer this kind of query."""
    if space_name:
        return get_space(conn, space_name)
    spaces = _spaces_with_data(conn)
    if not spaces:
        raise SoundscapeError("nothing to search yet: ingest some audio first (soundscape ingest)")
    if not text:
        return spaces[0]
    for s in spaces:
        if _supports_text(s):
            return s
    for s in spaces:
        if _has_labels(conn, s):
            return s
    raise SoundscapeError(
        "no space here can answer a text query (no text encoder, no class labels); "
        "search with --audio FILE or --like ID, or ingest with --model clap or birdnet"
    )


def text_query(conn: Connection, text: str, space: Space) -> Query:
    if _supports_text(space):
        model = load_model(space.model)
        vec = l2_normalize(model.embed_text([text]))[0]
        return Query(space, f"text {text!r}", vector=vec, kind="text")
    if _has_labels(conn, space):
        ids, names = match_labels(conn, space, text)
        if len(names) > 20:  # a field word such as "birdsong": every bird class
            shown = f"{text!r} ({len(names)} classes)"
        else:
            shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        return Query(space, f"labels {shown}", label_ids=ids, kind="labels")
    raise SoundscapeError(
        f"space {space.name!r} has no text encoder and no class labels; "
        "use --audio FILE or --like ID"
    )


def _labels(conn: Connection, space: Space) -> list[tuple[int, str, str | None, str | None]]:
    rows = conn.execute(
        sa.text(
            "SELECT label_id, name, scientific, common FROM space_labels "
            "WHERE space_id = :s ORDER BY label_id"
        ),
        {"s": space.id},
    )
    return [tuple(r) for r in rows]


def match_labels(conn: Connection, space: Space, text: str) -> tuple[list[int], list[str]]:
    """Label ids (and display names) for a text: field words, exact names, then word-prefix
    matches on common and scientific names (case-insensitive)."""
    labels = _labels(conn, space)
    q = " ".join(text.lower().split())
    if not q:
        raise SoundscapeError("empty search text")

    def shown(common: str | None, name: str) -> str:
        return common or name

    targets = FIELD_WORDS.get(q)
    if targets:
        if "*birds*" in targets:
            hits = [lab for lab in labels if shown(lab[3], lab[1]) not in NON_SPECIES_CLASSES]
        else:
            hits = [lab for lab in labels if shown(lab[3], lab[1]) in targets]
        if hits:
            return [h[0] for h in hits], [shown(h[3], h[1]) for h in hits]

    exact = [
        lab
        for lab in labels
        if q in {(lab[3] or "").lower(), (lab[2] or "").lower(), lab[1].lower()}
    ]
    if exact:
        return [h[0] for h in exact], [shown(h[3], h[1]) for h in exact]

    tokens = re.findall(r"[\w']+", q)

    def words(s: str | None) -> list[str]:
        return re.findall(r"[\w']+", (s or "").lower())

    def matches(lab: tuple) -> bool:
        for field_ in (lab[3], lab[2]):
            w = words(field_)
            if w and all(any(x.startswith(t) for x in w) for t in tokens):
                return True
        return False

    hits = [lab for lab in labels if matches(lab)]
    if hits:
        return [h[0] for h in hits], [shown(h[3], h[1]) for h in hits]

    # Closest labels (case-insensitive), then field words, as suggestions.
    by_lower = {shown(lab[3], lab[1]).lower(): shown(lab[3], lab[1]) for lab in labels}
    close = [by_lower[c] for c in difflib.get_close_matches(q, list(by_lower), n=5, cutoff=0.5)]
    close += [
        w
        for w in difflib.get_close_matches(q, list(FIELD_WORDS), n=2, cutoff=0.7)
        if w not in {c.lower() for c in close}
    ]
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    raise SoundscapeError(
        f"no {space.name} label matches {text!r}{hint} "
        f"(labels: `soundscape labels top`, field words: {', '.join(sorted(FIELD_WORDS)[:8])}, ...)"
    )


def audio_query(
    conn: Connection,
    path: Path,
    space: Space,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Query:
    """Embed an audio file (or a span of it) with the space's model.

    The span is windowed like ingest; the windows' unit vectors are averaged into one query
    vector (then re-normalised). Averaging finds places that sound like the example as a
    whole; for a long example, pick the part you mean with --start/--end.
    """
    info = probe(path)
    start = float(start_s or 0.0)
    end = float(end_s) if end_s is not None else info.duration_s
    if start < 0 or end <= start:
        raise SoundscapeError(f"--start/--end must satisfy 0 <= start < end (got {start}, {end})")
    if start >= info.duration_s:
        raise SoundscapeError(
            f"--start {start:g} s is past the end of {path} ({info.duration_s:.1f} s)"
        )
    samples = decode_span(path, space.sample_rate, start, min(end, info.duration_s))
    batch = window_array(samples, space.sample_rate, space.window_s, space.hop_s)
    model = load_model(space.model, **space.params)
    vectors = []
    for i in range(0, len(batch.samples), model.batch_size):
        vectors.append(model.embed_audio(batch.samples[i : i + model.batch_size]))
    vec = l2_normalize(np.concatenate(vectors).mean(axis=0, keepdims=True))[0]
    span = f" {start:g}-{min(end, info.duration_s):g} s" if (start_s or end_s) else ""
    return Query(
        space, f"audio {path.name}{span} ({len(batch.samples)} windows)", vector=vec, kind="audio"
    )


def window_query(conn: Connection, segment_id: int, space_name: str | None) -> Query:
    register_vector(conn)
    row = conn.execute(
        sa.text("SELECT space_id, embedding FROM segments WHERE id = :i"), {"i": segment_id}
    ).fetchone()
    if row is None:
        raise SoundscapeError(f"no window with id {segment_id}")
    space = next(s for s in list_spaces(conn) if s.id == row.space_id)
    if space_name and space_name != space.name:
        raise SoundscapeError(
            f"window {segment_id} belongs to space {space.name!r}, not {space_name!r}"
        )
    vec = np.asarray(row.embedding.to_numpy(), dtype=np.float32)
    return Query(space, f"window {segment_id}", vector=vec, exclude=segment_id, kind="window")


# ------------------------------------------------------------------------------- running
@dataclass
class Hit:
    segment_id: int
    score: float
    recording_id: int
    path: str
    sensor: str
    site: str | None
    quadrant: str | None
    start_s: float
    end_s: float
    starts_at: datetime | None
    local_date: date | None
    local_time: time | None
    label: str | None = None
    method: str = ""
    n_windows: int = 1
    clip: str | None = None

    @property
    def local(self) -> datetime | None:
        if self.local_date is None or self.local_time is None:
            return None
        return datetime.combine(self.local_date, self.local_time)

    def as_row(self) -> dict[str, Any]:
        d = asdict(self)
        d["local"] = self.local.isoformat(sep=" ", timespec="seconds") if self.local else None
        d["score"] = round(float(self.score), 4)
        d["start_s"] = round(float(self.start_s), 3)
        d["end_s"] = round(float(self.end_s), 3)
        return d


def run(
    conn: Connection,
    query: Query,
    filters: Filters,
    limit: int = 10,
    strategy: str = "auto",
    ef_search: int | None = None,
) -> list[Hit]:
    """Rank windows (one SQL statement inside the ranger search functions). ``ef_search``
    overrides the HNSW candidate list size the function would choose."""
    if strategy not in STRATEGIES:
        raise SoundscapeError(f"strategy must be one of {', '.join(STRATEGIES)}")
    params = {**filters.params(), "space": query.space.id, "k": int(limit)}
    if query.classifier is not None:  # exact ranking by w . x + b (sql/classifiers.sql)
        sql = (
            "SELECT * FROM ranger.search_classifier(:name, :label, :k, "
            "CAST(:sensors AS text[]), CAST(:sites AS text[]), CAST(:quadrants AS text[]), "
            "CAST(:time_from AS time), CAST(:time_to AS time), CAST(:date_from AS date), "
            "CAST(:date_to AS date), CAST(:at_from AS timestamptz), CAST(:at_to AS timestamptz), "
            "CAST(:min_score AS real), :version)"
        )
        name, version, label = query.classifier
        params.update(name=name, version=version, label=label)
    elif query.is_labels:
        sql = (
            "SELECT * FROM ranger.search_labels(:space, CAST(:labels AS integer[]), :k, "
            "CAST(:sensors AS text[]), CAST(:sites AS text[]), CAST(:quadrants AS text[]), "
            "CAST(:time_from AS time), CAST(:time_to AS time), CAST(:date_from AS date), "
            "CAST(:date_to AS date), CAST(:at_from AS timestamptz), CAST(:at_to AS timestamptz), "
            "CAST(:min_score AS real))"
        )
        params["labels"] = query.label_ids
    else:
        register_vector(conn)
        sql = (
            "SELECT * FROM ranger.search_vector(:space, CAST(:q AS vector), :k, "
            "CAST(:sensors AS text[]), CAST(:sites AS text[]), CAST(:quadrants AS text[]), "
            "CAST(:time_from AS time), CAST(:time_to AS time), CAST(:date_from AS date), "
            "CAST(:date_to AS date), CAST(:at_from AS timestamptz), CAST(:at_to AS timestamptz), "
            "CAST(:min_score AS real), CAST(:exclude AS bigint), :strategy, NULL, "
            "CAST(:ef AS integer))"
        )
        params.update(
            q=np.asarray(query.vector, np.float32),
            exclude=query.exclude,
            strategy=strategy,
            ef=ef_search,
        )
    try:
        rows = conn.execute(sa.text(sql), params).all()
    except sa.exc.DBAPIError as exc:
        # the ranger functions' input checks (k, ef_search, a zero query vector: sql/README.md)
        if getattr(exc.orig, "sqlstate", None) == INVALID_PARAMETER_VALUE:
            raise SoundscapeError(exc.orig.diag.message_primary) from exc
        raise
    return [Hit(**dict(r._mapping)) for r in rows]


def merge_events(hits: list[Hit], gap_s: float = 0.0) -> list[Hit]:
    """Merge hits of the same recording whose windows overlap or touch (next start <= end +
    gap) into events: the span of the windows, the best score, and how many windows."""
    by_rec: dict[int, list[Hit]] = {}
    for h in hits:
        by_rec.setdefault(h.recording_id, []).append(h)
    events: list[Hit] = []
    for group in by_rec.values():
        group.sort(key=lambda h: h.start_s)
        current: Hit | None = None
        best: Hit | None = None
        for h in group:
            if current is not None and h.start_s <= current.end_s + gap_s + 1e-6:
                current.end_s = max(current.end_s, h.end_s)
                current.n_windows += 1
                if h.score > best.score:
                    best = h
                    current.score, current.segment_id, current.label = (
                        h.score,
                        h.segment_id,
                        h.label,
                    )
                continue
            if current is not None:
                events.append(current)
            current = replace(h, n_windows=1)
            best = h
        if current is not None:
            events.append(current)
    events.sort(key=lambda e: (-e.score, e.recording_id, e.start_s))
    return events


# ------------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    written: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def clip_name(rank: int, hit: Hit) -> str:
    when = (
        hit.local.strftime("%Y%m%d-%H%M%S")
        if hit.local
        else f"{Path(hit.path).stem}-{hit.start_s:.1f}s"
    )
    return f"{rank:03d}_{_slug(hit.sensor)}_{_slug(when)}_{hit.score:.3f}"


def export_clips(hits: list[Hit], folder: Path, pad_s: float = 1.0) -> ExportResult:
    """Write each hit as a WAV clip (padded by ``pad_s`` on both sides, at the recording's
    own sample rate) and a spectrogram PNG beside it."""
    import soundfile as sf

    from soundscape.plots import spectrogram_png

    folder.mkdir(parents=True, exist_ok=True)
    out = ExportResult()
    for rank, hit in enumerate(hits, start=1):
        name = clip_name(rank, hit)
        try:
            info = probe(hit.path)
            start = max(0.0, hit.start_s - pad_s)
            end = min(info.duration_s, hit.end_s + pad_s)
            audio = decode_span(hit.path, info.sample_rate, start, end)
        except (SoundscapeError, OSError, ValueError) as exc:
            out.errors.append(f"{hit.path}: cannot export window {hit.segment_id}: {exc}")
            continue
        wav = folder / f"{name}.wav"
        sf.write(wav, audio, info.sample_rate, subtype="PCM_16")
        png = folder / f"{name}.png"
        title = f"{hit.sensor}  {hit.local or ''}  score {hit.score:.3f}"
        spectrogram_png(
            audio, info.sample_rate, png, title, mark=(hit.start_s - start, hit.end_s - start)
        )
        hit.clip = str(wav)
        out.written.extend([wav, png])
    return out


# Raven Pro selection tables: what bioacousticians open beside a recording to review hits.
RAVEN_COLUMNS = [
    "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
    "High Freq (Hz)", "Begin Path", "File Offset (s)", "Rank", "Score", "Label", "Sensor",
    "Local Time", "Window ID",
]  # fmt: skip


def export_raven(hits: list[Hit], folder: Path, label: str) -> ExportResult:
    """Write one Raven selection table per recording (``<stem>.r<recording id>.selections.txt``,
    tab-separated): a selection per hit over the full band, in time order, with its rank,
    score, label (the hit's class for label queries, else ``label``) and local time."""
    folder.mkdir(parents=True, exist_ok=True)
    out = ExportResult()
    by_recording: dict[int, list[tuple[int, Hit]]] = {}
    for rank, hit in enumerate(hits, start=1):
        by_recording.setdefault(hit.recording_id, []).append((rank, hit))
    for recording_id, ranked in by_recording.items():
        path = ranked[0][1].path
        try:
            high = probe(path).sample_rate / 2
        except (SoundscapeError, OSError) as exc:
            high = 24000.0
            out.errors.append(f"{path}: {exc}; High Freq set to {high:g} Hz")
        lines = ["\t".join(RAVEN_COLUMNS)]
        ranked.sort(key=lambda rh: (rh[1].start_s, rh[0]))
        for selection, (rank, hit) in enumerate(ranked, start=1):
            cells = [
                selection, "Spectrogram 1", 1, f"{hit.start_s:.3f}", f"{hit.end_s:.3f}", 0,
                f"{high:g}", path, f"{hit.start_s:.3f}", rank, f"{hit.score:.4f}",
                hit.label or label, hit.sensor,
                hit.local.isoformat(sep=" ", timespec="seconds") if hit.local else "",
                hit.segment_id,
            ]  # fmt: skip
            lines.append("\t".join(str(c).replace("\t", " ") for c in cells))
        table = folder / f"{_slug(Path(path).stem)}.r{recording_id}.selections.txt"
        table.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out.written.append(table)
    return out
