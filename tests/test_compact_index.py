"""The compact (bit) HNSW index of a space (issue 14): one bit per dimension around the space's
mean, searched by Hamming distance, its candidates re-ranked by the exact float32 distance.

A few thousand clustered, non-negative (ReLU-like, as BirdNET's) vectors in 640 dimensions
(above 512, so the index folds them to 320 bits as it does 1024-d BirdNET to 512);
recall, size and latency at 100k-1M x 1024-d are measured by bench/search.py --index bit.
"""

from __future__ import annotations

from datetime import time

import numpy as np
import pytest
import sqlalchemy as sa

from soundscape import spaces
from soundscape.db import make_engine
from soundscape.embedders.base import Embedder, l2_normalize
from soundscape.search import Filters, Query, run
from soundscape.spaces import (
    bit_length,
    bits_function,
    drop_hnsw_index,
    ensure_space,
    get_space,
    index_caution,
    set_index_type,
)

from .conftest import copy_windows

DIM = 640
N_SENSORS, N_DAYS, PER_RECORDING = 4, 6, 100  # 2,400 windows


class _Relu(Embedder):
    name = "relu"
    version = "1"
    dimension = DIM
    sample_rate = 16000
    default_window_s = 3.0
    default_hop_s = 3.0


def _vectors(rng: np.random.Generator, centers: np.ndarray, n: int, noise: float) -> np.ndarray:
    x = centers[rng.integers(0, len(centers), n)] + rng.normal(scale=noise, size=(n, DIM))
    return l2_normalize(np.maximum(x, 0).astype(np.float32))


@pytest.fixture(scope="module")
def bit_db(module_db_url):
    rng = np.random.default_rng(3)
    engine = make_engine(module_db_url)
    with engine.begin() as conn:
        space = ensure_space(conn, _Relu, 3.0, 3.0)
        drop_hnsw_index(conn, space)
        for i in range(N_SENSORS):
            conn.execute(
                sa.text("INSERT INTO sensors (name, site, quadrant) VALUES (:n, 'site', :q)"),
                {"n": f"b{i}", "q": "NESW"[i]},
            )
        sensors = conn.execute(
            sa.text("SELECT id FROM sensors WHERE name LIKE 'b_' ORDER BY name")
        ).scalars()
        recs = [
            {"s": sid, "p": f"/bit/{sid}/{d}.wav", "h": f"bit{sid:029d}{d:032d}"}
            for sid in sensors
            for d in range(N_DAYS)
        ]
        conn.execute(
            sa.text(
                "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                "sample_rate, channels, duration_s) VALUES (:s, :p, :h, 1, 'wav', 16000, 1, 86400)"
            ),
            recs,
        )
        rows = conn.execute(
            sa.text("SELECT id, sensor_id FROM recordings WHERE path LIKE '/bit/%' ORDER BY id")
        ).all()
        # clustered and non-negative: sparse ReLU centres, windows near them
        centers = np.maximum(rng.normal(size=(40, DIM)), 0) * 0.5 + 0.05
        vectors = _vectors(rng, centers, len(rows) * PER_RECORDING, 0.25)
        offsets = np.tile(np.arange(PER_RECORDING) * 600.0, len(rows))
        copy_windows(conn, space.id, rows, vectors, offsets, PER_RECORDING, N_DAYS)
        space, _ = set_index_type(conn, space, "bit")
        conn.execute(sa.text(f"ANALYZE {space.partition}"))
    queries = _vectors(rng, centers, 20, 0.1)
    yield engine, space, queries
    engine.dispose()


def _vec(v: np.ndarray) -> str:
    return "[" + ",".join(map(str, v.tolist())) + "]"


