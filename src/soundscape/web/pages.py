"""What the web pages show, gathered from the library (no HTML here): request parameters to a
``SearchRequest``, the sensor map's coordinates, the activity heat map's grid, a recording's
detections, anomalies, annotations and transcript, the job queue."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.annotations import list_annotations
from soundscape.anomalies import latest_run
from soundscape.classifiers import list_classifiers
from soundscape.concepts import list_concepts
from soundscape.errors import BadOption, SoundscapeError
from soundscape.failures import list_errors
from soundscape.jobs import job_stats, list_jobs
from soundscape.queries import Filters
from soundscape.search import MAX_LIMIT, SearchRequest, parse_filters, search
from soundscape.sensors import Sensor, list_sensors
from soundscape.speech import NoTranscript, TranscriptLine, get_transcript


class BadParameter(SoundscapeError):
    """A query parameter of the page is unusable; the message names it."""


# ------------------------------------------------------------------------------ input
#: Longest text a query parameter or form field may hold (characters): longer ones, and any
#: holding a NUL byte (which PostgreSQL text cannot store), are refused with 400 before any
#: query runs.
MAX_FIELD_CHARS = 10_000
#: Longest label and note of a verdict given on the page (an index entry must stay small).
MAX_LABEL_CHARS = 200
MAX_NOTE_CHARS = 2_000
#: Longest example a search by uploaded audio decodes (seconds): the header's length is
#: checked before decoding, and decoding stops there anyway (a span of at most this).
MAX_EXAMPLE_S = 120.0


def check_text(name: str, value: str, limit: int = MAX_FIELD_CHARS) -> str:
    """``value`` if it holds no NUL byte and at most ``limit`` characters, else BadParameter."""
    shown = name.replace("\x00", "\\0")[:40] or "(unnamed)"
    if "\x00" in value or "\x00" in name:
        raise BadParameter(f"{shown}: holds a NUL byte (\\0); remove it and try again")
    if len(value) > limit:
        raise BadParameter(
            f"{shown}: {len(value)} characters is too long (at most {limit}); shorten it"
        )
    return value


def check_fields(items: Sequence[tuple[str, Any]]) -> None:
    """Check every text field of a query string or form (``check_text``); files pass."""
    for name, value in items:
        if isinstance(value, str):
            check_text(name, value)


def upload_name(filename: str) -> str:
    """An uploaded file's own name, safe to show and to save under (no folders, no control
    characters, at most 100 characters, its suffix kept)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c if c.isprintable() and c not in "/\x00" else "_" for c in name)
    if len(name) > 100:
        dot = name.rfind(".")
        suffix = name[dot:] if dot > 0 and len(name) - dot <= 10 else ""
        name = name[: 100 - len(suffix)] + suffix
    return name.lstrip(".") or "example"


def example_span(params: Any, duration_s: float) -> tuple[float, float]:
    """The span ``[start, end)`` of an uploaded example to decode: the form's ``start``/``end``
    or the whole file, refused (BadParameter) when longer than ``MAX_EXAMPLE_S``."""
    start = _number(params, "start") or 0.0
    end = _number(params, "end")
    end = duration_s if end is None else min(end, duration_s)
    if start < 0 or end <= start:
        raise BadParameter(f"start/end: 0 <= start < end <= {duration_s:.1f} s, not {start}-{end}")
    if end - start > MAX_EXAMPLE_S:
        raise BadParameter(
            f"audio: the example is {_clock(end - start)} long; search by at most "
            f"{_clock(MAX_EXAMPLE_S)} of audio (cut the example, or give start and end)"
        )
    return start, end


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# ------------------------------------------------------------------------------ search
#: The query forms of the search page (one per request), as query parameter names.
QUERY_PARAMS = ("q", "like", "concept", "classifier")
DEFAULT_LIMIT = 20


