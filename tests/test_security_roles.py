"""Issue 24, the database server, roles and sign-in: each test repeats an attack of the hostile
trial (or a careless command) and failed on the main of that day.

1. a socket folder another user owns or can enter was used as is, and clients answered a
   request for the password in cleartext; a kill -9 left the server's short socket folder;
3. the reader wrote (large objects, temp tables) after ``SET default_transaction_read_only
   = off``; 4. the reader could block ingest with an advisory lock; 6. reviewers kept
   ``ALTER ROLE ... SET`` of their own, had no ``temp_file_limit`` and large objects;
7. the sign-in connected as the superuser and told whether a reader's password was right;
8. ``db create-reader --name`` rewrote any existing role (``postgres``: a traceback).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import struct
import threading
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from soundscape import embedded_db
from soundscape import roles as roles_module
from soundscape.db import make_engine, open_database, raw_connection
from soundscape.errors import DatabaseError
from soundscape.roles import READER_ROLE, create_reader, create_reviewer
from soundscape.web import WebConfig, create_app
from soundscape.web import security as web_security

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
root_only = pytest.mark.skipif(not ROOT, reason="needs root to act as another OS user")


def _url_as(db_url: str, user: str, password: str, driver: str = "postgresql") -> str:
    return (
        sa.engine.make_url(db_url)
        .set(drivername=driver, username=user, password=password)
        .render_as_string(hide_password=False)
    )


# --------------------------------------------------------------------- 1. the socket folder
@root_only
def test_socket_folder_of_another_user_is_refused(server_base):
    """The repro: `nobody` made SOUNDSCAPE_HOME/run 0777; `db start` used it."""
    nobody = pwd.getpwnam("nobody")
    home = server_base / "home"
    home.mkdir(mode=0o711)
    run = home / "run"
    run.mkdir()
    os.chown(run, nobody.pw_uid, nobody.pw_gid)
    run.chmod(0o777)
    with pytest.raises(DatabaseError, match="mode 0700") as err:
        embedded_db.start(home)
    assert "nobody" in str(err.value) and f"rm -r {run}" in str(err.value)
    assert not embedded_db.status(home).running and not (home / "pgdata").exists()
    assert run.stat().st_uid == nobody.pw_uid  # left as it was: not ours to change


@root_only
def test_home_another_user_can_write_to_is_refused(server_base):
    """A private run/ is no use in a folder its owner (`nobody`) can rename it out of."""
    nobody = pwd.getpwnam("nobody")
    home = server_base / "home"
    home.mkdir(mode=0o755)
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(DatabaseError, match="belongs to nobody"):
        embedded_db.start(home)
    assert not embedded_db.status(home).running


def test_open_socket_folder_is_refused_then_works_once_removed(server_base):
    home = server_base / "home"
    home.mkdir(mode=0o711)
    (home / "run").mkdir()
    (home / "run").chmod(0o777)
    with pytest.raises(DatabaseError, match="must be a folder of .* with mode 0700"):
        embedded_db.start(home)
    shutil.rmtree(home / "run")  # what the message says to do
    try:
        st = embedded_db.start(home)
        assert st.running and st.socket_dir == home / "run"
        assert stat.S_IMODE((home / "run").stat().st_mode) == 0o700
    finally:
        embedded_db.stop(home)


def test_running_server_in_an_open_socket_folder_is_not_used(server_base, run_cli, monkeypatch):
    """A server whose socket folder became reachable by others is refused, not connected to."""
    home = server_base / "home"
    monkeypatch.setenv("SOUNDSCAPE_HOME", str(home))
    monkeypatch.delenv("SOUNDSCAPE_DATABASE_URL", raising=False)
    try:
        st = embedded_db.start(home)
        assert st.socket_dir is not None
        st.socket_dir.chmod(0o777)
        with pytest.raises(DatabaseError, match="mode 0777"):
            embedded_db.ensure_running_url(home)
        with pytest.raises(DatabaseError, match="mode 0777"):
            embedded_db.start(home)
        r = run_cli("search", "owl")
        assert r.exit_code == 1 and "mode 0777" in r.stderr
        status = json.loads(run_cli("db", "status", "--json").stdout)
        assert "mode 0777" in status["error"] and status["revision"] is None
    finally:
        embedded_db.stop(home)


def _private_folder(path: Path) -> Path:
    """A 0700 folder of the server's user, as soundscape makes them."""
    who = embedded_db._service_identity()
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    os.chown(path, who.uid, who.gid)
    return path