def test_the_bit_index_holds_every_window_and_centred_bits(bit_db):
    engine, space, _ = bit_db
    with engine.connect() as conn:
        indexdef = conn.execute(
            sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
            {"n": f"{space.partition}_hnsw"},
        ).scalar()
        assert "bit_hamming_ops" in indexdef and f"{space.partition}_bits" in indexdef
        assert "::bit(320)" in indexdef
        rows = conn.execute(sa.text(f"SELECT count(*) FROM {space.partition}")).scalar()
        entries = conn.execute(
            sa.text("SELECT reltuples FROM pg_class WHERE relname = :n"),
            {"n": f"{space.partition}_hnsw"},
        ).scalar()
        assert entries == rows == N_SENSORS * N_DAYS * PER_RECORDING
        # the centre is stored; without it every bit of a non-negative vector would be one
        center = conn.execute(
            sa.text("SELECT index_center::text FROM spaces WHERE id = :s"), {"s": space.id}
        ).scalar()
        assert center is not None and len(center.split(",")) == DIM
        ones = conn.execute(
            sa.text(
                f"SELECT avg(length(replace({bits_function(space)}(embedding)::text, '0', ''))) "
                f"FROM {space.partition}"
            )
        ).scalar()
        assert bit_length(DIM) == 320
        assert 0.25 * 320 < ones < 0.75 * 320, ones


def test_search_uses_the_bit_index_and_re_ranks_exactly(bit_db):
    engine, space, queries = bit_db
    with engine.connect() as conn:
        key = conn.execute(sa.text("SELECT ranger._index_key(:s, 'bit')"), {"s": space.id}).scalar()
        sql = conn.execute(
            sa.text("SELECT ranger._search_vector_sql(:d, 'g.space_id = $2', 'hnsw', :k)"),
            {"d": DIM, "k": key},
        ).scalar()
        conn.execute(sa.text("SET hnsw.iterative_scan = relaxed_order"))
        conn.execute(
            sa.text(
                "PREPARE q(vector, int, int[], time, time, date, date, timestamptz, "
                f"timestamptz, bigint, int, real) AS {sql}"
            )
        )
        plan = "\n".join(
            conn.execute(
                sa.text(
                    f"EXPLAIN EXECUTE q('{_vec(queries[0])}', {int(space.id)}, NULL, NULL, NULL, "
                    "NULL, NULL, NULL, NULL, NULL, 10, NULL)"
                )
            ).scalars()
        )
        conn.execute(sa.text("DEALLOCATE q"))
        assert f"Index Scan using {space.partition}_hnsw" in plan, plan

        for filters in (Filters(), Filters(time_from=time(0), time_to=time(8))):
            recalls = []
            for q in queries:
                query = Query(space, "q", vector=q)
                exact = {
                    h.segment_id: h.score
                    for h in run(conn, query, filters, limit=10, strategy="exact")
                }
                approx = run(conn, query, filters, limit=10, strategy="hnsw")
                assert len(approx) == 10 and {h.method for h in approx} == {"hnsw"}
                recalls.append(len(set(exact) & {h.segment_id for h in approx}) / 10)
                for h in approx:
                    if h.segment_id in exact:
                        assert h.score == exact[h.segment_id]  # the float32 score
                    if filters.time_to:
                        assert h.local_time < filters.time_to
                scores = [h.score for h in approx]
                assert scores == sorted(scores, reverse=True)
            assert np.mean(recalls) >= 0.95, recalls


def test_analytics_run_on_a_bit_space(bit_db):
    engine, space, queries = bit_db
    with engine.connect() as conn:
        args = {"s": space.id, "q": _vec(queries[0])}
        similar = {
            strategy: conn.execute(
                sa.text(
                    "SELECT segment_id, score FROM ranger.similar_windows(:s, "
                    f"ARRAY[CAST(:q AS vector)], 5, NULL, NULL, '{strategy}')"
                ),
                args,
            ).all()
            for strategy in ("hnsw", "exact")
        }
        assert similar["hnsw"] == similar["exact"]  # the same windows and float32 scores
        # every pair's score is the exact float32 one
        pairs = conn.execute(
            sa.text(
                "SELECT p.score, (1 - (a.embedding <=> b.embedding))::real AS exact "
                "FROM ranger.duplicate_pairs(:s, 1, 0.5, 'hnsw') p "
                "JOIN segments a ON a.space_id = :s AND a.id = p.segment_a "
                "JOIN segments b ON b.space_id = :s AND b.id = p.segment_b"
            ),
            {"s": space.id},
        ).all()
        assert pairs and all(p.score == p.exact for p in pairs)
        scores = {}
        for strategy in ("hnsw", "exact"):
            scores[strategy] = dict(
                conn.execute(
                    sa.text(
                        "SELECT segment_id, distance FROM ranger.anomaly_scores('b0', :n, 5, "
                        "p_date_from => DATE '2024-05-06', p_strategy => :st)"
                    ),
                    {"n": space.name, "st": strategy},
                ).all()
            )
        assert scores["hnsw"].keys() == scores["exact"].keys() and scores["exact"]
        close = [abs(scores["hnsw"][i] - d) < 1e-6 for i, d in scores["exact"].items()]
        assert np.mean(close) >= 0.9


