"""The overview pages: ``/activity`` (a heat map of detections per hour and day, or of an
acoustic index's median: ``kind=index``),
``/sensors`` (the map and the recordings per sensor) and ``/jobs`` (the queue and its
failures)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Connection

from soundscape.embedders.indices import Indices
from soundscape.errors import SoundscapeError
from soundscape.output import plain_row
from soundscape.queries import Filters
from soundscape.sensors import list_sensors
from soundscape.stats import database_stats
from soundscape.web import pages
from soundscape.web.deps import connect, render, viewer, wants_json

router = APIRouter()

#: the heat map's colour steps for an index (the colour of a count out of ``INDEX_STEPS``)
INDEX_STEPS = 100


@dataclass
class IndexHeatmap(pages.Heatmap):
    """An acoustic index's median per group, local day and hour: ``cell`` is its colour step
    (1..INDEX_STEPS between the 2nd and 98th percentile of the cells), ``label`` the value."""

    medians: dict[str, dict[tuple[date, int], float]] = field(default_factory=dict)
    low: float = 0.0
    high: float = 0.0

    def cell(self, group: str, day: date, hour: int) -> int:
        v = self.medians.get(group, {}).get((day, hour))
        if v is None:
            return 0
        t = (v - self.low) / (self.high - self.low) if self.high > self.low else 0.5
        return 1 + round((INDEX_STEPS - 1) * min(1.0, max(0.0, t)))

    def label(self, group: str, day: date, hour: int) -> str:
        v = self.medians.get(group, {}).get((day, hour))
        return "no windows" if v is None else f"{self.title} {v:.4g}"


def index_heatmap(conn: Connection, name: str, by: str, f: Filters) -> IndexHeatmap:
    """The hour x day grid of an acoustic index (``plots.indices_medians``: the same medians
    ``plot indices`` draws), per group."""
    import numpy as np

    from soundscape.plots import indices_medians

    index = name.lower()
    if index not in Indices.NAMES:
        raise pages.BadParameter(f"name: an index, one of {', '.join(Indices.NAMES)}")
    if by not in pages.ACTIVITY_GROUPS:
        raise pages.BadParameter(f"by: one of {', '.join(pages.ACTIVITY_GROUPS)}")
    try:
        medians = indices_medians(conn, index, by, f)
    except SoundscapeError as exc:
        return IndexHeatmap(index, [], [], note=str(exc))
    rows = [(g, d, h, 1) for g, cells in medians.items() for d, h in cells]
    grid = pages._grid(index, rows)
    values = [v for cells in medians.values() for v in cells.values()]
    low, high = (float(v) for v in np.percentile(values, [2, 98])) if values else (0.0, 0.0)
    note = f"median per hour of {grid.total} hour(s); colours {low:.4g} (dark) to {high:.4g}"
    return IndexHeatmap(
        index, grid.groups, grid.days, {}, grid.total, INDEX_STEPS, note, medians, low, high
    )


@router.get("/activity")
def activity(request: Request) -> Response:
    viewer(request)
    q = request.query_params
    name = (q.get("name") or "").strip()
    kind, by = q.get("kind") or "concept", q.get("by") or "site"
    with connect(request) as conn:
        choices = pages.choices(conn)
        heatmap: pages.Heatmap | None = None
        if name:
            f = pages.filters_from({k: q.get(k) for k in ("from", "to")})
        if name and kind == "index":
            heatmap = index_heatmap(conn, name, by, f)
        elif name:
            min_score = pages._number(q, "min_score")
            heatmap = pages.activity(
                conn, kind, name, (q.get("label") or "").strip() or None, by,
                f.date_from, f.date_to, 0.5 if min_score is None else min_score,
            )  # fmt: skip
    return render(
        request, "activity.html", choices=choices, heatmap=heatmap, params=q, kind=kind, by=by,
        indices=Indices.NAMES,
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
