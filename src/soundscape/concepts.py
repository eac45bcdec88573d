"""Concepts: named queries stored with their vector (or label set) and threshold, so SQL users
can run them (``ranger.search``) and list where they were heard (``ranger.detections``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.db import register_vector
from soundscape.errors import BadOption, SoundscapeError
from soundscape.queries import Query
from soundscape.spaces import list_spaces

#: class-probability threshold for label concepts when none is given
DEFAULT_LABEL_THRESHOLD = 0.5


def check_threshold(threshold: float | None, *, labels: bool) -> None:
    """A concept's threshold is a score it can reach: a class probability (0 to 1) for label
    concepts, a cosine similarity (-1 to 1) for the others. ``BadOption`` otherwise (NaN and 5
    were stored, and then matched nothing, silently)."""
    if threshold is None:
        return
    low = 0.0 if labels else -1.0
    if not math.isfinite(threshold) or not low <= threshold <= 1.0:
        what = "a class probability" if labels else "a cosine similarity"
        raise BadOption(
            f"{threshold} is not between {low:g} and 1: the threshold of this concept is {what}",
            "--threshold",
        )


def save_concept(
    conn: Connection,
    name: str,
    query: Query,
    *,
    threshold: float | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Store ``query`` as concept ``name`` and compute its detections."""
    if not name.strip():
        raise SoundscapeError("a concept needs a name")
    if query.is_labels and threshold is None:
        threshold = DEFAULT_LABEL_THRESHOLD
    check_threshold(threshold, labels=query.is_labels)
    register_vector(conn)
    if replace:
        conn.execute(sa.text("DELETE FROM concepts WHERE name = :n"), {"n": name})
    inserted = conn.execute(
        sa.text(
            "INSERT INTO concepts (name, space_id, kind, query, embedding, label_ids, threshold) "
            "VALUES (:n, :s, :k, :q, CAST(:e AS vector), CAST(:l AS integer[]), :t) "
            "ON CONFLICT (name) DO NOTHING RETURNING id"
        ),
        {
            "n": name,
            "s": query.space.id,
            "k": "labels" if query.is_labels else query.kind,
            "q": query.description,
            "e": None if query.vector is None else np.asarray(query.vector, np.float32),
            "l": query.label_ids,
            "t": threshold,
        },
    ).scalar()
    if inserted is None:
        raise SoundscapeError(f"concept {name!r} exists; use --replace to overwrite it")
    conn.execute(sa.text("SELECT ranger.refresh_detections(:n)"), {"n": name})
    row = conn.execute(
        sa.text(
            "SELECT name, space, kind, query, threshold, n_labels, detections "
            "FROM ranger.concepts WHERE name = :n"
        ),
        {"n": name},
    ).one()
    return dict(row._mapping)


def concept_query(conn: Connection, name: str) -> Query:
    register_vector(conn)
    row = conn.execute(
        sa.text(
            "SELECT space_id, kind, query, embedding, label_ids, threshold FROM concepts "
            "WHERE name = :n"
        ),
        {"n": name},
    ).fetchone()
    if row is None:
        raise SoundscapeError(f"no concept named {name!r} (see `soundscape concepts list`)")
    space = next(s for s in list_spaces(conn) if s.id == row.space_id)
    vector = None if row.embedding is None else np.asarray(row.embedding.to_numpy(), np.float32)
    return Query(
        space,
        f"concept {name!r} ({row.query})",
        vector=vector,
        label_ids=list(row.label_ids) if row.label_ids is not None else None,
        kind="concept",
        min_score=row.threshold,
    )


#: What ``list_concepts`` returns per concept (the ``ranger.concepts`` view's columns).
CONCEPT_COLUMNS = [
    "name", "space", "kind", "query", "threshold", "n_labels", "detections", "refreshed_at",
]  # fmt: skip


def list_concepts(conn: Connection) -> list[dict[str, Any]]:
    """Every concept with its space, threshold and number of detections, by name."""
    rows = conn.execute(
        sa.text(f"SELECT {', '.join(CONCEPT_COLUMNS)} FROM ranger.concepts ORDER BY name")
    )
    return [dict(r._mapping) for r in rows]


def _check_names(conn: Connection, names: list[str]) -> None:
    known = set(conn.execute(sa.text("SELECT name FROM concepts")).scalars())
    missing = [n for n in names if n not in known]
    if missing:
        raise SoundscapeError(
            f"no concept named {', '.join(map(repr, missing))} (see `soundscape concepts list`)"
        )


def remove_concepts(conn: Connection, names: list[str] | tuple[str, ...]) -> int:
    """Remove concepts and their detections; an unknown name removes nothing (an error)."""
    _check_names(conn, list(names))
    result = conn.execute(sa.text("DELETE FROM concepts WHERE name = ANY(:n)"), {"n": list(names)})
    return int(result.rowcount)


def follow_recording(conn: Connection, recording_id: int) -> int:
    """The detections of every concept in one recording's windows, computed afresh: ingest,
    backfill and the worker call it in the transaction that stores the recording's windows,
    so a concept's detections include new audio without ``refresh_concepts``. Returns how
    many detections the recording has now."""
    return int(
        conn.execute(
            sa.text("SELECT ranger.refresh_recording_detections(:r)"), {"r": int(recording_id)}
        ).scalar()
        or 0
    )


def refresh_concepts(conn: Connection, names: list[str] | tuple[str, ...] = ()) -> int:
    """Recompute the detections of the named concepts (all when none are named), e.g. after
    a concept's threshold or the occurrence lists changed (new audio needs none: ingest
    keeps them current, ``follow_recording``); returns how many detections they have now."""
    _check_names(conn, list(names))
    total = 0
    targets: list[str | None] = [*names] or [None]
    for name in targets:
        total += int(
            conn.execute(sa.text("SELECT ranger.refresh_detections(:n)"), {"n": name}).scalar() or 0
        )
    return total
