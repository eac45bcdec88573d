"""Recordings: ``/recordings`` (the list, a page at a time, filtered by sensor, site and local
dates) and one recording's page (its plot and audio, detections, anomalies, annotations and
transcript)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Connection

from soundscape.output import plain_row
from soundscape.web import media, pages
from soundscape.web.deps import connect, render, viewer, wants_json

router = APIRouter()

#: recordings per page of ``/recordings``
PER_PAGE = 50
MAX_PER_PAGE = 1000


@dataclass
class RecordingList:
    """One page of the recordings that pass the filters, and what the filters offer."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    sensors: list[str]
    sites: list[str]


def _date(params: Any, name: str) -> date | None:
    text = (params.get(name) or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise pages.BadParameter(f"{name}: {text!r} is not a date like 2024-05-01") from exc


def recording_list(conn: Connection, params: Any) -> RecordingList:
    """Page ``page`` (from 1, ``n`` per page, default ``PER_PAGE``) of the recordings of the ``sensor``s and ``site``s (repeatable;
    none: all) that started between the local dates ``from`` and ``to`` (inclusive), by id:
    LIMIT/OFFSET on the id order, the count alongside."""
    sensors = pages._many(params, "sensor")
    sites = pages._many(params, "site")
    date_from, date_to = _date(params, "from"), _date(params, "to")
    page = pages._number(params, "page", int)
    page = 1 if page is None else page
    if page < 1:
        raise pages.BadParameter(f"page: from 1, not {page}")
    per_page = pages._number(params, "n", int)
    per_page = PER_PAGE if per_page is None else per_page
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise pages.BadParameter(f"n: recordings per page, 1 to {MAX_PER_PAGE}, not {per_page}")
    where = (
        "WHERE (CAST(:sensors AS text[]) IS NULL OR sensor = ANY(CAST(:sensors AS text[]))) "
        "AND (CAST(:sites AS text[]) IS NULL OR site = ANY(CAST(:sites AS text[]))) "
        "AND (CAST(:d0 AS date) IS NULL OR started_local >= CAST(:d0 AS date)) "
        "AND (CAST(:d1 AS date) IS NULL OR started_local < CAST(:d1 AS date) + 1) "
    )
    args = {"sensors": sensors, "sites": sites, "d0": date_from, "d1": date_to}
    total = int(conn.execute(sa.text(f"SELECT count(*) FROM ranger.recordings {where}"), args)
                .scalar_one())  # fmt: skip
    rows = conn.execute(
        sa.text(
            "SELECT recording_id AS id, sensor, site, quadrant, path, format, duration_s, "
            f"started_local, spaces, n_segments FROM ranger.recordings {where}"
            "ORDER BY recording_id LIMIT :n OFFSET :skip"
        ),
        {**args, "n": per_page, "skip": (page - 1) * per_page},
    )
    offered = conn.execute(
        sa.text("SELECT name, site FROM sensors ORDER BY name")
    ).all()  # fmt: skip
    return RecordingList(
        [dict(r._mapping) for r in rows],
        total,
        page,
        max(1, -(-total // per_page)),
        [str(r.name) for r in offered],
        sorted({str(r.site) for r in offered if r.site}),
    )


@router.get("/recordings")
def recordings(request: Request) -> Response:
    viewer(request)
    params = request.query_params
    with connect(request) as conn:
        listed = recording_list(conn, params)
    if wants_json(request):
        return JSONResponse([plain_row(r, list(r)) for r in listed.rows])
    # the query string without ``page``, for the pager's links
    keep = urlencode([(k, v) for k, v in params.multi_items() if k != "page"])
    return render(request, "recordings.html", listed=listed, params=params, keep=keep,
                  sensor=params.get("sensor"))  # fmt: skip


@router.get("/recordings/{recording_id}")
def recording(request: Request, recording_id: int) -> Response:
    viewer(request)
    with connect(request) as conn:
        row = media.recording_row(conn, recording_id)  # NotFound (404) first
        context = {
            "rec": row,
            "detections": pages.detections(conn, recording_id),
            "anomalies": pages.anomalies(conn, recording_id),
            "annotations": pages.recording_annotations(conn, recording_id),
            "transcript": pages.transcript(conn, recording_id),
        }
    return render(request, "recording.html", **context)
