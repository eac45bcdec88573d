"""Schema, migrations, URL handling, spaces/partitions and the embedded server."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from soundscape.db import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    mask_url,
    normalize_url,
    open_database,
)
from soundscape.embedders.base import Embedder
from soundscape.errors import DatabaseError
from soundscape.spaces import ensure_space, list_spaces


class _Tiny(Embedder):
    name = "tiny"
    version = "1"
    dimension = 8
    sample_rate = 8000
    default_window_s = 1.0
    default_hop_s = 1.0


class _Wide(_Tiny):
    name = "wide"
    dimension = 16


def test_schema_at_head(engine):
    with engine.connect() as conn:
        tables = set(
            conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
        )
        rev = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        ext = conn.execute(
            sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        ).scalar()
        views = set(
            conn.execute(
                sa.text("SELECT viewname FROM pg_views WHERE schemaname = 'ranger'")
            ).scalars()
        )
    assert {
        "sensors",
        "recordings",
        "spaces",
        "segments",
        "recording_spaces",
        "space_labels",
        "segment_scores",
        "ingest_errors",
    } <= tables
    assert rev == head_revision()
    assert ext is not None and tuple(map(int, ext.split(".")[:2])) >= (0, 8)
    assert "recordings" in views


def test_password_never_shown():
    url = "postgresql://ranger:s3cret@db.example.org:5432/reserve"
    assert "s3cret" not in mask_url(url)
    assert "***" in mask_url(url)
    assert normalize_url(url).startswith("postgresql+psycopg://")
    with pytest.raises(DatabaseError, match="PostgreSQL"):
        normalize_url("sqlite:///x.db")


def test_unmigrated_database_says_how_to_fix(admin_url, run_cli):
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS empty_db WITH (FORCE)")
        conn.execute("CREATE DATABASE empty_db")
    url = sa.engine.make_url(admin_url).set(database="empty_db").render_as_string(False)
    with pytest.raises(DatabaseError, match="soundscape db upgrade"):
        open_database(url)
    result = run_cli("sensors", "list", "-d", url)
    assert result.exit_code == 1
    assert "soundscape db upgrade" in result.stderr
    # The fix works and is idempotent.
    assert run_cli("db", "upgrade", "-d", url).exit_code == 0
    assert run_cli("db", "upgrade", "-d", url).exit_code == 0
    assert run_cli("sensors", "list", "-d", url).exit_code == 0


def test_unreachable_database_is_a_clear_error(run_cli):
    result = run_cli("stats", "-d", "postgresql://u:topsecret@/nodb?host=/nonexistent-dir")
    assert result.exit_code == 1
    assert "cannot connect" in result.stderr
    assert "topsecret" not in result.stderr + result.stdout


def test_spaces_of_different_dimensions_coexist_with_their_own_hnsw_index(engine):
    with engine.begin() as conn:
        a = ensure_space(conn, _Tiny, 1.0, 1.0)
        b = ensure_space(conn, _Wide, 1.0, 0.5)
        again = ensure_space(conn, _Tiny, 1.0, 1.0)
    assert again == a and a.id != b.id
    assert b.name == "wide-w1-h0.5"
    rng = np.random.default_rng(0)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO sensors (name) VALUES ('s')"))
        conn.execute(
            sa.text(
                "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, sample_rate, "
                "channels, duration_s) SELECT id, 'x.wav', repeat('a', 64), 1, 'wav', 8000, 1, 1 "
                "FROM sensors"
            )
        )
        for space in (a, b):
            for i in range(300):
                vec = rng.normal(size=space.dimension).astype(np.float32)
                conn.execute(
                    sa.text(
                        "INSERT INTO segments (space_id, recording_id, sensor_id, start_s, end_s, "
                        "embedding) SELECT :s, id, sensor_id, :t, :t + 1, CAST(:v AS vector) "
                        "FROM recordings"
                    ),
                    {"s": space.id, "t": float(i), "v": json.dumps(vec.tolist())},
                )
        conn.execute(sa.text("ANALYZE segments"))
    with engine.connect() as conn:
        parts = (
            conn.execute(
                sa.text("SELECT relname FROM pg_class WHERE relname LIKE 'segments_space_%_hnsw'")
            )
            .scalars()
            .all()
        )
        assert sorted(parts) == sorted(
            [f"segments_space_{a.id}_hnsw", f"segments_space_{b.id}_hnsw"]
        )
        conn.execute(sa.text("SET enable_seqscan = off"))
        conn.execute(sa.text("SET enable_bitmapscan = off"))
        conn.execute(sa.text("SET enable_sort = off"))
        q = json.dumps([0.1] * 16)
        plan = "\n".join(
            conn.execute(
                sa.text(
                    "EXPLAIN SELECT id FROM segments WHERE space_id = :s "
                    "ORDER BY embedding::halfvec(16) <=> CAST(:q AS halfvec(16)) LIMIT 5"
                ),
                {"s": b.id, "q": q},
            ).scalars()
        )
        assert f"segments_space_{b.id}_hnsw" in plan
        assert f"segments_space_{a.id}" not in plan  # pruned to the one space's partition
        # Deleting a space drops nothing else.
        assert len(list_spaces(conn)) == 2


def test_embedded_server_lifecycle(server_base, monkeypatch, run_cli):
    """No URL: soundscape starts its own PostgreSQL in SOUNDSCAPE_HOME, migrates it, reuses it."""
    monkeypatch.setenv("SOUNDSCAPE_HOME", str(server_base / "home"))
    monkeypatch.delenv("SOUNDSCAPE_DATABASE_URL", raising=False)
    try:
        status = json.loads(run_cli("db", "status", "--json").stdout)
        assert status["running"] is False and status["initialized"] is False

        assert (
            run_cli(
                "sensors",
                "add",
                "north-1",
                "--site",
                "Marsh",
                "--quadrant",
                "N",
                "--timezone",
                "Europe/Berlin",
            ).exit_code
            == 0
        )
        status = json.loads(run_cli("db", "status", "--json").stdout)
        assert status["running"] is True
        assert status["revision"] == head_revision()
        url = run_cli("db", "url").stdout.strip()
        assert url.startswith("postgresql://postgres@/soundscape?host=")
        assert run_cli("db", "url", "--sqlalchemy").stdout.startswith("postgresql+psycopg://")

        # A second command (and a plain engine) sees the same data: the server was reused.
        listed = run_cli("sensors", "list", "--json").stdout.splitlines()
        assert [json.loads(line)["name"] for line in listed] == ["north-1"]
        engine = make_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT timezone FROM sensors")).scalar() == "Europe/Berlin"
        engine.dispose()
    finally:
        assert run_cli("db", "stop").exit_code == 0
    status = json.loads(run_cli("db", "status", "--json").stdout)
    assert status["running"] is False and status["initialized"] is True


def test_index_type_migration_round_trip(db_url):
    """0006 down and up again with a halfvec space: the index goes back to float32, the old
    functions come back, and the upgrade restores the index-type-aware ones."""
    from alembic import command

    from soundscape.db import alembic_config, upgrade
    from soundscape.spaces import get_space, set_index_type

    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            space = ensure_space(conn, _Wide, 1.0, 1.0)
            set_index_type(conn, space, "halfvec")

        def indexdef(conn) -> str:
            return conn.execute(
                sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                {"n": f"{space.partition}_hnsw"},
            ).scalar()

        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0005")
        with engine.connect() as conn:
            assert "vector_cosine_ops" in indexdef(conn)
            assert conn.execute(
                sa.text("SELECT ranger._search_vector_sql(16, 'true', 'hnsw')")
            ).scalar()
            cols = (
                conn.execute(
                    sa.text(
                        "SELECT column_name FROM information_schema.columns WHERE table_name = 'spaces'"
                    )
                )
                .scalars()
                .all()
            )
            assert "index_type" not in cols
        upgrade(engine, "head")
        with engine.begin() as conn:
            again = get_space(conn, space.name)
            assert again.index_type == "vector"
            set_index_type(conn, again, "halfvec")
            assert "halfvec_cosine_ops" in indexdef(conn)
            sql = conn.execute(
                sa.text("SELECT ranger._search_vector_sql(16, 'true', 'hnsw', 'halfvec')")
            ).scalar()
            assert "g.embedding::halfvec(16) <=> ($1)::halfvec(16)" in sql
    finally:
        engine.dispose()


def test_revision_check_agrees_with_alembic(engine):
    """The start-up check reads revisions without Alembic: the same answers as Alembic's."""
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        assert current_revision(conn) == MigrationContext.configure(conn).get_current_revision()
        assert current_revision(conn) == head_revision()
