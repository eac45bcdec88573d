"""What runs around every route: the session cookie, the checks before a route (query fields,
the Origin of a POST), the security headers after it, the Host and body-size limits, and the
answers to errors (a 503 when the database is down, typed errors to their status codes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from soundscape.errors import SoundscapeError, StoredFileChanged
from soundscape.web import media, pages
from soundscape.web.deps import Forbidden, NeedsSignIn, WebConfig, config, error, session
from soundscape.web.security import COOKIE, BodyLimit, Sessions, same_origin

#: What an HTML page may load and where its forms may go.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; media-src 'self'; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'"
)


async def sessions_and_checks(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """The request's session (from its cookie, else a fresh one), refusals before any route
    (a NUL byte or overlong query field: 400; a cross-origin POST: 403), and after it the
    session cookie and the security headers."""
    sessions: Sessions = request.app.state.sessions
    started = sessions.get(request.cookies.get(COOKIE))
    fresh = started is None
    if started is None:
        started = sessions.ephemeral()
    request.state.session = started
    try:  # no NUL byte or overlong text reaches a query (PostgreSQL text holds no NUL)
        pages.check_fields(request.query_params.multi_items())
    except pages.BadParameter as exc:
        return PlainTextResponse(f"{exc}\n", status_code=400)
    if request.method == "POST" and not same_origin(
        request.headers.get("origin"), request.headers.get("host"), request.url.scheme
    ):
        return PlainTextResponse("cross-origin POST refused\n", status_code=403)
    response = await call_next(request)
    current = session(request)  # sign-in/out rotate it
    html = response.headers.get("content-type", "").startswith("text/html")
    if fresh and current.id == started.id and html:
        sessions.keep(started)  # the page shows its CSRF token: remember it
    if (fresh and html) or current.id != started.id:
        response.set_cookie(
            COOKIE,
            current.id,
            httponly=True,
            samesite="strict",
            secure=config(request).secure_cookies,
            path="/",
        )
    _security_headers(response, html)
    return response


def _security_headers(response: Response, html: bool) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if html:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)


async def database_unreachable(request: Request, exc: Exception) -> Response:
    """The database is stopped or restarting: a 503 that says so, not a 500 and a
    traceback (found by the soak, docs/soak.md); the next request tries again."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return error(
        request,
        f"the database cannot be reached right now ({reason}); try again in a moment",
        503,
    )


async def soundscape_error(request: Request, exc: Exception) -> Response:
    """A library error as its status code: 404 not found, 410 a stored file that changed,
    401 sign in first, 403 refused, else 400."""
    status = 400
    if isinstance(exc, media.NotFound):
        status = 404
    elif isinstance(exc, StoredFileChanged):
        status = 410  # the recording exists, its file is not the one ingested (or gone)
    elif isinstance(exc, NeedsSignIn):
        status = 401
    elif isinstance(exc, Forbidden):
        status = 403
    return error(request, str(exc), status)


def install(app: FastAPI, cfg: WebConfig) -> None:
    """Add the middleware and error handlers to ``app``. Added last runs first: the Host
    check, then the body limit, then the session."""
    app.middleware("http")(sessions_and_checks)
    app.add_exception_handler(sa.exc.OperationalError, database_unreachable)
    app.add_exception_handler(sa.exc.DisconnectionError, database_unreachable)
    app.add_exception_handler(SoundscapeError, soundscape_error)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_upload_bytes)
    hosts = cfg.allowed_hosts
    if hosts is None and cfg.loopback:
        hosts = ["127.0.0.1", "localhost", "[::1]", "::1"]
    if hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
