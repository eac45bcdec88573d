"""Filtered vector search at scale: 100,000 windows, recall against brute force, and the plan.

The vectors are clustered (like real embeddings: many windows of few kinds of sound) in
128 dimensions to keep the HNSW build short in CI; the benchmarks (bench/) run 1M x 1024-d.
The indexes here are built with ef_construction ``BUILD_EF`` instead of the default 600
(spaces.HNSW_EF_CONSTRUCTION, which real audio needs: tests/test_search_realaudio.py builds
with it): these vectors have no looped background, and the three builds take a fraction of
the time. Every build gets ``BUILD_MEMORY``, so that the graph never spills to disk.
"""

from __future__ import annotations

import re
from datetime import time

import numpy as np
import pytest
import sqlalchemy as sa

from soundscape import spaces
from soundscape.db import make_engine
from soundscape.embedders.base import Embedder, l2_normalize
from soundscape.queries import FILTER_ARGS
from soundscape.search import Filters, Query, run
from soundscape.spaces import (
    create_hnsw_index,
    drop_hnsw_index,
    ensure_space,
    set_build_memory,
    set_index_type,
)

from .conftest import copy_windows

# End-to-end: 100,000 vectors and HNSW builds. `make test-fast` (-m "not slow") skips it.
pytestmark = pytest.mark.slow

N_SENSORS, N_DAYS, PER_RECORDING = 20, 50, 100  # 100,000 windows
DIM = 128
#: auto's exact-scan budget in this module (float dimensions, ranger._exact_limit): pinned so
#: that 100,000 windows of 128-d route as the tests expect: limit 4M / 128 = 31,250 rows, so
#: 50 % -> HNSW, 10 % and 1 % -> exact (the default budget would scan all of them exactly)
EXACT_BUDGET = 4_000_000
QUADRANTS = ["N", "E", "S", "W"]
#: ef_construction of this module's builds: the default (600) took 7.5 of this module's 8
#: minutes on a quiet machine; with 128 (the default before issue 22) these vectors pass the
#: same recall thresholds
BUILD_EF = 128
#: maintenance_work_mem of every build: the graph of 100,000 x 128-d does not fit in the
#: server's default 64MB, and a graph that spills to disk builds far slower
BUILD_MEMORY = "512MB"


class _Synthetic(Embedder):
    name = "synthetic"
    version = "1"
    dimension = DIM
    sample_rate = 16000
    default_window_s = 3.0
    default_hop_s = 3.0


@pytest.fixture(scope="module")
def scale_db(module_db_url):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spaces, "HNSW_EF_CONSTRUCTION", BUILD_EF)
        yield from _scale_db(module_db_url)


def _scale_db(module_db_url):
    rng = np.random.default_rng(42)
    engine = make_engine(module_db_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"ALTER DATABASE {engine.url.database} SET soundscape.exact_budget = '{EXACT_BUDGET}'"
            )
        )
    engine.dispose()
    engine = make_engine(module_db_url)
    with engine.begin() as conn:
        space = ensure_space(conn, _Synthetic, 3.0, 3.0)
        drop_hnsw_index(conn, space)
        for i in range(N_SENSORS):
            conn.execute(
                sa.text("INSERT INTO sensors (name, site, quadrant) VALUES (:n, :s, :q)"),
                {"n": f"s{i:02d}", "s": f"site{i % 5}", "q": QUADRANTS[i % 4]},
            )
        sensor_ids = conn.execute(sa.text("SELECT id FROM sensors ORDER BY name")).scalars().all()
        recs = []
        for i, sid in enumerate(sensor_ids):
            for d in range(N_DAYS):
                recs.append({"s": sid, "p": f"/r/{i}/{d}.wav", "h": f"{i:032d}{d:032d}"})
        conn.execute(
            sa.text(
                "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                "sample_rate, channels, duration_s) VALUES (:s, :p, :h, 1, 'wav', 16000, 1, 86400)"
            ),
            recs,
        )
        rec_rows = conn.execute(sa.text("SELECT id, sensor_id FROM recordings ORDER BY id")).all()

        centers = l2_normalize(rng.normal(size=(300, DIM)))
        n = len(rec_rows) * PER_RECORDING
        which = rng.integers(0, len(centers), n)
        vectors = l2_normalize(
            centers[which] + rng.normal(scale=0.35, size=(n, DIM)) / np.sqrt(DIM) * 4
        )
        seconds = rng.uniform(0, 86400, n)
        copy_windows(conn, space.id, rec_rows, vectors, seconds, PER_RECORDING, N_DAYS)
        set_build_memory(conn, BUILD_MEMORY)
        create_hnsw_index(conn, space)
        conn.execute(sa.text(f"ANALYZE {space.partition}"))
    queries = l2_normalize(
        centers[rng.integers(0, len(centers), 20)] + rng.normal(scale=0.05, size=(20, DIM))
    )
    yield engine, space, queries
    engine.dispose()


