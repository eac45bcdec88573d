"""The web page's security: sessions, CSRF tokens, reviewer sign-in, request size limits.

- **Sessions** live in the server's memory only, keyed by a random 256-bit id in an HttpOnly,
  ``SameSite=Strict`` cookie; a server restart signs everyone out. A bounded number is kept
  (the least recently used go first) and idle ones expire.
- **CSRF**: every session has a random token; every POST must carry it (form field
  ``csrf_token`` or header ``X-CSRF-Token``), compared in constant time. POSTs whose
  ``Origin`` header names another origin are refused too.
- **Reviewers are PostgreSQL roles** (``soundscape db create-reviewer NAME``). Signing in first
  asks the database, as the server's own role, whether NAME is a reviewer (a login role in
  ``soundscape_reviewer`` with no powerful attribute); only then does it connect as that role
  with the given password, requiring SCRAM (libpq ``require_auth``: the password is never sent
  in cleartext or as MD5, and a server that skips the check is refused). The page stores no
  password hashes of its own. Every failure (unknown name, wrong password, not a reviewer,
  the superuser, the reader) gives the same message, so the page tells a visitor nothing
  about other roles. The session then keeps a connection factory for that role, and the
  verdicts a reviewer gives are inserted through it, so the database itself enforces that a
  reviewer can only insert annotations, in their own name (migration 0014). The password
  stays in this process's memory for the session's lifetime and is never written anywhere.
- **Sizes**: a request body larger than the limit (uploaded audio examples) is refused with
  413 before it is read, or as soon as a chunked body passes the limit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from soundscape.auth import SCRAM_ONLY, auth_options
from soundscape.db import make_engine, raw_connection
from soundscape.roles import is_reviewer, is_reviewer_login

COOKIE = "soundscape_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SignInError(Exception):
    """Wrong name or password, not a reviewer, or too many attempts."""


@dataclass
class Session:
    id: str
    csrf: str
    user: str | None = None
    writer: Engine | None = None
    last_seen: float = field(default_factory=time.monotonic)

    def check_csrf(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, str(token))


class Sessions:
    """In-memory sessions, bounded and expiring."""

    def __init__(self, max_sessions: int = 5000, idle_s: float = 8 * 3600) -> None:
        self.max_sessions = max_sessions
        self.idle_s = idle_s
        self._items: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            s = self._items.get(sid)
            if s is None:
                return None
            now = time.monotonic()
            if now - s.last_seen > self.idle_s:
                self._drop(sid)
                return None
            s.last_seen = now
            self._items.move_to_end(sid)
            return s

    @staticmethod
    def ephemeral() -> Session:
        """A session that is not kept (yet): requests without a cookie get one, and it is
        only stored (``keep``) when the response is a page that shows its CSRF token, so
        clients that never load a page (audio players, scripts) fill no memory."""
        return Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))

    def keep(self, s: Session) -> None:
        """Store a session; beyond ``max_sessions`` the least recently used anonymous ones go
        first, so a flood of new visitors cannot sign reviewers out."""
        with self._lock:
            self._items[s.id] = s
            while len(self._items) > self.max_sessions:
                victim = next((k for k, v in self._items.items() if v.user is None), None)
                self._drop(victim if victim is not None else next(iter(self._items)))

    def new(self) -> Session:
        s = self.ephemeral()
        self.keep(s)
        return s

    def rotate(self, old: Session) -> Session:
        """A new session id and token (on sign-in and sign-out: no session fixation)."""
        with self._lock:
            self._drop(old.id)
        return self.new()

    def _drop(self, sid: str) -> None:
        s = self._items.pop(sid, None)
        if s is not None and s.writer is not None:
            s.writer.dispose()

    def __len__(self) -> int:
        return len(self._items)


class Throttle:
    """At most ``attempts`` failed sign-ins per ``period_s`` per client address and per name."""

    def __init__(self, attempts: int = 10, period_s: float = 300.0) -> None:
        self.attempts = attempts
        self.period_s = period_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > self.period_s:
            q.popleft()
        return q

    def allowed(self, *keys: str) -> bool:
        now = time.monotonic()
        with self._lock:
            return all(len(self._recent(k, now)) < self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                self._recent(k, now).append(now)
            if len(self._failures) > 10000:  # forget quiet keys
                for k in [k for k, q in self._failures.items() if not q]:
                    del self._failures[k]


#: The one answer to every failed sign-in.
SIGN_IN_FAILED = "wrong name or password, or not a reviewer"


def reviewer_engine(server: Engine, name: str, password: str) -> Engine:
    """An engine that connects as reviewer ``name`` to the database of ``server`` (the web
    page's own engine), with SCRAM required; no pool: a verdict is one short insert."""
    url = server.url.set(username=name, password=password)
    return make_engine(
        url.render_as_string(hide_password=False),
        poolclass=NullPool,
        pool_pre_ping=False,
        connect_args={"connect_timeout": 10, **auth_options(SCRAM_ONLY)},
    )


def _spend_like_scram(password: str) -> None:
    """Work about as long as a SCRAM exchange (PostgreSQL's 4096 rounds of PBKDF2), so a
    refusal before any connection takes about as long as a wrong password."""
    hashlib.pbkdf2_hmac("sha256", password.encode(), b"soundscape", 4096)


def sign_in(server: Engine, name: str, password: str) -> Engine:
    """Sign reviewer ``name`` in: ask the database as the page's own role (``server``) whether
    ``name`` is a reviewer, and only then check the password by connecting as that role;
    returns the engine to write that reviewer's verdicts with. Every failure raises
    SignInError(SIGN_IN_FAILED)."""
    if not name or not password or len(name) > 63 or len(password) > 1024:
        raise SignInError(SIGN_IN_FAILED)
    with server.connect() as conn:
        known = is_reviewer_login(raw_connection(conn), name)
    if not known:
        _spend_like_scram(password)
        raise SignInError(SIGN_IN_FAILED)
    engine = reviewer_engine(server, name, password)
    try:
        with engine.connect() as conn:
            ok = is_reviewer(raw_connection(conn))
    except (sa.exc.OperationalError, psycopg.Error) as exc:
        engine.dispose()
        raise SignInError(SIGN_IN_FAILED) from exc
    if not ok:
        engine.dispose()
        raise SignInError(SIGN_IN_FAILED)
    return engine


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _too_large(send, self.max_bytes)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception as exc:  # middleware task groups wrap it in an ExceptionGroup
            if not _body_too_large(exc):
                raise
            if not started:
                await _too_large(send, self.max_bytes)


def _body_too_large(exc: BaseException) -> bool:
    """Whether ``exc`` is (or an exception group holds only) ``BodyTooLarge``."""
    inner = getattr(exc, "exceptions", None)  # an ExceptionGroup (Python 3.11+ or anyio's)
    if isinstance(inner, tuple) and inner:
        return all(_body_too_large(e) for e in inner)
    return isinstance(exc, BodyTooLarge)


async def _too_large(send: Send, max_bytes: int) -> None:
    body = f"request too large: at most {max_bytes // 1_000_000} MB\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def same_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    """Whether a request's ``Origin`` header (when it has one) names the page's own origin."""
    if not origin:
        return True
    if origin == "null" or not host:
        return False
    return origin.rstrip("/").lower() == f"{scheme}://{host}".lower()
