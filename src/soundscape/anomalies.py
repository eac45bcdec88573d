"""Anomalies: which windows of a sensor do not sound like that sensor's normal sound.

Each window of the period is scored by the mean cosine distance to its k nearest windows in
the sensor's baseline (the same sensor, space and times of day; by default every window
before the period), divided by the baseline's own typical k-NN distance. The scoring is one
SQL function, ``ranger.anomaly_scores`` (sql/analytics.sql), with pgvector doing the
neighbour search; this module stores each run and merges windows into events (the space is
``spaces.pick_space(conn, name, purpose="anomalies", sensor=...)``: spectral first).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.db import raw_connection
from soundscape.errors import SoundscapeError
from soundscape.queries import TIME_ARGS, TIME_TYPES
from soundscape.results import Hit, merge_events
from soundscape.spaces import Space

STRATEGIES = ("auto", "hnsw", "exact")
#: Windows scoring below this never join an event (the baseline's own windows score about 1;
#: on real soundscapes ordinary windows stay below 2-3, a saw or siren scores 5-20).
EVENT_MIN_SCORE = 2.0


@dataclass
class Period:
    """Local dates (inclusive) and/or instants (half-open) of the period and the baseline, and
    a local time-of-day range shared by both."""

    date_from: date | None = None
    date_to: date | None = None
    at_from: datetime | None = None
    at_to: datetime | None = None
    time_from: time | None = None
    time_to: time | None = None
    base_date_from: date | None = None
    base_date_to: date | None = None
    base_at_from: datetime | None = None
    base_at_to: datetime | None = None

    def check(self) -> None:
        has_start = self.date_from is not None or self.at_from is not None
        base = (self.base_date_from, self.base_date_to, self.base_at_from, self.base_at_to)
        has_base = any(v is not None for v in base)
        if not has_start and not has_base:
            raise SoundscapeError(
                "say which period to score (--from) or which baseline to compare with "
                "(--baseline-from/--baseline-to); the default baseline is everything before --from"
            )
        period = (self.date_from, self.date_to, self.at_from, self.at_to)
        if all(v is None for v in period) and self.base_date_to is None and self.base_at_to is None:
            raise SoundscapeError(
                "give the period (--from/--to) or the end of the baseline (--baseline-to); "
                "the default period is everything after the baseline"
            )

    def params(self) -> dict[str, Any]:
        """The bound parameters of ``_SCORE_SQL``: the time filters (``queries.TIME_ARGS``) and
        the baseline's bounds (``_BASE_ARGS``)."""
        return {k: getattr(self, k) for k in (*TIME_TYPES, *_BASE_KEYS)}

    def as_json(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in self.params().items() if v is not None}


@dataclass
class Run:
    """A stored anomaly run."""

    id: int
    sensor: str
    space: Space
    k: int
    n_windows: int
    baseline_windows: int
    scale: float
    method: str
    max_score: float | None
    #: the scale had exact twins counted (repeated audio in the baseline: they are left out,
    #: see sql/analytics.sql); None when twins made no difference
    scale_with_twins: float | None = None


def sensor_id(conn: Connection, sensor: str) -> int:
    row = conn.execute(sa.text("SELECT id FROM sensors WHERE name = :n"), {"n": sensor}).fetchone()
    if row is None:
        known = conn.execute(sa.text("SELECT name FROM sensors ORDER BY name")).scalars().all()
        raise SoundscapeError(
            f"unknown sensor {sensor!r}; known: {', '.join(known) or 'none (soundscape sensors add)'}"
        )
    return int(row.id)


#: the baseline's bounds (local dates, instants): fields ``base_*`` of ``Period``, arguments
#: ``p_base_*`` of ``ranger.anomaly_scores``
_BASE_KEYS = tuple(f"base_{k}" for k in TIME_TYPES if not k.startswith("time_"))
_BASE_ARGS = ", ".join(f"p_{k} => CAST(:{k} AS {TIME_TYPES[k[5:]]})" for k in _BASE_KEYS)
#: the period's filters are the search filters' time arguments (the one rule:
#: ``ranger.in_time_filter``); the sensor is one name, not a place filter
_SCORE_SQL = (
    "ranger.anomaly_scores(p_sensor => :sensor, p_space => :space, p_k => :k, "
    f"{TIME_ARGS}, {_BASE_ARGS}, p_strategy => :strategy)"
)


