"""Species-level facts: which labels were detected where and on which days.

- Per-label thresholds (``label_thresholds``; a label without one counts from
  ``DEFAULT_THRESHOLD``): ``set_threshold``, ``reset_threshold``, ``list_thresholds``.
- ``species_daily``: rows of ``ranger.species_daily`` (or ``ranger.species_daily_all`` with
  ``all_species``) under the place and date filters: label, sensor, site, quadrant, local
  date, detections, first and last local time, best score, source (``model``: a model's own
  class scores above the label's threshold; ``classifier``: a trained classifier's stored
  detections). The SQL is in ``sql/species.sql``.
- ``top_labels``: the classes a space detected most often, under every search filter.

Both leave out, unless ``all_species``, the classes BirdNET's occurrence model finds unlikely
at the window's sensor and week (``soundscape.occurrence``).
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.errors import BadOption, SoundscapeError
from soundscape.search import Filters, check_filter_names, match_labels
from soundscape.spaces import Space, get_space

#: the score a model's class needs to count as detected where no threshold is set
DEFAULT_THRESHOLD = 0.5
DAILY_COLUMNS = [
    "label", "scientific", "sensor", "site", "quadrant", "local_date", "detections",
    "first_time", "last_time", "best_score", "source", "detector",
]  # fmt: skip
SOURCES = ("model", "classifier")

#: SQL: the class sc.label_id is plausible at window g's sensor and week (see sql/species.sql)
_PLAUSIBLE = (
    "(NOT EXISTS (SELECT 1 FROM occurrence_sensors os "
    "WHERE os.model = :model AND os.sensor_id = g.sensor_id) "
    "OR EXISTS (SELECT 1 FROM occurrence o WHERE o.model = :model "
    "AND o.sensor_id = g.sensor_id AND o.week = ranger.birdnet_week(g.local_date) "
    "AND o.label_id = sc.label_id))"
)


def label_space(conn: Connection, name: str | None = None) -> Space:
    """The named space, or the first space with class labels; it must have labels."""
    if name is None:
        name = conn.execute(
            sa.text("SELECT name FROM spaces WHERE id = (SELECT min(space_id) FROM space_labels)")
        ).scalar()
        if name is None:
            raise SoundscapeError(
                "no space with class labels yet; ingest with --model birdnet first"
            )
    space = get_space(conn, name)
    has = conn.execute(
        sa.text("SELECT EXISTS (SELECT 1 FROM space_labels WHERE space_id = :s)"), {"s": space.id}
    ).scalar()
    if not has:
        raise SoundscapeError(f"space {space.name!r} has no class labels (BirdNET has)")
    return space


def resolve_label(conn: Connection, space: Space, text: str) -> tuple[int, str]:
    """One class of a space by its common, scientific or full name (case-insensitive):
    (label_id, common name). No match: an error with the closest names."""
    q = " ".join(text.split()).lower()
    rows = conn.execute(
        sa.text(
            "SELECT label_id, name, scientific, common FROM space_labels WHERE space_id = :s "
            "AND :q IN (lower(name), lower(coalesce(scientific, '')), lower(coalesce(common, ''))) "
            "ORDER BY label_id"
        ),
        {"s": space.id, "q": q},
    ).all()
    if len(rows) == 1:
        return rows[0].label_id, rows[0].common or rows[0].name
    if len(rows) > 1:
        several = ", ".join(r.name for r in rows)
        raise SoundscapeError(f"{text!r} names several {space.name} classes ({several}); give one")
    # not a whole name: label search's matching (word prefixes; else an error with the
    # closest names) says which were meant
    _, names = match_labels(conn, space, text)
    more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
    raise SoundscapeError(
        f"no {space.name} class is named {text!r}; did you mean: {', '.join(names[:5])}{more}?"
    )


def check_threshold(value: float) -> float:
    if not (math.isfinite(value) and 0 < value <= 1):
        raise BadOption(f"a threshold must be greater than 0 and at most 1, not {value}", "VALUE")
    return float(value)


def set_threshold(conn: Connection, space: Space, label: str, value: float) -> dict[str, Any]:
    """Set a label's threshold (what ``species_daily`` counts as a detection)."""
    check_threshold(value)
    label_id, name = resolve_label(conn, space, label)
    conn.execute(
        sa.text(
            "INSERT INTO label_thresholds (space_id, label_id, threshold) VALUES (:s, :l, :t) "
            "ON CONFLICT (space_id, label_id) DO UPDATE SET threshold = EXCLUDED.threshold, "
            "updated_at = now()"
        ),
        {"s": space.id, "l": label_id, "t": value},
    )
    return {"space": space.name, "label": name, "threshold": value}


