"""How many windows an exact scan can rank within a latency budget (issue 22: exact where cheap).

    python bench/exact_crossover.py [--n 200000] [--dims 1024,192] [--queries 15]

For each dimension, N windows are loaded recording by recording (as ingest writes them) over 20
sensors, each sensor's windows on its own days. A filter on the first s sensors passes s/20 of
them, so ``ranger.search_vector`` with ``p_strategy => 'exact'`` is timed on passing sets of
N/20 .. N windows, next to the index (``'hnsw'``) on the same filter. Vectors are random
directions: the cost of an exact scan does not depend on the values (pgvector stores vectors
uncompressed). The result is the time per passing window of the exact scan, per dimension, and
the number of windows it ranks within 25 / 50 ms: what auto's exact-scan limit is set from
(sql/search.sql, ``ranger._exact_limit``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from soundscape.embedders.base import l2_normalize  # noqa: E402
from soundscape.spaces import create_hnsw_index, drop_hnsw_index, ensure_space  # noqa: E402
from tests.conftest import copy_windows  # noqa: E402

N_SENSORS = 20


def _model(dim: int) -> type:
    from soundscape.embedders.base import Embedder

    class Synthetic(Embedder):  # a space of this dimension; never embeds anything
        name = f"crossover{dim}"
        version = "1"
        dimension = dim
        sample_rate = 16000
        default_window_s = 3.0
        default_hop_s = 3.0

        def embed_batch(self, batch):  # pragma: no cover - never called
            raise NotImplementedError

    return Synthetic


def load(engine, dim: int, n: int, rng: np.random.Generator):
    per_rec = 1000
    n_recs = n // per_rec
    with engine.begin() as conn:
        space = ensure_space(conn, _model(dim), 3.0, 3.0)
        drop_hnsw_index(conn, space)
        for i in range(N_SENSORS):
            conn.execute(
                sa.text(
                    "INSERT INTO sensors (name, site, quadrant) VALUES (:n, 'x', 'N') "
                    "ON CONFLICT (name) DO NOTHING"
                ),
                {"n": f"c{i:02d}"},
            )
        sids = conn.execute(sa.text("SELECT id FROM sensors WHERE name LIKE 'c%' ORDER BY name"))
        sids = sids.scalars().all()
        recs = [
            {"s": sids[r % N_SENSORS], "p": f"/x/{dim}/{r}.wav", "h": f"{dim:08d}{r:056d}"}
            for r in range(n_recs)
        ]
        conn.execute(
            sa.text(
                "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                "sample_rate, channels, duration_s) VALUES (:s, :p, :h, 1, 'wav', 16000, 1, 3000)"
            ),
            recs,
        )
        rows = conn.execute(
            sa.text("SELECT id, sensor_id FROM recordings WHERE path LIKE :p ORDER BY id"),
            {"p": f"/x/{dim}/%"},
        ).all()
        vectors = l2_normalize(rng.normal(size=(n_recs * per_rec, dim)).astype(np.float32))
        offsets = np.tile(np.arange(per_rec) * 3.0, n_recs)
        copy_windows(conn, space.id, rows, vectors, offsets, per_rec, 30)
        conn.execute(sa.text(f"ANALYZE {space.partition}"))
    return space


def build_index(engine, space) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("SET maintenance_work_mem = '1GB'"))
        create_hnsw_index(conn, space)
        conn.execute(sa.text(f"ANALYZE {space.partition}"))


def time_route(engine, space, q, sensors: list[str], strategy: str) -> float:
    with engine.connect() as conn:
        t = time.perf_counter()
        conn.execute(
            sa.text(
                "SELECT count(*) FROM ranger.search_vector(:s, CAST(:q AS vector), 10, "
                "p_sensors => CAST(:sensors AS text[]), p_strategy => :st)"
            ),
            {"s": space.id, "q": str(list(map(float, q))), "sensors": sensors, "st": strategy},
        ).scalar()
        return (time.perf_counter() - t) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dims", default="1024,192")
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--hnsw", action="store_true", help="also time the index (builds it)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    db = ScratchDatabase()
    result: dict = {"machine": machine(), "n": args.n, "dims": {}}
    try:
        for dim in map(int, args.dims.split(",")):
            t = time.perf_counter()
            space = load(db.db.engine, dim, args.n, rng)
            print(f"dim {dim}: loaded {args.n} in {time.perf_counter() - t:.0f} s", flush=True)
            rows = []
            strategies = ("exact",)
            if args.hnsw:
                build_index(db.db.engine, space)
                strategies = ("exact", "hnsw")
            for s in (1, 2, 5, 10, 20):
                sensors = [f"c{i:02d}" for i in range(s)]
                passing = args.n * s // N_SENSORS
                qs = l2_normalize(rng.normal(size=(args.queries + 1, dim)).astype(np.float32))
                out = {"passing": passing}
                for strategy in strategies:
                    time_route(db.db.engine, space, qs[0], sensors, strategy)  # warm
                    ms = sorted(
                        time_route(db.db.engine, space, q, sensors, strategy) for q in qs[1:]
                    )
                    out[strategy] = {
                        "p50": statistics.median(ms),
                        "p95": ms[int(0.95 * (len(ms) - 1))],
                    }
                out["exact_us_per_window"] = out["exact"]["p50"] * 1000 / passing
                rows.append(out)
                print(f"  {passing:>8} passing: {out}", flush=True)
            per = statistics.median(r["exact_us_per_window"] for r in rows[1:])
            result["dims"][dim] = {
                "rows": rows,
                "exact_us_per_window": per,
                "windows_in_25ms": int(25_000 / per),
                "windows_in_50ms": int(50_000 / per),
            }
            print(f"  -> {per:.2f} us a window: {int(25_000 / per)} windows in 25 ms", flush=True)
    finally:
        db.close()
    print(write_result("exact_crossover", result))


if __name__ == "__main__":
    main()
