"""Files that failed to ingest: reading the ``ranger.ingest_errors`` view (``soundscape errors
list``). Failures are recorded by ingest, backfill and the job queue (a job that failed for
good); a later successful ingest of the same file marks them resolved."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.errors import BadOption

COLUMNS = [
    "error_id", "occurred_at", "sensor", "path", "error", "models", "resolved_at", "resolved",
    "site", "quadrant", "sha256",
]  # fmt: skip

#: what ``list_errors`` returns per file: ``COLUMNS`` and how many times the file failed
LIST_COLUMNS = [*COLUMNS[:7], "attempts", *COLUMNS[7:]]

_AGO = re.compile(r"(\d{1,6})\s*(h|d|w)")


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """A ``--since`` value as an instant: ``24h``, ``7d``, ``2w`` ago, a date (midnight UTC)
    or an ISO timestamp (UTC unless it has an offset). ``BadOption`` if it is none of them."""
    now = now or datetime.now(timezone.utc)
    t = text.strip().lower()
    if m := _AGO.fullmatch(t):
        hours = int(m.group(1)) * {"h": 1, "d": 24, "w": 168}[m.group(2)]
        return now - timedelta(hours=hours)
    try:
        return datetime.combine(date.fromisoformat(t), time(), timezone.utc)
    except ValueError:
        pass
    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadOption(
            f"{text!r} is neither a time ago (24h, 7d, 2w), a date (YYYY-MM-DD) nor an ISO "
            "timestamp",
            "--since",
        ) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def list_errors(
    conn: Connection,
    *,
    unresolved: bool = False,
    since: datetime | None = None,
    sensor: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Failed files, newest first, one row per file (path): its latest failure, with
    ``attempts`` saying how many times it failed (a retried file was listed once per retry).
    Optionally only unresolved ones, since an instant, of a sensor."""
    sql = (
        f"SELECT {', '.join(COLUMNS)}, attempts FROM ("
        f"SELECT DISTINCT ON (path) {', '.join(COLUMNS)}, "
        "count(*) OVER (PARTITION BY path) AS attempts FROM ranger.ingest_errors "
        "WHERE (NOT CAST(:unresolved AS boolean) OR NOT resolved) "
        "AND (CAST(:since AS timestamptz) IS NULL OR occurred_at >= CAST(:since AS timestamptz)) "
        "AND (CAST(:sensor AS text) IS NULL OR sensor = CAST(:sensor AS text)) "
        "ORDER BY path, occurred_at DESC, error_id DESC) latest "
        "ORDER BY occurred_at DESC, error_id DESC"
    )
    params: dict[str, Any] = {"unresolved": unresolved, "since": since, "sensor": sensor}
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = int(limit)
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]
