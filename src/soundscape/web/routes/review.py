"""Reviewing: ``POST /annotations``, a reviewer's yes / no / unsure on a hit (a window or an
event of windows), ``POST /annotations/undo`` (take one's own verdict back), and what a hit
card shows of them (:func:`cards`: the label a verdict gets and the verdicts already given)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from soundscape import review
from soundscape.annotations import retract_verdict, review_hit
from soundscape.errors import AnnotationError
from soundscape.results import Hit
from soundscape.search import SearchRequest, SearchResult, search
from soundscape.web import pages
from soundscape.web.deps import (
    NeedsSignIn,
    checked_form,
    connect,
    error,
    local_path,
    session,
    wants_json,
)
from soundscape.web.security import CSRF_HEADER, Session

router = APIRouter()


# ------------------------------------------------------------------------------ cards
@dataclass
class Card:
    """What a hit card shows of reviewing: the label a verdict gets (``own``: the hit's class,
    concept or classifier label; else the page's fallback label, which the reviewer may
    change), the verdicts already given on the hit's span, and the signed-in reviewer's own
    verdict of that label (the pressed button)."""

    label: str
    own: bool
    verdicts: list[review.Verdict] = field(default_factory=list)
    mine: review.Verdict | None = None


@dataclass
class Cards:
    """The cards of a result page; for hits without a label of their own, the page's label
    field: ``fallback`` (``review.fallback_label``) and the ``known`` labels to pick from."""

    cards: list[Card] = field(default_factory=list)
    fallback: str = ""
    known: list[str] = field(default_factory=list)


def cards(conn: Connection, request: SearchRequest, hits: Sequence[Hit], user: str | None) -> Cards:
    """A card per hit; the label field's value and choices only when a hit needs them."""
    labelled = all(review.card_label(hit, request)[1] for hit in hits)
    known = [] if labelled else review.known_labels(conn)
    typed = request.text or request.said or ""
    fallback = review.pick_label(typed, known) if typed else ""
    out = []
    for hit, verdicts in zip(hits, review.verdicts_on(conn, hits)):
        label, own = review.card_label(hit, request, fallback)
        mine = next(
            (v for v in verdicts if v.author == user and v.source == "web" and v.label == label),
            None,
        )
        out.append(Card(label, own, verdicts, mine if user else None))
    return Cards(out, fallback, known)


def unreviewed(params: Any) -> bool:
    """Whether the page asks for unjudged hits only (``unreviewed=1``)."""
    return str(params.get("unreviewed") or "") in ("1", "on", "true", "yes")


def run_search(conn: Connection, request: SearchRequest, params: Any) -> SearchResult:
    """The search page's search: ``review.unreviewed_search`` when ``unreviewed=1``."""
    if unreviewed(params) and request.said is None:
        return review.unreviewed_search(conn, request)
    return search(conn, request)


# ------------------------------------------------------------------------------ writes
def _reviewer(request: Request) -> Session:
    reviewer = session(request)
    if reviewer.user is None or reviewer.writer is None:
        raise NeedsSignIn("sign in as a reviewer to say yes / no / unsure (/login)")
    return reviewer


def _span(form: Any, name: str) -> float | None:
    try:
        value: float | None = pages._number(form, name)
        return value
    except pages.BadParameter as exc:
        raise AnnotationError(str(exc)) from exc


@router.post("/annotations")
async def annotate(request: Request) -> Response:
    """A reviewer's yes / no / unsure on a hit (CSRF-checked; written as the reviewer's own
    database role, which may only insert annotations): ``segment_id`` (the window, or an
    event's best window), ``start_s``/``end_s`` (the event's span, when it is one), ``label``,
    ``verdict``, optional ``note``."""
    form = await checked_form(request)
    reviewer = _reviewer(request)
    try:
        segment_id = int(str(form.get("segment_id", "")))
    except ValueError:
        return error(request, "segment_id: a window id", 400)
    label, verdict = str(form.get("label", "")), str(form.get("verdict", ""))
    note = str(form.get("note") or "") or None
    pages.check_text("label", label, pages.MAX_LABEL_CHARS)
    pages.check_text("note", note or "", pages.MAX_NOTE_CHARS)

    def write() -> int:
        assert reviewer.writer is not None and reviewer.user is not None
        start, end = _span(form, "start_s"), _span(form, "end_s")
        with connect(request) as conn, reviewer.writer.begin() as writer:
            return review_hit(
                conn, writer, segment_id, label, verdict, author=reviewer.user, note=note,
                start_s=start, end_s=end,
            )  # fmt: skip

    try:
        annotation_id = await run_in_threadpool(write)
    except AnnotationError as exc:
        return error(request, str(exc), 400)
    except sa.exc.DBAPIError as exc:
        if "permission denied" in str(exc.orig):
            return error(request, "the database refused this write (not a reviewer)", 403)
        raise
    if wants_json(request) or request.headers.get(CSRF_HEADER):
        return JSONResponse(
            {
                "id": annotation_id,
                "verdict": verdict,
                "label": label.strip(),
                "author": reviewer.user,
            }  # fmt: skip
        )
    return RedirectResponse(local_path(form.get("next")), status_code=303)


@router.post("/annotations/undo")
async def undo(request: Request) -> Response:
    """Take back one of the signed-in reviewer's own web verdicts (``id``): the review
    queue's undo. Another person's annotation, or one not given on the web page, stays
    (404)."""
    form = await checked_form(request)
    reviewer = _reviewer(request)
    try:
        annotation_id = int(str(form.get("id", "")))
    except ValueError:
        return error(request, "id: an annotation id", 400)

    def take_back() -> bool:
        assert reviewer.writer is not None
        with reviewer.writer.begin() as writer:
            return retract_verdict(writer, annotation_id)

    if not await run_in_threadpool(take_back):
        return error(
            request,
            f"annotation {annotation_id} is not a verdict of yours: only the verdicts you gave "
            "on this page can be undone (give a new verdict to change another)",
            404,
        )
    if wants_json(request) or request.headers.get(CSRF_HEADER):
        return JSONResponse({"id": annotation_id, "undone": True})
    return RedirectResponse(local_path(form.get("next")), status_code=303)
