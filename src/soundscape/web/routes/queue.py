"""The review queue: ``GET /review`` (pick a classifier label, a concept or a search; then its
clips one at a time, judged by keyboard: static/review.js), ``GET /review/queue`` (the same
clips as JSON: the next page of a queue), ``POST /review/retrain`` (train the queue's
classifier again and show its cross-validated precision and recall) and ``POST /review/train``
(a new classifier from the verdicts given: from a search to a classifier without a terminal).

The clips are ``soundscape.review.queue_hits``: what ``soundscape review`` picks (top, margin,
random for a classifier label; a concept's or a search's best unjudged windows). A verdict is
``POST /annotations`` and an undo ``POST /annotations/undo`` (routes/review.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from soundscape import classifiers, review
from soundscape.annotations import label_summary
from soundscape.classifiers import STRATEGIES, Classifier
from soundscape.errors import SoundscapeError
from soundscape.results import Hit
from soundscape.web import pages
from soundscape.web.deps import (
    NeedsSignIn,
    checked_form,
    connect,
    database,
    error,
    local_path,
    render,
    session,
    viewer,
    wants_json,
)
from soundscape.web.security import CSRF_HEADER

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
        trainable = [r["label"] for r in label_summary(conn) if r["yes"]]
    try:
        wanted = queue_params(params)
        clips, label = _queue(request, wanted) if wanted else ([], "")
        model = None
        if wanted and wanted["kind"] == "classifier":
            with connect(request) as conn:
                clf = classifiers.get_classifier(conn, wanted["name"])
                model = {"version": clf.version, **clf.label(label).metrics}
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
        model=model,
        trainable=trainable,
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


def _trained(request: Request, form: Any, clf: Classifier) -> Response:
    """A training's answer: its labels' rows (precision, recall, ...) as JSON, or back to the
    queue of its first label (which shows them)."""
    if wants_json(request) or request.headers.get(CSRF_HEADER):
        return JSONResponse({"classifier": clf.name, "labels": clf.rows()})
    picked = f"{clf.name}|{clf.labels[0].label}"
    back = local_path(form.get("next") or "/review?" + urlencode({"classifier_label": picked}))
    return RedirectResponse(back, status_code=303)


async def _form(request: Request) -> Any:
    """The CSRF-checked form of a signed-in reviewer (training writes)."""
    form = await checked_form(request)
    if session(request).user is None:
        raise NeedsSignIn("sign in as a reviewer to train a classifier (/login)")
    return form


async def _train(
    request: Request, form: Any, train: Callable[[Connection], Classifier]
) -> Response:
    def run() -> Classifier:
        with database(request).engine.begin() as conn:
            return train(conn)

    try:
        clf = await run_in_threadpool(run)
    except SoundscapeError as exc:
        return error(request, str(exc), 400)
    return _trained(request, form, clf)


@router.post("/review/retrain")
async def retrain(request: Request) -> Response:
    """Train ``classifier`` again on today's annotations (a signed-in reviewer, CSRF-checked):
    its next version's labels with their cross-validated precision and recall (JSON), or
    back to ``next``."""
    form = await _form(request)
    name = str(form.get("classifier") or "").strip()
    if not name:
        return error(request, "classifier: the name of the classifier to train again", 400)
    return await _train(request, form, lambda conn: review.retrain(conn, name))


@router.post("/review/train")
async def train_new(request: Request) -> Response:
    """Train a classifier ``name`` on the verdicts of ``label`` (repeatable) in ``space``
    (``classifiers.train`` with its defaults: weak negatives, a 0.9 target precision); then as
    ``retrain``. The same name again is its next version."""
    form = await _form(request)
    name = str(form.get("name") or "").strip()
    labels = [str(x).strip() for x in form.getlist("label") if str(x).strip()]
    space = str(form.get("space") or "").strip()
    if not name or not labels or not space:
        return error(request, "name, label and space: what to call it, what it finds, where", 400)
    return await _train(request, form, lambda conn: classifiers.train(conn, name, space, labels))