SELECTIVITY = {
    "50%": Filters(time_from=time(0), time_to=time(12)),
    "10%": Filters(quadrants=["N"], time_from=time(6), time_to=time(15, 36)),
    "1%": Filters(sensors=["s00"], time_from=time(0), time_to=time(4, 48)),
}


def test_filtered_fraction_is_what_the_name_says(scale_db):
    engine, space, _ = scale_db
    with engine.connect() as conn:
        for name, f in SELECTIVITY.items():
            params = {k: v for k, v in f.params().items() if k != "min_score"}
            passing = conn.execute(
                sa.text(f"SELECT count(*) FROM ranger.filtered_windows(:space, {FILTER_ARGS})"),
                {"space": space.id, **params},
            ).scalar()
            assert passing / 100000 == pytest.approx(float(name[:-1]) / 100, rel=0.15), name


@pytest.mark.parametrize("selectivity", list(SELECTIVITY))
def test_hnsw_recall_against_brute_force(scale_db, selectivity):
    engine, space, queries = scale_db
    filters = SELECTIVITY[selectivity]
    recalls, methods = [], set()
    with engine.connect() as conn:
        for q in queries:
            query = Query(space, "q", vector=q)
            exact = run(conn, query, filters, limit=10, strategy="exact")
            approx = run(conn, query, filters, limit=10, strategy="hnsw")
            auto = run(conn, query, filters, limit=10, strategy="auto")
            assert len(exact) == 10 and len(approx) == 10, "filtered HNSW must still return k rows"
            recalls.append(len({h.segment_id for h in exact} & {h.segment_id for h in approx}) / 10)
            methods.add(auto[0].method)
            # every hit honours the filters
            for h in approx:
                assert filters.time_from <= h.local_time < filters.time_to
                if filters.quadrants:
                    assert h.quadrant in filters.quadrants
                if filters.sensors:
                    assert h.sensor in filters.sensors
    assert np.mean(recalls) >= 0.95, (selectivity, recalls)
    # auto: the index where many rows pass, the exact scan where few do (<= 4M / DIM)
    assert methods == ({"hnsw"} if selectivity == "50%" else {"exact"})


def _plan(conn, space, method, filters: Filters) -> str:
    where = conn.execute(
        sa.text(
            "SELECT ranger._filter_sql(ranger._sensor_ids(:sensors, :sites, :quadrants), "
            "CAST(:tf AS time), CAST(:tt AS time), NULL, NULL, NULL, NULL, NULL)"
        ),
        {
            "sensors": filters.sensors,
            "sites": filters.sites,
            "quadrants": filters.quadrants,
            "tf": filters.time_from,
            "tt": filters.time_to,
        },
    ).scalar()
    sql = conn.execute(
        sa.text("SELECT ranger._search_vector_sql(:d, :w, :m, :i)"),
        {"d": DIM, "w": where, "m": method, "i": space.index_type},
    ).scalar()
    conn.execute(sa.text("SET hnsw.iterative_scan = relaxed_order"))
    conn.execute(
        sa.text(
            "PREPARE q(vector, int, int[], time, time, date, date, timestamptz, timestamptz, bigint, "
            f"int, real) AS {sql}"
        )
    )
    ids = conn.execute(
        sa.text("SELECT ranger._sensor_ids(:s, NULL, :q)"),
        {"s": filters.sensors, "q": filters.quadrants},
    ).scalar()
    vec = "[" + ",".join(["0.1"] * DIM) + "]"

    def lit(v) -> str:  # test-controlled values, inlined: EXECUTE's arguments take no $n
        if v is None:
            return "NULL"
        if isinstance(v, list):
            return "ARRAY[" + ",".join(str(int(x)) for x in v) + "]::int[]"
        return f"'{v}'"

    plan = (
        conn.execute(
            sa.text(
                f"EXPLAIN EXECUTE q('{vec}', {int(space.id)}, {lit(ids)}, {lit(filters.time_from)}, "
                f"{lit(filters.time_to)}, NULL, NULL, NULL, NULL, NULL, 10, NULL)"
            )
        )
        .scalars()
        .all()
    )
    conn.execute(sa.text("DEALLOCATE q"))
    return "\n".join(plan)


