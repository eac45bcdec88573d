"""The compact HNSW indexes of a space (issue 14), their candidates re-ranked by the exact
float32 distance: ``bit``, one bit per dimension around the space's mean, searched by Hamming
distance; ``pca``, the projection on the space's 32 principal axes, float16, by cosine distance.

A few thousand clustered, non-negative (ReLU-like, as BirdNET's) vectors in 640 dimensions
(above 512, so the bit index folds them to 320 bits as it does 1024-d BirdNET to 512);
recall, size and latency at 100k-1M x 1024-d are measured by bench/search.py --index bit,pca.
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
    compute_projection,
    drop_hnsw_index,
    ensure_space,
    get_space,
    index_caution,
    pca_length,
    projection_function,
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


class _ReluPca(_Relu):
    name = "relu-pca"


MODELS = {"bit": _Relu, "pca": _ReluPca}
#: the per-space function each compact index is built on
FUNCTIONS = {"bit": bits_function, "pca": projection_function}


def _vectors(rng: np.random.Generator, centers: np.ndarray, n: int, noise: float) -> np.ndarray:
    x = centers[rng.integers(0, len(centers), n)] + rng.normal(scale=noise, size=(n, DIM))
    return l2_normalize(np.maximum(x, 0).astype(np.float32))


def _fill(engine, kind: str):
    """A space of the ``kind`` index over 2,400 windows: 4 sensors (``<kind>0``..``<kind>3``,
    quadrants N, E, S, W), 6 days, a window every 10 minutes from midnight; 20 queries."""
    rng = np.random.default_rng(3)
    with engine.begin() as conn:
        space = ensure_space(conn, MODELS[kind], 3.0, 3.0)
        drop_hnsw_index(conn, space)
        for i in range(N_SENSORS):
            conn.execute(
                sa.text("INSERT INTO sensors (name, site, quadrant) VALUES (:n, 'site', :q)"),
                {"n": f"{kind}{i}", "q": "NESW"[i]},
            )
        sensors = conn.execute(
            sa.text("SELECT id FROM sensors WHERE name LIKE :p ORDER BY name"), {"p": f"{kind}_"}
        ).scalars()
        recs = [
            {"s": sid, "p": f"/{kind}/{sid}/{d}.wav", "h": f"{kind}{sid:029d}{d:032d}"}
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
            sa.text("SELECT id, sensor_id FROM recordings WHERE path LIKE :p ORDER BY id"),
            {"p": f"/{kind}/%"},
        ).all()
        # clustered and non-negative: sparse ReLU centres, windows near them
        centers = np.maximum(rng.normal(size=(40, DIM)), 0) * 0.5 + 0.05
        vectors = _vectors(rng, centers, len(rows) * PER_RECORDING, 0.25)
        offsets = np.tile(np.arange(PER_RECORDING) * 600.0, len(rows))
        copy_windows(conn, space.id, rows, vectors, offsets, PER_RECORDING, N_DAYS)
        space, _ = set_index_type(conn, space, kind)
        conn.execute(sa.text(f"ANALYZE {space.partition}"))
    return space, _vectors(rng, centers, 20, 0.1)


@pytest.fixture(scope="module")
def compact_engine(module_db_url):
    engine = make_engine(module_db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def bit_db(compact_engine):
    yield (compact_engine, *_fill(compact_engine, "bit"))


@pytest.fixture(scope="module")
def pca_db(compact_engine):
    yield (compact_engine, *_fill(compact_engine, "pca"))


@pytest.fixture(params=["bit", "pca"])
def compact_db(request):
    """Each compact index in turn: (engine, space, queries)."""
    return request.getfixturevalue(f"{request.param}_db")


def _vec(v: np.ndarray) -> str:
    return "[" + ",".join(map(str, v.tolist())) + "]"


def _index_of(conn, space) -> str:
    """The definition of the space's HNSW index, after checking it holds every window."""
    indexdef = conn.execute(
        sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
        {"n": f"{space.partition}_hnsw"},
    ).scalar()
    rows = conn.execute(sa.text(f"SELECT count(*) FROM {space.partition}")).scalar()
    entries = conn.execute(
        sa.text("SELECT reltuples FROM pg_class WHERE relname = :n"),
        {"n": f"{space.partition}_hnsw"},
    ).scalar()
    assert entries == rows == N_SENSORS * N_DAYS * PER_RECORDING
    return str(indexdef)


def test_the_bit_index_holds_every_window_and_centred_bits(bit_db):
    engine, space, _ = bit_db
    with engine.connect() as conn:
        indexdef = _index_of(conn, space)
        assert "bit_hamming_ops" in indexdef and f"{space.partition}_bits" in indexdef
        assert "::bit(320)" in indexdef
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


