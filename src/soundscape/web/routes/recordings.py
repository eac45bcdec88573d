"""Recordings: ``/recordings`` (the list, optionally of one sensor) and one recording's page
(its plot and audio, detections, anomalies, annotations and transcript)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from soundscape.output import plain_row
from soundscape.stats import list_recordings
from soundscape.web import media, pages
from soundscape.web.deps import connect, render, viewer, wants_json

router = APIRouter()


@router.get("/recordings")
def recordings(request: Request, sensor: str | None = None) -> Response:
    viewer(request)
    with connect(request) as conn:
        rows = list_recordings(conn, sensor or None, limit=1000)
    if wants_json(request):
        return JSONResponse([plain_row(r, list(r)) for r in rows])
    return render(request, "recordings.html", rows=rows, sensor=sensor)


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