def test_explain_shows_the_hnsw_index_where_it_should(scale_db):
    engine, space, _ = scale_db
    with engine.connect() as conn:
        hnsw = _plan(conn, space, "hnsw", SELECTIVITY["50%"])
        assert f"Index Scan using {space.partition}_hnsw" in hnsw, hnsw
        assert "local_time" in hnsw  # the filter is checked on the index scan's rows
        exact = _plan(conn, space, "exact", SELECTIVITY["1%"])
        assert "_hnsw" not in exact, exact
        # one B-tree index picks the few passing rows: sensor, date and time of day (migration
        # 0020), not a bitmap AND of a sensor index with the time-of-day index, whose range
        # alone passes a fifth of the table
        index = f"{space.partition}_sensor_id_local_date_local_time_idx"
        assert re.search(rf"Index (Only )?Scan (using|on) {index}", exact), exact
        assert "BitmapAnd" not in exact, exact


def test_halfvec_index_keeps_recall_and_reports_exact_scores(scale_db):
    """New spaces index float16 (the tests above ran on it): a third of the size of the float32
    index, the same recall, and the scores returned are the float32 ones (only the candidate
    order comes from float16). Switching to float32 and back loses nothing."""
    engine, space, queries = scale_db
    assert space.index_type == "halfvec"

    def index_bytes() -> int:
        with engine.connect() as conn:
            return conn.execute(
                sa.text(f"SELECT pg_relation_size('{space.partition}_hnsw')")
            ).scalar()

    half_bytes = index_bytes()
    with engine.begin() as conn:
        set_build_memory(conn, BUILD_MEMORY)
        full, _ = set_index_type(conn, space, "vector")
    vector_bytes = index_bytes()
    with engine.connect() as conn:
        assert "vector_cosine_ops" in _indexdef(conn, space)
        assert f"Index Scan using {space.partition}_hnsw" in _plan(
            conn, full, "hnsw", SELECTIVITY["50%"]
        )
    with engine.begin() as conn:
        set_build_memory(conn, BUILD_MEMORY)
        half, _ = set_index_type(conn, full, "halfvec")
    assert half_bytes < 0.75 * vector_bytes, (half_bytes, vector_bytes)
    with engine.connect() as conn:
        assert "halfvec_cosine_ops" in _indexdef(conn, space)
        filters = SELECTIVITY["50%"]
        for q in queries:
            query = Query(half, "q", vector=q)
            exact = {
                h.segment_id: h.score for h in run(conn, query, filters, limit=10, strategy="exact")
            }
            approx = run(conn, query, filters, limit=10, strategy="hnsw")
            assert len(approx) == 10 and {h.method for h in approx} == {"hnsw"}
            for h in approx:
                if h.segment_id in exact:
                    assert h.score == exact[h.segment_id]  # float32, not float16
            assert [h.score for h in approx] == sorted((h.score for h in approx), reverse=True)
        # the analytics neighbour search orders by the same (halfvec) index expression
        rows = conn.execute(
            sa.text(
                "SELECT segment_id, score FROM ranger.similar_windows(:s, "
                "ARRAY[CAST(:q AS vector)], 5, NULL, NULL, 'hnsw')"
            ),
            {"s": half.id, "q": "[" + ",".join(map(str, queries[0])) + "]"},
        ).all()
        top = run(conn, Query(half, "q", vector=queries[0]), Filters(), limit=5, strategy="exact")
        assert [r.segment_id for r in rows][:3] == [h.segment_id for h in top][:3]
        assert rows[0].score == top[0].score


def _indexdef(conn, space) -> str:
    return conn.execute(
        sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
        {"n": f"{space.partition}_hnsw"},
    ).scalar()


def test_space_rows_is_the_planner_count_of_the_partition(scale_db):
    """The row count the strategy choice divides by (selectivity = passing / rows)."""
    engine, space, _ = scale_db
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT ranger._space_rows(:s)"), {"s": space.id}).scalar()
        none = conn.execute(sa.text("SELECT ranger._space_rows(-1)")).scalar()
    assert rows == pytest.approx(N_SENSORS * N_DAYS * PER_RECORDING, rel=0.05)
    assert none == 0