def test_socket_folder_checks_follow_links_and_parents(server_base):
    real = server_base / "real"
    real.mkdir(mode=0o711)
    _private_folder(real / "run")
    (server_base / "link").symlink_to(real)
    embedded_db.check_socket_dir(server_base / "link" / "run")  # a link to a safe place is fine
    (server_base / "runlink").symlink_to(real / "run")
    with pytest.raises(DatabaseError, match="is a symbolic link"):
        embedded_db.check_socket_dir(server_base / "runlink")
    shared = server_base / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may rename what is in it (no sticky bit)
    _private_folder(shared / "run")
    with pytest.raises(DatabaseError, match="mode 0777"):
        embedded_db.check_socket_dir(shared / "run")
    (server_base / "via").symlink_to(shared)
    with pytest.raises(DatabaseError, match="mode 0777"):
        embedded_db.check_socket_dir(server_base / "via" / "run")
    shared.chmod(0o1777)  # sticky, as /tmp: only the owner may rename it
    embedded_db.check_socket_dir(shared / "run")


def test_stale_short_socket_folder_is_removed_after_kill_9(server_base):
    home = server_base / ("h" * 90)  # too long for a socket path: a short folder under /tmp
    try:
        first = embedded_db.start(home)
        assert first.socket_dir is not None
        assert first.socket_dir.name.startswith(embedded_db.SHORT_SOCKET_PREFIX)
        os.kill(first.pid or 0, signal.SIGKILL)
        for _ in range(100):
            if not embedded_db.status(home).running:
                break
            time.sleep(0.1)
        assert first.socket_dir.exists()  # the dead server's folder, with its dead socket
        second = embedded_db.start(home)
        assert second.running and second.socket_dir != first.socket_dir
        assert not first.socket_dir.exists()
    finally:
        embedded_db.stop(home)
    assert second.socket_dir is not None and not second.socket_dir.exists()


