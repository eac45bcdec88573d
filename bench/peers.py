"""soundscape against the embedded vector stores a user would pick instead, in ONE run (issue 28).

    python bench/peers.py [--n 100000] [--engines lancedb,qdrant-edge,duckdb-vss,hoplite] \
        [--venvs /work/venvs] [--home DIR]                  (or: make bench-peers)

**The vectors**: the real-audio BirdNET set of issue 22 (bench/realaudio.py: 5 h of field
recordings made from shared/audio, 1024-d, cached in /work/cache), tiled to --n with small
perturbations (realaudio.tiled: cosine ~0.995 to the original, 10 % exact copies).
**The filters**: realaudio.fit_filters' 50 %, 10 %, 1 %, 0.1 % and 1 % + date, fitted to the
set (sensors, quadrant, local time of day and local date: the columns `ranger.search_vector`
filters on). **The queries**: realaudio.pick_queries' event windows (one per label) and
background windows of the real tile; each query's own window is left out of the answer
(soundscape: p_exclude; the peers return k + 1 and the driver drops it).

**Each store** runs in its own virtual environment under --venvs (`make bench-peers` makes
them: each pins its own numpy/pyarrow) as bench/peers_engines.py, which loads the same set
folder, builds as the store's documentation advises (its docstrings cite how) and answers
queries on stdin. The stores are built one after the other (build times do not overlap) and
all stay open; soundscape is the embedded PostgreSQL of bench/common.py with the set COPYed
into its own space and the default halfvec HNSW index (realaudio.load_db / build_index).

**Timing**: filter by filter, the routes take turns by blocks of --block queries, each block
after one untimed call, after a warm-up that runs every query once on every route (as
bench/search_peer.py, whose reasons hold here). soundscape is timed in this process (the
client/server round trip included); each peer inside its own process (no pipe). Recall@10 is
against exact float32 brute force in numpy over the filtered windows, tie-aware
(realaudio.tie_recall: a hit scored at least the exact 10th best - 1e-5 counts). Disk: the
store's folder; soundscape's space partition (heap, TOAST and every index of it).

Writes bench/results/peers-<n>-<time>.json and prints the table (ratios: soundscape's p95 over
each peer's p95, measured in the same run; absolute times depend on the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from soundscape.spaces import HNSW_EF_CONSTRUCTION, HNSW_M

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, write_result  # noqa: E402
from realaudio import (  # noqa: E402
    build,
    build_index,
    exact_topk,
    fit_filters,
    load_db,
    load_set,
    pick_queries,
    search,
    tie_recall,
    tiled,
)

HERE = Path(__file__).resolve().parent
DATA = Path("/tmp/soundscape-bench-peers")
VENVS = Path("/work/venvs")
ENGINES = ("lancedb", "qdrant-edge", "duckdb-vss", "hoplite")
VENV_OF = {
    "lancedb": "lancedb",
    "qdrant-edge": "qdrant",
    "duckdb-vss": "duckdb",
    "hoplite": "hoplite",
}
FILTERS = ("50%", "10%", "1%", "0.1%", "1%+date")
QUADS = ["N", "E", "S", "W"]


def write_set(s, filters, queries, folder: Path) -> None:
    """The set folder every engine reads (see bench/peers_engines.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors.npy", np.ascontiguousarray(s.vectors, np.float32))
    np.save(folder / "sensor.npy", s.sensor.astype(np.int32))
    quad = np.array([QUADS.index(x[2]) for x in s.sensors], np.int8)
    np.save(folder / "quadrant.npy", quad[s.sensor])
    np.save(folder / "day.npy", s.local_day.astype(np.int32))
    # whole seconds: windows start on whole seconds of the local clock in this set
    np.save(folder / "tod.npy", np.floor(s.local_tod).astype(np.int32))
    names = [x[0] for x in s.sensors]
    out = {}
    for f in filters:
        out[f.name] = {
            "sensors": [names.index(x) for x in f.sensors] if f.sensors else None,
            "quadrants": f.quadrants,
            "tod": [int(f.time_from), int(f.time_to)] if f.time_from is not None else None,
            "days": [int(f.date_from), int(f.date_to)] if f.date_from is not None else None,
        }
    (folder / "filters.json").write_text(json.dumps(out))
    np.save(folder / "queries.npy", np.stack([qd["vec"] for qd in queries]).astype(np.float32))
    np.save(folder / "query_rows.npy", np.array([qd["row"] for qd in queries], np.int64))


class Peer:
    """bench/peers_engines.py ENGINE in its venv: built on start, then one query per request."""

    def __init__(self, engine: str, python: Path, folder: Path, work: Path) -> None:
        self.engine = engine
        self.proc = subprocess.Popen(
            ["nice", "-n", "19", str(python), str(HERE / "peers_engines.py"), engine,
             str(folder), str(work)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.hello = self._read()

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.engine} peer exited (see its messages above)")
        return json.loads(line)

    def query(self, name: str, qi: int, k: int) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"filter": name, "query": qi, "k": k}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def summary(lat: list[float], rec: list[float], got: list[int]) -> dict:
    ms = sorted(lat)
    return {
        "recall_at_10": round(float(np.mean(rec)), 4),
        "min_recall": round(float(np.min(rec)), 2),
        "mean_returned": round(float(np.mean(got)), 2),
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
    }


def space_bytes(db, space) -> dict:
    import sqlalchemy as sa

    with db.db.engine.connect() as conn:
        r = conn.execute(
            sa.text(
                "SELECT pg_relation_size(c.oid), pg_total_relation_size(c.reltoastrelid), "
                "pg_indexes_size(c.oid), pg_total_relation_size(c.oid) "
                "FROM pg_class c WHERE c.oid = to_regclass(:p)"
            ),
            {"p": space.partition},
        ).one()
    return {"heap_bytes": r[0], "toast_bytes": r[1], "index_bytes": r[2], "disk_bytes": r[3]}


def tune(db, shared_buffers: str) -> None:
    """Memory for the HNSW index and the build (the rest of the 24 GB is shared with the peers
    and other work); JIT off as ranger's search functions turn it off anyway."""
    import sqlalchemy as sa

    from soundscape import embedded_db

    with db.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for k, v in (
            ("shared_buffers", shared_buffers),
            ("effective_cache_size", "8GB"),
            ("maintenance_work_mem", "4GB"),
            ("max_wal_size", "8GB"),
        ):
            conn.execute(sa.text(f"ALTER SYSTEM SET {k} = '{v}'"))
    db.db.engine.dispose()
    embedded_db.stop()
    embedded_db.start()


def print_table(result: dict) -> None:
    names = ["soundscape"] + list(result["peers"])
    print(
        f"\nn = {result['n']}, {result['queries']} queries, load average at start "
        f"{result['machine']['load_avg_at_start'][0]:.1f}, at end {result['load_avg_at_end'][0]:.1f}"
    )
    print("cells: recall@10  p50/p95 ms; ratio: soundscape p95 / peer p95 (same run)")
    print(f"{'filter':<9}{'rows':>7}  " + "".join(f"{n:<26}" for n in names))
    for fname, e in result["filters"].items():
        cells = []
        for n in names:
            r = e["routes"].get(n)
            if not r:
                cells.append(f"{'-':<26}")
                continue
            c = f"{r['recall_at_10']:.3f} {r['p50_ms']:.1f}/{r['p95_ms']:.1f}"
            if n != "soundscape":
                c += f" ({e['routes']['soundscape']['p95_ms'] / r['p95_ms']:.2f}x)"
            cells.append(f"{c:<26}")
        print(f"{fname:<9}{e['rows']:>7}  " + "".join(cells))
    print("\nload: build s (insert + index), disk MB")
    for n in names:
        ld = result["load"][n]
        print(f"  {n:<12} {ld['build_s']:8.1f} s  {ld['disk_bytes'] / 1e6:9.1f} MB")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--venvs", type=Path, default=VENVS, help="one venv per engine (Makefile)")
    p.add_argument("--home", type=Path, help="keep soundscape's embedded database here")
    p.add_argument("--events", type=int, default=30, help="event queries (one per label)")
    p.add_argument("--background", type=int, default=10, help="background queries")
    p.add_argument("--block", type=int, default=10)
    p.add_argument("--shared-buffers", default="2GB")
    p.add_argument("--filters", default=",".join(FILTERS))
    args = p.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    wanted = args.filters.split(",")

    real = load_set(build("birdnet", 5, 0, 4, 40.0))
    s = tiled(real, args.n)
    filters = [f for f in fit_filters(s) if f.name in wanted]
    queries = pick_queries(s, args.events, args.background, 0)
    folder = DATA / f"ra_{args.n}"
    write_set(s, filters, queries, folder)
    qv = np.load(folder / "queries.npy")
    qrows = np.load(folder / "query_rows.npy")
    scores = [s.vectors @ q for q in qv]
    print(f"set: {len(s)} windows, {len(qv)} queries, {folder}", file=sys.stderr)

    result: dict = {
        "machine": machine(), "n": args.n, "queries": len(qv), "block": args.block,
        "set": {"real_windows": len(real), "tiles": s.meta.get("tiles", 1)},
        "filters": {}, "load": {}, "peers": {},
    }  # fmt: skip
    db = ScratchDatabase(args.home)
    peers: dict[str, Peer] = {}
    try:
        tune(db, args.shared_buffers)
        t = time.perf_counter()
        info = load_db(db, s, f"peers_{args.n}", "birdnet")
        space = info.pop("space")
        space, built = build_index(db, space, "halfvec", work_mem="4GB")
        offset = info["offset"]
        result["load"]["soundscape"] = {
            "copy_s": info["copy_s"], "index_s": built["build_s"],
            "build_s": round(time.perf_counter() - t, 1), **space_bytes(db, space),
            "settings": {"index": f"halfvec HNSW m {HNSW_M} ef_construction "
                         f"{HNSW_EF_CONSTRUCTION}", "strategy": "auto"},
        }  # fmt: skip
        print(f"soundscape: {json.dumps(result['load']['soundscape'])}", file=sys.stderr)
        for e in engines:
            python = args.venvs / VENV_OF[e] / "bin" / "python"
            peers[e] = Peer(e, python, folder, DATA / f"work_{e}_{args.n}")
            result["load"][e] = peers[e].hello["load"]
            result["peers"][e] = peers[e].hello["versions"]
            if "plans" in peers[e].hello:
                result["load"][e]["plans"] = peers[e].hello["plans"]
            print(f"{e}: {json.dumps(peers[e].hello['load'])[:600]}", file=sys.stderr)

        from soundscape.db import register_vector

        with db.db.engine.connect() as conn:
            register_vector(conn)
            routes = ["soundscape"] + engines
            for f in filters:
                m = f.mask(s)
                truth = [exact_topk(scores[i], m, int(qrows[i]), 10)[1] for i in range(len(qv))]

                def answer(route: str, qi: int, f=f) -> tuple[float, list[int], str]:
                    row = int(qrows[qi])
                    if route == "soundscape":
                        hits, ms = search(conn, space.id, qv[qi], 10, f, offset + row, "auto", None)
                        return ms, [h[0] - offset for h in hits], hits[0][2] if hits else ""
                    r = peers[route].query(f.name, qi, 11)
                    return r["ms"], [x for x in r["rows"] if x != row][:10], ""

                for qi in range(len(qv)):  # warm-up, untimed
                    for route in routes:
                        answer(route, qi)
                lat: dict[str, list[float]] = {r: [] for r in routes}
                rec: dict[str, list[float]] = {r: [] for r in routes}
                got: dict[str, list[int]] = {r: [] for r in routes}
                methods: set[str] = set()
                for b in range(0, len(qv), args.block):
                    for route in routes:
                        answer(route, (b - 1) % len(qv))
                        for qi in range(b, min(b + args.block, len(qv))):
                            ms, rows, method = answer(route, qi)
                            sc = [float(s.vectors[r] @ qv[qi]) for r in rows]
                            lat[route].append(ms)
                            rec[route].append(tie_recall(sc, truth[qi], 10))
                            got[route].append(len(rows))
                            if method:
                                methods.add(method)
                entry = {
                    "rows": int(m.sum()), "selectivity": round(float(m.mean()), 5),
                    "filter": f.describe(),
                    "routes": {r: summary(lat[r], rec[r], got[r]) for r in routes},
                }  # fmt: skip
                entry["routes"]["soundscape"]["methods"] = sorted(methods)
                result["filters"][f.name] = entry
                print(f"{f.name}: {json.dumps(entry)}", file=sys.stderr)
    finally:
        for peer in peers.values():
            peer.close()
        db.close()
    result["load_avg_at_end"] = list(os.getloadavg())
    write_result(f"peers-{args.n}", result)
    print_table(result)


if __name__ == "__main__":
    main()
