"""What every route shares: the app's configuration, the database, the signed-in session, the
sign-in and CSRF checks, and rendering a page or an error. Routes take these from the request
(``request.app.state``, set by ``create_app``), so a router module holds no state of its own."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Connection

from soundscape import __version__
from soundscape.db import Database
from soundscape.embedded_db import is_loopback
from soundscape.errors import SoundscapeError
from soundscape.web import pages
from soundscape.web.security import CSRF_FIELD, CSRF_HEADER, Session

HERE = Path(__file__).resolve().parent


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
        return is_loopback(self.host)

    @property
    def login_to_view(self) -> bool:
        return (not self.loopback) if self.view_login is None else self.view_login


class NeedsSignIn(SoundscapeError):
    """Writing (or, when configured, viewing) needs a signed-in reviewer."""


class Forbidden(SoundscapeError):
    """A POST without a valid CSRF token, or from another origin."""


def make_templates() -> Jinja2Templates:
    """The page templates (web/templates) with the globals every page uses."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(version=__version__, colour=pages.colour)
    return templates


# ------------------------------------------------------------------------------ state
def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def config(request: Request) -> WebConfig:
    cfg: WebConfig = request.app.state.config
    return cfg


def connect(request: Request) -> Connection:
    """A connection to the app's database (use it in a ``with``)."""
    return database(request).engine.connect()


def session(request: Request) -> Session:
    """This request's session (set by the session middleware; sign-in/out rotate it)."""
    current: Session = request.state.session
    return current


# ------------------------------------------------------------------------------ checks
def viewer(request: Request) -> None:
    """Viewing a page: NeedsSignIn (401) when the app asks viewers to sign in and none has."""
    if config(request).login_to_view and session(request).user is None:
        raise NeedsSignIn("sign in to view this page (/login)")


async def checked_form(request: Request) -> Any:
    """The POSTed form after its CSRF token (field or header) has been checked."""
    form = await request.form(max_files=1, max_fields=50)
    pages.check_fields(form.multi_items())  # BadParameter: 400 with the field's name
    token = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not session(request).check_csrf(token if isinstance(token, str) else None):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")
    return form


def local_path(target: Any) -> str:
    """Where to go back to after a form: a path on this site only (no open redirect)."""
    back = str(target or "")
    if not back.startswith("/") or back.startswith(("//", "/\\")) or "\\" in back:
        return "/search"
    return back


# ------------------------------------------------------------------------------ answers
def wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page from its template, with the session, its CSRF token and the nav entry."""
    current = session(request)
    context.update(request=request, session=current, csrf=current.csrf, nav=template)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, template, context, status_code=status_code)


#: a command the library's messages name for the CLI (`soundscape labels top`), with the
#: words that introduce it
_COMMAND = re.compile(r"[;,]?\s*(?:(?:see|use|run|then|labels:)\s+)?`[^`]*`")


def for_rangers(message: str) -> str:
    """A library message as a page shows it: without the commands it names for the CLI (a
    ranger on the page has no terminal)."""
    text = _COMMAND.sub("", message)
    text = re.sub(r"\(\s*\)", "", re.sub(r"\(\s*[;,]\s*", "(", text))
    return re.sub(r"\s+([;,.)])", r"\1", re.sub(r"\s{2,}", " ", text)).strip(" ;,")


def error(request: Request, message: str, status_code: int) -> Response:
    """An error as JSON (API callers, audio and images) or as the error page (with the search
    box, and without the CLI's commands)."""
    if wants_json(request) or request.url.path.endswith((".wav", ".png", "/audio")):
        return JSONResponse({"error": message}, status_code=status_code)
    return render(request, "error.html", status_code=status_code, message=for_rangers(message))
