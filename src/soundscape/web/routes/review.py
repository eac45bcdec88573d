"""Reviewing: ``POST /annotations``, a reviewer's yes / no / unsure on a window."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from soundscape.annotations import review_hit
from soundscape.errors import AnnotationError
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
from soundscape.web.security import CSRF_HEADER

router = APIRouter()


@router.post("/annotations")
async def annotate(request: Request) -> Response:
    """A reviewer's yes / no / unsure on a window (CSRF-checked; written as the reviewer's
    own database role, which may only insert annotations)."""
    form = await checked_form(request)
    reviewer = session(request)
    if reviewer.user is None or reviewer.writer is None:
        raise NeedsSignIn("sign in as a reviewer to say yes / no / unsure (/login)")
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
        with connect(request) as conn, reviewer.writer.begin() as writer:
            return review_hit(
                conn, writer, segment_id, label, verdict, author=reviewer.user, note=note
            )

    try:
        annotation_id = await run_in_threadpool(write)
    except AnnotationError as exc:
        return error(request, str(exc), 400)
    except sa.exc.DBAPIError as exc:
        if "permission denied" in str(exc.orig):
            return error(request, "the database refused this write (not a reviewer)", 403)
        raise
    if wants_json(request) or request.headers.get(CSRF_HEADER):
        return JSONResponse({"id": annotation_id, "verdict": verdict, "label": label})
    return RedirectResponse(local_path(form.get("next")), status_code=303)
