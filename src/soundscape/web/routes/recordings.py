"""Recordings: ``/recordings`` (the list, a page at a time, optionally of one sensor) and one recording's page
(its plot and audio, detections, anomalies, annotations and transcript)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from soundscape.output import plain_row
from soundscape.sensors import list_sensors
from soundscape.stats import list_recordings
from soundscape.web import media, pages
from soundscape.web.deps import connect, render, viewer, wants_json

router = APIRouter()


#: recordings per page of ``/recordings``
PAGE_SIZE = 50


@router.get("/recordings")
def recordings(request: Request, sensor: str | None = None, page: str | None = None) -> Response:
    """The recordings, PAGE_SIZE a page (``?page=2``), of one sensor (``?sensor=``) or all."""
    viewer(request)
    number = int(page) if page and page.isdigit() and 0 < int(page) < 10**6 else 1
    with connect(request) as conn:
        rows = list_recordings(
            conn, sensor or None, limit=PAGE_SIZE + 1, offset=(number - 1) * PAGE_SIZE
        )
        sensors = [s.name for s in list_sensors(conn)]
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    if wants_json(request):
        return JSONResponse([plain_row(r, list(r)) for r in rows])

    def link(**change: Any) -> str:
        keys = {"sensor": sensor or None, "page": number, **change}
        return "/recordings?" + urlencode({k: v for k, v in keys.items() if v not in (None, 1)})

    return render(
        request, "recordings.html", rows=rows, sensor=sensor, sensors=sensors, page=number,
        first=(number - 1) * PAGE_SIZE + 1, more=more, link=link,
    )  # fmt: skip


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
