"""The overview pages: ``/activity`` (a heat map of detections per hour and day),
``/sensors`` (the map and the recordings per sensor) and ``/jobs`` (the queue and its
failures)."""

from __future__ import annotations

from datetime import date
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from soundscape.output import plain_row
from soundscape.sensors import list_sensors
from soundscape.stats import database_stats
from soundscape.web import pages
from soundscape.web.deps import connect, render, viewer, wants_json

router = APIRouter()


@router.get("/activity")
def activity(request: Request) -> Response:
    viewer(request)
    q = request.query_params
    name = (q.get("name") or "").strip()
    kind, by = q.get("kind") or "concept", q.get("by") or "site"
    with connect(request) as conn:
        choices = pages.choices(conn)
        heatmap = None
        if name:
            f = pages.filters_from({k: q.get(k) for k in ("from", "to")})
            min_score = pages._number(q, "min_score")
            heatmap = pages.activity(
                conn, kind, name, (q.get("label") or "").strip() or None, by,
                f.date_from, f.date_to, 0.5 if min_score is None else min_score,
            )  # fmt: skip

    def cell_query(group: str, day: date, hour: int) -> str:
        """The search for one cell of the heat map: that hour of that day, in that group."""
        keys: list[tuple[str, str]] = [] if group == "(none)" else [(by, group)]
        label = (q.get("label") or "").strip()
        if kind == "concept":
            keys.append(("concept", name))
        elif kind == "classifier":
            keys += [("classifier", name), ("label", label)]
        else:
            keys += [("q", name), ("min_score", q.get("min_score") or "0.5")]
        span = f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"
        keys += [("from", day.isoformat()), ("to", day.isoformat()), ("time", span)]
        return urlencode(keys)

    return render(
        request, "activity.html", choices=choices, heatmap=heatmap, params=q, kind=kind, by=by,
        cell_query=cell_query,
    )  # fmt: skip


@router.get("/sensors")
def sensors(request: Request) -> Response:
    viewer(request)
    with connect(request) as conn:
        found = list_sensors(conn)
        counts = pages.recordings_per_sensor(conn)
    if wants_json(request):
        return JSONResponse([s.as_dict() for s in found])
    return render(
        request, "sensors.html", sensors=found, counts=counts, map=pages.sensor_map(found)
    )


@router.get("/jobs")
def jobs(request: Request) -> Response:
    viewer(request)
    with connect(request) as conn:
        overview = pages.jobs_overview(conn)
        stats = database_stats(conn)
    if wants_json(request):
        return JSONResponse({k: [plain_row(r, list(r)) for r in v] for k, v in overview.items()})
    return render(request, "jobs.html", db_stats=stats, **overview)
