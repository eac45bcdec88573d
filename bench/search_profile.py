"""Where the time of one `ranger.search_vector` call goes, filter by filter.

    python bench/search_profile.py --home DIR [--n 100000] [--reps 20] [--old-sql FILE]

Uses the database that bench/search_peer.py keeps in --home (the realistic set, halfvec
index) and applies the current sql/search.sql to it (with --old-sql, also that older file as
schema bench_old, profiled the same way). For each filter of bench/search.py, one query vector,
each measurement repeated --reps times in turns (medians, ms):

- library: `soundscape.search.run` (SQLAlchemy, parameter adaptation, Hit objects);
- sql call: the same `SELECT * FROM ranger.search_vector(...)` through raw psycopg;
- round trip: `SELECT 1` through raw psycopg (client/server over the Unix socket);
- server: sql call minus round trip; inside it the statements the function runs, as
  auto_explain logs their execution (log_nested_statements; without ANALYZE's per-node
  timing): look-ups (spaces, sensors, the space's row count), the bounded count (before 0016),
  the ranking statement (exact, capped exact or HNSW);
- EXPLAIN estimate: the planner estimate the function asks for, timed in a server-side loop;
  ranking: planning: the server's planning time of the ranking statement (EXPLAIN SUMMARY;
  dynamic SQL is planned on every call); auto_explain logs neither;
- plpgsql and the rest: server minus all of the above;
- server CPU: the backend's user + system CPU time for the call (log_statement_stats), the one
  figure a loaded machine does not inflate;
- for an exact ranking, the part spent reading (detoasting) the float32 vectors and computing
  distances: EXPLAIN ANALYZE of the filter alone, with `vector_dims(embedding)` (which detoasts)
  and with `cosine_distance` over the same rows.

Results go to bench/results/search-profile-*.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from soundscape.db import raw_connection, register_vector
from soundscape.search import Query, run
from soundscape.spaces import Space, get_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, write_result  # noqa: E402
from search import FILTERS, make_set  # noqa: E402
from search_peer import SPACE, filters_of, install_sql  # noqa: E402

_DURATION = re.compile(r"duration: ([0-9.]+) ms\s+plan:\s*Query Text: (.*)", re.S)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def statement_kind(text: str) -> str:
    """Which step of search_vector a statement logged by auto_explain is."""
    t = " ".join(text.split())
    if ".search_vector(" in t and t.lstrip().upper().startswith("SELECT *"):
        return "function"
    if "'too many'" in t:
        return "rank"
    if t.startswith("WITH hits AS"):
        return "rank"
    if "count(*) FROM (SELECT 1 FROM segments" in t:
        return "bounded_count"
    return "lookups"  # checks, spaces, _sensor_ids, _filter_sql, _space_rows, SQL building


def profile_filter(raw, conn, space: Space, q: np.ndarray, name: str, reps: int, schema: str):
    f = filters_of(name)
    fp = {**f.params(), "sensors": f.sensors, "sites": f.sites, "quadrants": f.quadrants}
    args = [space.id, q, 10, fp["sensors"], fp["sites"], fp["quadrants"], fp["time_from"],
            fp["time_to"], fp["date_from"], fp["date_to"]]  # fmt: skip
    call = (
        f"SELECT * FROM {schema}.search_vector(%s, %s::vector, %s, %s::text[], %s::text[], "
        "%s::text[], %s::time, %s::time, %s::date, %s::date)"
    )
    cur = raw.cursor()
    cur.execute(
        "SELECT ranger._filter_sql(ranger._sensor_ids(%s::text[], %s::text[], %s::text[]), "
        "%s, %s, %s, %s, NULL, NULL, NULL), ranger._sensor_ids(%s::text[], %s::text[], %s::text[])",
        [fp["sensors"], fp["sites"], fp["quadrants"], fp["time_from"], fp["time_to"],
         fp["date_from"], fp["date_to"], fp["sensors"], fp["sites"], fp["quadrants"]],
    )  # fmt: skip
    where, ids = cur.fetchone()
    method = cur.execute(call, args).fetchall()[0][-1]
    capped = schema == "ranger" and method == "exact"  # 0016 ranks exact through 'capped'
    # the index key (a bit index is named by its space: ranger._index_key, migration 0018)
    key = space.index_type if space.index_type != "bit" else f"bit:{space.id}"
    cur.execute(
        f"SELECT {schema}._search_vector_sql(%s, %s, %s, %s)",
        [space.dimension, where, "capped" if capped else method, key],
    )
    rank_sql = cur.fetchone()[0]

    def lit(v: Any, cast: str) -> str:
        if v is None:
            return f"NULL::{cast}"
        if isinstance(v, list):
            return "ARRAY[" + ",".join(str(int(x)) for x in v) + "]::integer[]"
        if cast == "text":
            return f"$lit${v}$lit$"
        return f"'{v}'::{cast}"

    loops = 50
    do_explain = f"""DO $do$
        DECLARE v json; t0 timestamptz := clock_timestamp();
        BEGIN
            FOR i IN 1..{loops} LOOP
                EXECUTE 'EXPLAIN (FORMAT JSON) SELECT 1 FROM segments g WHERE ' || {lit(where, "text")}
                   INTO v
                  USING NULL::vector, {int(space.id)}, {lit(ids, "integer[]")},
                        {lit(fp["time_from"], "time")}, {lit(fp["time_to"], "time")},
                        {lit(fp["date_from"], "date")}, {lit(fp["date_to"], "date")},
                        NULL::timestamptz, NULL::timestamptz, NULL::bigint;
            END LOOP;
            RAISE NOTICE 'explain %', extract(epoch FROM clock_timestamp() - t0) * 1000 / {loops};
        END $do$"""
    base = re.sub(r"\$(\d+)", r"%(p\1)s", f"FROM segments g WHERE {where}")
    params = {"p2": space.id, "p3": ids, "p4": fp["time_from"], "p5": fp["time_to"],
              "p6": fp["date_from"], "p7": fp["date_to"], "p8": None, "p9": None, "p10": None,
              "p1": q}  # fmt: skip
    dim = space.dimension
    rank_bound = re.sub(r"\$(\d+)", r"%(p\1)s", rank_sql)
    rank_params = {**params, "p11": 10, "p12": None, "p13": max(1000, 4000000 // dim)}
    exact_parts = {
        "filter_rows_only": f"SELECT count(*) {base}",
        "filter_rows_detoast": f"SELECT sum(vector_dims(g.embedding)) {base}",
        "filter_rows_distance": f"SELECT sum(cosine_distance(g.embedding::vector({dim}), "
        f"%(p1)s::vector({dim}))) {base}",
    }
    notices: list[str] = []
    raw.add_notice_handler(
        lambda d: notices.append((d.message_primary or "") + " " + (d.message_detail or ""))
    )
    lat: dict[str, list[float]] = {
        k: []
        for k in (
            "library",
            "sql_call",
            "round_trip",
            "explain_estimate",
            "rank_planning",
            "server_cpu",
            "client_cpu",
            *exact_parts,
        )
    }
    nested: dict[str, list[float]] = {}
    for rep in range(reps + 1):  # the first round warms up
        got = {
            "library": timed(lambda: run(conn, Query(space, "q", vector=q), f, limit=10))
            if schema == "ranger"
            else 0.0,
            "sql_call": timed(lambda: cur.execute(call, args).fetchall()),
            "round_trip": timed(lambda: cur.execute("SELECT 1").fetchall()),
        }
        # CPU time of the call in the server backend (getrusage, log_statement_stats) and in
        # this process: unlike wall time, not inflated when the machine is shared
        notices.clear()
        cur.execute("SET log_statement_stats = on")
        cpu = time.process_time()
        cur.execute(call, args).fetchall()
        got["client_cpu"] = (time.process_time() - cpu) * 1000
        cur.execute("SET log_statement_stats = off")
        got["server_cpu"] = 1000 * sum(  # the parse, bind and execute messages of the call
            float(m.group(1)) + float(m.group(2))
            for n in notices
            if (m := re.search(r"([0-9.]+) s user, ([0-9.]+) s system", n))
        )
        notices.clear()
        cur.execute(do_explain)
        got["explain_estimate"] = float(notices[-1].split()[-1])
        plan = cur.execute("EXPLAIN (SUMMARY ON, FORMAT JSON) " + rank_bound, rank_params)
        got["rank_planning"] = plan.fetchone()[0][0]["Planning Time"]
        if method == "exact":
            for k, sql in exact_parts.items():
                cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
                got[k] = cur.fetchone()[0][0]["Execution Time"]
        cur.execute("SET auto_explain.log_min_duration = 0")
        notices.clear()
        cur.execute(call, args).fetchall()
        cur.execute("SET auto_explain.log_min_duration = -1")
        if rep == 0:
            continue
        for k, v in got.items():
            lat[k].append(v)
        sums: dict[str, float] = {}
        for text in notices:
            m = _DURATION.search(text)
            if m:
                kind = statement_kind(m.group(2))
                sums[kind] = sums.get(kind, 0.0) + float(m.group(1))
        for k, v in sums.items():
            nested.setdefault(k, []).append(v)
    out: dict[str, Any] = {k: round(statistics.median(v), 3) for k, v in lat.items() if v}
    out.update({k: round(statistics.median(v), 3) for k, v in nested.items()})
    # the server's time: the call without auto_explain (whose plan logging adds its own)
    out["server"] = round(out["sql_call"] - out["round_trip"], 3)
    inner = sum(out.get(k, 0.0) for k in ("lookups", "bounded_count", "rank", "rank_planning"))
    out["plpgsql_rest"] = round(out["server"] - inner - out["explain_estimate"], 3)
    if method == "exact":
        out["detoast"] = round(out["filter_rows_detoast"] - out["filter_rows_only"], 3)
        out["distances"] = round(out["filter_rows_distance"] - out["filter_rows_detoast"], 3)
    out["method"] = method
    out["rows"] = cur.execute(f"SELECT count(*) {base}", params).fetchone()[0]
    out["where"] = where
    return out


COLUMNS = (
    ("library", "library call"),
    ("sql_call", "SQL call"),
    ("round_trip", "round trip"),
    ("server", "server (call - round trip)"),
    ("server_cpu", "server CPU of the call"),
    ("client_cpu", "client CPU of the call"),
    ("lookups", "checks + look-ups"),
    ("explain_estimate", "EXPLAIN estimate"),
    ("bounded_count", "bounded count"),
    ("rank_planning", "ranking: planning"),
    ("rank", "ranking: execution"),
    ("plpgsql_rest", "plpgsql + rest"),
    ("detoast", "exact: detoast"),
    ("distances", "exact: distances"),
)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--home", type=Path, required=True, help="search_peer.py's kept database")
    p.add_argument("--query", type=int, default=1, help="which query vector of the set")
    p.add_argument("--old-sql", type=Path, help="also profile this older sql/search.sql")
    args = p.parse_args()
    folder = make_set("realistic", args.n, np.random.default_rng(7))
    q = np.load(folder / "queries.npy")[args.query]
    db = ScratchDatabase(args.home)
    result: dict = {"machine": machine(), "n": args.n, "reps": args.reps, "profiles": {}}
    schemas = ["ranger"] + (["bench_old"] if args.old_sql else [])
    try:
        install_sql(db, args.old_sql)
        with db.db.engine.connect() as conn:
            space = get_space(conn, SPACE)
            register_vector(conn)
            raw = raw_connection(conn)
            raw.execute("LOAD 'auto_explain'")
            raw.execute("SET auto_explain.log_nested_statements = on")
            raw.execute("SET auto_explain.log_min_duration = -1")
            raw.execute("SET auto_explain.log_parameter_max_length = 0")
            raw.execute("SET client_min_messages = log")
            for name in FILTERS:
                for schema in schemas:
                    r = profile_filter(raw, conn, space, q, name, args.reps, schema)
                    result["profiles"].setdefault(schema, {})[name] = r
                    print(f"{schema} {name}: {json.dumps(r)}", file=sys.stderr)
    finally:
        db.close()
    result["load_avg_at_end"] = list(os.getloadavg())
    write_result("search-profile", result)
    print("median ms;", ", ".join(f"{k} = {v}" for k, v in COLUMNS))
    print(
        f"{'function':<10}{'filter':<9}{'rows':>6}{'method':>7}"
        + "".join(f"{k[:11]:>12}" for k, _ in COLUMNS)
    )
    for schema, profiles in result["profiles"].items():
        for name, r in profiles.items():
            cells = "".join(f"{r[k]:>12.3f}" if k in r else f"{'-':>12}" for k, _ in COLUMNS)
            print(f"{schema:<10}{name:<9}{r['rows']:>6}{r['method']:>7}{cells}")


if __name__ == "__main__":
    main()
