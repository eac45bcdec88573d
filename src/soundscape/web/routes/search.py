"""The search page: ``GET /search`` runs a query from its parameters (the CLI's ``search``
through ``pages.request_from``), ``POST /search`` searches by an uploaded audio example
(CSRF-checked, size-limited by the app's body limit, at most ``pages.MAX_EXAMPLE_S`` decoded).
Both answer HTML, or JSON when asked (``?format=json`` or ``Accept: application/json``)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from soundscape.audio import probe
from soundscape.errors import DatabaseError, NoLabelMatch, SoundscapeError, StoredFileChanged
from soundscape.output import plain_row
from soundscape.results import hit_rows
from soundscape.sentence import merge, understand
from soundscape.spaces import pick_space
from soundscape.species import top_labels
from soundscape.speech import said_rows
from soundscape.web import pages
from soundscape.web.deps import (
    checked_form,
    connect,
    database,
    error,
    for_rangers,
    render,
    session,
    viewer,
    wants_json,
)
from soundscape.web.routes import review

router = APIRouter()

#: Audio formats an uploaded example may have (what ingest decodes).
UPLOAD_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
#: The parameters a "more like this" link keeps (the filters, not the query).
FILTER_KEYS = ("sensor", "site", "quadrant", "time", "from", "to", "sun", "events", "limit")


def search_problem(
    request: Request,
    params: Any,
    choices: Any,
    message: str,
    suggestions: list[str] | tuple[str, ...] = (),
) -> Response:
    """A search that cannot run, on the search page itself (the box keeps the query), with
    the closest labels as links that keep the filters; JSON callers get the message."""
    if wants_json(request):
        return JSONResponse({"error": message, "suggestions": list(suggestions)}, 400)
    keep = [(k, v) for k, v in params.multi_items() if k in FILTER_KEYS]
    links = [(name, "/search?" + urlencode([("q", name), *keep])) for name in suggestions]
    return render(
        request, "search.html", 400, params=params, choices=choices, result=None,
        problem=for_rangers(message), suggestions=links,
    )  # fmt: skip


def search_response(request: Request, params: Any, audio: str | None, upload: str) -> Response:
    """Run the search ``params`` ask for (``audio``: an uploaded example's saved path,
    ``upload`` its own name) and answer the page or its JSON; no query: the empty form. A
    search that cannot run answers the search page with the reason (``search_problem``)."""
    viewer(request)
    json_out = wants_json(request)
    with connect(request) as conn:
        choices = pages.choices(conn) if not json_out else None
        try:
            req = pages.request_from(params, audio)
        except pages.BadParameter as exc:
            return search_problem(request, params, choices, str(exc))
        if req is None:
            if json_out:
                return JSONResponse({"error": "give q, said, like, concept or classifier"}, 400)
            return render(request, "search.html", params=params, choices=choices, result=None)
        started = time.perf_counter()
        try:
            understood, parts = _understand(conn, req, audio, params)
            if understood is not None:
                filters = merge(req.filters, understood.filters)
                req = replace(req, text=understood.text, filters=filters)
                if understood.text is None:  # a place and time only: what was heard there
                    return _activity(request, conn, req, params, choices, understood, parts)
            result = review.run_search(conn, req, params)  # "unreviewed only" too
        except NoLabelMatch as exc:
            what = f"No sound in the list of labels matches \u201c{exc.text}\u201d."
            if exc.suggestions:
                what += " Try one of these, or fewer words."
            return search_problem(request, params, choices, what, exc.suggestions)
        except (DatabaseError, StoredFileChanged):
            raise  # the server's trouble, not the query's: its own status (middleware)
        except SoundscapeError as exc:  # a query that cannot run: say why, keep the box
            return search_problem(request, params, choices, str(exc))
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
    conn: Any, req: Any, audio: str | None, params: Any
) -> tuple[Any, list[dict[str, str]]]:
    """The text read as a sentence (``sentence.understand``; None: a plain text) and its parts
    for the page, each with the query string that drops it (the sound stays). A sound that
    matches nothing raises (``NoLabelMatch``: the page suggests labels)."""
    if req.text is None or audio is not None:
        return None, []
    understood = understand(conn, req.text, space=req.space)
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

    space = pick_space(conn, req.space, purpose="labels")
    rows = top_labels(conn, space, req.filters, limit=req.limit, all_species=req.all_species)
    plain = [plain_row(r, ["common", "scientific", "windows", "recordings", "best_score"])
             for r in rows]  # fmt: skip
    if wants_json(request):
        return JSONResponse({"understood": understood.as_dict(), "space": space.name,
                             "activity": plain})  # fmt: skip
    return render(request, "search.html", params=params, choices=choices, result=None,
                  understood=understood, understood_parts=parts, activity=plain)  # fmt: skip


#: an uploaded example's id in a search URL (``?example=``): sha256 of its name and bytes
EXAMPLE_ID = re.compile(r"[0-9a-f]{32}")
#: how long an uploaded example (and so its search's URL) is kept
EXAMPLE_KEPT = timedelta(days=30)


def store_example(engine: Engine, name: str, data: bytes) -> str:
    """Keep an uploaded example (``search_examples``, migration 0031) under an id made of its
    name and bytes, so its search has a URL that can be shared and reloaded."""
    key = hashlib.sha256(name.encode() + b"\0" + data).hexdigest()[:32]
    cutoff = datetime.now(timezone.utc) - EXAMPLE_KEPT
    with engine.begin() as conn:
        # examples are kept EXAMPLE_KEPT (their links then say to upload again): bounded
        conn.execute(sa.text("DELETE FROM search_examples WHERE created_at < :c"), {"c": cutoff})
        conn.execute(
            sa.text(
                "INSERT INTO search_examples (id, name, data) VALUES (:i, :n, :d) "
                "ON CONFLICT (id) DO NOTHING"
            ),
            {"i": key, "n": name, "d": data},
        )
    return key


def example_search(request: Request, key: str) -> Response:
    """``GET /search?example=ID``: the stored example, searched again with the URL's span
    and filters (its own file name shown)."""
    if not EXAMPLE_ID.fullmatch(key):
        return error(request, "example: not the id of an uploaded example; upload it again", 400)
    with connect(request) as conn:
        row = conn.execute(
            sa.text("SELECT name, data FROM search_examples WHERE id = :i"), {"i": key}
        ).fetchone()
    if row is None:
        return error(request, "this uploaded example is no longer stored; upload it again", 404)
    folder = tempfile.mkdtemp(prefix="soundscape-example-")
    tmp = os.path.join(folder, row.name)
    try:
        with open(tmp, "xb") as out:
            out.write(bytes(row.data))
        try:
            return search_response(request, request.query_params, tmp, row.name)
        except SoundscapeError as exc:
            message = str(exc).replace(tmp, row.name).replace(folder, "")
            return error(request, message, 400)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@router.get("/search")
def search_page(request: Request) -> Response:
    key = request.query_params.get("example")
    if key is not None:
        return example_search(request, key)
    return search_response(request, request.query_params, None, "")


@router.post("/search")
async def search_upload(request: Request) -> Response:
    """Search by an uploaded audio example (multipart, CSRF-checked, size-limited). The page
    keeps the example and answers with a redirect to its search's own URL
    (``/search?example=ID&start=...``), to share or reload; JSON callers get the hits."""
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
            if wants_json(request):
                return await run_in_threadpool(search_response, request, form, tmp, name)
            data = Path(tmp).read_bytes()
            key = await run_in_threadpool(store_example, database(request).engine, name, data)
        except SoundscapeError as exc:
            message = str(exc).replace(tmp, name).replace(folder, "")
            status = 413 if "search by at most" in message else 400
            return error(request, message, status)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    keep = [
        (k, v)
        for k, v in form.multi_items()
        if isinstance(v, str) and v and k in (*FILTER_KEYS, "start", "end", "space")
    ]
    return RedirectResponse("/search?" + urlencode([("example", key), *keep]), status_code=303)
