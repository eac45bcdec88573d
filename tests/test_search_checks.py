"""Input checks of the ranger search functions (issue 10, item 3): a huge k, exact-scan limit
or ef_search, and a zero (or missing) query vector are errors naming the parameter and its
range, not "integer out of range" from deep inside nor NaN scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa

from soundscape import search
from soundscape.embedders.base import Embedder
from soundscape.errors import SoundscapeError
from soundscape.spaces import ensure_space

HUGE = 2**31 - 1
DIM = 8


class _Tiny(Embedder):
    name = "tiny"
    version = "1"
    dimension = DIM
    sample_rate = 8000
    default_window_s = 1.0
    default_hop_s = 1.0


@pytest.fixture
def space(engine):
    """One space with 40 random windows of sensor s1 over two local days, and one window of
    another recording whose stored vector is all zeros (what a broken import could leave)."""
    return _fill(engine, analyze=True)


def _fill(engine, analyze: bool):
    rng = np.random.default_rng(3)
    with engine.begin() as conn:
        sp = ensure_space(conn, _Tiny, 1.0, 1.0)
        conn.execute(sa.text("INSERT INTO sensors (name, site) VALUES ('s1', 'North Marsh')"))
        for rec in ("a", "b"):
            conn.execute(
                sa.text(
                    "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                    "sample_rate, channels, duration_s) SELECT id, :p, repeat(:c, 64), 1, 'wav', "
                    "8000, 1, 40 FROM sensors"
                ),
                {"p": f"{rec}.wav", "c": rec},
            )
        rows = [("a.wav", i, rng.normal(size=DIM)) for i in range(40)]
        rows.append(("b.wav", 0, np.zeros(DIM)))
        for path, i, vec in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO segments (space_id, recording_id, sensor_id, start_s, end_s, "
                    "starts_at, local_date, local_time, embedding) "
                    "SELECT :s, r.id, r.sensor_id, :t, :t + 1, "
                    "timestamptz '2026-01-01 00:00+00' + make_interval(hours => :t), "
                    "date '2026-01-01' + :t / 20, time '12:00', CAST(:v AS vector) "
                    "FROM recordings r WHERE r.path = :p"
                ),
                {"s": sp.id, "t": i, "v": json.dumps(vec.tolist()), "p": path},
            )
        if analyze:
            conn.execute(sa.text("ANALYZE segments"))
    return sp


def test_auto_counts_before_the_first_analyze(engine):
    """Before a space's first ANALYZE the planner knows nothing of its rows: auto must count
    (the capped exact scan) before it trusts an exact scan; past the limit it uses the index."""
    sp = _fill(engine, analyze=False)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(SEARCH_VECTOR), _search_vector(sp, q=_query(), k=5, exact=8)
        ).all()
        assert {r.method for r in rows} == {"hnsw"}
        rows = conn.execute(
            sa.text(SEARCH_VECTOR), _search_vector(sp, q=_query(), k=5, exact=100)
        ).all()
        assert {r.method for r in rows} == {"exact"}


def _query() -> str:
    return json.dumps(np.ones(DIM).tolist())


def _error(engine, sql: str, **params) -> str:
    """The message of the error the statement raises (fails if it runs)."""
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as info:
        conn.execute(sa.text(sql), params).all()
    assert info.value.orig.sqlstate == "22023"  # invalid_parameter_value, not 22003 overflow
    return info.value.orig.diag.message_primary


SEARCH_VECTOR = (
    "SELECT * FROM ranger.search_vector(:s, CAST(:q AS vector), :k, "
    "p_strategy => :strategy, p_exact_limit => CAST(:exact AS integer), "
    "p_ef_search => CAST(:ef AS integer))"
)


def _search_vector(space, q=None, k=10, strategy="auto", exact=None, ef=None) -> dict:
    return dict(
        s=space.id, q=_query() if q is None else q, k=k, strategy=strategy, exact=exact, ef=ef
    )


@pytest.mark.parametrize("strategy", ["auto", "exact", "hnsw"])
def test_search_vector_huge_k(engine, space, strategy):
    msg = _error(engine, SEARCH_VECTOR, **_search_vector(space, k=HUGE, strategy=strategy))
    assert msg == f"p_k (the number of results) must be between 1 and 10000, not {HUGE}"
    msg = _error(engine, SEARCH_VECTOR, **_search_vector(space, k=0, strategy=strategy))
    assert msg == "p_k (the number of results) must be between 1 and 10000, not 0"


def test_search_vector_huge_exact_limit_and_ef_search(engine, space):
    msg = _error(engine, SEARCH_VECTOR, **_search_vector(space, exact=HUGE))
    assert msg == (
        f"p_exact_limit must be between 0 and 100000000 (or NULL for the default), not {HUGE}"
    )
    msg = _error(engine, SEARCH_VECTOR, **_search_vector(space, strategy="hnsw", ef=HUGE))
    assert msg == f"p_ef_search must be between 1 and 1000 (or NULL for the default), not {HUGE}"
    with engine.connect() as conn:  # the largest allowed values run
        params = _search_vector(space, k=5, strategy="hnsw", exact=100000000, ef=1000)
        rows = conn.execute(sa.text(SEARCH_VECTOR), params).all()
    assert len(rows) == 5 and all(np.isfinite(r.score) for r in rows)


def test_search_vector_zero_or_missing_query(engine, space):
    zero = json.dumps(np.zeros(DIM).tolist())
    for strategy in ("auto", "exact", "hnsw"):
        msg = _error(engine, SEARCH_VECTOR, **_search_vector(space, q=zero, strategy=strategy))
        assert msg == "p_query is a zero vector: its cosine similarity to anything is undefined"
    params = _search_vector(space)
    params["q"] = None
    assert _error(engine, SEARCH_VECTOR, **params) == "p_query (a query vector) is NULL"


def test_search_labels_and_named_search_huge_k(engine, space):
    msg = _error(engine, "SELECT * FROM ranger.search_labels(:s, ARRAY[1], :k)", s=space.id, k=HUGE)
    assert msg == f"p_k (the number of results) must be between 1 and 10000, not {HUGE}"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO concepts (name, space_id, kind, query, embedding) "
                "VALUES ('zero', :s, 'window', 'x', CAST(:q AS vector)), "
                "('ones', :s, 'window', 'x', CAST(:o AS vector))"
            ),
            {"s": space.id, "q": json.dumps(np.zeros(DIM).tolist()), "o": _query()},
        )
    msg = _error(engine, "SELECT * FROM ranger.search('ones', :k)", k=HUGE)
    assert msg == f"k (the number of results) must be between 1 and 10000, not {HUGE}"
    msg = _error(engine, "SELECT * FROM ranger.search('zero', 5)")
    assert msg == "p_query is a zero vector: its cosine similarity to anything is undefined"
    # stored detections of a zero concept: an error, not every window with a NaN score
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE concepts SET threshold = 0.5"))
    msg = _error(engine, "SELECT ranger.refresh_detections('zero')")
    assert msg == (
        "the embedding of concept zero is a zero vector: its cosine similarity to anything is "
        "undefined"
    )
    with engine.begin() as conn:
        # (a stored zero window would score NaN against any query; ingest never stores one)
        conn.execute(sa.text("DELETE FROM recordings WHERE path = 'b.wav'"))
        n = conn.execute(sa.text("SELECT ranger.refresh_detections('ones')")).scalar_one()
        scores = conn.execute(sa.text("SELECT score FROM detections")).scalars().all()
    assert n == len(scores) and all(np.isfinite(scores))


def test_anomaly_scores_huge_k_and_exact_limit(engine, space):
    sql = (
        "SELECT * FROM ranger.anomaly_scores('s1', :space, :k, p_date_from => date '2026-01-02', "
        "p_exact_limit => :exact)"
    )
    msg = _error(engine, sql, space=space.name, k=HUGE, exact=20000)
    assert msg == f"p_k (the number of neighbours) must be between 1 and 10000, not {HUGE}"
    msg = _error(engine, sql, space=space.name, k=3, exact=HUGE)
    assert msg == f"p_exact_limit must be between 0 and 100000000, not {HUGE}"
    with engine.connect() as conn:  # in range: every period window scored, finite
        rows = conn.execute(sa.text(sql), dict(space=space.name, k=3, exact=20000)).all()
    assert len(rows) == 20 and all(np.isfinite(r.score) for r in rows)


def test_similar_windows_and_duplicate_pairs(engine, space):
    sql = (
        "SELECT * FROM ranger.similar_windows(:s, CAST(:v AS vector[]), :k, "
        "p_exact_limit => :exact)"
    )
    ones = "{" + '"' + _query() + '"' + "}"
    with_zero = "{" + '"' + _query() + '","' + json.dumps(np.zeros(DIM).tolist()) + '"' + "}"
    msg = _error(engine, sql, s=space.id, v=ones, k=HUGE, exact=20000)
    assert msg == f"p_k (the number of results) must be between 1 and 10000, not {HUGE}"
    msg = _error(engine, sql, s=space.id, v=ones, k=3, exact=HUGE)
    assert msg == f"p_exact_limit must be between 0 and 100000000, not {HUGE}"
    msg = _error(engine, sql, s=space.id, v=with_zero, k=3, exact=20000)
    assert msg == "p_vectors[2] is a zero vector: its cosine similarity to anything is undefined"

    sql = "SELECT * FROM ranger.duplicate_pairs(:s, :k, 0.5, p_exact_limit => :exact)"
    msg = _error(engine, sql, s=space.id, k=HUGE, exact=2000)
    assert msg == f"p_k (the number of neighbours) must be between 1 and 10000, not {HUGE}"
    msg = _error(engine, sql, s=space.id, k=3, exact=HUGE)
    assert msg == f"p_exact_limit must be between 0 and 100000000, not {HUGE}"


def test_library_search_run_names_the_parameter(engine, space):
    """search.run (what the CLI and notebooks call) gets the message, not NaN hits."""
    errors = SoundscapeError
    zero = search.Query(space, "zero", vector=np.zeros(DIM, np.float32), kind="window")
    ones = search.Query(space, "ones", vector=np.ones(DIM, np.float32), kind="window")
    for query, kwargs, message in (
        (zero, {"limit": 5}, "p_query is a zero vector"),
        (ones, {"limit": HUGE}, r"p_k .* not 2147483647"),
        (ones, {"limit": 5, "strategy": "hnsw", "ef_search": 5000}, "p_ef_search must be"),
    ):
        with engine.connect() as conn, pytest.raises(errors, match=message):
            search.run(conn, query, search.Filters(), **kwargs)


def test_cli_search_like_a_zero_window_exits_1(engine, space, cli_env, run_cli):
    with engine.connect() as conn:
        zero_id = conn.execute(
            sa.text(
                "SELECT g.id FROM segments g JOIN recordings r ON r.id = g.recording_id "
                "WHERE r.path = 'b.wav'"
            )
        ).scalar_one()
    result = run_cli("search", "--like", zero_id, "--json")
    assert result.exit_code == 1
    assert "p_query is a zero vector" in result.stderr
    assert "NaN" not in result.stdout


def test_index_searching_functions_turn_jit_off(engine):
    """A PostgreSQL built with LLVM JIT-compiles statements past jit_above_cost, which an HNSW
    scan's estimate passes: ~90 ms of compilation for a 2 ms search (PostgreSQL 15,
    docs/scaling.md). The embedded server has no JIT, so the setting itself is checked."""
    with engine.connect() as conn:
        config = dict(
            conn.execute(
                sa.text(
                    "SELECT p.proname, p.proconfig FROM pg_proc p "
                    "WHERE p.pronamespace = 'ranger'::regnamespace AND p.proname IN "
                    "('search_vector', 'anomaly_scores', 'similar_windows', 'duplicate_pairs')"
                )
            ).all()
        )
    assert config.keys() == {
        "search_vector",
        "anomaly_scores",
        "similar_windows",
        "duplicate_pairs",
    }
    for name, settings in config.items():
        assert "jit=off" in settings, name
