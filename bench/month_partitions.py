"""Does partitioning by month keep filtered search fast as data grows? Measured, not assumed.

    python bench/month_partitions.py [--n 1000000] [--queries 50]

The same vectors, metadata, filters and ground truth as bench/search.py (run that first: it
makes the set in /tmp/soundscape-bench-search), loaded twice into one scratch database:
- flat:  one table with one HNSW index (soundscape's layout: one partition per space);
- month: the same rows in a table partitioned by local_date month (12 partitions for 2024),
         each with its own HNSW index; a date filter prunes partitions.
Both get the same B-tree indexes and the same HNSW parameters and index type (--index, default
halfvec, the type of new spaces), and are queried with the
statement ranger.search_vector runs (iterative index scan, relaxed order, the same ef_search
rule) or an exact scan, alternating layouts query by query so neither gets warmer caches.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, write_result  # noqa: E402
from search import CHUNK, DATA, DAY0, DIM, FILTERS, ground_truth, mask, tune_server  # noqa: E402

from soundscape.spaces import DEFAULT_INDEX_TYPE, HNSW_EF_CONSTRUCTION, HNSW_M  # noqa: E402

COLUMNS = "id bigint NOT NULL, sensor int NOT NULL, local_date date NOT NULL, local_time time NOT NULL, embedding vector NOT NULL"  # noqa: E501


def create(conn, name: str, months: bool) -> None:
    import sqlalchemy as sa

    if months:
        conn.execute(sa.text(f"CREATE TABLE {name} ({COLUMNS}) PARTITION BY RANGE (local_date)"))
        for m in range(12):
            lo = DAY0.replace(month=m + 1)
            hi = DAY0.replace(year=DAY0.year + 1, month=1) if m == 11 else lo.replace(month=m + 2)
            conn.execute(
                sa.text(
                    f"CREATE TABLE {name}_{m + 1:02d} PARTITION OF {name} "
                    f"FOR VALUES FROM ('{lo}') TO ('{hi}')"
                )
            )
    else:
        conn.execute(sa.text(f"CREATE TABLE {name} ({COLUMNS})"))


def copy_rows(db, table: str, rows) -> float:
    """Binary COPY of (id, sensor, local_date, local_time, vector) rows; seconds taken."""
    from soundscape.db import register_vector

    t = time.perf_counter()
    with db.db.engine.begin() as conn:
        register_vector(conn)
        raw = conn.connection.driver_connection
        with raw.cursor().copy(f"COPY {table} FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int4", "date", "time", "vector"])
            for row in rows:
                copy.write_row(row)
    return time.perf_counter() - t


def load(db, folder: Path, name: str, months: bool, index: str) -> dict:
    import sqlalchemy as sa

    vec = np.load(folder / "vectors.npy", mmap_mode="r")
    sensor, day, tod = (np.load(folder / f"{k}.npy") for k in ("sensor", "day", "tod"))
    with db.db.engine.begin() as conn:
        create(conn, name, months)

    def rows():
        for i in range(0, len(vec), CHUNK):
            v = np.asarray(vec[i : i + CHUNK])
            for j in range(len(v)):
                r = i + j
                at = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(
                    days=int(day[r]), seconds=int(tod[r])
                )
                yield (r, int(sensor[r]), at.date(), at.time(), v[j])

    copy_s = copy_rows(db, name, rows())
    t = time.perf_counter()
    with db.db.engine.begin() as conn:
        conn.execute(sa.text("SET maintenance_work_mem = '8GB'"))
        conn.execute(sa.text("SET max_parallel_maintenance_workers = 1"))
        for col in ("sensor", "local_date", "local_time"):
            conn.execute(sa.text(f"CREATE INDEX ON {name} ({col})"))
        btree_s = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute(
            sa.text(
                f"CREATE INDEX {name}_hnsw ON {name} USING hnsw "
                f"((embedding::{index}({DIM})) {index}_cosine_ops) "
                f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
            )
        )
    hnsw_s = time.perf_counter() - t
    with db.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"VACUUM ANALYZE {name}"))
        if months:  # autovacuum never analyzes a partitioned parent; the leaves are done above
            conn.execute(sa.text(f"ANALYZE {name}"))
    return {"copy_s": copy_s, "btree_s": btree_s, "hnsw_build_s": hnsw_s}


def clock(seconds: int) -> dtime:
    return (datetime.min + timedelta(seconds=seconds)).time()


def insert_with_index(db, folder: Path, table: str, n: int, rows: int = 10000) -> dict:
    """What one database absorbs from ingest workers once a space is big: COPY more windows
    into the table while its HNSW index (and B-trees) are maintained row by row."""
    vec = np.load(folder / "vectors.npy", mmap_mode="r")
    rng = np.random.default_rng(1)
    rows = min(rows, len(vec))
    extra = np.asarray(vec[:rows]) + rng.normal(scale=0.01, size=(rows, DIM)).astype(np.float32)
    seconds = copy_rows(
        db,
        table,
        (
            (n + i, i % 20, DAY0 + timedelta(days=i % 366), clock(i % 86400), v)
            for i, v in enumerate(extra)
        ),
    )
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "table_rows": n}


def where(name: str) -> tuple[str, dict]:
    quads, sensor, (t0, t1), days = FILTERS[name]
    parts = ["local_time >= :t0", "local_time < :t1"]
    params: dict = {"t0": clock(t0), "t1": clock(t1)}
    if quads:  # sensor i is in quadrant i % 4 (bench/search.py)
        q = [i for i in range(20) if "NESW"[i % 4] in quads]
        parts.append("sensor = ANY(:sensors)")
        params["sensors"] = q
    if sensor is not None:
        parts.append("sensor = :sensor")
        params["sensor"] = sensor
    if days:
        parts.append("local_date >= :d0 AND local_date <= :d1")
        params["d0"] = DAY0 + timedelta(days=days[0])
        params["d1"] = DAY0 + timedelta(days=days[1] - 1)
    return " AND ".join(parts), params


def run(
    db,
    table: str,
    name: str,
    method: str,
    index: str,
    q: np.ndarray,
    selectivity: float,
    explain: bool = False,
) -> tuple:
    import sqlalchemy as sa

    from soundscape.db import register_vector

    w, params = where(name)
    # as ranger.search_vector: order by the index's expression, report the float32 distance
    order = f"embedding::{index}({DIM}) <=> CAST(:q AS {index}({DIM}))" if method == "hnsw" else "2"
    dist = (
        f"embedding::vector({DIM}) <=> CAST(:q AS vector({DIM}))"
        if method == "hnsw"
        else f"cosine_distance(embedding::vector({DIM}), CAST(:q AS vector({DIM})))"
    )
    sql = (
        f"WITH h AS MATERIALIZED (SELECT id, {dist} AS d FROM {table} WHERE {w} "
        f"ORDER BY {order} LIMIT 10) SELECT id FROM h ORDER BY d"
    )
    ef = min(1000, max(400, 20, math.ceil(4 / selectivity)))  # ranger.search_vector's rule
    with db.db.engine.begin() as conn:
        register_vector(conn)
        # ranger.search_vector runs its statement with EXECUTE, i.e. planned for these values;
        # psycopg would otherwise prepare repeated statements and PostgreSQL switch to a
        # generic plan (no partition pruning at plan time, no index on the month layout)
        conn.execute(sa.text("SET LOCAL plan_cache_mode = force_custom_plan"))
        conn.execute(sa.text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        conn.execute(sa.text("SET LOCAL hnsw.max_scan_tuples = 20000"))
        conn.execute(sa.text(f"SET LOCAL hnsw.ef_search = {ef}"))
        if explain:  # a profile: scan nodes (which indexes, partitions), buffers, time
            plan = (
                conn.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS) " + sql), {**params, "q": q})
                .scalars()
                .all()
            )
            keep = ("Scan", "Append", "Buffers", "Rows Removed", "Execution Time")
            return [ln.strip() for ln in plan if any(k in ln for k in keep)], 0.0
        start = time.perf_counter()
        ids = conn.execute(sa.text(sql), {**params, "q": q}).scalars().all()
        ms = (time.perf_counter() - start) * 1000
    return set(ids), ms


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--index", choices=["vector", "halfvec"], default=DEFAULT_INDEX_TYPE)
    args = p.parse_args()
    folder = DATA / f"realistic_{args.n}"
    if not (folder / "done").exists():
        sys.exit(f"no vector set in {folder}: run bench/search.py --n {args.n} --sets realistic")
    queries = np.load(folder / "queries.npy")[: args.queries]
    result: dict = {
        "machine": machine(),
        "n": args.n,
        "hnsw": {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "index": args.index},
        "load": {},
        "filters": {},
    }
    db = ScratchDatabase()
    try:
        tune_server(db)
        for table, months in (("flat", False), ("month", True)):
            result["load"][table] = load(db, folder, table, months, args.index)
            print(f"{table}: {json.dumps(result['load'][table])}", file=sys.stderr)
        for name in FILTERS:
            m = mask(folder, name)
            truth = ground_truth(folder, queries, m)
            sel = float(m.mean())
            entry: dict = {"selectivity": round(sel, 5), "rows": int(m.sum())}
            for method in ("hnsw", "exact"):
                if method == "exact" and m.sum() > 20000:
                    continue
                stats = {t: {"lat": [], "rec": []} for t in ("flat", "month")}
                for t in stats:  # warm-up, and the plan
                    run(db, t, name, method, args.index, queries[0], sel)
                    entry[f"{t}_{method}_plan"] = run(
                        db, t, name, method, args.index, queries[0], sel, True
                    )[0]
                for q, tr in zip(queries, truth):
                    for t in stats:
                        got, ms = run(db, t, name, method, args.index, q, sel)
                        stats[t]["lat"].append(ms)
                        stats[t]["rec"].append(len(got & tr) / max(1, min(10, len(tr))))
                for t, s in stats.items():
                    lat = sorted(s["lat"])
                    entry[f"{t}_{method}"] = {
                        "recall_at_10": round(float(np.mean(s["rec"])), 4),
                        "min_recall": round(float(np.min(s["rec"])), 2),
                        "p50_ms": round(statistics.median(lat), 2),
                        "p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 2),
                    }
            result["filters"][name] = entry
            print(f"{name}: {json.dumps(entry)}", file=sys.stderr)
        result["insert_with_index"] = insert_with_index(db, folder, "flat", args.n)
        print(f"insert: {json.dumps(result['insert_with_index'])}", file=sys.stderr)
    finally:
        db.close()
    write_result("month-partitions", result)


if __name__ == "__main__":
    main()
