"""The review queue: ``GET /review`` (pick a classifier label, a concept or a search; then its
clips one at a time, judged by keyboard: static/review.js), ``GET /review/queue`` (the same
clips as JSON: the next page of a queue) and ``POST /review/retrain`` (train the queue's
classifier again and show its cross-validated precision and recall).

The clips are ``soundscape.review.queue_hits``: what ``soundscape review`` picks (top, margin,
random for a classifier label; a concept's or a search's best unjudged windows). A verdict is
``POST /annotations`` and an undo ``POST /annotations/undo`` (routes/review.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from soundscape import review
from soundscape.classifiers import STRATEGIES
from soundscape.errors import SoundscapeError
from soundscape.results import Hit
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

#: How many clips a queue page holds unless ``n`` says otherwise.
DEFAULT_QUEUE = 40


def queue_params(params: Any) -> dict[str, Any] | None:
    """What a queue follows, from the page's parameters: ``classifier_label`` ("name|label",
    the form's select), ``concept`` or ``q`` (a search); ``strategy``, ``n``, ``seed`` and the
    search filters. None: nothing picked yet (the form)."""
    picked = (params.get("classifier_label") or "").strip()
    concept = (params.get("concept") or "").strip()
    text = (params.get("q") or "").strip()
    given = [x for x in (picked, concept, text) if x]
    if not given:
        return None
    if len(given) > 1:
        raise pages.BadParameter("pick one: a classifier label, a concept or a search")
    strategy = (params.get("strategy") or "margin").strip().lower()
    if strategy not in STRATEGIES:
        raise pages.BadParameter(f"strategy: one of {', '.join(STRATEGIES)}")
    n = pages._number(params, "n", int) or DEFAULT_QUEUE
    if not 1 <= n <= review.MAX_QUEUE:
        raise pages.BadParameter(f"n: between 1 and {review.MAX_QUEUE}, not {n}")
    seed = pages._number(params, "seed", int) or 0
    out: dict[str, Any] = {"strategy": strategy, "n": n, "seed": seed, "label": None}
    if picked:
        name, _, label = picked.partition("|")
        out.update(kind="classifier", name=name, label=label or None)
    elif concept:
        out.update(kind="concept", name=concept, strategy="top")
    else:
        out.update(kind="search", name=text, strategy="top")
    out["filters"] = pages.filters_from(params)
    return out


def clip(hit: Hit) -> dict[str, Any]:
    """A queued clip as review.js plays it."""
    local = hit.local
    return {
        "segment_id": hit.segment_id,
        "recording_id": hit.recording_id,
        "start_s": float(hit.start_s),
        "end_s": float(hit.end_s),
        "label": hit.label or "",
        "score": round(float(hit.score), 4),
        "method": hit.method,
        "sensor": hit.sensor,
        "site": hit.site,
        "file": hit.path.replace("\\", "/").rsplit("/", 1)[-1],
        "local": local.isoformat(sep=" ", timespec="seconds") if local else None,
        "audio": f"/clips/{hit.segment_id}.wav",
        "image": f"/clips/{hit.segment_id}.png",
    }


def _queue(request: Request, wanted: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    with connect(request) as conn:
        hits, label = review.queue_hits(
            conn, wanted["kind"], wanted["name"], label=wanted["label"],
            strategy=wanted["strategy"], n=wanted["n"], filters=wanted["filters"],
            seed=wanted["seed"],
        )  # fmt: skip
    return [clip(h) for h in hits], label


@router.get("/review")
def review_page(request: Request) -> Response:
    """The queue's form and, once something is picked, its clips (all in the page: judging
    them needs no further page load)."""
    viewer(request)
    params = request.query_params
    with connect(request) as conn:
        choices = pages.choices(conn)
    try:
        wanted = queue_params(params)
        clips, label = _queue(request, wanted) if wanted else ([], "")
    except SoundscapeError as exc:  # a bad parameter, an unknown concept or classifier
        return error(request, str(exc), 400)
    if wants_json(request):
        return JSONResponse({"label": label, "clips": clips})
    return render(
        request,
        "review_queue.html",
        params=params,
        choices=choices,
        strategies=STRATEGIES,
        wanted=wanted,
        clips=clips,
        label=label,
    )


@router.get("/review/queue")
def review_queue(request: Request) -> Response:
    """The clips of a queue as JSON (what ``/review`` holds; review.js asks for the next
    page with it): ``{"label": ..., "clips": [...]}``."""
    viewer(request)
    try:
        wanted = queue_params(request.query_params)
        if wanted is None:
            raise pages.BadParameter("give classifier_label, concept or q")
        clips, label = _queue(request, wanted)
    except SoundscapeError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse({"label": label, "clips": clips})


@router.post("/review/retrain")
async def retrain(request: Request) -> Response:
    """Train ``classifier`` again on today's annotations (a signed-in reviewer, CSRF-checked);
    answers its new version's labels with their cross-validated precision and recall."""
    form = await checked_form(request)
    if session(request).user is None:
        raise NeedsSignIn("sign in as a reviewer to retrain a classifier (/login)")
    name = str(form.get("classifier") or "").strip()
    if not name:
        return error(request, "classifier: the name of the classifier to train again", 400)

    def run() -> list[dict[str, Any]]:
        with database(request).engine.begin() as conn:
            return review.retrain(conn, name).rows()

    try:
        rows = await run_in_threadpool(run)
    except SoundscapeError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse({"classifier": name, "labels": rows})