def test_switching_bit_halfvec_bit(bit_db, module_db_url, run_cli, monkeypatch):
    engine, space, queries = bit_db
    fn = f"{space.partition}_bits"

    def state(conn) -> tuple[str, bool, bool]:
        kind = get_space(conn, space.name).index_type
        has_fn = bool(
            conn.execute(
                sa.text("SELECT count(*) FROM pg_proc WHERE proname = :f"), {"f": fn}
            ).scalar()
        )
        has_center = conn.execute(
            sa.text("SELECT index_center IS NOT NULL FROM spaces WHERE id = :s"), {"s": space.id}
        ).scalar()
        return kind, has_fn, has_center

    with engine.begin() as conn:
        half, _ = set_index_type(conn, space, "halfvec")
        assert state(conn) == ("halfvec", False, False)
    # back through the CLI (thin: it calls set_index_type)
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", module_db_url)
    result = run_cli("spaces", "index", space.name, "--type", "bit")
    assert result.exit_code == 0, result.stderr
    with engine.connect() as conn:
        assert state(conn) == ("bit", True, True)
        bit = get_space(conn, space.name)
        q = Query(bit, "q", vector=queries[1])
        exact = run(conn, q, Filters(), limit=5, strategy="exact")
        approx = run(conn, q, Filters(), limit=5, strategy="hnsw")
        assert [h.segment_id for h in approx][:3] == [h.segment_id for h in exact][:3]


def test_a_large_space_gets_a_recall_note(bit_db, module_db_url, run_cli, monkeypatch):
    """Building a bit index on a space past BIT_RECALL_WINDOWS says what it costs in recall."""
    engine, space, _ = bit_db
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", module_db_url)
    with engine.connect() as conn:
        assert index_caution(conn, space, "bit") is None  # a few thousand windows
        assert index_caution(conn, space, "halfvec") is None
    monkeypatch.setattr(spaces, "BIT_RECALL_WINDOWS", 100)
    with engine.connect() as conn:
        note = index_caution(conn, space, "bit")
    assert note and "recall@10" in note and "--type halfvec" in note
    result = run_cli("spaces", "index", space.name, "--type", "bit")
    assert result.exit_code == 0, result.stderr
    assert "note: " in result.stderr and "recall@10" in result.stderr


def test_a_bad_index_type_is_a_usage_error(run_cli):
    result = run_cli("spaces", "index", "whatever", "--type", "pq")
    assert result.exit_code == 2 and "bit" in result.stderr


def test_migration_0018_down_and_up_with_a_bit_space(db_url):
    """Downgrading 0018 rebuilds a bit index as halfvec and drops the space's bits function and
    the centre column; upgrading again allows bit."""
    from alembic import command

    from soundscape.db import alembic_config, upgrade

    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            space, _ = set_index_type(conn, ensure_space(conn, _Relu, 3.0, 3.0), "bit")
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0017")
        with engine.connect() as conn:
            assert get_space(conn, space.name).index_type == "halfvec"
            indexdef = conn.execute(
                sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                {"n": f"{space.partition}_hnsw"},
            ).scalar()
            assert "halfvec_cosine_ops" in indexdef
            assert not conn.execute(
                sa.text("SELECT count(*) FROM pg_proc WHERE proname = :f"),
                {"f": f"{space.partition}_bits"},
            ).scalar()
        upgrade(engine)
        with engine.begin() as conn:
            again, _ = set_index_type(conn, get_space(conn, space.name), "bit")
            assert again.index_type == "bit"
    finally:
        engine.dispose()