class FakeServer:
    """Listens on a Unix socket as a PostgreSQL server would and asks every client for its
    password in cleartext (``method`` 3) or as MD5 (5); records the password messages."""

    def __init__(self, folder: Path, method: int) -> None:
        self.path = folder / ".s.PGSQL.5432"
        self.method = method
        self.received: list[bytes] = []
        self.asked = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            with client:
                client.settimeout(3)
                with contextlib.suppress(OSError, struct.error):
                    self._talk(client)

    @staticmethod
    def _read(client: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = client.recv(n - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _talk(self, client: socket.socket) -> None:
        while True:  # SSL / GSSAPI encryption requests: no
            (length,) = struct.unpack("!i", self._read(client, 4))
            body = self._read(client, length - 4)
            if struct.unpack("!i", body[:4])[0] in (80877103, 80877104):
                client.sendall(b"N")
                continue
            break
        if self.method == 3:
            client.sendall(struct.pack("!cii", b"R", 8, 3))
        else:
            client.sendall(struct.pack("!cii4s", b"R", 12, 5, b"salt"))
        self.asked += 1
        kind = self._read(client, 1)
        (length,) = struct.unpack("!i", self._read(client, 4))
        body = self._read(client, length - 4)
        if kind == b"p":
            self.received.append(body)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.mark.parametrize("method", [3, 5], ids=["cleartext", "md5"])
def test_clients_never_send_a_password_in_cleartext_or_md5(tmp_path, method):
    """What `nobody` did with the socket: listen in the server's place asking for the
    password. Neither the library's connections nor the web sign-in may answer."""
    folder = tmp_path / "sock"
    folder.mkdir(mode=0o700)
    fake = FakeServer(folder, method)
    secret = "the reviewer's secret"
    url = f"postgresql+psycopg://ana:{secret.replace(' ', '%20')}@/soundscape?host={folder}"
    try:
        engine = make_engine(url)
        with pytest.raises(sa.exc.OperationalError, match="authentication method requirement"):
            engine.connect()
        engine.dispose()
        writer = web_security.reviewer_engine(make_engine(url), "ana", secret)
        with pytest.raises(sa.exc.OperationalError, match="authentication method requirement"):
            writer.connect()
        writer.dispose()
        with pytest.raises(DatabaseError, match="never sends a password in cleartext"):
            open_database(url)
    finally:
        fake.close()
    assert fake.asked >= 3  # it was asked, and it never got an answer
    assert fake.received == []


# ------------------------------------------------------------ 3, 4, 6: readers and reviewers
READER_PW, REVIEWER, REVIEWER_PW = "pw-reader", "ana_r", "pw-ana"

ATTEMPTS = (
    "SELECT lo_from_bytea(0, 'eighty megabytes')",
    "SELECT lo_create(0)",
    "SELECT lo_creat(-1)",
    "CREATE TEMP TABLE grow (x text)",
    "SELECT pg_advisory_lock(hashtext('soundscape.spaces'))",
    "SELECT pg_try_advisory_lock(hashtext('soundscape.spaces'))",
    "SELECT pg_advisory_lock_shared(hashtext('soundscape.jobs.enqueue'))",
    "SELECT pg_advisory_xact_lock(1, 2)",
    "CREATE TABLE public.sneaky (x int)",
)


@pytest.fixture
def roles(engine, db_url):
    create_reader(engine, READER_PW, revoke_other_databases=True)
    create_reviewer(engine, REVIEWER, REVIEWER_PW)
    return {
        READER_ROLE: _url_as(db_url, READER_ROLE, READER_PW),
        REVIEWER: _url_as(db_url, REVIEWER, REVIEWER_PW),
    }


def _nothing_left_behind(engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_largeobject_metadata")).scalar() == 0
        held = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND a.usename IN (:a, :b)"
            ),
            {"a": READER_ROLE, "b": REVIEWER},
        ).scalar()
        assert held == 0


@pytest.mark.parametrize("who", [READER_ROLE, REVIEWER])
def test_role_cannot_write_or_lock_even_with_read_only_off(roles, who, engine):
    with psycopg.connect(roles[who], autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")  # PostgreSQL allows it
        for attempt in ATTEMPTS:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(attempt)
        _nothing_left_behind(engine)
    with engine.connect() as conn:  # the writer still takes the lock ingest uses
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('soundscape.spaces'))"))


@pytest.mark.parametrize("who", [READER_ROLE, REVIEWER])
def test_limits_come_back_at_every_login(roles, who, db_url):
    dbname = sa.engine.make_url(db_url).database
    want = {READER_ROLE: "1min", REVIEWER: "10s"}[who]
    with psycopg.connect(roles[who], autocommit=True) as conn:
        assert conn.execute("SHOW temp_file_limit").fetchone()[0] != "-1"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET temp_file_limit = -1")
        conn.execute("SET default_transaction_read_only = off")
        conn.execute(f'ALTER ROLE CURRENT_USER IN DATABASE "{dbname}" SET statement_timeout = 0')
        conn.execute("ALTER ROLE CURRENT_USER SET statement_timeout = 0")
        conn.execute("ALTER ROLE CURRENT_USER SET work_mem = '4GB'")
    with psycopg.connect(roles[who], autocommit=True) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == want
        assert conn.execute("SHOW work_mem").fetchone()[0] != "4GB"
        limit = conn.execute("SHOW temp_file_limit").fetchone()[0]
        assert limit == {READER_ROLE: "1GB", REVIEWER: "64MB"}[who]


def test_reviewers_made_before_get_their_limits(roles, engine):
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM reader_settings WHERE role = :r"), {"r": REVIEWER})
    with engine.begin() as conn:
        roles_module.refresh_reviewer_limits(raw_connection(conn))
        rows = dict(
            conn.execute(
                sa.text("SELECT setting, value FROM reader_settings WHERE role = :r"),
                {"r": REVIEWER},
            ).all()
        )
    assert rows["statement_timeout"] == "10s" and rows["temp_file_limit"] == "64MB"


def test_a_non_superuser_owner_keeps_the_advisory_locks(admin_url, engine, db_url):
    dbname = sa.engine.make_url(db_url).database
    owner = f"owner_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {owner}")
        conn.execute(f"CREATE ROLE {owner}")
        conn.execute(f'ALTER DATABASE "{dbname}" OWNER TO {owner}')
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(roles_module.LOCKDOWN_SQL))
            may = conn.execute(
                sa.text(
                    "SELECT has_function_privilege(:o, 'pg_advisory_xact_lock(bigint)', "
                    "'EXECUTE'), has_function_privilege('public', "
                    "'pg_advisory_xact_lock(bigint)', 'EXECUTE'), "
                    "has_database_privilege('public', current_database(), 'TEMPORARY')"
                ),
                {"o": owner},
            ).one()
        assert tuple(may) == (True, False, False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{dbname}" OWNER TO CURRENT_USER')
        with engine.begin() as conn:  # its grants in the test database
            conn.execute(sa.text(f"DROP OWNED BY {owner}"))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {owner}")


# ---------------------------------------------------------------------------- 7. sign-in
def _csrf(client: TestClient) -> str:
    page = client.get("/login").text
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def _message(text: str) -> str:
    return text.split('role="alert">', 1)[1].split("</p>", 1)[0]


def test_sign_in_gives_one_answer_and_never_connects_as_others(roles, db_url, monkeypatch):
    database = open_database(db_url)
    built: list[str] = []
    real = web_security.reviewer_engine

    def spy(server_engine, name, password):
        built.append(name)
        return real(server_engine, name, password)

    monkeypatch.setattr(web_security, "reviewer_engine", spy)
    try:
        client = TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), database))
        answers = {}
        for name, password in [
            ("postgres", "anything"),  # the superuser, by peer authentication on main
            (READER_ROLE, READER_PW),  # the reader's right password
            (READER_ROLE, "wrong"),
            ("nobody_here", "x"),
            (REVIEWER, "wrong"),
        ]:
            r = client.post(
                "/login",
                data={"name": name, "password": password, "csrf_token": _csrf(client)},
                follow_redirects=False,
            )
            assert r.status_code == 401, (name, r.status_code)
            answers[(name, password)] = _message(r.text)
        assert set(answers.values()) == {web_security.SIGN_IN_FAILED}
        assert built == [REVIEWER]  # the only name that is a reviewer: no other connection
        r = client.post(
            "/login",
            data={"name": REVIEWER, "password": REVIEWER_PW, "csrf_token": _csrf(client)},
            follow_redirects=False,
        )
        assert r.status_code == 303
    finally:
        database.engine.dispose()