def _one(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _many(params: Any, name: str) -> list[str] | None:
    values = params.getlist(name) if hasattr(params, "getlist") else [params.get(name)]
    out = [str(v).strip() for v in values if v is not None and str(v).strip()]
    return out or None


def _number(params: Mapping[str, Any], name: str, kind: type = float) -> Any:
    text = _one(params, name)
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError as exc:
        raise BadParameter(f"{name}: {text!r} is not a number") from exc
    if kind is float and not math.isfinite(value):
        raise BadParameter(f"{name}: {text!r} is not a finite number")
    return value


def filters_from(params: Any) -> Filters:
    """Place and time filters from query parameters: ``sensor``, ``site``, ``quadrant``
    (repeatable), ``time`` (HH:MM-HH:MM, may cross midnight), ``from``/``to`` (local dates or
    ISO times with an offset), ``min_score``, ``sun`` (dawn, sunrise-30m..sunrise+2h): the CLI's
    options, parsed by the same
    ``search.parse_filters``."""
    try:
        return parse_filters(
            _many(params, "sensor"),
            _many(params, "site"),
            _many(params, "quadrant"),
            _one(params, "time"),
            _one(params, "from"),
            _one(params, "to"),
            _number(params, "min_score"),
            _one(params, "sun"),
        )
    except BadOption as exc:
        raise BadParameter(f"{exc.option.lstrip('-')}: {exc}") from exc


def request_from(params: Any, audio: str | None = None) -> SearchRequest | None:
    """A ``SearchRequest`` from the search page's parameters (None when no query is given):
    ``q`` text, ``said`` words in what was said, ``like`` a window id, ``concept``,
    ``classifier`` + ``label``, or an uploaded ``audio`` file (its saved path); ``space``,
    ``events``, ``limit`` and the filters."""
    text, concept, said = _one(params, "q"), _one(params, "concept"), _one(params, "said")
    classifier, label = _one(params, "classifier"), _one(params, "label")
    picked = _one(params, "classifier_label")  # the form's select: "name|label"
    if classifier is None and picked:
        classifier, _, label = picked.partition("|")
    like = _number(params, "like", int)
    if not any(v is not None for v in (text, said, like, concept, classifier, audio)):
        return None
    limit = _number(params, "limit", int) or DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise BadParameter(f"limit: between 1 and {MAX_LIMIT}, not {limit}")
    start_s = end_s = None
    if audio:  # decode at most MAX_EXAMPLE_S whatever the file's header says
        start_s = _number(params, "start") or 0.0
        end_s = _number(params, "end")
        end_s = start_s + MAX_EXAMPLE_S if end_s is None else min(end_s, start_s + MAX_EXAMPLE_S)
    return SearchRequest(
        text=text,
        said=said,
        audio=audio,
        start_s=start_s,
        end_s=end_s,
        like=like,
        concept=concept,
        classifier=classifier,
        label=label if classifier else None,
        space=_one(params, "space"),
        filters=filters_from(params),
        limit=limit,
        events=_one(params, "events") in ("1", "on", "true", "yes"),
    )


@dataclass
class Choices:
    """What the search form offers: sensors, sites, quadrants, concepts, classifiers, spaces."""

    sensors: list[str]
    sites: list[str]
    quadrants: list[str]
    concepts: list[str]
    classifiers: list[tuple[str, list[str]]]
    spaces: list[str]


def choices(conn: Connection) -> Choices:
    sensors = list_sensors(conn)
    classifiers: dict[str, list[str]] = {}
    for row in list_classifiers(conn):
        labels = classifiers.setdefault(str(row["name"]), [])
        if row.get("label") and row["label"] not in labels:
            labels.append(row["label"])
    return Choices(
        sensors=[s.name for s in sensors],
        sites=sorted({s.site for s in sensors if s.site}),
        quadrants=sorted({s.quadrant for s in sensors if s.quadrant}),
        concepts=[str(c["name"]) for c in list_concepts(conn)],
        classifiers=sorted(classifiers.items()),
        spaces=list(conn.execute(sa.text("SELECT name FROM spaces ORDER BY id")).scalars()),
    )


# ------------------------------------------------------------------------------ sensors
@dataclass
class MapPoint:
    sensor: Sensor
    x: float
    y: float


@dataclass
class SensorMap:
    width: int
    height: int
    points: list[MapPoint]
    unplaced: list[Sensor]
    scale_km: float = 0.0
    scale_px: float = 0.0


def _nice(x: float) -> float:
    """The largest 1, 2 or 5 times a power of ten not above x."""
    if x <= 0:
        return 0.0
    p = 10 ** math.floor(math.log10(x))
    return max(m * p for m in (1, 2, 5) if m * p <= x)


def sensor_map(sensors: Sequence[Sensor], width: int = 640, height: int = 400) -> SensorMap:
    """Sensor positions projected for an SVG (equirectangular around the sensors' mean
    latitude, north up, aspect kept), with a scale bar. Sensors without coordinates are
    listed apart."""
    placed = [s for s in sensors if s.latitude is not None and s.longitude is not None]
    unplaced = [s for s in sensors if s not in placed]
    pad = 40.0
    if not placed:
        return SensorMap(width, height, [], unplaced)
    lat0 = sum(float(s.latitude or 0) for s in placed) / len(placed)
    k = math.cos(math.radians(lat0))
    xs = [float(s.longitude or 0) * k for s in placed]
    ys = [float(s.latitude or 0) for s in placed]
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-4)  # degrees (of latitude)
    scale = min(width - 2 * pad, height - 2 * pad) / span
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    points = [
        MapPoint(s, width / 2 + (x - cx) * scale, height / 2 - (y - cy) * scale)
        for s, x, y in zip(placed, xs, ys)
    ]
    km_per_px = 111.32 / scale
    scale_km = _nice(km_per_px * width / 4)
    return SensorMap(width, height, points, unplaced, scale_km, scale_km / km_per_px)


