"""One PostgreSQL 15 server against a Citus cluster (a coordinator and two workers) on the same
machine: the cluster's overhead, not a speedup (the same cores serve both).

    python bench/citus.py [--n 100000] [--queries 50] [--sets realistic]

Both layouts get the same vectors and metadata as bench/search.py (its realistic set: real
BirdNET embeddings mixed and noised, 20 sensors, every day of 2024), loaded the way soundscape
loads them (binary COPY into the space's partition; on the cluster through the coordinator),
with soundscape's halfvec HNSW index built after the load, and the same filtered top-10
queries through ``ranger.search_vector``: recall@10 against numpy brute force and p50/p95 per
selectivity, for the auto strategy and forced HNSW (and exact where few rows pass). Then, on
the cluster: the time of each shard's part of a query (EXPLAIN ANALYZE with every task shown)
against the whole, i.e. the per-shard HNSW cost and what the coordinator adds (planning,
fan-out, merging the shards' top-k). Servers: /usr/lib/postgresql/15 (build.sh), in /tmp, on
free ports; the result goes to bench/results/citus-*.json (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402
from search import (  # noqa: E402
    EXACT_MAX_ROWS,
    FILTERS,
    build_index,
    ground_truth,
    load,
    make_set,
    mask,
    run_queries,
)

from soundscape import cluster  # noqa: E402
from soundscape.db import make_engine, upgrade  # noqa: E402

#: the same memory per server in both layouts (3 servers share this machine's 23 GB)
SETTINGS = (
    ("shared_buffers", "2GB"),
    ("effective_cache_size", "6GB"),
    ("maintenance_work_mem", "2GB"),
    ("work_mem", "64MB"),
    ("max_wal_size", "8GB"),
    ("checkpoint_timeout", "30min"),
)


def single_node(base: Path, port: int) -> cluster.LocalCluster:
    """A plain PostgreSQL 15 (Citus preloaded but not created in the database: one server)."""
    c = cluster.LocalCluster(base / "single", workers=0, port=port, settings=SETTINGS)
    c.directory.mkdir(parents=True, exist_ok=True)
    if cluster.os.geteuid() == 0:
        shutil.chown(c.directory, "postgres")
    c.start_node(0)
    with psycopg.connect(c.url(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return c


def explain_tasks(engine, space, vec: np.ndarray, where: str) -> dict:
    """Per-shard and total times of one forced-HNSW top-10 statement (EXPLAIN ANALYZE)."""
    dim = space.dimension
    sql = (
        f"SELECT g.id FROM segments g WHERE g.space_id = {space.id}{where} "
        f"ORDER BY g.embedding::halfvec({dim}) <=> CAST(:v AS halfvec({dim})) LIMIT 10"
    )
    with engine.connect() as conn:
        conn.execute(sa.text("SET citus.explain_all_tasks = on"))
        conn.execute(sa.text("SET citus.explain_analyze_sort_method = 'taskId'"))
        lines = [
            r[0]
            for r in conn.execute(
                sa.text(f"EXPLAIN (ANALYZE, TIMING ON) {sql}"),
                {"v": "[" + ",".join(f"{x:.7f}" for x in vec) + "]"},
            )
        ]
    tasks = [float(m) for m in re.findall(r"Execution Time: ([\d.]+) ms", "\n".join(lines))]
    total = tasks.pop()  # the coordinator's own line comes last
    return {"shards_ms": tasks, "total_ms": total}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--sets", default="realistic")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="leave the servers running")
    args = p.parse_args()
    missing = cluster.citus_missing()
    if missing:
        sys.exit(f"{missing}; run ../shared/vendor/citus/build.sh first")
    rng = np.random.default_rng(7)
    base = Path(tempfile.mkdtemp(prefix="soundscape-bench-citus-"))
    base.chmod(0o711)
    port = cluster.free_port_range(args.workers + 2)
    single = single_node(base, port)
    multi = cluster.LocalCluster(
        base / "cluster", workers=args.workers, port=port + 1, settings=SETTINGS
    ).start()
    result: dict = {"machine": machine(), "n": args.n, "workers": args.workers, "sets": {}}
    try:
        layouts = {}
        for label, url in (("single", single.url()), ("citus", multi.url())):
            engine = make_engine(url)
            notes = upgrade(engine)
            print(f"{label}: upgraded; {' | '.join(notes)}", file=sys.stderr)
            layouts[label] = SimpleNamespace(db=SimpleNamespace(engine=engine))
        for kind in args.sets.split(","):
            folder = make_set(kind, args.n, rng)
            queries = np.load(folder / "queries.npy")[: args.queries]
            truths = {name: ground_truth(folder, queries, mask(folder, name)) for name in FILTERS}
            res: dict = {}
            spaces = {}
            for label, db in layouts.items():
                info = load(db, folder, f"bench_{kind}", "toast")
                space = info.pop("space")
                space, built = build_index(db, space, "halfvec")
                spaces[label] = (space, info["offset"])
                res[label] = {"load": {**info, **built}, "filters": {}}
                print(f"{label} {kind}: {json.dumps(res[label]['load'])}", file=sys.stderr)
            for name in FILTERS:
                m = mask(folder, name)
                variants: dict[str, tuple[str, int | None]] = {
                    "auto": ("auto", None),
                    "hnsw": ("hnsw", None),
                }
                if m.sum() <= EXACT_MAX_ROWS:
                    variants["exact"] = ("exact", None)
                for label, db in layouts.items():
                    space, offset = spaces[label]
                    entry = {"selectivity": round(float(m.mean()), 5), "rows": int(m.sum())}
                    entry.update(
                        run_queries(db, space, offset, queries, name, variants, truths[name])
                    )
                    res[label]["filters"][name] = entry
                    print(f"{label} {kind} {name}: {json.dumps(entry)}", file=sys.stderr)
            # the cluster's query, shard by shard (no filter and a quadrant filter)
            space, _ = spaces["citus"]
            engine = layouts["citus"].db.engine
            parts = {}
            for name, where in (
                ("none", ""),
                ("10 % (time of day)", " AND g.local_time < '02:24'"),
            ):
                runs = [explain_tasks(engine, space, q, where) for q in queries[:20]]
                parts[name] = {
                    "slowest_shard_p50_ms": round(
                        statistics.median(max(r["shards_ms"]) for r in runs), 2
                    ),
                    "shard_p50_ms": round(
                        statistics.median(x for r in runs for x in r["shards_ms"]), 2
                    ),
                    "total_p50_ms": round(statistics.median(r["total_ms"] for r in runs), 2),
                    "shards": len(runs[0]["shards_ms"]),
                }
                print(f"citus {kind} tasks {name}: {json.dumps(parts[name])}", file=sys.stderr)
            res["citus"]["tasks"] = parts
            result["sets"][kind] = res
            write_result("citus-partial", result)
    finally:
        for db in layouts.values():
            db.db.engine.dispose()
        if not args.keep:
            multi.stop()
            single.stop()
            shutil.rmtree(base, ignore_errors=True)
    write_result("citus", result)


if __name__ == "__main__":
    main()
