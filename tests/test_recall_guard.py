"""The recall guard (issue 22): `spaces check` measures a space's HNSW index against exact
answers, stores recall@10, and auto then searches with more ef_search, or exactly, where the
index measured badly; a rebuilt index starts unmeasured. Also: auto's exact-scan limit, the
query normalised (tiny elements), and a NULL strategy refused by the analytics functions.

The store imitates what traps graph indexes in real archives: most windows are near-copies of
a few background sounds (a looped background), a few are distinct events. The index made bad
on purpose is built with m = 2, ef_construction = 4 (real audio with real parameters is
tests/test_search_realaudio.py's job).
"""

from __future__ import annotations

from datetime import date, time

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from soundscape import recall
from soundscape.cli import cli
from soundscape.db import make_engine, register_vector
from soundscape.embedders.base import Embedder, l2_normalize
from soundscape.search import Filters, Query, run
from soundscape.spaces import create_hnsw_index, drop_hnsw_index, ensure_space, get_space

from .conftest import copy_windows

DIM = 96
N_RECORDINGS, PER_RECORDING = 12, 500  # 6,000 windows


class _Loop(Embedder):
    name = "loop"
    version = "1"
    dimension = DIM
    sample_rate = 16000
    default_window_s = 3.0
    default_hop_s = 3.0


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """A few background sounds repeated with tiny differences, and 2 % distinct events."""
    backgrounds = l2_normalize(rng.normal(size=(4, DIM)))
    x = backgrounds[rng.integers(0, 4, n)] + rng.normal(scale=0.01, size=(n, DIM))
    events = rng.random(n) < 0.02
    x[events] = rng.normal(size=(int(events.sum()), DIM))
    return l2_normalize(x.astype(np.float32))


def _bad_index(conn, space) -> None:
    drop_hnsw_index(conn, space)
    conn.execute(
        sa.text(
            f"CREATE INDEX {space.partition}_hnsw ON {space.partition} USING hnsw "
            f"((embedding::halfvec({DIM})) halfvec_cosine_ops) WITH (m = 2, ef_construction = 4)"
        )
    )


@pytest.fixture(scope="module")
def loop_db(module_db_url):
    rng = np.random.default_rng(7)
    engine = make_engine(module_db_url)
    with engine.begin() as conn:
        space = ensure_space(conn, _Loop, 3.0, 3.0)
        drop_hnsw_index(conn, space)
        conn.execute(sa.text("INSERT INTO sensors (name, site, quadrant) VALUES ('l', 's', 'N')"))
        sid = conn.execute(sa.text("SELECT id FROM sensors WHERE name = 'l'")).scalar()
        conn.execute(
            sa.text(
                "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                "sample_rate, channels, duration_s) VALUES (:s, :p, :h, 1, 'wav', 16000, 1, 1500)"
            ),
            [{"s": sid, "p": f"/loop/{r}.wav", "h": f"{r:064d}"} for r in range(N_RECORDINGS)],
        )
        recs = conn.execute(sa.text("SELECT id, sensor_id FROM recordings ORDER BY id")).all()
        n = N_RECORDINGS * PER_RECORDING
        offsets = np.tile(np.arange(PER_RECORDING) * 3.0, N_RECORDINGS)
        copy_windows(conn, space.id, recs, _vectors(rng, n), offsets, PER_RECORDING, 3)
        _bad_index(conn, space)
        conn.execute(sa.text(f"ANALYZE {space.partition}"))
    yield engine, space
    engine.dispose()


def _methods(conn, space, q, **kw) -> set[str]:
    hits = run(conn, Query(space, "q", vector=q), Filters(), limit=10, **kw)
    return {h.method for h in hits}


def test_a_bad_index_is_guarded_until_it_measures_well(loop_db):
    engine, space = loop_db
    with engine.begin() as conn:
        # a tiny exact budget so that auto takes the index at 6,000 windows
        conn.execute(sa.text("SET LOCAL soundscape.exact_budget = 0"))
        q = conn.execute(
            sa.text(f"SELECT embedding::vector({DIM}) FROM {space.partition} ORDER BY id LIMIT 1")
        )
        register_vector(conn)
        query = np.asarray(q.scalar().to_numpy(), np.float32)
        assert _methods(conn, space, query) == {"hnsw"}
        assert recall.needs_check(conn, space)

        # no ef_search may be tried: a bad index must make auto scan exactly
        check = recall.check_space(conn, space, queries=30, ladder=())
        assert check.recall < recall.RECALL_WANTED or (
            check.recall_worst_decile < recall.WORST_DECILE_WANTED
        )
        assert check.guard == "exact"
        assert _methods(conn, space, query) == {"exact"}
        assert _methods(conn, space, query, strategy="hnsw") == {"hnsw"}  # forced: as asked
        note = recall.guard_note(conn, space)
        assert note and "scans exactly" in note and space.name in note
        row = conn.execute(
            sa.text("SELECT recall_at_10, recall_guard FROM ranger.spaces WHERE space_id = :s"),
            {"s": space.id},
        ).one()
        assert row.recall_guard == "exact" and row.recall_at_10 == pytest.approx(check.recall)
        assert not recall.needs_check(conn, space)

        # with the ladder, the smallest ef_search that measures well is kept
        check = recall.check_space(conn, space, queries=30)
        if check.guard == "ef":
            assert check.guard_recall >= recall.GUARD_RECALL
            assert _methods(conn, space, query) == {"hnsw"}

        # a rebuilt index is a new index: no check, no guard, until it is measured; built with
        # soundscape's parameters (m 32: the copies of the background keep edges to the rest)
        # it measures well
        create_hnsw_index_again(conn, space)
        assert recall.latest_check(conn, space) is None
        assert recall.guard_note(conn, space) is None
        assert _methods(conn, space, query) == {"hnsw"}
        check = recall.check_space(conn, space, queries=30)
        assert check.guard == "none", check.summary()
        assert check.recall >= recall.RECALL_WANTED