def score(
    conn: Connection,
    sensor: str,
    space: Space,
    period: Period,
    k: int = 10,
    strategy: str = "auto",
) -> Run:
    """Score the period's windows and store them as a run (the caller commits)."""
    if strategy not in STRATEGIES:
        raise SoundscapeError(f"strategy must be one of {', '.join(STRATEGIES)}")
    if k < 1:
        raise SoundscapeError("--k must be at least 1")
    period.check()
    sid = sensor_id(conn, sensor)
    run_id = conn.execute(
        sa.text(
            "INSERT INTO anomaly_runs (sensor_id, space_id, k, params) "
            "VALUES (:s, :sp, :k, CAST(:p AS jsonb)) RETURNING id"
        ),
        {"s": sid, "sp": space.id, "k": k, "p": json.dumps(period.as_json())},
    ).scalar_one()
    params = {
        **period.params(),
        "sensor": sensor,
        "space": space.name,
        "k": k,
        "strategy": strategy,
        "run": run_id,
        "space_id": space.id,
    }
    row, scale_with_twins = _score_windows(conn, params)
    if not row.n:
        raise SoundscapeError(
            f"no windows of sensor {sensor!r} in space {space.name} fall in the period "
            "(windows need a known start time; check --from/--to/--time)"
        )
    conn.execute(
        sa.text(
            "UPDATE anomaly_runs SET baseline_windows = :b, scale = :sc, method = :m, "
            "n_windows = :n, max_score = :mx WHERE id = :r"
        ),
        {
            "b": row.baseline_windows,
            "sc": row.scale,
            "m": row.method,
            "n": row.n,
            "mx": row.max_score,
            "r": run_id,
        },
    )
    return Run(
        id=run_id,
        sensor=sensor,
        space=space,
        k=k,
        n_windows=int(row.n),
        baseline_windows=int(row.baseline_windows),
        scale=float(row.scale),
        method=str(row.method),
        max_score=float(row.max_score) if row.max_score is not None else None,
        scale_with_twins=scale_with_twins,
    )


def _score_windows(conn: Connection, params: dict[str, Any]) -> tuple[sa.Row[Any], float | None]:
    """Score and store the run's windows in one statement; its totals (n, max_score, scale,
    baseline_windows, method) and the scale with twins, if twins were left out of it."""
    # ranger.anomaly_scores says with a NOTICE (DETAIL: the scale with twins) that it left
    # exact twins out of the scale
    notices: list[str] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        if (diag.message_primary or "").startswith("anomaly scale") and diag.message_detail:
            notices.append(diag.message_detail)

    raw = raw_connection(conn)
    raw.add_notice_handler(on_notice)
    try:
        row = conn.execute(
            sa.text(
                f"WITH s AS MATERIALIZED (SELECT * FROM {_SCORE_SQL}), "
                "ins AS (INSERT INTO anomaly_scores (run_id, space_id, segment_id, distance, "
                "score, rank) SELECT :run, :space_id, s.segment_id, s.distance, s.score, "
                "row_number() OVER (ORDER BY s.score DESC, s.segment_id) FROM s) "
                "SELECT count(*) AS n, max(s.score) AS max_score, min(s.scale) AS scale, "
                "min(s.baseline_windows) AS baseline_windows, min(s.method) AS method FROM s"
            ),
            params,
        ).one()
    except sa.exc.DBAPIError as exc:
        raise SoundscapeError(_pg_message(exc)) from exc
    finally:
        raw.remove_notice_handler(on_notice)
    return row, float(notices[-1]) if notices else None


def _pg_message(exc: sa.exc.DBAPIError) -> str:
    orig = getattr(exc, "orig", None)
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return primary or str(orig or exc).splitlines()[0]


def top_windows(
    conn: Connection, run_id: int, limit: int, min_score: float | None = None
) -> list[Hit]:
    """The run's most unusual windows, best first, as search hits (score = anomaly score)."""
    rows = conn.execute(
        sa.text(
            "SELECT a.segment_id, a.score, a.recording_id, a.path, a.sensor, a.site, a.quadrant, "
            "a.start_s, a.end_s, a.starts_at, a.local_date, a.local_time "
            "FROM ranger.anomalies a WHERE a.run = :r "
            "AND (CAST(:m AS real) IS NULL OR a.score >= :m) ORDER BY a.rank LIMIT :n"
        ),
        {"r": run_id, "m": min_score, "n": int(limit)},
    )
    return [Hit(**dict(r._mapping), method="anomaly") for r in rows]


def events(conn: Connection, run_id: int, top: int, min_score: float | None = None) -> list[Hit]:
    """The ``top`` most unusual events: the run's windows scoring at least ``min_score``
    (default EVENT_MIN_SCORE) merged where they overlap or touch, like ``search --events``;
    an event's score is its best window's. Ordinary windows never join an event, so an event
    spans just the unusual sound."""
    floor = EVENT_MIN_SCORE if min_score is None else min_score
    return merge_events(top_windows(conn, run_id, top * 10, floor))[:top]


def latest_run(conn: Connection, recording_id: int) -> int | None:
    """The newest run that scored windows of this recording."""
    return conn.execute(
        sa.text(
            "SELECT max(a.run_id) FROM anomaly_scores a JOIN segments g "
            "ON g.space_id = a.space_id AND g.id = a.segment_id WHERE g.recording_id = :r"
        ),
        {"r": recording_id},
    ).scalar()