# ------------------------------------------------------------------ 8. role creation refuses
def test_create_reader_refuses_roles_of_another_kind(roles, cli_env, run_cli, admin_url, db_url):
    su = f"su_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {su}")
        conn.execute(f"CREATE ROLE {su} SUPERUSER LOGIN PASSWORD 'su-pw'")
    try:
        for name in ("postgres", su, REVIEWER, "soundscape_reviewer"):
            r = run_cli("db", "create-reader", "--name", name, "--password", "x")
            assert r.exit_code == 1, (name, r.output)
            assert "not a reader" in r.stderr or "group role" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr
        with psycopg.connect(admin_url, autocommit=True) as conn:
            supers = conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolsuper AND rolname IN ('postgres', %s)",
                [su],
            ).fetchall()
        assert sorted(n for (n,) in supers) == sorted(["postgres", su])
        with psycopg.connect(_url_as(db_url, REVIEWER, REVIEWER_PW)) as conn:  # unchanged
            assert conn.execute("SELECT pg_has_role('soundscape_reviewer', 'MEMBER')").fetchone()[0]
        again = run_cli("db", "create-reader", "--password", "new-pw")  # the reader itself: fine
        assert again.exit_code == 0, again.output
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {su}")


def test_create_reviewer_refuses_the_reader_and_the_owner(roles, engine):
    for name in (READER_ROLE, "postgres"):
        with pytest.raises(DatabaseError):
            create_reviewer(engine, name, "pw")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE ROLE plain_reader_like LOGIN"))
    try:
        with pytest.raises(DatabaseError, match="not a reader"):
            create_reader(engine, "pw", name="plain_reader_like")
        with pytest.raises(DatabaseError, match="not a reviewer"):
            create_reviewer(engine, "plain_reader_like", "pw")
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP OWNED BY plain_reader_like"))
            conn.execute(sa.text("DROP ROLE plain_reader_like"))


def test_own_password_change_is_allowed_but_gives_nothing(roles, engine, db_url):
    """PostgreSQL always lets a role change its own password (no privilege or trigger can
    stop it; docs/security.md): it only locks that role out, and it gains nothing."""
    with psycopg.connect(roles[READER_ROLE], autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("ALTER ROLE CURRENT_USER PASSWORD 'mine now'")
        for attempt in (
            "ALTER ROLE CURRENT_USER CREATEDB",
            f"ALTER ROLE {REVIEWER} PASSWORD 'x'",
            "GRANT soundscape_reviewer TO CURRENT_USER",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(attempt)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(roles[READER_ROLE])
    create_reader(engine, READER_PW)  # what the admin does: the reader's password again
    psycopg.connect(_url_as(db_url, READER_ROLE, READER_PW)).close()