def create_hnsw_index_again(conn, space) -> None:
    drop_hnsw_index(conn, space)
    create_hnsw_index(conn, space)


def test_auto_scans_exactly_where_it_is_cheap(loop_db):
    engine, space = loop_db
    with engine.begin() as conn:
        register_vector(conn)
        limit = conn.execute(sa.text("SELECT ranger._exact_limit(:d)"), {"d": DIM}).scalar()
        assert limit >= N_RECORDINGS * PER_RECORDING  # 6,000 windows of 96-d: cheap
        q = l2_normalize(np.random.default_rng(1).normal(size=(1, DIM)))[0].astype(np.float32)
        assert _methods(conn, space, q) == {"exact"}
        conn.execute(sa.text("SET LOCAL soundscape.exact_budget = 0"))
        assert conn.execute(sa.text("SELECT ranger._exact_limit(:d)"), {"d": DIM}).scalar() == 1000


def test_a_query_of_tiny_elements_gets_finite_scores(loop_db):
    engine, space = loop_db
    with engine.connect() as conn:
        tiny = "[" + ",".join(["1e-45"] * DIM) + "]"
        for strategy in ("exact", "hnsw", "auto"):
            scores = (
                conn.execute(
                    sa.text(
                        "SELECT score FROM ranger.search_vector(:s, CAST(:q AS vector), 5, "
                        "p_strategy => :st)"
                    ),
                    {"s": space.id, "q": tiny, "st": strategy},
                )
                .scalars()
                .all()
            )
            assert len(scores) == 5 and all(np.isfinite(scores)), (strategy, scores)


def test_the_analytics_functions_refuse_a_null_strategy(loop_db):
    engine, space = loop_db
    with engine.connect() as conn:
        for sql in (
            "SELECT * FROM ranger.duplicate_pairs(:s, 2, 0.9, NULL)",
            "SELECT * FROM ranger.similar_windows(:s, ARRAY[(SELECT embedding::vector(96) "
            "FROM segments WHERE space_id = :s LIMIT 1)], 2, NULL, NULL, NULL)",
            "SELECT * FROM ranger.anomaly_scores('l', 'loop', 5, p_date_from => '2024-05-02', "
            "p_strategy => NULL)",
        ):
            with (
                pytest.raises(sa.exc.DBAPIError, match="strategy must be"),
                conn.begin_nested(),
            ):
                conn.execute(sa.text(sql), {"s": space.id}).all()


def test_spaces_check_and_list_show_the_recall(loop_db, monkeypatch):
    engine, space = loop_db
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    out = CliRunner().invoke(cli, ["spaces", "check", space.name, "--queries", "20", "--json"])
    assert out.exit_code == 0, out.output
    assert '"recall"' in out.stdout and "recall@10" in out.stderr
    listed = CliRunner().invoke(cli, ["spaces", "list", "--json"])
    assert listed.exit_code == 0 and '"recall_at_10"' in listed.stdout
    with engine.connect() as conn:
        assert get_space(conn, space.name).id == space.id


@pytest.mark.parametrize(
    ("budget_windows", "filters", "expected"),
    [
        (2000, Filters(), "hnsw"),  # 6,000 pass: past the limit, the index
        (2000, Filters(time_to=time(0, 4)), "exact"),  # 960 pass: under it, exact
        (7000, Filters(), "exact"),  # the whole space within the budget: exact
        (1000, Filters(date_from=date(2024, 5, 2), date_to=date(2024, 5, 2)), "hnsw"),  # 2,000
    ],
)
def test_auto_routes_by_the_exact_limit(loop_db, budget_windows, filters, expected):
    """auto's choice per size and filter follows ranger._exact_limit: windows passing the
    filter within the budget are ranked exactly, more go through the index."""
    engine, space = loop_db
    with engine.begin() as conn:
        conn.execute(sa.text(f"SET LOCAL soundscape.exact_budget = {budget_windows * DIM}"))
        q = l2_normalize(np.random.default_rng(2).normal(size=(1, DIM)))[0].astype(np.float32)
        assert _methods_filtered(conn, space, q, filters) == {expected}