def recordings_per_sensor(conn: Connection) -> dict[str, int]:
    """How many recordings each sensor has (0 for a sensor without any)."""
    rows = conn.execute(
        sa.text(
            "SELECT s.name, count(r.id) FROM sensors s "
            "LEFT JOIN recordings r ON r.sensor_id = s.id GROUP BY s.name"
        )
    )
    return {str(name): int(n) for name, n in rows}


# ------------------------------------------------------------------------------ activity
ACTIVITY_KINDS = ("concept", "classifier", "species")
ACTIVITY_GROUPS = ("site", "quadrant", "sensor")
#: Most windows a species heat map counts (label search's limit)
SPECIES_WINDOWS = MAX_LIMIT


@dataclass
class Heatmap:
    """Detections per group, local day (rows) and local hour (columns)."""

    title: str
    groups: list[str]
    days: list[date]
    counts: dict[str, dict[tuple[date, int], int]] = field(default_factory=dict)
    total: int = 0
    vmax: int = 0
    note: str = ""

    def cell(self, group: str, day: date, hour: int) -> int:
        return self.counts.get(group, {}).get((day, hour), 0)


def _grid(title: str, rows: Sequence[tuple[str, date, int, int]], note: str = "") -> Heatmap:
    counts: dict[str, dict[tuple[date, int], int]] = {}
    for grp, day, hour, n in rows:
        g = counts.setdefault(grp or "(none)", {})
        g[(day, hour)] = g.get((day, hour), 0) + int(n)
    if not counts:
        return Heatmap(title, [], [], note=note)
    seen = [d for c in counts.values() for d, _ in c]
    first, last = min(seen), max(seen)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    total = sum(sum(c.values()) for c in counts.values())
    vmax = max(max(c.values()) for c in counts.values())
    return Heatmap(title, sorted(counts), days, counts, total, vmax, note)


