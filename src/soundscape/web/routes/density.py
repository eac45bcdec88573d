"""The call-density page: ``GET /density`` lists the samples and shows one's estimate per site
(a table, and a plot per site of its days with their 95% intervals) and the windows still to
judge; ``POST /density`` draws a new sample (a signed-in reviewer, CSRF-checked). The numbers
are ``ranger.call_density``'s (soundscape.density)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from soundscape import density as dn
from soundscape.errors import SoundscapeError
from soundscape.output import plain_row
from soundscape.web import pages
from soundscape.web.deps import (
    NeedsSignIn,
    checked_form,
    connect,
    database,
    error,
    render,
    session,
    viewer,
    wants_json,
)

router = APIRouter()

#: windows of the sample shown to judge at a time
TO_JUDGE = 12


@dataclass
class SitePlot:
    """One site's days as points with whiskers (SVG coordinates computed here)."""

    site: str
    overall: dict[str, Any]
    width: int = 520
    height: int = 180
    top: float = 1.0
    points: list[dict[str, Any]] = field(default_factory=list)

    def y(self, value: float) -> float:
        return round(10 + (self.height - 40) * (1 - value / self.top), 1)


def site_plots(by_site: list[dict[str, Any]], by_day: list[dict[str, Any]]) -> list[SitePlot]:
    """A plot per site: each day's density and interval, the site's own as a band."""
    top = max([0.05, *(r["high"] for r in by_site), *(r["high"] for r in by_day)])
    top = min(1.0, round(top * 1.1 + 0.005, 2))
    plots = []
    for overall in by_site:
        days = sorted(
            (r for r in by_day if r["site"] == overall["site"]),
            key=lambda r: r["day"] or date.min,
        )
        plot = SitePlot(str(overall["site"]), overall, top=top)
        step = (plot.width - 60) / max(1, len(days))
        for k, r in enumerate(days):
            plot.points.append(
                {**r, "x": round(50 + step * (k + 0.5), 1), "label": str(r["day"] or "no date")}
            )
        plots.append(plot)
    return plots


@router.get("/density")
def density_page(request: Request) -> Response:
    viewer(request)
    name = (request.query_params.get("sample") or "").strip()
    by_site: list[dict[str, Any]] = []
    by_day: list[dict[str, Any]] = []
    todo: list[Any] = []
    with connect(request) as conn:
        samples = dn.list_samples(conn)
        choices = pages.choices(conn)
        picked = None
        if name:
            try:
                picked = dn.get_sample(conn, name)
            except SoundscapeError as exc:
                return error(request, str(exc), 404)
            by_site = dn.estimate(conn, name, "site")
            by_day = dn.estimate(conn, name, "site_day")
            todo = dn.sample_windows(conn, name, unreviewed=True)
    if wants_json(request):
        if picked is None:
            return JSONResponse([plain_row(s, list(s)) for s in samples])
        return JSONResponse(
            {
                "sample": plain_row(picked, list(picked)),
                "sites": [plain_row(r, dn.ESTIMATE_COLUMNS) for r in by_site],
                "days": [plain_row(r, dn.ESTIMATE_COLUMNS) for r in by_day],
                "unreviewed": len(todo),
            }
        )
    context: dict[str, Any] = {"samples": samples, "choices": choices, "picked": picked}
    if picked is not None:
        context.update(
            by_site=by_site,
            plots=site_plots(by_site, by_day),
            todo=todo[:TO_JUDGE],
            n_todo=len(todo),
            here=f"/density?{urlencode({'sample': name})}",
        )
    return render(request, "density.html", **context)


@router.post("/density")
async def density_draw(request: Request) -> Response:
    """Draw a sample (a signed-in reviewer): by a concept or a classifier label, per site and
    score bin, under the form's sites and dates."""
    form = await checked_form(request)
    if session(request).user is None:
        raise NeedsSignIn("sign in as a reviewer to draw a call-density sample (/login)")
    name = str(form.get("name") or "").strip()
    kind, _, rest = str(form.get("what") or "").partition(":")
    try:
        per_bin = int(str(form.get("per_bin") or "10"))
        seed = int(str(form.get("seed") or "0"))
    except ValueError:
        return error(request, "windows per bin and seed: whole numbers", 400)
    if not 1 <= per_bin <= 200:
        return error(request, "windows per bin: 1 to 200", 400)
    try:
        filters = pages.filters_from(form)
    except pages.BadParameter as exc:
        return error(request, str(exc), 400)
    args: dict[str, Any] = {"filters": filters, "per_bin": per_bin, "seed": seed}
    if kind == "concept" and rest:
        args["concept"] = rest
    elif kind == "classifier" and "|" in rest:
        args["classifier"], args["label"] = rest.split("|", 1)
    else:
        return error(request, "what to sample: pick a concept or a classifier label", 400)

    def draw() -> None:
        with database(request).engine.begin() as conn:
            dn.draw_sample(conn, name, **args)

    try:
        await run_in_threadpool(draw)
    except SoundscapeError as exc:
        return error(request, str(exc), 400)
    return RedirectResponse(f"/density?{urlencode({'sample': name})}", status_code=303)