def _methods_filtered(conn, space, q, filters: Filters) -> set[str]:
    return {h.method for h in run(conn, Query(space, "q", vector=q), filters, limit=10)}


class _Far(Embedder):
    name = "far"
    version = "1"
    dimension = 16
    sample_rate = 16000
    default_window_s = 3.0
    default_hop_s = 3.0


@pytest.mark.slow  # 26,000 windows and an HNSW build: the slowest test of the inner loop
def test_auto_never_returns_fewer_than_k_when_the_index_gives_up(module_db_url):
    """A filter whose windows lie far from the query (sensor `far-b`: 2,000 windows pointing
    away from it, among 24,000 of `far-a` around it): more pass than auto scans exactly (its
    limit pinned at 1,000), so it takes the index, whose scan gives up after
    hnsw.max_scan_tuples (20,000) with fewer than k of them; auto then ranks them exactly."""
    rng = np.random.default_rng(11)
    engine = make_engine(module_db_url)
    try:
        with engine.begin() as conn:
            space = ensure_space(conn, _Far, 3.0, 3.0)
            drop_hnsw_index(conn, space)
            for name in ("far-a", "far-b"):
                conn.execute(
                    sa.text("INSERT INTO sensors (name, site, quadrant) VALUES (:n, 's', 'N')"),
                    {"n": name},
                )
            sids = dict(conn.execute(sa.text("SELECT name, id FROM sensors")).all())
            recs = [(sids["far-a"], r) for r in range(24)] + [(sids["far-b"], r) for r in (24, 25)]
            conn.execute(
                sa.text(
                    "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                    "sample_rate, channels, duration_s) "
                    "VALUES (:s, :p, :h, 1, 'wav', 16000, 1, 3000)"
                ),
                [{"s": s, "p": f"/far/{r}.wav", "h": f"f{r:063d}"} for s, r in recs],
            )
            rows = conn.execute(
                sa.text("SELECT id, sensor_id FROM recordings WHERE path LIKE '/far/%' ORDER BY id")
            ).all()
            toward = l2_normalize(np.ones((1, 16)))[0]
            near = l2_normalize(toward + rng.normal(scale=0.3, size=(24000, 16)))
            far = l2_normalize(-toward + rng.normal(scale=0.3, size=(2000, 16)))
            vectors = np.concatenate([near, far]).astype(np.float32)
            offsets = np.tile(np.arange(1000) * 3.0, 26)
            copy_windows(conn, space.id, rows, vectors, offsets, 1000, 1)
            create_hnsw_index(conn, space)
            conn.execute(sa.text(f"ANALYZE {space.partition}"))
        with engine.begin() as conn:
            conn.execute(sa.text(f"SET LOCAL soundscape.exact_budget = {1000 * 16}"))
            q = toward.astype(np.float32)
            query, only_b = Query(space, "q", vector=q), Filters(sensors=["far-b"])
            forced = run(conn, query, only_b, limit=10, strategy="hnsw")
            assert len(forced) < 10  # the index alone gives up: the trap this test sets
            auto = run(conn, query, only_b, limit=10)
            exact = run(conn, query, only_b, limit=10, strategy="exact")
            assert [h.segment_id for h in auto] == [h.segment_id for h in exact]
            assert len(auto) == 10 and {h.method for h in auto} == {"exact"}
    finally:
        engine.dispose()


def test_recent_queries_are_kept_and_measured(loop_db):
    """A searched query vector is kept (the newest KEEP_QUERIES per space) and a recall check
    measures it beside stored windows: a sound clip is not a stored window."""
    engine, space = loop_db
    rng = np.random.default_rng(5)
    vectors = l2_normalize(rng.normal(size=(recall.KEEP_QUERIES + 5, DIM))).astype(np.float32)
    for v in vectors:
        recall.log_query(engine, space, v)
    with engine.begin() as conn:
        register_vector(conn)
        kept = conn.execute(
            sa.text("SELECT count(*) FROM recent_queries WHERE space_id = :s"), {"s": space.id}
        ).scalar()
        assert kept == recall.KEEP_QUERIES
        newest = conn.execute(
            sa.text(
                f"SELECT embedding::vector({DIM}) FROM recent_queries WHERE space_id = :s "
                "ORDER BY id DESC LIMIT 1"
            ),
            {"s": space.id},
        ).scalar()
        assert np.allclose(newest.to_numpy(), vectors[-1])
        names = [name for name, _, _ in recall._queries(conn, space, 20, 0)]
        assert sum(n.startswith("query ") for n in names) == 10
        assert sum(n.startswith("window ") for n in names) == 10