def reset_threshold(conn: Connection, space: Space, label: str) -> dict[str, Any]:
    """Back to the default threshold."""
    label_id, name = resolve_label(conn, space, label)
    conn.execute(
        sa.text("DELETE FROM label_thresholds WHERE space_id = :s AND label_id = :l"),
        {"s": space.id, "l": label_id},
    )
    return {"space": space.name, "label": name, "threshold": DEFAULT_THRESHOLD}


def list_thresholds(conn: Connection, space: Space | None = None) -> list[dict[str, Any]]:
    """The thresholds people have set (every other label: ``DEFAULT_THRESHOLD``)."""
    rows = conn.execute(
        sa.text(
            "SELECT space, label, scientific, threshold, updated_at FROM ranger.label_thresholds "
            "WHERE CAST(:space AS text) IS NULL OR space = :space ORDER BY space, label"
        ),
        {"space": space.name if space else None},
    )
    return [dict(r._mapping) for r in rows]


def top_labels(
    conn: Connection,
    space: Space,
    filters: Filters | None = None,
    *,
    min_score: float = DEFAULT_THRESHOLD,
    limit: int = 20,
    all_species: bool = False,
) -> list[dict[str, Any]]:
    """The classes a space detected most often: windows whose stored score for the class is at
    least ``min_score``, under the search filters, with the number of recordings and the best
    score. Unless ``all_species``, a class implausible at a window's sensor and week (BirdNET's
    occurrence model) does not count in that window."""
    filters = filters or Filters()
    check_filter_names(conn, filters)
    params: dict[str, Any] = {
        "space": space.id, "min": float(min_score), "limit": int(limit), "model": space.model,
    }  # fmt: skip
    conditions, more = filters.where("g", place="s", sensor="name")
    params.update(more)
    where = ["sc.space_id = :space", "sc.score >= :min", *conditions]
    if not all_species:
        where.append(_PLAUSIBLE)
    rows = conn.execute(
        sa.text(
            "SELECT l.label_id, l.common, l.scientific, count(*) AS windows, "
            "count(DISTINCT g.recording_id) AS recordings, max(sc.score) AS best_score "
            "FROM segment_scores sc "
            "JOIN segments g ON g.space_id = sc.space_id AND g.id = sc.segment_id "
            "JOIN sensors s ON s.id = g.sensor_id "
            "JOIN space_labels l ON l.space_id = sc.space_id AND l.label_id = sc.label_id "
            f"WHERE {' AND '.join(where)} "
            "GROUP BY l.label_id, l.common, l.scientific "
            "ORDER BY windows DESC, best_score DESC, l.label_id LIMIT :limit"
        ),
        params,
    )
    return [dict(r._mapping) for r in rows]


def species_daily(
    conn: Connection,
    filters: Filters | None = None,
    *,
    all_species: bool = False,
    labels: list[str] | None = None,
    source: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``ranger.species_daily`` (``species_daily_all`` with ``all_species``, with its
    ``plausible`` column) for the sensors, sites, quadrants and local dates of ``filters``,
    optionally only some labels (common or scientific names, case-insensitive) or one source;
    by date, site, sensor, most detections first. A day is a whole local day: time-of-day
    filters and ISO instants do not apply (``BadOption``)."""
    filters = filters or Filters()
    if filters.time_from is not None or filters.time_to is not None:
        raise BadOption("species daily counts whole local days: --time does not apply", "--time")
    if filters.at_from is not None or filters.at_to is not None:
        raise BadOption(
            "species daily counts whole local days: give --from/--to as dates, not instants",
            "--from/--to",
        )
    if source is not None and source not in SOURCES:
        raise BadOption(f"source must be one of {', '.join(SOURCES)}, not {source!r}", "--source")
    check_filter_names(conn, filters)
    where, params = filters.where("d", times=False)
    if labels:
        where.append("(lower(label) = ANY(:labels) OR lower(scientific) = ANY(:labels))")
        params["labels"] = [" ".join(x.split()).lower() for x in labels]
    if source is not None:
        where.append("source = :source")
        params["source"] = source
    view = "ranger.species_daily_all" if all_species else "ranger.species_daily"
    columns = ", ".join(DAILY_COLUMNS + (["plausible"] if all_species else []))
    sql = (
        f"SELECT {columns} FROM {view} d"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY local_date NULLS LAST, site NULLS LAST, sensor, detections DESC, label,"
        " source, detector"
    )
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = int(limit)
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]
