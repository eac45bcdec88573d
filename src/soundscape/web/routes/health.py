"""Is the page up: ``/healthz`` (the database reachable and its schema at head) and ``/``."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse

from soundscape import __version__
from soundscape.db import current_revision, head_revision
from soundscape.web.deps import connect

router = APIRouter()


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    """200 when the schema is at head; 503 when it is not or the database cannot be reached
    (open to all: no sign-in, so a monitor can call it)."""
    try:
        with connect(request) as conn:
            revision = current_revision(conn)
        ok = revision == head_revision()
    except sa.exc.SQLAlchemyError as exc:
        return JSONResponse({"status": "error", "error": str(exc).splitlines()[0]}, 503)
    return JSONResponse(
        {
            "status": "ok" if ok else "schema-outdated",
            "revision": revision,
            "version": __version__,
        },
        status_code=200 if ok else 503,
    )


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/search", status_code=303)
