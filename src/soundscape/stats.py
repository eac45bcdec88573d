"""What is in the database: numbers for ``soundscape stats``, spaces, top labels and the
list of recordings."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def database_stats(conn: Connection) -> dict[str, Any]:
    one = (
        conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM sensors) AS sensors, "
                "(SELECT count(*) FROM recordings) AS recordings, "
                "(SELECT coalesce(sum(duration_s), 0) / 3600.0 FROM recordings) AS audio_hours, "
                "(SELECT count(*) FROM ingest_errors WHERE resolved_at IS NULL) AS unresolved_errors, "
                "pg_size_pretty(pg_database_size(current_database())) AS database_size, "
                "pg_database_size(current_database()) AS database_bytes"
            )
        )
        .one()
        ._asdict()
    )
    one["audio_hours"] = float(one["audio_hours"])
    one["spaces"] = space_summaries(conn)
    return one


def space_summaries(conn: Connection) -> list[dict[str, Any]]:
    """Each space: model, window, recordings and windows stored, its HNSW index and the
    index's measured recall@10 and guard (``soundscape.recall``; None: not measured)."""
    # Counts come from recording_spaces (kept in the ingest transaction), not count(*) over
    # millions of segments.
    rows = conn.execute(
        sa.text(
            "SELECT sp.name AS space, sp.model, sp.dimension, sp.window_s, sp.hop_s, "
            "count(rs.recording_id) AS recordings, coalesce(sum(rs.n_segments), 0) AS segments, "
            "sp.index_type, pg_size_pretty(coalesce(pg_relation_size(to_regclass("
            "'segments_space_' || sp.id || '_hnsw')), 0)) AS index_size, "
            "min(c.recall) AS recall_at_10, min(c.recall_worst_decile) AS recall_worst_decile, "
            "min(c.guard) AS recall_guard, min(c.checked_at) AS recall_checked_at "
            "FROM spaces sp LEFT JOIN recording_spaces rs ON rs.space_id = sp.id "
            "LEFT JOIN LATERAL ranger.index_recall(sp.id) c ON true "
            "GROUP BY sp.id ORDER BY sp.id"
        )
    )
    return [dict(r._mapping) for r in rows]


#: What ``list_recordings`` returns per recording.
RECORDING_COLUMNS = [
    "id", "sensor", "site", "quadrant", "path", "format", "duration_s", "started_local",
    "spaces", "n_segments",
]  # fmt: skip


def list_recordings(
    conn: Connection, sensor: str | None = None, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    """Stored recordings (all, or one sensor's) by id, with sensor, place, start, duration,
    spaces and number of windows (the ``ranger.recordings`` view); ``limit`` of them from
    ``offset`` (a page)."""
    rows = conn.execute(
        sa.text(
            "SELECT recording_id AS id, sensor, site, quadrant, path, format, duration_s, "
            "started_local, spaces, n_segments FROM ranger.recordings "
            "WHERE (CAST(:sensor AS text) IS NULL OR sensor = :sensor) ORDER BY recording_id "
            "LIMIT :limit OFFSET :offset"
        ),
        {"sensor": sensor, "limit": limit, "offset": max(0, int(offset))},
    )
    return [dict(r._mapping) for r in rows]
