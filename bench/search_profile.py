"""Where the time of one `ranger.search_vector` call goes, filter by filter.

    python bench/search_profile.py --home DIR [--n 100000] [--reps 30]

Uses the database that bench/search_peer.py keeps in --home (the realistic set, halfvec
index). For each filter of bench/search.py, one query vector, each step repeated --reps times
in turns (medians, ms):

- library: `soundscape.search.run` (SQLAlchemy, parameter adaptation, Hit objects);
- sql call: the same `SELECT * FROM ranger.search_vector(...)` through raw psycopg;
- round trip: `SELECT 1` through raw psycopg (client/server over the Unix socket);
- function: server-side time of the call (EXPLAIN ANALYZE's execution time);
- then each step the function runs, as its own statement with the same bound parameters (its
  time minus the round trip): the input checks and look-ups, the planner estimate (EXPLAIN of
  the filter), the bounded count, and the ranking statement (planning and execution from
  EXPLAIN ANALYZE); for the exact statement also the part of its execution spent reading
  (detoasting) the float32 vectors (`vector_dims`, which detoasts) and computing distances.
- plpgsql and the rest: function minus the steps.

Results go to bench/results/search-profile-*.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from soundscape.db import raw_connection, register_vector
from soundscape.search import Query, run
from soundscape.spaces import get_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, write_result  # noqa: E402
from search import FILTERS, make_set  # noqa: E402
from search_peer import SPACE, filters_of  # noqa: E402


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def numbered(sql: str) -> str:
    """$1..$12 placeholders as psycopg's %(pN)s."""
    return re.sub(r"\$(\d+)", r"%(p\1)s", sql)


def profile_filter(conn, space, q: np.ndarray, name: str, reps: int) -> dict:
    f = filters_of(name)
    raw = raw_connection(conn)
    fp = f.params()
    call_args = [
        space.id,
        q,
        10,
        fp["sensors"],
        fp["sites"],
        fp["quadrants"],
        fp["time_from"],
        fp["time_to"],
        fp["date_from"],
        fp["date_to"],
    ]
    call = (
        "SELECT * FROM ranger.search_vector(%s, %s::vector, %s, %s::text[], %s::text[], "
        "%s::text[], %s::time, %s::time, %s::date, %s::date)"
    )
    cur = raw.cursor()
    # what the function decides and builds, asked from the function's own helpers
    cur.execute(
        "SELECT ranger._sensor_ids(%s::text[], %s::text[], %s::text[])",
        [fp["sensors"], fp["sites"], fp["quadrants"]],
    )
    ids = cur.fetchone()[0]
    cur.execute(
        "SELECT ranger._filter_sql(%s, %s, %s, %s, %s, NULL, NULL, NULL)",
        [ids, fp["time_from"], fp["time_to"], fp["date_from"], fp["date_to"]],
    )
    where = cur.fetchone()[0]
    cur.execute(call, call_args)
    method = cur.fetchall()[0][-1]
    params = {
        "p1": q,
        "p2": space.id,
        "p3": ids,
        "p4": fp["time_from"],
        "p5": fp["time_to"],
        "p6": fp["date_from"],
        "p7": fp["date_to"],
        "p8": None,
        "p9": None,
        "p10": None,
        "p11": 10,
        "p12": None,
    }
    cur.execute(
        "SELECT ranger._search_vector_sql(%s, %s, %s, %s)",
        [space.dimension, where, method, space.index_type],
    )
    rank_sql = numbered(cur.fetchone()[0])
    filt = numbered(f"SELECT 1 FROM segments g WHERE {where}")
    limit = max(1000, 4000000 // space.dimension)
    dim = space.dimension
    steps: dict[str, Callable[[], Any]] = {
        "library": lambda: run(conn, Query(space, "q", vector=q), f, limit=10),
        "sql_call": lambda: cur.execute(call, call_args).fetchall(),
        "round_trip": lambda: cur.execute("SELECT 1").fetchall(),
        "checks_lookups": lambda: cur.execute(
            "SELECT ranger._check_int('k', 10, 1, 10000), ranger._check_query('q', %s::vector), "
            "(SELECT dimension FROM spaces WHERE id = %s), "
            "ranger._filter_sql(ranger._sensor_ids(%s::text[], %s::text[], %s::text[]), "
            "%s, %s, %s, %s, NULL, NULL, NULL), ranger._space_rows(%s)",
            [
                q,
                space.id,
                fp["sensors"],
                fp["sites"],
                fp["quadrants"],
                fp["time_from"],
                fp["time_to"],
                fp["date_from"],
                fp["date_to"],
                space.id,
            ],
        ).fetchall(),  # fmt: skip
        "estimate_explain": lambda: cur.execute("EXPLAIN (FORMAT JSON) " + filt, params).fetchall(),
        "bounded_count": lambda: cur.execute(
            f"SELECT count(*) FROM ({filt} LIMIT {limit + 1}) s", params
        ).fetchall(),
    }
    analyzed: dict[str, list[float]] = {
        "function": [],
        "rank_planning": [],
        "rank_execution": [],
        "filter_rows_only": [],
        "filter_rows_detoast": [],
        "filter_rows_distance": [],
    }

    def explain(sql: str, p: Any) -> dict:
        cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, p)
        return cur.fetchone()[0][0]

    base = numbered(f"FROM segments g WHERE {where}")
    exact_parts = {
        "filter_rows_only": f"SELECT count(*) {base}",
        "filter_rows_detoast": f"SELECT sum(vector_dims(g.embedding)) {base}",
        "filter_rows_distance": f"SELECT sum(cosine_distance(g.embedding::vector({dim}), "
        f"%(p1)s::vector({dim}))) {base}",
    }
    lat: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():  # warm-up
        fn()
    for _ in range(reps):
        for k, fn in steps.items():
            lat[k].append(timed(fn))
        analyzed["function"].append(explain(call, call_args)["Execution Time"])
        plan = explain(rank_sql, params)
        analyzed["rank_planning"].append(plan["Planning Time"])
        analyzed["rank_execution"].append(plan["Execution Time"])
        if method == "exact":
            for k, sql in exact_parts.items():
                analyzed[k].append(explain(sql, params)["Execution Time"])
    out = {k: round(statistics.median(v), 3) for k, v in lat.items()}
    out.update({k: round(statistics.median(v), 3) for k, v in analyzed.items() if v})
    rt = out["round_trip"]
    for k in ("checks_lookups", "estimate_explain", "bounded_count"):
        out[k] = round(max(0.0, out[k] - rt), 3)
    if method == "exact":
        out["detoast"] = round(out["filter_rows_detoast"] - out["filter_rows_only"], 3)
        out["distances"] = round(out["filter_rows_distance"] - out["filter_rows_detoast"], 3)
    out["method"] = method
    cur.execute(
        f"SELECT count(*) FROM ({numbered(f'SELECT 1 FROM segments g WHERE {where}')}) s", params
    )
    out["rows"] = cur.fetchone()[0]
    out["where"] = where
    return out