def activity(
    conn: Connection,
    kind: str,
    name: str,
    label: str | None = None,
    by: str = "site",
    date_from: date | None = None,
    date_to: date | None = None,
    min_score: float = 0.5,
) -> Heatmap:
    """The hour x day grid of a concept's detections, a classifier label's detections
    (``ranger.activity_by_hour``, what ``plot activity`` draws) or a species (BirdNET label
    search: windows scoring at least ``min_score``, at most ``SPECIES_WINDOWS``), per group."""
    if kind not in ACTIVITY_KINDS:
        raise BadParameter(f"kind: one of {', '.join(ACTIVITY_KINDS)}")
    if by not in ACTIVITY_GROUPS:
        raise BadParameter(f"by: one of {', '.join(ACTIVITY_GROUPS)}")
    if kind in ("concept", "classifier"):
        source = "concept" if kind == "concept" else "classifier"
        dates, params = Filters(date_from=date_from, date_to=date_to).where("d")
        rows = conn.execute(
            sa.text(
                f"SELECT coalesce(d.{by}, '(none)'), d.local_date, "
                "extract(hour FROM d.local_time)::integer, count(*) FROM ranger.detections d "
                "WHERE d.concept = :c AND d.source = :s AND d.local_date IS NOT NULL "
                "AND (CAST(:l AS text) IS NULL OR d.label = :l) "
                + "".join(f"AND {c} " for c in dates)
                + "GROUP BY 1, 2, 3"
            ),
            {**params, "c": name, "s": source, "l": label},
        ).all()
        title = f"{kind} {name}" + (f" / {label}" if label else "")
        return _grid(title, [tuple(r) for r in rows])
    result = search(
        conn,
        SearchRequest(
            text=name,
            limit=SPECIES_WINDOWS,
            filters=Filters(date_from=date_from, date_to=date_to, min_score=min_score),
        ),
    )
    rows_: list[tuple[str, date, int, int]] = []
    for h in result.hits:
        if h.local_date is None or h.local_time is None:
            continue
        grp = {"site": h.site, "quadrant": h.quadrant, "sensor": h.sensor}[by] or "(none)"
        rows_.append((grp, h.local_date, h.local_time.hour, 1))
    note = f"{result.query.description}, score >= {min_score:g}"
    if len(result.hits) >= SPECIES_WINDOWS:
        note += f" (the best {SPECIES_WINDOWS} windows only)"
    return _grid(f"species {name}", rows_, note)


def colour(n: int, vmax: int) -> str:
    """A viridis-like colour for a count (empty cells are drawn light grey)."""
    if n <= 0 or vmax <= 0:
        return "#eeeeee"
    stops = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    t = min(1.0, n / vmax) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    a, b = stops[i], stops[i + 1]
    return "#" + "".join(f"{round(a[j] + (b[j] - a[j]) * f):02x}" for j in range(3))


# ------------------------------------------------------------------------------ recording
def detections(conn: Connection, recording_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.text(
            "SELECT concept, label, source, start_s, end_s, score, local_time "
            "FROM ranger.detections WHERE recording_id = :r ORDER BY start_s, concept LIMIT 500"
        ),
        {"r": recording_id},
    )
    return [dict(r._mapping) for r in rows]


def anomalies(conn: Connection, recording_id: int, threshold: float = 3.0) -> dict[str, Any]:
    run = latest_run(conn, recording_id)
    if run is None:
        return {"run": None, "windows": []}
    rows = conn.execute(
        sa.text(
            "SELECT start_s, end_s, score FROM ranger.anomalies WHERE run = :run "
            "AND recording_id = :r AND score >= :t ORDER BY start_s LIMIT 500"
        ),
        {"run": run, "r": recording_id, "t": threshold},
    )
    return {"run": run, "windows": [dict(r._mapping) for r in rows]}


def recording_annotations(conn: Connection, recording_id: int) -> list[Any]:
    return list_annotations(conn, recording_id=recording_id, limit=500)


#: Most lines of a transcript the recording page shows.
MAX_TRANSCRIPT_LINES = 2000


def transcript(conn: Connection, recording_id: int) -> list[TranscriptLine]:
    """The lines of the recording's newest transcript (``speech.get_transcript``, what
    ``soundscape transcript`` prints), at most ``MAX_TRANSCRIPT_LINES``; empty when
    its speech was not transcribed."""
    try:
        return get_transcript(conn, recording_id).lines[:MAX_TRANSCRIPT_LINES]
    except NoTranscript:
        return []


# ------------------------------------------------------------------------------ jobs
def jobs_overview(conn: Connection) -> dict[str, Any]:
    return {
        "stats": job_stats(conn),
        "failed": [j.as_dict() for j in list_jobs(conn, "failed", limit=200)],
        "errors": list_errors(conn, unresolved=True, limit=200),
    }