def test_the_pca_index_holds_every_window_and_their_projections(pca_db):
    """The index is on the projection function; the function gives (x - mean) . axis for the
    space's leading principal axes, as float16."""
    engine, space, _ = pca_db
    with engine.connect() as conn:
        indexdef = _index_of(conn, space)
        assert "halfvec_cosine_ops" in indexdef and f"{space.partition}_pca" in indexdef
        assert f"::halfvec({pca_length(DIM)})" in indexdef and pca_length(DIM) == 32
        # the same sample (unchanged space) gives the same mean and axes again
        mean, axes = compute_projection(conn, space)
        stored = conn.execute(
            sa.text("SELECT index_center::text FROM spaces WHERE id = :s"), {"s": space.id}
        ).scalar()
        assert np.allclose(np.array(stored.strip("[]").split(","), float), mean, atol=1e-6)
        got = conn.execute(
            sa.text(
                f"SELECT embedding::text, {projection_function(space)}(embedding)::text "
                f"FROM {space.partition} ORDER BY id LIMIT 50"
            )
        ).all()
    x = np.array([r[0].strip("[]").split(",") for r in got], float)
    projected = np.array([r[1].strip("[]").split(",") for r in got], float)
    assert projected.shape == (50, 32)
    assert np.allclose(projected, (x - mean) @ axes, atol=2e-3)  # float16
    # principal axes: orthonormal, and the projections' variance falls from the first on
    assert np.allclose(axes.T @ axes, np.eye(32), atol=1e-6)
    variance = ((x - mean) @ axes).var(axis=0)
    assert variance[0] > variance[16] > variance[31]


def test_auto_answers_exactly_where_the_compact_scan_would_give_up(compact_db):
    """A filter passing 48 of the 2,400 windows (one sensor, one day, 00:00-08:00): the HNSW
    scan (up to hnsw.max_scan_tuples windows) would find ~400 passing, enough for halfvec's 4 k but not for a compact index's 60-80 x k
    candidates, so auto scans exactly there (past the exact limit, here 10)."""
    engine, space, queries = compact_db
    sql = (
        "SELECT DISTINCT method FROM ranger.search_vector(:s, CAST(:q AS vector), 10, "
        "p_sensors => ARRAY[:sensor], p_time_from => TIME '00:00', p_time_to => TIME '08:00', "
        "p_date_from => DATE '2024-05-02', p_date_to => DATE '2024-05-02', "
        "p_exact_limit => 10)"
    )
    args = {"s": space.id, "q": _vec(queries[0]), "sensor": f"{space.index_type}0"}
    with engine.connect() as conn:
        assert conn.execute(sa.text(sql), args).scalars().all() == ["exact"]
        # no filter and k = 400: more candidates (24,000-32,000) than the scan's whole budget
        # (20,000); the index gives what it can rather than an exact scan of the whole space
        many = conn.execute(
            sa.text(
                "SELECT DISTINCT method FROM ranger.search_vector(:s, CAST(:q AS vector), 400, "
                "p_exact_limit => 10)"
            ),
            args,
        ).scalars()
        assert many.all() == ["hnsw"]
        # the same filter on a halfvec index: the index (it needs only 4 k = 40)
        conn.execute(sa.text("UPDATE spaces SET index_type = 'halfvec' WHERE id = :s"), args)
        conn.execute(
            sa.text(
                f"CREATE INDEX tmp_half ON {space.partition} USING hnsw "
                f"((embedding::halfvec({DIM})) halfvec_cosine_ops)"
            )
        )
        assert conn.execute(sa.text(sql), args).scalars().all() == ["hnsw"]
        conn.rollback()


def test_search_uses_the_compact_index_and_re_ranks_exactly(compact_db):
    engine, space, queries = compact_db
    with engine.connect() as conn:
        key = conn.execute(
            sa.text("SELECT ranger._index_key(:s, :t)"), {"s": space.id, "t": space.index_type}
        ).scalar()
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


@pytest.mark.slow  # duplicate pairs of the whole space, with both strategies (~30 s loaded)
def test_analytics_run_on_a_compact_space(compact_db):
    engine, space, queries = compact_db
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
                        "SELECT segment_id, distance FROM ranger.anomaly_scores(:sensor, :n, 5, "
                        "p_date_from => DATE '2024-05-06', p_strategy => :st)"
                    ),
                    {"sensor": f"{space.index_type}0", "n": space.name, "st": strategy},
                ).all()
            )
        assert scores["hnsw"].keys() == scores["exact"].keys() and scores["exact"]
        close = [abs(scores["hnsw"][i] - d) < 1e-6 for i, d in scores["exact"].items()]
        assert np.mean(close) >= 0.9


