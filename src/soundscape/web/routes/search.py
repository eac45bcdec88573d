"""The search page: ``GET /search`` runs a query from its parameters (the CLI's ``search``
through ``pages.request_from``), ``POST /search`` searches by an uploaded audio example
(CSRF-checked, size-limited by the app's body limit, at most ``pages.MAX_EXAMPLE_S`` decoded).
Both answer HTML, or JSON when asked (``?format=json`` or ``Accept: application/json``)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from soundscape.audio import probe
from soundscape.errors import InvalidRequest, SoundscapeError
from soundscape.output import plain_row
from soundscape.results import hit_rows
from soundscape.sentence import merge, understand
from soundscape.speech import said_rows
from soundscape.web import pages
from soundscape.web.deps import checked_form, connect, error, render, session, viewer, wants_json
from soundscape.web.routes import review

router = APIRouter()

#: Audio formats an uploaded example may have (what ingest decodes).
UPLOAD_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
#: The parameters a "more like this" link keeps (the filters, not the query).
FILTER_KEYS = ("sensor", "site", "quadrant", "time", "from", "to", "sun", "events", "limit")


def search_response(request: Request, params: Any, audio: str | None, upload: str) -> Response:
    """Run the search ``params`` ask for (``audio``: an uploaded example's saved path,
    ``upload`` its own name) and answer the page or its JSON; no query: the empty form."""
    viewer(request)
    json_out = wants_json(request)
    with connect(request) as conn:
        choices = pages.choices(conn) if not json_out else None
        try:
            req = pages.request_from(params, audio)
        except pages.BadParameter as exc:
            return error(request, str(exc), 400)
        understood, parts = _understand(request, conn, req, audio, params)
        if isinstance(understood, Response):
            return understood
        if understood is not None and req is not None:
            req = replace(req, text=understood.text, filters=merge(req.filters, understood.filters))
            if understood.text is None:  # a place and time only: what was heard there
                return _activity(request, conn, req, params, choices, understood, parts)
        if req is None:
            if json_out:
                return JSONResponse({"error": "give q, said, like, concept or classifier"}, 400)
            return render(request, "search.html", params=params, choices=choices, result=None)
        started = time.perf_counter()
        try:
            result = review.run_search(conn, req, params)  # "unreviewed only" too
        except InvalidRequest as exc:
            return error(request, str(exc), 400)
        elapsed = time.perf_counter() - started
        cards = (
            review.cards(conn, req, result.hits, session(request).user)
            if not (json_out or result.is_speech)
            else review.Cards()
        )
    if result.is_speech:
        rows, columns = said_rows(result.hits, events=req.events)
    else:
        rows, columns = hit_rows(result.hits, labels=result.is_labels, events=req.events)
    plain = [plain_row(r, columns) for r in rows]
    if json_out:
        return JSONResponse(
            {
                **({"understood": understood.as_dict()} if understood else {}),
                "space": result.space_name,
                "query": result.description,
                "events": req.events,
                "guard": result.guard,
                "hits": plain,
            }
        )
    keep = [(k, v) for k, v in params.multi_items() if k not in ("like", "csrf_token")]
    if understood is not None:  # "more like this" keeps the sentence's filters too
        keep += [kv for _, _, p in understood.part_params() for kv in p]
    return render(
        request,
        "search.html",
        params=params,
        choices=choices,
        result=result,
        rows=list(zip(result.hits, plain)),
        cards=cards.cards,
        default_label=cards.fallback,
        known_labels=cards.known,
        upload=upload,
        like_base=urlencode([(k, v) for k, v in keep if k in FILTER_KEYS]),
        elapsed_ms=elapsed * 1000,
        understood=understood,
        understood_parts=parts,
    )


def _understand(
    request: Request, conn: Any, req: Any, audio: str | None, params: Any
) -> tuple[Any, list[dict[str, str]]]:
    """The text read as a sentence (``sentence.understand``; None: a plain text) and its parts
    for the page, each with the query string that drops it (the sound stays); an error page
    when its sound matches nothing."""
    if req is None or req.text is None or audio is not None:
        return None, []
    try:
        understood = understand(conn, req.text, space=req.space)
    except SoundscapeError as exc:
        return error(request, str(exc), 400), []
    if understood is None:
        return None, []
    given = understood.part_params()
    flags = [(k, v) for k, v in params.multi_items() if k not in ("q", "csrf_token", "like")]
    parts = []
    for i, (kind, shown, _) in enumerate(given):
        rest = [kv for j, (_, _, p) in enumerate(given) if j != i for kv in p] + flags
        parts.append({"kind": kind, "shown": shown,
                      "remove": "" if kind == "sound" else urlencode(rest)})  # fmt: skip
    return understood, parts


def _activity(
    request: Request, conn: Any, req: Any, params: Any, choices: Any, understood: Any,
    parts: list[dict[str, str]],
) -> Response:  # fmt: skip
    """A sentence without a sound: the classes detected most often under its filters."""
    from soundscape.spaces import pick_space
    from soundscape.species import top_labels

    space = pick_space(conn, req.space, purpose="labels")
    rows = top_labels(conn, space, req.filters, limit=req.limit, all_species=req.all_species)
    plain = [plain_row(r, ["common", "scientific", "windows", "recordings", "best_score"])
             for r in rows]  # fmt: skip
    if wants_json(request):
        return JSONResponse({"understood": understood.as_dict(), "space": space.name,
                             "activity": plain})  # fmt: skip
    return render(request, "search.html", params=params, choices=choices, result=None,
                  understood=understood, understood_parts=parts, activity=plain)  # fmt: skip


@router.get("/search")
def search_page(request: Request) -> Response:
    return search_response(request, request.query_params, None, "")


@router.post("/search")
async def search_upload(request: Request) -> Response:
    """Search by an uploaded audio example (multipart, CSRF-checked, size-limited)."""
    form = await checked_form(request)
    upload = form.get("audio")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return error(request, "audio: choose an audio file to search by", 400)
    name = pages.upload_name(upload.filename)
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        return error(request, f"audio: one of {', '.join(UPLOAD_SUFFIXES)} files", 400)
    # saved under its own name in a private folder, streamed in 64 kB chunks; messages
    # name the user's file, never the server's folder
    folder = tempfile.mkdtemp(prefix="soundscape-upload-")
    tmp = os.path.join(folder, name)
    try:
        with open(tmp, "xb") as out:
            while chunk := await upload.read(1 << 16):
                out.write(chunk)
        try:
            # the header's length first: an example is decoded up to MAX_EXAMPLE_S only
            info = await run_in_threadpool(probe, tmp)
            pages.example_span(form, info.duration_s)
            return await run_in_threadpool(search_response, request, form, tmp, name)
        except SoundscapeError as exc:
            message = str(exc).replace(tmp, name).replace(folder, "")
            status = 413 if "search by at most" in message else 400
            return error(request, message, status)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
