"""Few-shot classifiers at scale: training time, scoring time, peak memory.

    python bench/classifiers.py [--n 1000000] [--labelled 1000] [--background 10000]

A scratch embedded database gets one space of N synthetic 1024-d windows (3 s, no overlap,
1,000 per recording): unit vectors around 64 random cluster centres plus Gaussian noise, the
clustered structure of real embeddings (bench/search.py). ``--labelled`` windows of two
clusters are annotated 'yes' (half "a", half "b"), then:

- train: ``classifiers.train`` with ``--background`` weak negatives (SQL reads of annotations
  and embeddings, 5-fold grouped cross-validation per label, final fit, store);
- classify: ``classifiers.classify`` over every window (SQL, 50,000-id batches: one scan per
  batch computing both labels' w . x + b with pgvector's inner product, detections stored);
- the same scores computed in Python instead (fetch the float32 embeddings in batches,
  numpy matmul), to compare where scoring is fastest;
- search: ``ranger.search_classifier`` top 20, unfiltered and with a 1 % time-of-day filter.
  Embeddings are unit vectors, so the top by w . x is the top by cosine similarity to w and
  comes from ``ranger.search_vector`` (the space's halfvec HNSW index, built after the load
  unless ``--no-hnsw``); compared with the exact top 20 (ORDER BY the inner product): recall
  and time.

Peak memory: this process's peak RSS (ru_maxrss) and the PostgreSQL server's (summed over its
processes, sampled) are reported. Results go to bench/results/classifiers-*.json.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, write_result  # noqa: E402

DIM = 1024
PER_RECORDING = 1000
CHUNK = 20000


def make_vectors(n: int, rng: np.random.Generator, n_clusters: int = 64) -> tuple:
    centres = rng.standard_normal((n_clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, n_clusters, n)
    return centres, cluster


def vectors_for(centres, cluster, lo, hi, rng) -> np.ndarray:
    v = centres[cluster[lo:hi]] + 0.9 * rng.standard_normal((hi - lo, DIM)).astype(
        np.float32
    ) / np.sqrt(DIM)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


def pg_rss_bytes(postmaster: int) -> int:
    """Summed resident memory of the scratch server: its postmaster and that one's children
    (other PostgreSQL servers on the machine are not counted). Shared buffers touched by
    several processes are counted in each, so this overstates; it is an upper bound."""
    total = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            status = (p / "status").read_text().splitlines()
            ppid = int(next(x for x in status if x.startswith("PPid")).split()[1])
            if int(p.name) != postmaster and ppid != postmaster:
                continue
            for line in status:
                if line.startswith("VmRSS"):
                    total += int(line.split()[1]) * 1024
        except (OSError, StopIteration, ValueError):
            continue
    return total


class Sampler:
    """Peak of pg_rss_bytes, sampled every 0.2 s in a thread."""

    def __init__(self) -> None:
        from soundscape import embedded_db

        self.postmaster = embedded_db.status().pid
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, pg_rss_bytes(self.postmaster))
            time.sleep(0.2)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def load(db, n: int, seed: int) -> tuple:
    import sqlalchemy as sa

    from soundscape.db import register_vector
    from soundscape.embedders.base import Embedder
    from soundscape.ingest import SEGMENT_COPY, SEGMENT_TYPES
    from soundscape.spaces import drop_hnsw_index, ensure_space

    class Bench(Embedder):
        name = "benchclf"
        version = "1"
        dimension = DIM
        sample_rate = 48000
        default_window_s = 3.0
        default_hop_s = 3.0

    rng = np.random.default_rng(seed)
    centres, cluster = make_vectors(n, rng)
    engine = db.db.engine
    n_rec = (n + PER_RECORDING - 1) // PER_RECORDING
    day0 = datetime(2024, 5, 1, tzinfo=timezone.utc)
    with engine.begin() as conn:
        space = ensure_space(conn, Bench, 3.0, 3.0)
        drop_hnsw_index(conn, space)
        sensor = conn.execute(sa.text("SELECT id FROM sensors WHERE name = 'bench'")).scalar_one()
        rec_ids = (
            conn.execute(
                sa.text(
                    "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                    "sample_rate, channels, duration_s, started_at) "
                    "SELECT :s, '/bench/r' || i || '.wav', lpad(i::text, 64, '0'), 0, 'wav', "
                    "48000, 1, :d, :t0 + make_interval(hours => i) "
                    "FROM generate_series(0, :n - 1) i ORDER BY i RETURNING id"
                ),
                {"s": sensor, "d": PER_RECORDING * 3.0, "t0": day0, "n": n_rec},
            )
            .scalars()
            .all()
        )
    t = time.perf_counter()
    with engine.begin() as conn:
        register_vector(conn)
        raw = conn.connection.driver_connection
        with raw.cursor().copy(SEGMENT_COPY) as copy:
            copy.set_types(SEGMENT_TYPES)
            for lo in range(0, n, CHUNK):
                hi = min(n, lo + CHUNK)
                v = vectors_for(centres, cluster, lo, hi, rng)
                for j in range(hi - lo):
                    r = lo + j
                    rec, k = divmod(r, PER_RECORDING)
                    at = day0 + timedelta(hours=rec, seconds=3 * k)
                    copy.write_row(
                        (
                            r + 1,
                            space.id,
                            rec_ids[rec],
                            sensor,
                            3.0 * k,
                            3.0 * k + 3,
                            at,
                            at.astimezone(timezone(timedelta(hours=2))).date(),
                            at.astimezone(timezone(timedelta(hours=2))).time(),
                            v[j],
                        )
                    )
    copy_s = time.perf_counter() - t
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"VACUUM ANALYZE {space.partition}"))
        conn.execute(sa.text("SELECT setval('segments_id_seq', :n)"), {"n": n + 1})
    return space, cluster, rec_ids, copy_s


def annotate(db, cluster: np.ndarray, rec_ids: list[int], labelled: int) -> None:
    import sqlalchemy as sa

    rows = []
    for label, c in (("a", 0), ("b", 1)):
        idx = np.nonzero(cluster == c)[0][: labelled // 2]
        for r in idx:
            rec, k = divmod(int(r), PER_RECORDING)
            rows.append({"r": rec_ids[rec], "s": 3.0 * k, "e": 3.0 * k + 3, "l": label})
    with db.db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO annotations (recording_id, start_s, end_s, label, source) "
                "VALUES (:r, :s, :e, :l, 'import')"
            ),
            rows,
        )


def python_scores(db, space, clf) -> float:
    """Score every window in Python: fetch embeddings in batches, numpy matmul."""
    from soundscape.db import register_vector

    W = np.stack([m.weights for m in clf.labels]).T
    b = np.array([m.bias for m in clf.labels], np.float32)
    t = time.perf_counter()
    with db.db.engine.connect() as conn:
        register_vector(conn)
        raw = conn.connection.driver_connection
        with raw.cursor(name="scores", binary=True) as cur:  # server-side, binary vectors
            cur.itersize = 10000
            cur.execute("SELECT id, embedding FROM segments WHERE space_id = %s", (space.id,))
            while rows := cur.fetchmany(10000):
                X = np.stack([v.to_numpy() for _, v in rows])
                _ = X @ W + b
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--labelled", type=int, default=1000)
    p.add_argument("--background", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-python", action="store_true", help="Skip the Python scoring variant.")
    p.add_argument("--no-hnsw", action="store_true", help="Do not build the HNSW index.")
    args = p.parse_args()

    import sqlalchemy as sa

    from soundscape import classifiers
    from soundscape.db import register_vector
    from soundscape.search import Filters, parse_time_range

    result = {"machine": machine(), "args": vars(args)}
    db = ScratchDatabase()
    try:
        with Sampler() as pg:
            space, cluster, rec_ids, copy_s = load(db, args.n, args.seed)
            result["load_s"] = copy_s
            if not args.no_hnsw:
                from soundscape.spaces import set_index_type

                with db.db.engine.begin() as conn:
                    conn.execute(sa.text("SET maintenance_work_mem = '2GB'"))
                    space, result["hnsw_build_s"] = set_index_type(conn, space, "halfvec")
                print(f"hnsw build: {result['hnsw_build_s']:.1f} s", file=sys.stderr)
            annotate(db, cluster, rec_ids, args.labelled)

            t = time.perf_counter()
            with db.db.engine.begin() as conn:
                clf = classifiers.train(
                    conn, "bench", space, seed=args.seed, weak_negatives=args.background
                )
            result["train_s"] = time.perf_counter() - t
            result["train_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            result["metrics"] = clf.rows()
            print(f"train: {result['train_s']:.2f} s", file=sys.stderr)

            t = time.perf_counter()
            with db.db.engine.begin() as conn:
                out = classifiers.classify(conn, clf)
            result["classify_s"] = time.perf_counter() - t
            result["classify_scored"] = out.scored
            result["classify_detected"] = out.detected
            print(
                f"classify (SQL): {result['classify_s']:.2f} s for {out.scored} windows",
                file=sys.stderr,
            )
            t = time.perf_counter()
            with db.db.engine.begin() as conn:
                again = classifiers.classify(conn, clf, new_only=True)
            result["classify_new_noop_s"] = time.perf_counter() - t
            assert again.scored == 0

            if not args.skip_python:
                result["python_scoring_s"] = python_scores(db, space, clf)
                print(f"scoring in Python: {result['python_scoring_s']:.2f} s", file=sys.stderr)

            model = clf.label("a")
            exact_sql = sa.text(
                f"SELECT g.id FROM segments g WHERE g.space_id = :s ORDER BY "
                f"g.embedding::vector({space.dimension}) <#> :w, g.id LIMIT 20"
            )
            for name, filters in (
                ("all", Filters()),
                ("1% time of day", Filters(*[None] * 3, *parse_time_range("12:00-12:15"))),
            ):
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    with db.db.engine.connect() as conn:
                        hits = classifiers.ranked(conn, clf, "a", filters, 20)
                    times.append(time.perf_counter() - t)
                result[f"search_{name}_s"] = min(times)
                result[f"search_{name}_method"] = hits[0].method if hits else None
                print(
                    f"search top 20 ({name}, {result[f'search_{name}_method']}): "
                    f"{min(times):.3f} s",
                    file=sys.stderr,
                )
                if name == "all":
                    with db.db.engine.connect() as conn:
                        register_vector(conn)
                        t = time.perf_counter()
                        exact = set(
                            conn.execute(exact_sql, {"s": space.id, "w": model.weights})
                            .scalars()
                            .all()
                        )
                        result["search_exact_all_s"] = time.perf_counter() - t
                    got = {h.segment_id for h in hits}
                    result["search_all_recall_at_20"] = len(got & exact) / 20
                    print(
                        f"exact top 20: {result['search_exact_all_s']:.2f} s; recall@20 of the "
                        f"search: {result['search_all_recall_at_20']:.2f}",
                        file=sys.stderr,
                    )
            with db.db.engine.connect() as conn:
                result["table_bytes"] = conn.execute(
                    sa.text(f"SELECT pg_total_relation_size('{space.partition}')")
                ).scalar()
        result["python_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["postgres_peak_rss_bytes"] = pg.peak
    finally:
        db.close()
    write_result("classifiers", result)
    print({k: v for k, v in result.items() if k not in ("machine", "metrics")})
    for row in result["metrics"]:
        print(row)


if __name__ == "__main__":
    main()
