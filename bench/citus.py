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
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402
from search import (  # noqa: E402
    DAY0,
    EXACT_MAX_ROWS,
    FILTERS,
    QUADRANTS,
    build_index,
    ground_truth,
    load,
    make_set,
    mask,
    run_queries,
)

from soundscape import cluster  # noqa: E402
from soundscape.db import make_engine, upgrade  # noqa: E402

#: the same memory per server in both layouts (4 servers share this machine's 23 GB)
SETTINGS = (
    ("shared_buffers", "1GB"),
    ("effective_cache_size", "4GB"),
    ("maintenance_work_mem", "1GB"),
    ("work_mem", "64MB"),
    ("max_wal_size", "8GB"),
    ("checkpoint_timeout", "30min"),
)


def single_node(base: Path, port: int) -> cluster.LocalCluster:
    """A plain PostgreSQL 15 (Citus preloaded but not created in the database: one server)."""
    c = cluster.LocalCluster(base / "single", workers=0, port=port, settings=SETTINGS)
    c.directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
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


def _where(name: str, sensor_ids: list[int]) -> str:
    """bench/search.py's filter ``name`` as SQL on a table with sensor_id, local_time and
    local_date (sensor ids inlined: they are integers)."""
    quads, sensor, (t0, t1), days = FILTERS[name]
    parts = [
        f"local_time >= '{t0 // 3600:02d}:{t0 % 3600 // 60:02d}'",
        f"local_time < '{t1 // 3600:02d}:{t1 % 3600 // 60:02d}'",
    ]
    if quads:
        ids = [sid for i, sid in enumerate(sensor_ids) if QUADRANTS[i % 4] in quads]
        parts.append(f"sensor_id IN ({', '.join(map(str, ids))})")
    if sensor is not None:
        parts.append(f"sensor_id = {sensor_ids[sensor]}")
    if days:
        d0 = (DAY0 + timedelta(days=days[0])).isoformat()
        d1 = (DAY0 + timedelta(days=days[1] - 1)).isoformat()
        parts.append(f"local_date BETWEEN '{d0}' AND '{d1}'")
    return " AND ".join(parts)


def compare_distribution(engine, space, offset: int, folder: Path, queries, truths) -> dict:
    """The same windows distributed by hash of the window id (soundscape's layout) and by
    sensor (a copy), each with its halfvec HNSW index per shard: one top-10 statement per
    query and filter, the same pgvector settings, recall@10 and p50/p95 of each, and how
    evenly each layout fills its shards."""
    dim = space.dimension
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_by_sensor"))
        conn.execute(
            sa.text(
                f"CREATE TABLE bench_by_sensor (id bigint, sensor_id integer, local_time time, "
                f"local_date date, embedding vector({dim}), PRIMARY KEY (sensor_id, id))"
            )
        )
        shards = conn.execute(
            sa.text("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = CAST(:t AS regclass)"),
            {"t": space.partition},
        ).scalar()
        conn.execute(
            sa.text(
                "SELECT create_distributed_table('bench_by_sensor', 'sensor_id', "
                "shard_count => :n, colocate_with => 'none')"
            ),
            {"n": shards},
        )
    t = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO bench_by_sensor SELECT id, sensor_id, local_time, local_date, "
                f"embedding FROM {space.partition}"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE INDEX ON bench_by_sensor USING hnsw ((embedding::halfvec({dim})) "
                "halfvec_cosine_ops) WITH (m = 16, ef_construction = 128)"
            )
        )
    built = time.perf_counter() - t
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE bench_by_sensor"))  # statistics, as the load gave the other
        sensor_ids = list(
            conn.execute(
                sa.text("SELECT id FROM sensors WHERE name LIKE 's__' ORDER BY name")
            ).scalars()
        )
        fill = {
            table: [
                int(r[0])
                for r in conn.execute(
                    sa.text(
                        "SELECT shard_size FROM citus_shards "
                        "WHERE table_name = CAST(:t AS regclass) ORDER BY shardid"
                    ),
                    {"t": table},
                )
            ]
            for table in (space.partition, "bench_by_sensor")
        }
    out: dict = {"copy_and_build_s": round(built, 1), "shard_bytes": fill, "filters": {}}
    tables = {"by_id": space.partition, "by_sensor": "bench_by_sensor"}
    for name in FILTERS:
        where = _where(name, sensor_ids)
        lat: dict[str, list[float]] = {k: [] for k in tables}
        rec: dict[str, list[float]] = {k: [] for k in tables}
        with engine.connect() as conn:
            for q, truth in zip(queries, truths[name]):
                vec = "[" + ",".join(f"{x:.7f}" for x in q) + "]"
                for label, table in tables.items():
                    start = time.perf_counter()
                    ids = (
                        conn.execute(
                            sa.text(
                                f"SELECT id FROM {table} WHERE {where} ORDER BY "
                                f"embedding::halfvec({dim}) <=> CAST(:v AS halfvec({dim})) LIMIT 10"
                            ),
                            {"v": vec},
                        )
                        .scalars()
                        .all()
                    )
                    lat[label].append((time.perf_counter() - start) * 1000)
                    got = {i - offset for i in ids}
                    rec[label].append(len(got & truth) / max(1, min(10, len(truth))))
        out["filters"][name] = {
            label: {
                "recall_at_10": round(float(np.mean(rec[label])), 4),
                "p50_ms": round(statistics.median(lat[label]), 2),
                "p95_ms": round(sorted(lat[label])[int(0.95 * (len(lat[label]) - 1))], 2),
            }
            for label in tables
        }
        print(f"distribution {name}: {json.dumps(out['filters'][name])}", file=sys.stderr)
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--sets", default="realistic")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="leave the servers running")
    p.add_argument(
        "--distribution",
        action="store_true",
        help="only the cluster: soundscape's layout (by window id) against a copy by sensor",
    )
    args = p.parse_args()
    missing = cluster.citus_missing()
    if missing:
        sys.exit(f"{missing}; run ../shared/vendor/citus/build.sh first")
    rng = np.random.default_rng(7)
    base = Path(tempfile.mkdtemp(prefix="soundscape-bench-citus-"))
    base.chmod(0o711)
    port = cluster.free_port_range(args.workers + 2)
    single = None if args.distribution else single_node(base, port)
    multi = cluster.LocalCluster(
        base / "cluster", workers=args.workers, port=port + 1, settings=SETTINGS
    ).start()
    result: dict = {"machine": machine(), "n": args.n, "workers": args.workers, "sets": {}}
    layouts: dict = {}
    try:
        urls = (
            [("citus", multi.url())]
            if single is None
            else [("single", single.url()), ("citus", multi.url())]
        )
        for label, url in urls:
            # one transaction per statement, as the CLI runs them (several searches in one
            # transaction on a coordinator that holds reference tables can fail: docs/scaling.md)
            engine = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
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
            if args.distribution:
                space, offset = spaces["citus"]
                result["sets"][kind] = compare_distribution(
                    layouts["citus"].db.engine, space, offset, folder, queries, truths
                )
                continue
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
            if single is not None:
                single.stop()
            shutil.rmtree(base, ignore_errors=True)
    write_result("citus-distribution" if args.distribution else "citus", result)


if __name__ == "__main__":
    main()
