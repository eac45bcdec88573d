"""BI tools over TCP (issue 13): the embedded server started with ``db start --listen``, the
read-only reader connecting with psql and SQLAlchemy over TCP (scram-sha-256; a wrong password
and the superuser refused), every ranger function and view usable by the reader, the
dashboard queries of docs/bi.md run as the reader, and the listen setting kept across
stop/start until turned off.

One embedded server for the module, with a small reserve (tests/reserve.py) ingested with
BirdNET and the spectral baseline, a siren concept and a trained classifier.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from soundscape import embedded_db
from soundscape.cli import cli
from soundscape.db import make_engine
from soundscape.errors import BadOption, DatabaseError

from . import reserve

# Ingests three 72 s recordings with BirdNET: about a minute on two busy cores.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "bi.md"
PASSWORD = "bi-reader-pw"
# psql of the embedded server's wheel, and Debian's when installed (another major version)
PSQLS = [embedded_db.pg_commands.POSTGRES_BIN_PATH / "psql"] + (
    [Path("/usr/bin/psql")] if Path("/usr/bin/psql").exists() else []
)
INGESTED = ("20240331_005900.WAV", "20240501_003000.WAV", "20240501_100000.WAV")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_base() -> Path:
    """A folder for a SOUNDSCAPE_HOME (0711, outside pytest's 0700 tree: see conftest)."""
    base = Path(tempfile.mkdtemp(prefix="soundscape-test-home-"))
    base.chmod(0o711)
    return base


def cli_in(home: Path) -> Callable[..., Result]:
    """Run the CLI on the embedded server of ``home`` (no database URL)."""
    env: dict[str, str | None] = {"SOUNDSCAPE_HOME": str(home), "SOUNDSCAPE_DATABASE_URL": None}

    def run(*args: object, **kwargs: object) -> Result:
        return CliRunner().invoke(
            cli, [str(a) for a in args], env=env, catch_exceptions=False, **kwargs
        )

    return run


@dataclass
class Bi:
    home: Path
    port: int
    run: Callable[..., Result]
    reader_url: str  # over TCP, with the password

    def reader(self) -> psycopg.Connection:
        return psycopg.connect(self.reader_url, autocommit=True)


@pytest.fixture(scope="module")
def bi(reserve_folder: Path) -> Iterator[Bi]:
    """The reserve's audio (conftest's ``reserve_folder``) ingested into its own embedded
    server that listens on TCP: the database a BI tool sees is this server's, so it cannot be
    a copy of ``reserve_template``."""
    base = make_base()
    home = base / "home"
    run = cli_in(home)
    port = free_port()
    try:
        r = run("db", "start", "--listen", f"127.0.0.1:{port}")
        assert r.exit_code == 0, r.output
        assert f"listening on TCP at 127.0.0.1:{port}" in r.stderr
        assert "db create-reader" in r.stderr  # no role may log in over TCP yet
        folder = reserve_folder
        for name, (site, quadrant, tz) in reserve.SENSORS.items():
            r = run(
                "sensors", "add", name, "--site", site, "--quadrant", quadrant, "--timezone", tz
            )
            assert r.exit_code == 0, r.output
        for rec in reserve.RECORDINGS:
            if rec.name in INGESTED:
                path = folder / rec.sensor / rec.name
                r = run("ingest", path, "-s", rec.sensor, "-m", "birdnet,spectral", "-q")
                assert r.exit_code == 0, r.output
        r = run("concepts", "add", "siren", "--text", "siren", "--space", "birdnet")
        assert r.exit_code == 0, r.output
        _train_classifier(run)
        # a call-density sample by the classifier's score (issue 23), for ranger.call_density
        r = run("density", "sample", "sirens", "--classifier", "sirens", "--label", "siren")
        assert r.exit_code == 0, r.output
        r = run("db", "create-reader", "--password", PASSWORD)
        assert r.exit_code == 0, r.output
        url = f"postgresql://soundscape_reader@127.0.0.1:{port}/soundscape?sslmode=disable"
        assert f"over TCP (BI tools): {url}" in r.stderr
        yield Bi(home, port, run, url.replace("reader@", f"reader:{PASSWORD}@"))
    finally:
        embedded_db.destroy(home)
        shutil.rmtree(base, ignore_errors=True)


def _train_classifier(run: Callable[..., Result]) -> None:
    """A tiny spectral classifier ('siren' yes on the night siren, no on plain forest)."""
    r = run("recordings", "list", "--json")
    recs = {Path(row["path"]).name: row["id"] for row in map(json.loads, r.stdout.split("\n")[:-1])}  # fmt: skip
    night = recs["20240501_003000.WAV"]
    for start in (20.0, 22.0, 24.0):  # the fire truck mixed in at 20 s
        assert run("annotate", "add", "--recording", night, "--start", start, "--end", start + 3, "--label", "siren").exit_code == 0  # fmt: skip
    for start in (2.0, 8.0, 64.0):
        assert run("annotate", "add", "--recording", night, "--start", start, "--end", start + 3, "--label", "siren", "--verdict", "no").exit_code == 0  # fmt: skip
    r = run("train", "sirens", "--space", "spectral", "--weak-negatives", "20")
    assert r.exit_code == 0, r.output


# ---------------------------------------------------------------------------------- connect
def test_status_and_url_show_where_it_listens(bi: Bi) -> None:
    r = bi.run("db", "status", "--json")
    info = json.loads(r.stdout)
    assert info["listen"] == info["listen_setting"] == f"127.0.0.1:{bi.port}"
    assert info["up_to_date"] is True
    table = bi.run("db", "status").stdout
    assert re.search(rf"^listen +127\.0\.0\.1:{bi.port}$", table, re.M)
    csv_ = bi.run("db", "status", "--csv").stdout.splitlines()
    assert "listen" in csv_[0].split(",") and f"127.0.0.1:{bi.port}" in csv_[1].split(",")
    r = bi.run("db", "url", "--tcp")
    assert r.stdout.strip() == bi.reader_url.replace(f":{PASSWORD}", "")
    r = bi.run("db", "url", "--tcp", "--user", "grafana", "--sqlalchemy")
    assert r.stdout.strip().startswith(f"postgresql+psycopg://grafana@127.0.0.1:{bi.port}/")
    r = bi.run("db", "url", "--tcp", "-d", "postgresql://x@h/db")
    assert r.exit_code == 2 and "embedded server" in r.stderr


@pytest.mark.parametrize("psql", PSQLS, ids=lambda p: str(p).split("/")[-3])
def test_psql_as_reader_over_tcp(bi: Bi, psql: Path) -> None:
    def run_psql(password: str, sql: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
        url = bi.reader_url.replace(f":{PASSWORD}", "")
        return subprocess.run(
            [str(psql), url, "-w", "-X", "-A", "-t", "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    ok = run_psql(PASSWORD, "SELECT current_user, inet_server_port(), count(*) FROM ranger.spaces")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"soundscape_reader|{bi.port}|2"  # over TCP, two spaces
    wrong = run_psql("not-the-password", "SELECT 1")
    assert wrong.returncode != 0
    assert "password authentication failed" in wrong.stderr


def test_sqlalchemy_as_reader_over_tcp(bi: Bi) -> None:
    url = sa.engine.make_url(bi.reader_url).set(drivername="postgresql+psycopg")
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT current_user, inet_server_addr()::text, "
                    "current_setting('default_transaction_read_only'), "
                    "(SELECT count(*) FROM ranger.windows)"
                )
            ).one()
    finally:
        engine.dispose()
    assert row[0] == "soundscape_reader" and row[1].startswith("127.0.0.1")
    assert row[2] == "on" and row[3] > 100
    bad = make_engine(url.set(password="wrong").render_as_string(hide_password=False))
    try:
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            bad.connect()
    finally:
        bad.dispose()


def test_superuser_never_over_tcp(bi: Bi) -> None:
    tcp = f"postgresql://postgres@127.0.0.1:{bi.port}/soundscape?sslmode=disable"
    with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
        psycopg.connect(tcp)
    admin = embedded_db.status(bi.home).url()
    assert admin is not None
    with psycopg.connect(admin, autocommit=True) as conn:  # even with a password set
        conn.execute("ALTER ROLE postgres PASSWORD 'super-pw'")
    try:
        with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
            psycopg.connect(tcp.replace("postgres@", "postgres:super-pw@"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("ALTER ROLE postgres PASSWORD NULL")
    hba = (bi.home / "pgdata" / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    assert all(rule[-1] in ("scram-sha-256", "reject") for rule in rules if rule[0] == "host")
    assert "trust" not in hba.replace("# ", "")


# ------------------------------------------------------------------- what the reader can use
# One call per ranger function the reader may execute, each returning a row count (run as the
# reader over TCP). A new reader-callable function must be added here.
CALLS: dict[str, str] = {
    # more like a window: its vector from ranger.window_vectors, the space id from ranger.spaces
    "search_vector": """
        SELECT count(*) FILTER (WHERE h.segment_id <> w.segment_id)
          FROM ranger.window_vectors w
          JOIN ranger.spaces s ON s.space_id = w.space_id AND s.name = 'spectral',
               ranger.search_vector(w.space_id, w.embedding, 5, p_exclude => w.segment_id) h
         WHERE w.segment_id = (SELECT min(segment_id) FROM ranger.windows
                                WHERE space = 'spectral')""",
    "search_labels": """
        SELECT count(*) FROM ranger.search_labels(
            (SELECT space_id FROM ranger.spaces WHERE name = 'birdnet'),
            ARRAY(SELECT label_id FROM ranger.labels WHERE space = 'birdnet' AND label = 'Siren'),
            5) WHERE label = 'Siren'""",
    "search": "SELECT count(*) FROM ranger.search('siren', 5, quadrant_name => 'N')",
    "birdnet_week": "SELECT count(*) FROM (SELECT ranger.birdnet_week('2024-05-01')) w "
    "WHERE birdnet_week = 17",
    "anomaly_scores": "SELECT count(*) FROM ranger.anomaly_scores('north-1', 'spectral', 5, "
    "p_date_from => '2024-05-01')",
    "similar_windows": """
        SELECT count(*) FROM ranger.window_vectors w,
               ranger.similar_windows(w.space_id, ARRAY[w.embedding], 3) h
         WHERE w.segment_id = (SELECT max(segment_id) FROM ranger.windows
                                WHERE space = 'spectral')""",
    "duplicate_pairs": "SELECT 1 + count(*) FROM ranger.duplicate_pairs("
    "(SELECT space_id FROM ranger.spaces WHERE name = 'spectral'), 2, 0.99)",
    # the filters' time rule (issue 27): windows of the night, across midnight
    "in_time_filter": "SELECT count(*) FROM ranger.windows w WHERE ranger.in_time_filter("
    "w.local_time, w.local_date, w.starts_at, '22:00', '04:00', NULL, NULL, NULL, NULL)",
    "filtered_windows": "SELECT count(*) FROM ranger.filtered_windows("
    "(SELECT space_id FROM ranger.spaces WHERE name = 'spectral'), ARRAY['north-1'], "
    "p_time_from => '22:00', p_time_to => '04:00')",
    "search_classifier": "SELECT count(*) FROM ranger.search_classifier('sirens', 'siren', 5)",
    # what ranger.detections shows of classifiers (none has scored here: no permission error)
    "newest_scored_classifiers": "SELECT 1 + count(*) FROM ranger.newest_scored_classifiers()",
    # speech (issue 12): nothing transcribed here, so no rows, but no permission error either
    "search_speech": "SELECT 1 + count(*) FROM ranger.search_speech('chainsaw')",
    # a space's recall check (issue 22): none here, but no permission error
    "index_recall": "SELECT 1 + count(*) FROM ranger.index_recall("
    "(SELECT space_id FROM ranger.spaces WHERE name = 'spectral'))",
    # the sun (issue 29): Berlin's day, the sun filter's periods (no sensor here has
    # coordinates: of none) and its rule on one instant
    "sun_times": "SELECT count(*) FROM ranger.sun_times(52.5, 13.4, 'Europe/Berlin', "
    "'2024-05-01') WHERE dawn < sunrise AND sunrise < sunset AND sunset < dusk",
    "sun_minutes": "SELECT count(*) FROM (SELECT ranger.sun_minutes(52.5, 13.4, '2024-05-01', "
    "'sunrise') AS m) x WHERE m BETWEEN 200 AND 230",  # 03:35 UTC: 05:35 in Berlin
    "sun_periods": "SELECT 1 + cardinality(ranger.sun_periods('dawn', ARRAY[]::integer[]))",
    "in_sun_filter": "SELECT count(*) FROM (SELECT ranger.in_sun_filter(1, now(), ARRAY["
    "tstzmultirange(tstzrange(now() - interval '1 hour', now() + interval '1 hour'))]) AS ok) x "
    "WHERE ok",
    # call density (issue 23): the sample the fixture drew, per site, without verdicts
    "call_density": "SELECT count(*) FROM ranger.call_density('sirens') WHERE high > low",
}


def test_reader_can_call_every_ranger_function(bi: Bi) -> None:
    with bi.reader() as conn:
        callable_ = {
            name
            for (name,) in conn.execute(
                "SELECT DISTINCT p.proname FROM pg_proc p "
                "WHERE p.pronamespace = 'ranger'::regnamespace "
                "AND has_function_privilege(p.oid, 'EXECUTE')"
            )
        }
        assert callable_ - CALLS.keys() == set(), "add a reader call for these to CALLS"
        # one signature each: a migration that adds an argument drops the old one (0028)
        overloads = conn.execute(
            "SELECT p.proname, string_agg(p.oid::regprocedure::text, ' | ') FROM pg_proc p "
            "WHERE p.pronamespace = 'ranger'::regnamespace GROUP BY 1 HAVING count(*) > 1"
        ).fetchall()
        assert overloads == []
        assert "refresh_detections" not in callable_  # writes: not the reader's
        for name in sorted(callable_):
            (count,) = conn.execute(CALLS[name]).fetchone() or (0,)
            assert count > 0, name
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM public.spaces")  # the base tables stay closed


def test_reader_can_read_every_ranger_view(bi: Bi) -> None:
    with bi.reader() as conn:
        views = [
            name
            for (name,) in conn.execute(
                "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'ranger'::regnamespace "
                "AND c.relkind IN ('v', 'm') ORDER BY 1"
            )
        ]
        assert {"spaces", "labels", "window_vectors", "windows", "species_daily"} <= set(views)
        for view in views:
            conn.execute(f"SELECT * FROM ranger.{view} LIMIT 1").fetchall()
        spaces = {r[0]: r[1:] for r in conn.execute(
            "SELECT name, model, dimension, n_labels, n_recordings, n_windows FROM ranger.spaces"
        )}  # fmt: skip
        assert spaces["birdnet"][:2] == ("birdnet", 1024)
        assert spaces["birdnet"][2] > 6000 and spaces["spectral"][1:3] == (192, 0)
        assert spaces["spectral"][3] == 3 and spaces["spectral"][4] > 100
        (siren,) = conn.execute(
            "SELECT count(*) FROM ranger.labels WHERE space = 'birdnet' AND label = 'Siren'"
        ).fetchone() or (0,)
        assert siren == 1


def test_upgrade_grants_the_new_views_to_existing_readers(db_url: str) -> None:
    """Migration 0015 on a database whose reader already exists: the new views are granted to
    it even where default privileges would not (here: revoked)."""
    from alembic import command

    from soundscape.db import alembic_config, upgrade
    from soundscape.roles import create_reader

    engine = make_engine(db_url)
    try:
        create_reader(engine, "pw")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA ranger "
                    "REVOKE SELECT ON TABLES FROM soundscape_reader"
                )
            )
            command.downgrade(alembic_config(conn), "0014")
        check = "SELECT has_table_privilege('soundscape_reader', 'ranger.spaces', 'SELECT')"
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT to_regclass('ranger.spaces')")).scalar() is None
        upgrade(engine, "head")
        with engine.connect() as conn:
            assert conn.execute(sa.text(check)).scalar() is True
            for view in ("labels", "window_vectors"):
                assert conn.execute(sa.text(check.replace("spaces", view))).scalar() is True
    finally:
        engine.dispose()


# ------------------------------------------------------------------------ dashboard queries
def doc_queries(kind: str) -> dict[str, str]:
    """The SQL blocks of docs/bi.md marked ``<!-- KIND: NAME -->``."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.findall(rf"<!-- {kind}: ([\w-]+) -->\s*```sql\n(.*?)```", text, re.S)
    return dict(found)


def test_docs_hold_three_dashboard_queries() -> None:
    assert set(doc_queries("dashboard")) == {"species-per-site-per-day", "sirens-at-night", "activity-by-hour"}  # fmt: skip


def test_dashboard_queries_as_reader(bi: Bi) -> None:
    queries = doc_queries("dashboard")
    with bi.reader() as conn:
        rows = {}
        for name, sql in (queries | doc_queries("example")).items():
            cur = conn.execute(sql)
            assert cur.description is not None
            rows[name] = [dict(zip([c.name for c in cur.description], r)) for r in cur]
        # the place filter as p_place (a JSON object of lists) is the one of p_sensors: the
        # Marsh site's quadrant N is north-1
        (by_name,) = conn.execute(
            "SELECT count(*) FROM ranger.filtered_windows((SELECT space_id FROM ranger.spaces "
            "WHERE name = 'spectral'), p_sensors => ARRAY['north-1'])"
        ).fetchone() or (0,)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="quadrants, sensors, sites"):
            conn.execute(
                'SELECT count(*) FROM ranger.filtered_windows(1, p_place => \'{"site": ["x"]}\')'
            )
    species = rows["species-per-site-per-day"]
    assert {(r["site"], str(r["local_date"])) for r in species} >= {("Marsh", "2024-05-01")}
    assert all(r["species"] >= 1 for r in species)
    # night sirens in N: 01:59 CET on 31 March (and 03:00 CEST after the clocks jumped), 02:30
    # on 1 May; the noon one in the south is not at night
    night = rows["sirens-at-night"]
    assert [(r["quadrant"], str(r["night_of"])) for r in night] == [
        ("N", "2024-03-30"),
        ("N", "2024-04-30"),
    ]
    assert "2024-05-01 02:30:00" <= str(night[1]["first_heard"]) < "2024-05-01 02:31:00"
    assert len(rows["labels"]) >= 1 and len(rows["more-like-this"]) == 10
    assert rows["place"][0]["windows"] == by_name > 0
    by_hour = {(r["site"], r["hour"]): r["detections"] for r in rows["activity-by-hour"]}
    assert by_hour.get(("Marsh", 2), 0) >= 1 and by_hour.get(("Forest", 12), 0) >= 1


# ------------------------------------------------------------------- the setting persists
def test_listen_persists_and_turns_off(tmp_path: Path) -> None:
    base = make_base()
    home = base / "home"
    run = cli_in(home)
    port = free_port()
    try:
        assert run("db", "start").exit_code == 0  # socket only
        assert json.loads(run("db", "status", "--json").stdout)["listen"] == "off"
        r = run("db", "start", "--listen", f"[::1]:{port}")  # a running server is restarted
        assert r.exit_code == 0, r.output
        assert f"restarting the embedded PostgreSQL to listen on [::1]:{port}" in r.stderr
        assert embedded_db.status(home).listen == embedded_db.Listen("::1", port)
        assert json.loads((home / "server.json").read_text()) == {"listen": f"[::1]:{port}"}

        assert run("db", "stop").exit_code == 0
        embedded_db.ensure_running_url(home)  # any command's auto-start keeps it
        assert embedded_db.status(home).listen == embedded_db.Listen("::1", port)
        run("db", "stop")
        r = run("db", "start")  # so does a plain db start, without a restart message
        assert r.exit_code == 0 and "restarting" not in r.stderr
        info = json.loads(run("db", "status", "--json").stdout)
        assert info["listen"] == info["listen_setting"] == f"[::1]:{port}"
        with socket.create_connection(("::1", port), timeout=5):
            pass

        r = run("db", "start", "--listen", "off")
        assert r.exit_code == 0 and "stop listening on TCP" in r.stderr
        with pytest.raises(OSError), socket.create_connection(("::1", port), timeout=5):
            pass
        run("db", "stop")
        run("db", "start")
        info = json.loads(run("db", "status", "--json").stdout)
        assert info["listen"] == info["listen_setting"] == "off"
        r = run("db", "url", "--tcp")
        assert r.exit_code == 1 and "--listen 127.0.0.1:5432" in r.stderr
    finally:
        embedded_db.destroy(home)
        shutil.rmtree(base, ignore_errors=True)


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    base = make_base()
    home = base / "home"
    run = cli_in(home)
    port = free_port()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", port))
            taken.listen()
            r = run("db", "start", "--listen", f"127.0.0.1:{port}")
            assert r.exit_code == 1
            assert f"port {port} on 127.0.0.1 is already in use" in r.stderr
            assert embedded_db.listen_setting(home) is None  # a failed setting is not kept
            assert run("db", "start").exit_code == 0  # so plain starts still work
            r = run("db", "start", "--listen", f"127.0.0.1:{port}")  # running: not stopped
            assert r.exit_code == 1 and "already in use" in r.stderr
            st = embedded_db.status(home)
            assert st.running and st.listen is None
        # The same port on another address: the running server must stop to free the port
        # before the new address can be tried; when that fails, it runs again as it was.
        with socket.socket(socket.AF_INET6) as taken:
            taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            taken.bind(("::1", port))
            taken.listen()
            assert run("db", "start", "--listen", f"127.0.0.1:{port}").exit_code == 0
            r = run("db", "start", "--listen", f"[::1]:{port}")
            assert r.exit_code == 1 and f"port {port} on ::1 is already in use" in r.stderr
            assert f"runs again as before (on 127.0.0.1:{port})" in r.stderr
            assert embedded_db.status(home).listen == embedded_db.Listen("127.0.0.1", port)
            assert embedded_db.listen_setting(home) == embedded_db.Listen("127.0.0.1", port)
    finally:
        embedded_db.destroy(home)
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:5433", "127.0.0.1", 5433),
        ("[::1]:6000", "::1", 6000),
        ("[::]:6000", "::", 6000),
        ("0.0.0.0:5432", "0.0.0.0", 5432),
        ("*:5440", "*", 5440),
        ("localhost:5432", "localhost", 5432),
        ("db.example.org", "db.example.org", 5432),
        ("5999", "127.0.0.1", 5999),
        ("[::1]", "::1", 5432),
    ],
)
def test_parse_listen(text: str, host: str, port: int) -> None:
    assert embedded_db.parse_listen(text) == embedded_db.Listen(host, port)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("::1:5432", "brackets"),
        ("[::1:5432", "brackets"),
        ("[127.0.0.1]:5432", "not an IPv6"),
        ("127.0.0.1:http", "not a number"),
        ("127.0.0.1:80", "1024-65535"),
        ("127.0.0.1:70000", "1024-65535"),
        ("a b:5432", "neither an IP"),
        ("300.1.1.1:5432", "neither an IP"),
        ("host';drop:5432", "neither an IP"),
    ],
)
def test_bad_listen_is_a_usage_error(text: str, why: str) -> None:
    assert embedded_db.parse_listen("off") is None
    with pytest.raises(BadOption, match=why):
        embedded_db.parse_listen(text)
    r = cli_in(Path("/nonexistent-soundscape-home"))("db", "start", "--listen", text)
    assert r.exit_code == 2 and why in r.stderr


def test_unreadable_setting_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "server.json").write_text('{"listen": "[::1"}')
    with pytest.raises(DatabaseError, match="--listen HOST:PORT"):
        embedded_db.listen_setting(tmp_path)
    (tmp_path / "server.json").write_text("{}")
    assert embedded_db.listen_setting(tmp_path) is None
    assert embedded_db.Listen("::", 5432).connect_host == "::1"
    assert (
        embedded_db.Listen("127.0.0.2").loopback_only and not embedded_db.Listen("*").loopback_only
    )
    os.remove(tmp_path / "server.json")
