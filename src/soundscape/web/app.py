"""The web application (FastAPI + Jinja2, served by uvicorn): ``create_app`` wires the
configuration, the database, the middleware and the routers.

Every page calls the same library functions as the CLI (``soundscape.search.search`` for
search, ``soundscape.annotations`` for verdicts, ``soundscape.plots`` for figures). The routes
live in ``soundscape.web.routes`` (one router per area); what they share (the session, the
sign-in and CSRF checks, rendering) in ``soundscape.web.deps``; what runs around every request
(cookies, Origin, Host and body-size checks, security headers, errors to status codes) in
``soundscape.web.middleware``. Audio and images are served by stored id only
(``soundscape.web.media``); sessions and sign-in are in ``soundscape.web.security``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from soundscape import __version__
from soundscape.db import Database, open_database
from soundscape.web import middleware
from soundscape.web.deps import (
    HERE,
    Forbidden,
    NeedsSignIn,
    WebConfig,
    local_path,
    make_templates,
    wants_json,
)
from soundscape.web.routes import ROUTERS
from soundscape.web.security import Sessions, Throttle

__all__ = ["Forbidden", "NeedsSignIn", "WebConfig", "create_app", "local_path", "wants_json"]


def create_app(config: WebConfig | None = None, database: Database | None = None) -> FastAPI:
    """The application. ``database``: an open database (else ``config.database`` is opened,
    the embedded one by default)."""
    config = config or WebConfig()
    app = FastAPI(title="soundscape", version=__version__, docs_url=None, redoc_url=None)
    app.state.config = config
    app.state.db = database or open_database(config.database)
    app.state.sessions = Sessions(idle_s=config.session_idle_s)
    app.state.throttle = Throttle()
    app.state.templates = make_templates()
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    middleware.install(app, config)
    add_routes(app, ROUTERS)
    return app


def add_routes(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Each router's routes added to the app itself, in order. Not ``app.include_router``:
    FastAPI 0.16x keeps an included router as one opaque entry of ``app.routes``, while
    older versions copied its routes in; copying them here (what those versions did) keeps
    ``app.routes`` listing every path and method whatever the FastAPI version (the CSRF test
    finds every POST route there)."""
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                raise TypeError(f"{route!r}: only API routes belong in soundscape.web.routes")
            app.add_api_route(
                route.path, route.endpoint, methods=sorted(route.methods or ()), name=route.name
            )
