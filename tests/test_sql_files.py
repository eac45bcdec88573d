"""The ``ranger`` schema's current files (sql/*.sql, see sql/README.md) and the databases the
migrations build: a fresh install, and an older database upgraded, hold exactly what the files
define; a file edited without a migration that re-applies it is caught by its fingerprint."""

from __future__ import annotations

import hashlib
import inspect
import re

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from soundscape.db import alembic_config, make_engine, upgrade
from soundscape.resources import read_sql, sql_dir

# Each current file's SHA-256 and the newest migration that applies it. A file whose text no
# longer matches was edited after that migration shipped: databases already at head still
# have the old definitions. Add a migration that re-applies the file (sql/README.md), then
# record the new hash and that migration here.
FINGERPRINTS = {
    "catalog.sql": ("0032", "f351a641a1a9"),
    "search.sql": ("0036", "af7c38d518ed"),
    "analytics.sql": ("0027", "929bfc3fe3bf"),
    "classify.sql": ("0036", "c74ee08e1d6b"),
    "classifiers.sql": ("0036", "85f791935678"),
    "species.sql": ("0011", "13d5005221de"),
    "speech.sql": ("0036", "a4703e68a680"),
    "speakers.sql": ("0013", "39bc0dc0575c"),
    "density.sql": ("0031", "5de93c1ba346"),
    "utterances.sql": ("0035", "2f6f8c8af43e"),
    "indices.sql": ("0034", "b07545555bfb"),
}

_READ_SQL = re.compile(r"""read_sql\(\s*["']([^"']+)["']\s*\)""")


def _revisions():
    """The migration scripts, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return list(reversed(list(script.walk_revisions("base", "heads"))))


def _applied_files() -> list[tuple[str, str]]:
    """(revision, current file) for every read_sql of a current file in an upgrade(), in the
    order a fresh install runs them."""
    out = []
    for rev in _revisions():
        for name in _READ_SQL.findall(inspect.getsource(rev.module.upgrade)):
            if not name.startswith("frozen/"):
                out.append((rev.revision, name))
    return out


def _family_order() -> list[str]:
    order: list[str] = []
    for _, name in _applied_files():
        if name not in order:
            order.append(name)
    return order


def _ranger_objects(conn) -> dict[str, str]:
    """Every function (by signature: definition and grants) and view (definition) in ranger."""
    functions = conn.execute(
        sa.text(
            "SELECT 'function ' || p.oid::regprocedure::text, "
            "pg_get_functiondef(p.oid) || E'\\n-- acl ' || coalesce(p.proacl::text, 'default') "
            "FROM pg_proc p WHERE p.pronamespace = 'ranger'::regnamespace"
        )
    ).all()
    views = conn.execute(
        sa.text(
            "SELECT 'view ' || c.relname, pg_get_viewdef(c.oid) FROM pg_class c "
            "WHERE c.relnamespace = 'ranger'::regnamespace AND c.relkind IN ('v', 'm')"
        )
    ).all()
    return dict(functions) | dict(views)


def _diff(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    return sorted(
        [f"only in the files: {k}" for k in expected.keys() - actual.keys()]
        + [f"only in the database: {k}" for k in actual.keys() - expected.keys()]
        + [f"differs: {k}" for k in expected.keys() & actual.keys() if expected[k] != actual[k]]
    )


def _objects_from_files(engine) -> dict[str, str]:
    """Drop the ranger schema of this (migrated) database and build it again from the current
    files alone, in the order the migrations first apply them."""
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA ranger CASCADE"))
        for name in _family_order():
            # through psycopg itself, so that nothing rewrites the text on the way
            conn.connection.driver_connection.execute(read_sql(name))
    with engine.connect() as conn:
        return _ranger_objects(conn)


def test_every_current_file_is_applied_by_a_migration():
    files = {p.name for p in sql_dir().glob("*.sql")}
    applied = {name for _, name in _applied_files()}
    assert files == applied, f"files no migration applies: {sorted(files - applied)}"
    frozen = {p.relative_to(sql_dir()).as_posix() for p in (sql_dir() / "frozen").glob("*.sql")}
    for name in frozen:  # a frozen copy is named after the downgrade that applies it
        rev = name.removeprefix("frozen/").split("_", 1)[0]
        (script,) = [r for r in _revisions() if r.revision == rev]
        assert name in inspect.getsource(script.module.downgrade), name


def test_current_files_have_no_drop_then_create():
    for path in sql_dir().glob("*.sql"):
        text = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
        assert not re.search(r"\bDROP\s+(FUNCTION|VIEW|TABLE|SCHEMA)\b", text, re.I), path.name
        creates = re.findall(r"\bCREATE\s+(?!OR\s+REPLACE)(\w+)", text, re.I)
        assert {c.upper() for c in creates} <= {"SCHEMA"}, (path.name, creates)


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_file_fingerprints(name):
    """A current file changed since the migration recorded here applied it needs a new
    migration that re-applies it; the one recorded must be the newest that applies it."""
    revision, digest = FINGERPRINTS[name]
    actual = hashlib.sha256(read_sql(name).encode()).hexdigest()[:12]
    assert actual == digest, (
        f"sql/{name} changed after migration {revision} applied it (sha256 {actual}, recorded "
        f"{digest}): add a migration that re-applies it (see sql/README.md), then record that "
        f"migration and the new hash in FINGERPRINTS"
    )
    newest = [rev for rev, n in _applied_files() if n == name][-1]
    assert newest == revision, f"sql/{name} is applied last by {newest}, recorded {revision}"


def test_fresh_database_equals_the_current_files(engine):
    with engine.connect() as conn:
        migrated = _ranger_objects(conn)
    assert any(k.startswith("function ranger.search_vector(") for k in migrated)
    from_files = _objects_from_files(engine)
    assert _diff(from_files, migrated) == []


def test_a_drifted_definition_is_caught(engine):
    """The comparison above notices a single changed body (so it can fail)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE OR REPLACE FUNCTION ranger._filter_sql(p_sensor_ids integer[], "
                "p_time_from time, p_time_to time, p_date_from date, p_date_to date, "
                "p_at_from timestamptz, p_at_to timestamptz, p_exclude bigint, "
                "p_sun text DEFAULT NULL) "
                "RETURNS text "
                "LANGUAGE sql IMMUTABLE AS $$ SELECT 'true' $$"
            )
        )
    with engine.connect() as conn:
        drifted = _ranger_objects(conn)
    assert _diff(_objects_from_files(engine), drifted) == [
        "differs: function ranger._filter_sql(integer[],time without time zone,"
        "time without time zone,date,date,timestamp with time zone,timestamp with time zone,"
        "bigint,text)"
    ]


@pytest.mark.parametrize("older", ["0011", "0006", "0005", "0002"])
def test_upgrading_an_older_database_equals_a_fresh_install(db_url, older):
    """An existing database at an older revision (here: made by the real downgrades, which
    restore the old bodies, e.g. 0005's functions before halfvec) upgrades to head and then
    holds the same ranger objects as a fresh install."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            fresh = _ranger_objects(conn)
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), older)
        with engine.connect() as conn:
            old = _ranger_objects(conn)
        if older == "0005":  # the pre-halfvec builders with their old signatures are back
            assert "function ranger._search_vector_sql(integer,text,text)" in old
            assert "function ranger._hnsw_distance_sql(integer,text,text)" not in old
        upgrade(engine, "head")
        with engine.connect() as conn:
            assert _diff(fresh, _ranger_objects(conn)) == []
    finally:
        engine.dispose()
