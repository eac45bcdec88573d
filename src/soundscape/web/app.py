"""The web application (FastAPI + Jinja2, served by uvicorn): routes and their rendering.

Every page calls the same library functions as the CLI (``soundscape.search.search`` for
search, ``soundscape.annotations`` for verdicts, ``soundscape.plots`` for figures); this module
only turns requests into those calls and their results into HTML or JSON. Audio and images are
served by stored id only (soundscape.web.media); security is in soundscape.web.security.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.middleware.trustedhost import TrustedHostMiddleware

from soundscape import __version__
from soundscape.annotations import review_hit
from soundscape.audio import probe
from soundscape.db import Database, current_revision, head_revision, open_database
from soundscape.errors import (
    AnnotationError,
    InvalidRequest,
    SoundscapeError,
    StoredFileChanged,
)
from soundscape.output import plain_row
from soundscape.results import hit_rows
from soundscape.sensors import list_sensors
from soundscape.stats import database_stats, list_recordings
from soundscape.web import media, pages
from soundscape.web.security import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    BodyLimit,
    Session,
    Sessions,
    SignInError,
    Throttle,
    same_origin,
    sign_in,
)

HERE = Path(__file__).resolve().parent
#: Audio formats an uploaded example may have (what ingest decodes).
UPLOAD_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass
class WebConfig:
    """How the app runs. ``view_login`` None: viewing needs sign-in unless ``host`` is a
    loopback address. ``allowed_hosts`` (Host headers accepted; DNS-rebinding protection) None:
    any when bound to a public address, the loopback names when bound to loopback."""

    database: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    view_login: bool | None = None
    max_upload_bytes: int = 20_000_000
    allowed_hosts: list[str] | None = None
    secure_cookies: bool = False
    session_idle_s: float = 8 * 3600

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def login_to_view(self) -> bool:
        return (not self.loopback) if self.view_login is None else self.view_login


class NeedsSignIn(SoundscapeError):
    """Writing (or, when configured, viewing) needs a signed-in reviewer."""


class Forbidden(SoundscapeError):
    """A POST without a valid CSRF token, or from another origin."""


def local_path(target: Any) -> str:
    """Where to go back to after a form: a path on this site only (no open redirect)."""
    back = str(target or "")
    if not back.startswith("/") or back.startswith(("//", "/\\")) or "\\" in back:
        return "/search"
    return back


def wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def create_app(config: WebConfig | None = None, database: Database | None = None) -> FastAPI:
    """The application. ``database``: an open database (else ``config.database`` is opened,
    the embedded one by default)."""
    config = config or WebConfig()
    db = database or open_database(config.database)
    sessions = Sessions(idle_s=config.session_idle_s)
    throttle = Throttle()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(version=__version__, colour=pages.colour)
    app = FastAPI(title="soundscape", version=__version__, docs_url=None, redoc_url=None)
    app.state.db = db
    app.state.config = config
    app.state.sessions = sessions
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # -------------------------------------------------------------- sessions, errors
    @app.middleware("http")
    async def session_middleware(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        session = sessions.get(request.cookies.get(COOKIE))
        fresh = session is None
        if session is None:
            session = sessions.ephemeral()
        request.state.session = session
        try:  # no NUL byte or overlong text reaches a query (PostgreSQL text holds no NUL)
            pages.check_fields(request.query_params.multi_items())
        except pages.BadParameter as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400)
        if request.method == "POST" and not same_origin(
            request.headers.get("origin"), request.headers.get("host"), request.url.scheme
        ):
            return PlainTextResponse("cross-origin POST refused\n", status_code=403)
        response = await call_next(request)
        current: Session = request.state.session  # sign-in/out rotate it
        html = response.headers.get("content-type", "").startswith("text/html")
        if fresh and current.id == session.id and html:
            sessions.keep(session)  # the page shows its CSRF token: remember it
        if (fresh and html) or current.id != session.id:
            response.set_cookie(
                COOKIE,
                current.id,
                httponly=True,
                samesite="strict",
                secure=config.secure_cookies,
                path="/",
            )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if html:
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; media-src 'self'; "
                "style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
                "form-action 'self'; base-uri 'none'",
            )
        return response

    def render(
        request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        session: Session = request.state.session
        context.update(request=request, session=session, csrf=session.csrf, nav=template)
        return templates.TemplateResponse(request, template, context, status_code=status_code)

    def error(request: Request, message: str, status_code: int) -> Response:
        if wants_json(request) or request.url.path.endswith((".wav", ".png", "/audio")):
            return JSONResponse({"error": message}, status_code=status_code)
        return render(request, "error.html", status_code=status_code, message=message)

    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.DisconnectionError)
    async def database_unreachable(request: Request, exc: Exception) -> Response:
        """The database is stopped or restarting: a 503 that says so, not a 500 and a
        traceback (found by the soak, docs/soak.md); the next request tries again."""
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return error(
            request,
            f"the database cannot be reached right now ({reason}); try again in a moment",
            503,
        )

    @app.exception_handler(SoundscapeError)
    async def soundscape_error(request: Request, exc: SoundscapeError) -> Response:
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

    def viewer(request: Request) -> None:
        if config.login_to_view and request.state.session.user is None:
            raise NeedsSignIn("sign in to view this page (/login)")

    async def checked_form(request: Request) -> Any:
        """The POSTed form after its CSRF token (field or header) has been checked."""
        form = await request.form(max_files=1, max_fields=50)
        pages.check_fields(form.multi_items())  # BadParameter: 400 with the field's name
        token = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
        if not request.state.session.check_csrf(token if isinstance(token, str) else None):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")
        return form

    def connect() -> Any:
        return db.engine.connect()

    # -------------------------------------------------------------- health
    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            with connect() as conn:
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

    @app.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/search", status_code=303)

    # -------------------------------------------------------------- search
    def search_response(request: Request, params: Any, audio: str | None, upload: str) -> Response:
        viewer(request)
        json_out = wants_json(request)
        with connect() as conn:
            choices = pages.choices(conn) if not json_out else None
            try:
                req = pages.request_from(params, audio)
            except pages.BadParameter as exc:
                return error(request, str(exc), 400)
            if req is None:
                if json_out:
                    return JSONResponse({"error": "give q, like, concept or classifier"}, 400)
                return render(request, "search.html", params=params, choices=choices, result=None)
            started = time.perf_counter()
            try:
                result = pages.run_search(conn, req)
            except InvalidRequest as exc:
                return error(request, str(exc), 400)
            elapsed = time.perf_counter() - started
        rows, columns = hit_rows(result.hits, labels=result.query.is_labels, events=req.events)
        plain = [plain_row(r, columns) for r in rows]
        if json_out:
            return JSONResponse(
                {
                    "space": result.space.name,
                    "query": result.query.description,
                    "events": req.events,
                    "guard": result.guard,
                    "hits": plain,
                }
            )
        keep = [(k, v) for k, v in params.multi_items() if k not in ("like", "csrf_token")]
        filter_keys = ("sensor", "site", "quadrant", "time", "from", "to", "events", "limit")
        like_base = urlencode([(k, v) for k, v in keep if k in filter_keys])
        return render(
            request,
            "search.html",
            params=params,
            choices=choices,
            result=result,
            rows=list(zip(result.hits, plain)),
            default_label=pages.verdict_label(req) if not upload else "",
            upload=upload,
            like_base=like_base,
            elapsed_ms=elapsed * 1000,
        )

    @app.get("/search")
    def search_page(request: Request) -> Response:
        return search_response(request, request.query_params, None, "")

    @app.post("/search")
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

    # -------------------------------------------------------------- annotations
    @app.post("/annotations")
    async def annotate(request: Request) -> Response:
        """A reviewer's yes / no / unsure on a window (CSRF-checked; written as the reviewer's
        own database role, which may only insert annotations)."""
        form = await checked_form(request)
        session: Session = request.state.session
        if session.user is None or session.writer is None:
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
            assert session.writer is not None and session.user is not None
            with connect() as conn, session.writer.begin() as writer:
                return review_hit(
                    conn, writer, segment_id, label, verdict, author=session.user, note=note
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

    # -------------------------------------------------------------- audio, images
    @app.get("/clips/{segment_id}.wav")
    def clip(request: Request, segment_id: int) -> Response:
        viewer(request)
        with connect() as conn:
            span = media.window_span(conn, segment_id)
        return Response(
            media.clip_wav(span),
            media_type="audio/wav",
            headers={"Cache-Control": "private, max-age=3600"},
        )

    @app.get("/clips/{segment_id}.png")
    def clip_png(request: Request, segment_id: int) -> Response:
        viewer(request)
        with connect() as conn:
            span = media.window_span(conn, segment_id)
        return Response(
            media.clip_png(span),
            media_type="image/png",
            headers={"Cache-Control": "private, max-age=3600"},
        )

    @app.get("/recordings/{recording_id}/clip.wav")
    def span_clip(request: Request, recording_id: int, start: float, end: float) -> Response:
        """A span of a recording (an event of several windows) with padding, at most
        ``media.MAX_CLIP_S`` long."""
        viewer(request)
        with connect() as conn:
            span = media.recording_span(conn, recording_id, start, end)
        return Response(media.clip_wav(span), media_type="audio/wav")

    @app.get("/recordings/{recording_id}/clip.png")
    def span_png(request: Request, recording_id: int, start: float, end: float) -> Response:
        viewer(request)
        with connect() as conn:
            span = media.recording_span(conn, recording_id, start, end)
        return Response(media.clip_png(span), media_type="image/png")

    @app.get("/recordings/{recording_id}/audio")
    def recording_audio(request: Request, recording_id: int) -> Response:
        """The recording's own file, with HTTP range requests (seekable, streamed)."""
        viewer(request)
        with connect() as conn:
            opened, mime = media.recording_file(conn, recording_id)
        try:
            ranged = media.byte_range(request.headers.get("range"), opened.size)
        except media.RangeNotSatisfiable as exc:
            opened.close()
            response = error(request, str(exc), 416)
            response.headers["Content-Range"] = f"bytes */{opened.size}"
            return response
        start, end = ranged or (0, opened.size)
        headers = {
            "Cache-Control": "private",
            "Accept-Ranges": "bytes",
            "Content-Length": str(end - start),
        }
        if ranged is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{opened.size}"

        def body() -> Any:
            with opened:  # read from the checked descriptor only, then close it
                yield from opened.iter_bytes(start, end)

        status = 200 if ranged is None else 206
        return StreamingResponse(body(), status_code=status, media_type=mime, headers=headers)

    @app.get("/recordings/{recording_id}/plot.png")
    def recording_plot(
        request: Request, recording_id: int, start: float | None = None, end: float | None = None
    ) -> Response:
        viewer(request)
        with connect() as conn:
            png = media.recording_png(conn, recording_id, start, end)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private"})

    # -------------------------------------------------------------- pages
    @app.get("/recordings")
    def recordings(request: Request, sensor: str | None = None) -> Response:
        viewer(request)
        with connect() as conn:
            rows = list_recordings(conn, sensor or None, limit=1000)
        if wants_json(request):
            return JSONResponse([plain_row(r, list(r)) for r in rows])
        return render(request, "recordings.html", rows=rows, sensor=sensor)

    @app.get("/recordings/{recording_id}")
    def recording(request: Request, recording_id: int) -> Response:
        viewer(request)
        with connect() as conn:
            row = media.recording_row(conn, recording_id)
            context = {
                "rec": row,
                "detections": pages.detections(conn, recording_id),
                "anomalies": pages.anomalies(conn, recording_id),
                "annotations": pages.recording_annotations(conn, recording_id),
                "transcript": pages.transcript(conn, recording_id),
            }
        return render(request, "recording.html", **context)

    @app.get("/activity")
    def activity(request: Request) -> Response:
        viewer(request)
        q = request.query_params
        name = (q.get("name") or "").strip()
        kind, by = q.get("kind") or "concept", q.get("by") or "site"
        with connect() as conn:
            choices = pages.choices(conn)
            heatmap = None
            if name:
                f = pages.filters_from({k: q.get(k) for k in ("from", "to")})
                min_score = pages._number(q, "min_score")
                heatmap = pages.activity(
                    conn, kind, name, (q.get("label") or "").strip() or None, by,
                    f.date_from, f.date_to, 0.5 if min_score is None else min_score,
                )  # fmt: skip
        return render(
            request, "activity.html", choices=choices, heatmap=heatmap, params=q, kind=kind, by=by
        )

    @app.get("/sensors")
    def sensors(request: Request) -> Response:
        viewer(request)
        with connect() as conn:
            found = list_sensors(conn)
            counts = dict(
                conn.execute(
                    sa.text(
                        "SELECT s.name, count(r.id) FROM sensors s "
                        "LEFT JOIN recordings r ON r.sensor_id = s.id GROUP BY s.name"
                    )
                ).all()
            )
        if wants_json(request):
            return JSONResponse([s.as_dict() for s in found])
        return render(
            request, "sensors.html", sensors=found, counts=counts, map=pages.sensor_map(found)
        )

    @app.get("/jobs")
    def jobs(request: Request) -> Response:
        viewer(request)
        with connect() as conn:
            overview = pages.jobs_overview(conn)
            stats = database_stats(conn)
        if wants_json(request):
            return JSONResponse(
                {k: [plain_row(r, list(r)) for r in v] for k, v in overview.items()}
            )
        return render(request, "jobs.html", db_stats=stats, **overview)

    # -------------------------------------------------------------- sign in / out
    @app.get("/login")
    def login_page(request: Request) -> Response:
        return render(request, "login.html", message=None, next=request.query_params.get("next"))

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await checked_form(request)
        name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
        client = request.client.host if request.client else "?"
        if not throttle.allowed(f"ip:{client}", f"name:{name}"):
            return render(
                request,
                "login.html",
                429,
                message="too many attempts; wait a few minutes",
                next=None,
            )

        try:
            writer = await run_in_threadpool(sign_in, db.engine, name, password)
        except SignInError as exc:
            throttle.failed(f"ip:{client}", f"name:{name}")
            return render(request, "login.html", 401, message=str(exc), next=form.get("next"))
        session = sessions.rotate(request.state.session)
        session.user, session.writer = name, writer
        request.state.session = session
        return RedirectResponse(local_path(form.get("next")), status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await checked_form(request)
        request.state.session = sessions.rotate(request.state.session)
        return RedirectResponse("/search", status_code=303)

    # outermost first: Host check, then the body limit
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes)
    hosts = config.allowed_hosts
    if hosts is None and config.loopback:
        hosts = ["127.0.0.1", "localhost", "[::1]", "::1"]
    if hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    return app
