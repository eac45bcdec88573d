"""soundscape against perch-hoplite in ONE run: filtered top-10 latency and recall, side by side.

    python bench/search_peer.py [--n 100000] [--queries 30] [--home DIR] \
        [--hoplite /work/venv-hoplite/bin/python] [--variants auto,hnsw,exact]

The vector set is bench/search.py's realistic set (made on first use in
/tmp/soundscape-bench-search/realistic_<n>/), loaded into an embedded PostgreSQL (kept in --home
so later runs skip the load and the HNSW build) and, through bench/peer_hoplite.py --serve
running in hoplite's own environment, into perch-hoplite (kept in /tmp/soundscape-bench-peer/).
Then, filter by filter, soundscape's `ranger.search_vector` (through `soundscape.search.run`,
timed in this process: the client round trip included) and each of hoplite's three routes
(timed inside the hoplite process) take turns by blocks of --block queries, each block after
one untimed call, so that both see the same machine load while each is timed in a stream of
its own queries (see the loop for why not query by query). Recall@10 is against exact float32
brute force in numpy.

It prints the ratio table (soundscape auto's p50/p95 over hoplite's best route's: the fastest
route whose recall@10 is at least auto's - 0.01) and writes bench/results/search-peer-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import time as dtime
from datetime import timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from soundscape.db import raw_connection, register_vector
from soundscape.errors import SoundscapeError
from soundscape.resources import read_sql
from soundscape.results import Hit
from soundscape.search import Filters, Query, _call, run
from soundscape.spaces import Space, get_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, write_result  # noqa: E402
from search import (  # noqa: E402
    DAY0,
    FILTERS,
    build_index,
    ground_truth,
    load,
    make_set,
    mask,
    tune_server,
)

HOPLITE_PYTHON = Path("/work/venv-hoplite/bin/python")
HOPLITE_METHODS = ("filter_score", "ann_filter", "ann_filter_usearch")
SPACE = "bench_realistic_toast"


def prepare(db, folder: Path, n: int, index_type: str):
    """The space holding the set with its HNSW index: reused when a kept home has it."""
    engine = db.db.engine
    with engine.connect() as conn:
        try:
            space = get_space(conn, SPACE)
        except SoundscapeError:
            space = None
        if space is not None:
            rows = conn.execute(sa.text(f"SELECT count(*) FROM {space.partition}")).scalar()
            indexed = conn.execute(
                sa.text("SELECT to_regclass(:i) IS NOT NULL"), {"i": f"{space.partition}_hnsw"}
            ).scalar()
            if rows == n and indexed and space.index_type == index_type:
                return space, space.id * 10**9, {"reused": True}
    info = load(db, folder, SPACE, "toast")
    space = info.pop("space")
    space, built = build_index(db, space, index_type)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"VACUUM ANALYZE {space.partition}"))
    print(f"loaded: {json.dumps({**info, **built})}", file=sys.stderr)
    return space, info["offset"], {**info, **built}


class Peer:
    """bench/peer_hoplite.py --serve in hoplite's environment: one query per request."""

    def __init__(self, python: Path, folder: Path) -> None:
        script = Path(__file__).resolve().parent / "peer_hoplite.py"
        self.proc = subprocess.Popen(
            [str(python), str(script), "--serve", str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.hello = self._read()

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the hoplite peer exited (see its messages above)")
        return json.loads(line)

    def query(self, name: str, qi: int, method: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"filter": name, "query": qi, "method": method}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def summary(lat: list[float], rec: list[float]) -> dict:
    ms = sorted(lat)
    return {
        "recall_at_10": round(float(np.mean(rec)), 4),
        "min_recall": round(float(np.min(rec)), 2),
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
    }


def filters_of(name: str) -> Filters:
    quads, sensor, (t0, t1), days = FILTERS[name]
    return Filters(
        quadrants=quads,
        sensors=[f"s{sensor:02d}"] if sensor is not None else None,
        time_from=dtime(t0 // 3600, t0 % 3600 // 60),
        time_to=dtime(t1 // 3600, t1 % 3600 // 60),
        date_from=DAY0 + timedelta(days=days[0]) if days else None,
        date_to=DAY0 + timedelta(days=days[1] - 1) if days else None,
    )


def install_sql(db, old_sql: Path | None) -> None:
    """Apply the current sql/search.sql (a kept database may hold an older body under the same
    revision) and, with old_sql, that older file as schema bench_old (variant "old")."""
    with db.db.engine.begin() as conn:
        raw = raw_connection(conn)
        raw.execute(read_sql("search.sql"))
        if old_sql:
            raw.execute("CREATE SCHEMA IF NOT EXISTS bench_old")
            raw.execute(old_sql.read_text().replace("ranger.", "bench_old."))


def run_old(conn, space: Space, q: np.ndarray, f: Filters) -> list[Hit]:
    """What soundscape.search.run does, through bench_old.search_vector."""
    register_vector(conn)
    args = {f"p_{k}": v for k, v in f.params().items() if k != "place"}
    sql, params = _call(
        "search_vector",
        {"p_space": space.id, "p_query": np.asarray(q, np.float32), "p_k": 10, **args},
    )
    # the old functions take the place filters one by one (no p_place)
    for key, values in f.place().items():
        sql = sql[:-1] + f", p_{key} => %(p_{key})s::text[])"
        params[f"p_{key}"] = values
    rows = conn.exec_driver_sql(sql.replace("ranger.", "bench_old."), params).all()
    return [Hit(**dict(r._mapping)) for r in rows]


def best_route(auto: dict, peer: dict) -> str | None:
    ok = [m for m in HOPLITE_METHODS if peer[m]["recall_at_10"] >= auto["recall_at_10"] - 0.01]
    return min(ok, key=lambda m: peer[m]["p50_ms"]) if ok else None


def print_table(result: dict) -> None:
    print(
        f"\nn = {result['n']}, {result['queries']} queries, load average at start "
        f"{result['machine']['load_avg_at_start'][0]:.1f}, at end {result['load_avg_at_end'][0]:.1f}"
    )
    print("recall@10 p50/p95 ms; ratio = soundscape auto / hoplite's best route (same recall)")
    head = (
        f"{'filter':<9}{'rows':>7}  {'soundscape auto':<30}{'hoplite best route':<44}"
        f"{'p50 ratio':>9}{'p95 ratio':>10}"
    )
    print(head)
    for name, e in result["filters"].items():
        if "old" in e["soundscape"]:
            o = e["soundscape"]["old"]
            print(
                f"{'':<9}{'':>7}  before (--old-sql): {o['recall_at_10']:.3f} "
                f"{o['p50_ms']:.2f}/{o['p95_ms']:.2f} ({','.join(o['methods'])})"
            )
        a = e["soundscape"]["auto"]
        ours = f"{a['recall_at_10']:.3f} {a['p50_ms']:.2f}/{a['p95_ms']:.2f} ({','.join(a['methods'])})"
        route = e.get("best_route")
        if route:
            h = e["hoplite"][route]
            theirs = f"{h['recall_at_10']:.3f} {h['p50_ms']:.2f}/{h['p95_ms']:.2f} ({route})"
            r50 = f"{a['p50_ms'] / h['p50_ms']:.2f}x"
            r95 = f"{a['p95_ms'] / h['p95_ms']:.2f}x"
        else:
            theirs, r50, r95 = "no route reaches the recall", "-", "-"
        print(f"{name:<9}{e['rows']:>7}  {ours:<30}{theirs:<44}{r50:>9}{r95:>10}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=30)
    p.add_argument("--home", type=Path, help="keep the embedded database here (reused)")
    p.add_argument("--hoplite", type=Path, default=HOPLITE_PYTHON, help="hoplite's python")
    p.add_argument("--no-peer", action="store_true", help="soundscape only")
    p.add_argument("--index", default="halfvec", help="HNSW index type of the space")
    p.add_argument(
        "--variants",
        default="auto",
        help="soundscape strategies to time: auto,hnsw,exact (hnsw:40 = at ef_search 40); "
        "old = auto through --old-sql",
    )
    p.add_argument(
        "--old-sql",
        type=Path,
        help="an older sql/search.sql (git show REV:sql/search.sql > FILE), as variant old",
    )
    p.add_argument("--filters", default=",".join(FILTERS), help="which filters")
    p.add_argument("--block", type=int, default=10, help="queries a route answers in a row")
    p.add_argument(
        "--warm",
        type=int,
        choices=(0, 1),
        default=1,
        help="1: run every query once untimed before timing (default); 0: query 0 only",
    )
    args = p.parse_args()
    folder = make_set("realistic", args.n, np.random.default_rng(7))
    queries = np.load(folder / "queries.npy")[: args.queries]
    peer = None if args.no_peer else Peer(args.hoplite, folder)
    db = ScratchDatabase(args.home)
    result: dict = {
        "machine": machine(),
        "n": args.n,
        "queries": args.queries,
        "warm": args.warm,
        "filters": {},
    }
    try:
        tune_server(db)
        space, offset, result["load"] = prepare(db, folder, args.n, args.index)
        install_sql(db, args.old_sql)
        if peer:
            result["hoplite_load"] = peer.hello["load"]
            result["hoplite_machine"] = peer.hello["machine"]
        variants = args.variants.split(",")
        with db.db.engine.connect() as conn:
            for name in args.filters.split(","):
                m = mask(folder, name)
                truth = ground_truth(folder, queries, m)
                f = filters_of(name)
                lat: dict[str, list[float]] = {v: [] for v in variants + list(HOPLITE_METHODS)}
                rec: dict[str, list[float]] = {v: [] for v in lat}
                methods: dict[str, set] = {v: set() for v in variants}

                def ours(q: np.ndarray, v: str, f: Filters = f) -> list:
                    if v == "old":
                        return run_old(conn, space, q, f)
                    strategy, _, ef = v.partition(":")  # "hnsw:40": forced HNSW, ef_search 40
                    return run(
                        conn,
                        Query(space, "q", vector=q),
                        f,
                        limit=10,
                        strategy=strategy,
                        ef_search=int(ef) if ef else None,
                    )

                # warm-up, untimed: every query once through every route (--warm 1, the
                # default), so both sides are timed with the pages they read in memory, as
                # in a running service (hoplite holds its USearch index in memory; a fresh
                # PostgreSQL starts with empty shared buffers); --warm 0: query 0 only
                for qi in range(len(queries) if args.warm else 1):
                    for v in variants:
                        ours(queries[qi], v)
                    if peer:
                        for meth in HOPLITE_METHODS:
                            peer.query(name, qi, meth)
                # Routes take turns by blocks of --block consecutive queries (route A answers
                # queries 0-9, then route B the same ten, ..., then A answers 10-19, ...): each
                # route is timed in a stream of its own queries, as a service answering one
                # kind of query is, while the blocks' alternation spreads any drift of the
                # machine over all routes. (Taking turns query by query timed each route right
                # after the others: soundscape's first call after the hoplite process had run
                # paid ~1 ms more than its next call with the same plan, and hoplite's USearch
                # route ran right after its db.search route had walked the same graph nodes.)
                routes = [("ours", v) for v in variants]
                routes += [("peer", h) for h in HOPLITE_METHODS] if peer else []

                def answer(side: str, v: str, qi: int, name: str = name) -> tuple[float, set, set]:
                    """(ms, set row numbers of the top 10, methods) of one route's answer."""
                    if side == "peer":
                        assert peer is not None
                        r = peer.query(name, qi, v)
                        return r["ms"], set(r["rows"]), set()
                    start = time.perf_counter()
                    hits = ours(queries[qi], v)
                    ms = (time.perf_counter() - start) * 1000
                    return ms, {h.segment_id - offset for h in hits}, {h.method for h in hits}

                for b in range(0, len(queries), args.block):
                    for side, v in routes:
                        # one untimed call first, with a query of another block: the first
                        # call after the other routes ran pays for waking this route's
                        # processes (~1 ms on soundscape's side, client and backend; hoplite
                        # is timed inside its process, after its wake-up)
                        answer(side, v, (b - 1) % len(queries))
                        for qi in range(b, min(b + args.block, len(queries))):
                            ms, rows, used = answer(side, v, qi)
                            t = truth[qi]
                            lat[v].append(ms)
                            rec[v].append(len(rows & t) / max(1, min(10, len(t))))
                            methods.get(v, set()).update(used)
                entry: dict = {"rows": int(m.sum()), "selectivity": round(float(m.mean()), 5)}
                entry["soundscape"] = {
                    v: {**summary(lat[v], rec[v]), "methods": sorted(methods[v])} for v in variants
                }
                if peer:
                    entry["hoplite"] = {h: summary(lat[h], rec[h]) for h in HOPLITE_METHODS}
                    if "auto" in variants:
                        entry["best_route"] = best_route(
                            entry["soundscape"]["auto"], entry["hoplite"]
                        )
                result["filters"][name] = entry
                print(f"{name}: {json.dumps(entry)}", file=sys.stderr)
    finally:
        if peer:
            peer.close()
        db.close()
    result["load_avg_at_end"] = list(os.getloadavg())
    write_result("search-peer", result)
    if peer and "auto" in args.variants.split(","):
        print_table(result)


if __name__ == "__main__":
    main()