COLUMNS = (
    ("library", "library call"),
    ("sql_call", "SQL call"),
    ("round_trip", "round trip"),
    ("function", "function (server)"),
    ("checks_lookups", "checks+look-ups"),
    ("estimate_explain", "EXPLAIN estimate"),
    ("bounded_count", "bounded count"),
    ("rank_planning", "rank: planning"),
    ("rank_execution", "rank: execution"),
    ("detoast", "of which detoast"),
    ("distances", "of which distances"),
)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--home", type=Path, required=True, help="search_peer.py's kept database")
    p.add_argument("--query", type=int, default=1, help="which query vector of the set")
    args = p.parse_args()
    folder = make_set("realistic", args.n, np.random.default_rng(7))
    q = np.load(folder / "queries.npy")[args.query]
    db = ScratchDatabase(args.home)
    result: dict = {"machine": machine(), "n": args.n, "reps": args.reps, "filters": {}}
    try:
        with db.db.engine.connect() as conn:
            space = get_space(conn, SPACE)
            register_vector(conn)
            conn.execute(sa.text("SELECT 1"))
            for name in FILTERS:
                result["filters"][name] = profile_filter(conn, space, q, name, args.reps)
                print(f"{name}: {json.dumps(result['filters'][name])}", file=sys.stderr)
    finally:
        db.close()
    write_result("search-profile", result)
    print("median ms;", ", ".join(f"{k} = {v}" for k, v in COLUMNS))
    print(f"{'filter':<9}{'rows':>7}{'method':>7}" + "".join(f"{k[:12]:>13}" for k, _ in COLUMNS))
    for name, r in result["filters"].items():
        cells = "".join(f"{r[k]:>13.3f}" if k in r else f"{'-':>13}" for k, _ in COLUMNS)
        print(f"{name:<9}{r['rows']:>7}{r['method']:>7}{cells}")


if __name__ == "__main__":
    main()
