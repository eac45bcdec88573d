"""The overview pages: ``/activity`` (a heat map of detections per hour and day, or of an
acoustic index's median: ``kind=index``),
``/sensors`` (the map and the recordings per sensor) and ``/jobs`` (the queue and its
failures)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Connection

from soundscape.embedders.indices import Indices
from soundscape.errors import SoundscapeError
from soundscape.output import plain_row
from soundscape.plots import indices_medians
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


# ------------------------------------------------------------------ heatmap: coverage, links
#: most detections a heat map cell's search asks for (its ``limit``)
CELL_SEARCH_LIMIT = 500


def coverage(
    conn: Connection, by: str, date_from: date | None, date_to: date | None
) -> dict[str, set[tuple[date, int]]]:
    """The (local day, local hour) cells each group has audio in: every hour that a
    recording's span ``[started_at, started_at + duration)`` overlaps, in its sensor's local
    time (recordings without a start time are left out)."""
    if by not in pages.ACTIVITY_GROUPS:
        raise pages.BadParameter(f"by: one of {', '.join(pages.ACTIVITY_GROUPS)}")
    rows = conn.execute(
        sa.text(
            f"SELECT DISTINCT coalesce(s.{by}, '(none)') AS grp, h::date AS day, "
            "extract(hour FROM h)::integer AS hour "
            "FROM recordings r JOIN sensors s ON s.id = r.sensor_id "
            "CROSS JOIN LATERAL generate_series("
            "  date_trunc('hour', r.started_at AT TIME ZONE s.timezone), "
            "  (r.started_at + make_interval(secs => greatest(r.duration_s, 0.001) - 0.001)) "
            "    AT TIME ZONE s.timezone, interval '1 hour') AS h "
            "WHERE r.started_at IS NOT NULL "
            "AND (CAST(:d0 AS date) IS NULL OR h >= CAST(:d0 AS date)) "
            "AND (CAST(:d1 AS date) IS NULL OR h < CAST(:d1 AS date) + 1)"
        ),
        {"d0": date_from, "d1": date_to},
    )
    out: dict[str, set[tuple[date, int]]] = {}
    for r in rows:
        out.setdefault(str(r.grp), set()).add((r.day, int(r.hour)))
    return out


@dataclass
class Covered:
    """A heat map with where audio was recorded: ``cells[group]`` the (day, hour) with audio;
    the groups and days of the map widened to those with audio and nothing detected."""

    cells: dict[str, set[tuple[date, int]]]

    def recorded(self, group: str, day: date, hour: int) -> bool:
        return (day, hour) in self.cells.get(group, ())


def with_coverage(heatmap: Any, cells: dict[str, set[tuple[date, int]]]) -> Covered:
    """Widen ``heatmap`` (pages.Heatmap) to the groups and days that have audio."""
    days = set(heatmap.days) | {d for c in cells.values() for d, _ in c}
    if days:
        first, last = min(days), max(days)
        heatmap.days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    heatmap.groups = sorted(set(heatmap.groups) | set(cells))
    return Covered(cells)


def cell_search(kind: str, name: str, label: str | None, by: str, group: str, day: date,
                hour: int, min_score: float, n: int) -> str:  # fmt: skip
    """The search page's URL for a heat map cell: the same concept, classifier label or
    species, in that group, on that local day, in that local hour."""
    params: list[tuple[str, str]] = []
    if kind == "concept":
        params.append(("concept", name))
    elif kind == "classifier":
        params += [("classifier", name), ("label", label or "")]
    else:
        params += [("q", name), ("min_score", f"{min_score:g}")]
    if group != "(none)":
        params.append((by, group))
    params += [
        ("from", day.isoformat()),
        ("to", day.isoformat()),
        ("time", f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"),
        ("limit", str(max(pages.DEFAULT_LIMIT, min(n, CELL_SEARCH_LIMIT)))),
    ]
    return "/search?" + urlencode(params)


def legend(vmax: int, steps: int = 5) -> list[tuple[int, str]]:
    """Counts and their colours (``pages.colour``) for the legend: 1 to ``vmax``."""
    if vmax <= 0:
        return []
    counts = sorted({max(1, round(vmax * i / (steps - 1))) for i in range(steps)})
    return [(n, pages.colour(n, vmax)) for n in counts]


@router.get("/activity")
def activity(request: Request) -> Response:
    viewer(request)
    q = request.query_params
    name = (q.get("name") or "").strip()
    kind, by = q.get("kind") or "concept", q.get("by") or "site"
    label = (q.get("label") or "").strip() or None
    min_score = pages._number(q, "min_score")
    min_score = 0.5 if min_score is None else min_score
    with connect(request) as conn:
        choices = pages.choices(conn)
        heatmap: pages.Heatmap | None = None
        covered = None
        if name:
            f = pages.filters_from({k: q.get(k) for k in ("from", "to")})
        if name and kind == "index":
            heatmap = index_heatmap(conn, name, by, f)
        elif name:
            heatmap = pages.activity(conn, kind, name, label, by, f.date_from, f.date_to, min_score)
            covered = with_coverage(heatmap, coverage(conn, by, f.date_from, f.date_to))

    def link(group: str, day: date, hour: int, n: int) -> str:
        return cell_search(kind, name, label, by, group, day, hour, min_score, n)

    return render(
        request, "activity.html", choices=choices, heatmap=heatmap, params=q, kind=kind, by=by,
        indices=Indices.NAMES, covered=covered, link=link,
        legend=legend(heatmap.vmax if heatmap and covered else 0),
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
