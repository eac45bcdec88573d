"""How often does an HNSW build leave a query with (almost) nothing right? Build parameters.

    python bench/hnsw_build.py [--n 50000] [--queries 100] [--builds 64:1,64:0,128:0,200:0]

HNSW builds are not deterministic (random levels, parallel insertion), and on strongly
clustered embeddings an unlucky graph lets the greedy search settle in a neighbouring cluster:
that query gets recall 0 while the mean recall still looks fine. This rebuilds the index of one
realistic set (made by bench/search.py) several times with the given ef_construction[:parallel
workers[:m]] and counts, at the 50 % filter, the queries with recall@10 < 0.5.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, write_result  # noqa: E402
from search import DATA, ground_truth, load, mask, run_queries  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--builds", default="64:1,64:0,64:1,64:0,128:0,128:1,200:0,64:0:24")
    p.add_argument("--index", default="vector", choices=["vector", "halfvec"])
    args = p.parse_args()
    import sqlalchemy as sa

    import soundscape.spaces as spaces

    folder = DATA / f"realistic_{args.n}"
    if not (folder / "done").exists():
        sys.exit(f"no vector set in {folder}: run bench/search.py --n {args.n} --sets realistic")
    queries = np.load(folder / "queries.npy")[: args.queries]
    truth = ground_truth(folder, queries, mask(folder, "50%"))
    result: dict = {"machine": machine(), "n": args.n, "index": args.index, "builds": []}
    db = ScratchDatabase()
    try:
        info = load(db, folder, "bench_build", "toast")
        space = dataclasses.replace(info["space"], index_type=args.index)
        with db.db.engine.begin() as conn:  # the searches order by this type's expression
            conn.execute(
                sa.text("UPDATE spaces SET index_type = :t WHERE id = :id"),
                {"t": args.index, "id": space.id},
            )
        for spec in args.builds.split(","):
            efc, workers, m = (list(map(int, spec.split(":"))) + [16])[:3]
            spaces.HNSW_EF_CONSTRUCTION, spaces.HNSW_M = efc, m
            with db.db.engine.begin() as conn:
                conn.execute(sa.text("SET maintenance_work_mem = '8GB'"))
                conn.execute(sa.text(f"SET max_parallel_maintenance_workers = {workers}"))
                start = time.perf_counter()
                spaces.drop_hnsw_index(conn, space)
                spaces.create_hnsw_index(conn, space)
                build_s = time.perf_counter() - start
            got = run_queries(
                db,
                space,
                info["offset"],
                queries,
                "50%",
                {"hnsw": ("hnsw", None)},
                truth,
                per_query=True,
            )["hnsw"]
            recalls = np.array(got["per_query"])
            row = {
                "ef_construction": efc, "m": m, "parallel_workers": workers,
                "build_s": round(build_s, 1), "recall_at_10": round(float(recalls.mean()), 4),
                "queries_below_0.5": int((recalls < 0.5).sum()), "min_recall": float(recalls.min()),
            }  # fmt: skip
            result["builds"].append(row)
            print(json.dumps(row), file=sys.stderr)
    finally:
        db.close()
    write_result("hnsw-build", result)


if __name__ == "__main__":
    main()