def test_a_window_stored_after_the_build_is_indexed(compact_db):
    """Ingest into a space with a compact index computes the window's bits or projection as it
    inserts: the new window is the index's first answer to itself (rolled back after)."""
    engine, space, queries = compact_db
    new = queries[5]
    with engine.connect() as conn:
        rec, sensor = conn.execute(
            sa.text(f"SELECT recording_id, sensor_id FROM {space.partition} LIMIT 1")
        ).one()
        wid = conn.execute(
            sa.text(
                "INSERT INTO segments (space_id, recording_id, sensor_id, start_s, end_s, "
                "embedding) VALUES (:s, :r, :n, 99999, 100002, CAST(:v AS vector)) RETURNING id"
            ),
            {"s": space.id, "r": rec, "n": sensor, "v": _vec(new)},
        ).scalar()
        hits = run(conn, Query(space, "q", vector=new), Filters(), limit=3, strategy="hnsw")
        assert hits[0].segment_id == wid and hits[0].score == pytest.approx(1.0, abs=1e-6)
        conn.rollback()


def test_switching_compact_halfvec_compact(compact_db, module_db_url, run_cli, monkeypatch):
    """To halfvec and back: the compact index's function and centre go and come back."""
    engine, space, queries = compact_db
    kind = space.index_type
    fn = FUNCTIONS[kind](space).split(".")[1]

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

    # the halfvec index between is dropped again: built as lightly as pgvector's default
    monkeypatch.setattr(spaces, "HNSW_EF_CONSTRUCTION", 64)
    with engine.begin() as conn:
        half, _ = set_index_type(conn, space, "halfvec")
        assert state(conn) == ("halfvec", False, False)
    # back through the CLI (thin: it calls set_index_type)
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", module_db_url)
    result = run_cli("spaces", "index", space.name, "--type", kind)
    assert result.exit_code == 0, result.stderr
    with engine.connect() as conn:
        assert state(conn) == (kind, True, True)
        again = get_space(conn, space.name)
        q = Query(again, "q", vector=queries[1])
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


def test_a_young_space_gets_a_rebuild_note_for_pca(pca_db, module_db_url, run_cli, monkeypatch):
    """A pca index built on few windows says its axes come from them, and how to rebuild."""
    engine, space, _ = pca_db
    with engine.connect() as conn:
        assert index_caution(conn, space, "pca") is None  # 2,400 windows
    monkeypatch.setattr(spaces, "PCA_MIN_WINDOWS", 10_000)
    with engine.connect() as conn:
        note = index_caution(conn, space, "pca")
    assert note and "2,400 windows" in note and f"spaces index {space.name}`" in note
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", module_db_url)
    result = run_cli("spaces", "index", space.name)  # a rebuild, keeping the type
    assert result.exit_code == 0, result.stderr
    assert "note: " in result.stderr and "principal axes" in result.stderr
    with engine.connect() as conn:
        assert get_space(conn, space.name).index_type == "pca"


def test_a_bad_index_type_is_a_usage_error(run_cli):
    result = run_cli("spaces", "index", "whatever", "--type", "pq")
    assert result.exit_code == 2 and "pca" in result.stderr and "bit" in result.stderr


@pytest.mark.parametrize(
    ("kind", "revision", "before", "function"),
    [("bit", "0018", "0017", "_bits"), ("pca", "0021", "0020", "_pca")],
)
def test_migration_down_and_up_with_a_compact_space(db_url, kind, revision, before, function):
    """Downgrading the revision that brought a compact index type (0018 bit, 0021 pca)
    rebuilds such an index as halfvec and drops the space's function; the older constraint
    refuses the type; upgrading again allows it."""
    from alembic import command

    from soundscape.db import alembic_config, upgrade

    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            space, _ = set_index_type(conn, ensure_space(conn, MODELS[kind], 3.0, 3.0), kind)
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), before)
        with engine.connect() as conn:
            assert get_space(conn, space.name).index_type == "halfvec"
            indexdef = conn.execute(
                sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                {"n": f"{space.partition}_hnsw"},
            ).scalar()
            assert "halfvec_cosine_ops" in indexdef
            assert not conn.execute(
                sa.text("SELECT count(*) FROM pg_proc WHERE proname = :f"),
                {"f": f"{space.partition}{function}"},
            ).scalar()
            with pytest.raises(sa.exc.IntegrityError):
                conn.execute(
                    sa.text("UPDATE spaces SET index_type = :t WHERE id = :s"),
                    {"t": kind, "s": space.id},
                )
        upgrade(engine)
        with engine.begin() as conn:
            again, _ = set_index_type(conn, get_space(conn, space.name), kind)
            assert again.index_type == kind
    finally:
        engine.dispose()
