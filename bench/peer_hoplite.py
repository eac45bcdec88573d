"""Peer benchmark: the same filtered top-10 searches in perch-hoplite (SQLite + USearch).

    /work/venv-hoplite/bin/python bench/peer_hoplite.py [--set-dir DIR ...] [--queries 20]

Runs in its own virtual environment (perch-hoplite pins numpy>=2, librosa>=0.11 and usearch,
which clash with soundscape's optional CLAP pins) and needs only numpy and perch-hoplite:

    python3 -m venv /work/venv-hoplite && /work/venv-hoplite/bin/pip install perch-hoplite

It reads the vector sets that bench/search.py leaves in /tmp/soundscape-bench-search/<set>_<n>/
(vectors.npy, sensor.npy, day.npy, tod.npy, queries.npy), loads them into a fresh hoplite
database through hoplite's own API, and answers each of search.py's filters the two ways a
hoplite user can, since neither hoplite's `search()` nor USearch's Python `Index.search` takes a
metadata filter:

- filter_score: `match_window_ids(deployments_filter, recordings_filter, windows_filter)` (one
  SQL join in hoplite's SQLite), `get_embeddings_batch(ids)` from USearch, hoplite's
  `score_functions.numpy_dot`, top 10 (the pattern of hoplite's own agile/call_density.py);
- ann_filter: `db.search(q, K, approximate=True)` (USearch HNSW top K, then hoplite re-scores
  each hit), then keep the candidates that pass the filter, top 10 of the survivors;
  K = ceil(10 / selectivity x 2), doubled until 10 survive (or K = n). The filter step works
  from the smaller side: K <= matching rows pushes the K ids into `match_window_ids` (an
  `id IN (...)` with the filter), otherwise `match_window_ids(filter)` and a numpy intersection;
- ann_filter_usearch: the same but calling the USearch index (`db.ui.search`) directly,
  skipping hoplite's per-hit Python re-scoring: the fastest ANN-then-filter a user can write.

Metadata mapping: deployment = sensor (name "sNN", project "bench", extra columns quadrant and
site); recording = one day of one sensor (filename "sNN/<day>.wav", datetime = local midnight of
that day, UTC as in search.py); window = offsets [tod, tod + 3] within that recording plus an
extra INTEGER column tod_s (hoplite stores offsets as a float64 BLOB, which its filters cannot
compare to a number, so a time-of-day range needs the extra column). Windows are inserted
recording by recording, as hoplite's embedding pipeline does, with insert_windows_batch and
handle_duplicates="allow" (what agile/embed.py uses for new recordings).

With --serve DIR it loads one set (or reopens the hoplite database a previous --serve kept in
/tmp/soundscape-bench-peer/) and answers queries sent as JSON lines on stdin, one JSON line
each on stdout: {"filter": "10%", "query": 3, "method": "filter_score"} -> {"rows": [set row
numbers of the top 10], "ms": time inside this process}. bench/search_peer.py drives it so that
soundscape and hoplite take turns query by query in one run.

Recall@10 is against the same exact float32 numpy ground truth as search.py. Note that hoplite
stores embeddings as float16 (the only dtype its USearch config accepts), so even filter_score
can miss a near-tie. Results go to bench/results/peer-hoplite-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

# One BLAS thread per query (like one PostgreSQL backend), unless the caller sets it: on 2 cores
# shared with other work, a 2-thread float32 mat-vec was 5-10x slower and far noisier.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from ml_collections import config_dict  # noqa: E402
from perch_hoplite.db import score_functions, sqlite_usearch_impl  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path("/tmp/soundscape-bench-search")
WORK = Path("/tmp/soundscape-bench-peer")
K = 10
BATCH = 2048
SAFETY = 2.0
IN_CHUNK = 30000  # ids per `IN (...)`; below SQLite's older 32766 host-parameter limit

# --- kept in sync with bench/search.py (copied so that this script needs no soundscape imports)
DIM = 1024
N_SENSORS = 20
QUADRANTS = ["N", "E", "S", "W"]
DAY0 = dt.date(2024, 1, 1)
N_DAYS = 366

# name: (quadrants or None, sensor index or None, (time from s, time to s), (day from, day to))
FILTERS = {
    "50%": (None, None, (0, 12 * 3600), None),
    "10%": (["N"], None, (0, int(9.6 * 3600)), None),
    "1%": (None, 0, (0, int(4.8 * 3600)), None),
    "0.1%": (None, 0, (0, int(4.8 * 3600)), (121, 121 + 37)),  # ~1/10 of the year from 1 May
    "1%+date": (["N"], None, (0, int(11.7 * 3600)), (152, 182)),  # one quadrant, June, morning
}


def mask(folder: Path, name: str) -> np.ndarray:
    quads, sensor, (t0, t1), days = FILTERS[name]
    s = np.load(folder / "sensor.npy")
    tod = np.load(folder / "tod.npy")
    m = (tod >= t0) & (tod < t1)
    if quads:
        m &= np.isin(np.array(QUADRANTS)[s % 4], quads)
    if sensor is not None:
        m &= s == sensor
    if days:
        d = np.load(folder / "day.npy")
        m &= (d >= days[0]) & (d < days[1])
    return m


def ground_truth(folder: Path, queries: np.ndarray, m: np.ndarray, k: int = 10) -> list[set[int]]:
    vec = np.load(folder / "vectors.npy", mmap_mode="r")
    idx = np.flatnonzero(m)
    best = [np.empty(0, np.int64)] * len(queries)
    scores = [np.empty(0, np.float32)] * len(queries)
    for i in range(0, len(idx), 200000):
        part = idx[i : i + 200000]
        sims = queries @ np.asarray(vec[part]).T
        for qi in range(len(queries)):
            s = np.concatenate([scores[qi], sims[qi]])
            ids = np.concatenate([best[qi], part])
            top = np.argpartition(-s, min(k, len(s) - 1))[:k]
            best[qi], scores[qi] = ids[top], s[top]
    return [set(b.tolist()) for b in best]


# --- end of the copy


def machine() -> dict:
    """CPU, cores, memory and versions (like bench/common.py, without soundscape's deps)."""
    import sqlite3
    from importlib.metadata import version

    cpu = platform.processor() or ""
    mem = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": mem,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "perch_hoplite": version("perch-hoplite"),
        "usearch": version("usearch"),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "load_avg_at_start": os.getloadavg(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class _TimedIndex:
    """Wraps the USearch index during loading to time `add` (the HNSW build, which USearch does
    incrementally as hoplite's insert_windows_batch adds vectors)."""

    def __init__(self, ui) -> None:
        self.ui = ui
        self.add_s = 0.0

    def add(self, *args, **kwargs):
        t = time.perf_counter()
        out = self.ui.add(*args, **kwargs)
        self.add_s += time.perf_counter() - t
        return out

    def __getattr__(self, name):
        return getattr(self.ui, name)


def midnight(day: int) -> dt.datetime:
    return dt.datetime.combine(DAY0 + dt.timedelta(days=day), dt.time(0), tzinfo=dt.timezone.utc)


def load(folder: Path, db_dir: Path) -> tuple[np.ndarray, dict]:
    """Build a fresh hoplite DB of the set through hoplite's API; return window id -> row."""
    vec = np.load(folder / "vectors.npy", mmap_mode="r")
    sensor = np.load(folder / "sensor.npy")
    day = np.load(folder / "day.npy")
    tod = np.load(folder / "tod.npy")
    n = len(vec)
    if db_dir.exists():
        shutil.rmtree(db_dir)
    start = time.perf_counter()
    db = sqlite_usearch_impl.SQLiteUSearchDB.create(
        str(db_dir), usearch_cfg=sqlite_usearch_impl.get_default_usearch_config(DIM)
    )
    db.add_extra_table_column("windows", "tod_s", int)
    deployments = [
        db.insert_deployment(f"s{i:02d}", "bench", quadrant=QUADRANTS[i % 4], site=f"site{i % 5}")
        for i in range(N_SENSORS)
    ]
    recordings = np.array(
        [
            [
                db.insert_recording(f"s{i:02d}/{d}.wav", midnight(d), deployments[i])
                for d in range(N_DAYS)
            ]
            for i in range(N_SENSORS)
        ]
    )
    timed = _TimedIndex(db.ui)
    db.ui = timed
    order = np.lexsort((tod, day, sensor))  # recording by recording, in time order
    row_of = np.zeros(n + 1, np.int64)
    for i in range(0, n, BATCH):
        rows = order[i : i + BATCH]
        windows = [
            {
                "recording_id": int(recordings[sensor[r], day[r]]),
                "offsets": [float(tod[r]), float(tod[r]) + 3.0],
                "tod_s": int(tod[r]),
            }
            for r in rows
        ]
        ids = db.insert_windows_batch(windows, np.asarray(vec[rows]), handle_duplicates="allow")
        ids = np.asarray(ids)
        if ids.max() >= len(row_of):
            row_of = np.concatenate([row_of, np.zeros(ids.max() + 1 - len(row_of), np.int64)])
        row_of[ids] = rows
        if i and i % (BATCH * 50) == 0:
            print(f"  {i}/{n} windows, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    db.ui = timed.ui
    t = time.perf_counter()
    db.commit()  # SQLite commit + USearch index saved to disk
    commit_s = time.perf_counter() - t
    load_s = time.perf_counter() - start
    db.db.close()
    info = {
        "rows": n,
        "load_s": round(load_s, 2),
        "rows_per_s": round(n / load_s, 1),
        "hnsw_build_s": round(timed.add_s, 2),
        "sql_insert_s": round(load_s - timed.add_s - commit_s, 2),
        "commit_save_s": round(commit_s, 2),
        "sqlite_bytes": sum(p.stat().st_size for p in db_dir.glob("hoplite.sqlite*")),
        "usearch_bytes": (db_dir / "usearch.index").stat().st_size,
        "usearch": {
            "dtype": "float16",
            "metric": "IP",
            "connectivity": int(timed.ui.connectivity),
            "expansion_add": int(timed.ui.expansion_add),
            "expansion_search": int(timed.ui.expansion_search),
        },
    }
    return row_of, info


def hoplite_filter(name: str) -> dict:
    """search.py's filter as hoplite's ConfigDict filters on deployments/recordings/windows."""
    quads, sensor, (t0, t1), days = FILTERS[name]
    out = {"windows_filter": config_dict.create(gte=dict(tod_s=t0), lt=dict(tod_s=t1))}
    if quads:
        out["deployments_filter"] = config_dict.create(isin=dict(quadrant=list(quads)))
    if sensor is not None:
        out["deployments_filter"] = config_dict.create(eq=dict(name=f"s{sensor:02d}"))
    if days:
        # recordings.datetime is ISO text; hoplite turns datetimes into isoformat() for filters
        out["recordings_filter"] = config_dict.create(
            gte=dict(datetime=midnight(days[0])), lt=dict(datetime=midnight(days[1]))
        )
    return out


def top_k(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    if len(ids) <= K:
        return ids
    return ids[np.argpartition(-scores, K - 1)[:K]]


def filter_score(db, q: np.ndarray, flt: dict) -> tuple[np.ndarray, dict]:
    t = time.perf_counter()
    ids = np.asarray(db.match_window_ids(**flt), np.int64)
    select_ms = (time.perf_counter() - t) * 1000
    if not len(ids):
        return ids, {"select_ms": select_ms}
    emb = db.get_embeddings_batch(ids)  # float16, as hoplite stores them
    return top_k(ids, score_functions.numpy_dot(emb, q)), {"select_ms": select_ms}


def keep_matching(db, cand: np.ndarray, flt: dict, rows: int) -> tuple[np.ndarray, str]:
    """The candidates that pass the metadata filter, intersecting from the smaller side.

    K candidates <= matching rows: push the ids into match_window_ids (`windows.id IN (...)`
    plus the filter; O(K) rowid look-ups, except that with a sensor filter SQLite's planner
    starts from the deployment and probes every recording x id). Otherwise fetch the filter's
    ids with match_window_ids and intersect in numpy."""
    if len(cand) > rows:
        allowed = np.asarray(db.match_window_ids(**flt), np.int64)
        return np.isin(cand, allowed), "allowed_set"
    keep: set[int] = set()
    w = flt["windows_filter"]
    for i in range(0, len(cand), IN_CHUNK):
        part = config_dict.create(
            isin=dict(id=[int(c) for c in cand[i : i + IN_CHUNK]]), gte=w.gte, lt=w.lt
        )
        keep.update(db.match_window_ids(**{**flt, "windows_filter": part}))
    return np.array([int(c) in keep for c in cand], bool), "ids_in_sql"


def ann_filter(
    db, q: np.ndarray, flt: dict, k0: int, n: int, rows: int, raw: bool
) -> tuple[np.ndarray, dict]:
    k, rounds = k0, 0
    while True:
        rounds += 1
        if raw:
            m = db.ui.search(q, count=k)
            cand, scores = np.asarray(m.keys, np.int64), 1.0 - np.asarray(m.distances)
        else:
            res = list(db.search(q, search_list_size=k, approximate=True))
            cand = np.array([r.window_id for r in res], np.int64)
            scores = np.array([r.sort_score for r in res], np.float32)
        sel, route = keep_matching(db, cand, flt, rows)
        if sel.sum() >= K or k >= n:
            return top_k(cand[sel], scores[sel]), {"k": k, "rounds": rounds, "route": route}
        k = min(n, k * 2)


def run_method(db, fn, queries, truth, row_of, **kw) -> dict:
    fn(db, queries[0], **kw)  # warm
    lat, rec, extra = [], [], []
    for q, t in zip(queries, truth):
        start = time.perf_counter()
        ids, info = fn(db, q, **kw)
        lat.append((time.perf_counter() - start) * 1000)
        got = set(row_of[ids].tolist())
        rec.append(len(got & t) / max(1, min(K, len(t))))
        extra.append(info)
    lat.sort()
    out = {
        "recall_at_10": round(float(np.mean(rec)), 4),
        "min_recall": round(float(np.min(rec)), 2),
        "p50_ms": round(statistics.median(lat), 2),
        "p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 2),
    }
    if "select_ms" in extra[0]:
        out["select_ids_p50_ms"] = round(statistics.median(e["select_ms"] for e in extra), 2)
    if "k" in extra[0]:
        out["k_p50"] = int(statistics.median(e["k"] for e in extra))
        out["k_max"] = max(e["k"] for e in extra)
        out["max_rounds"] = max(e["rounds"] for e in extra)
        out["filter_routes"] = sorted({e["route"] for e in extra})
    return out


def bench_set(folder: Path, n_queries: int) -> dict:
    name = folder.name
    db_dir = WORK / name
    print(f"{name}: loading into {db_dir}", file=sys.stderr)
    row_of, info = load(folder, db_dir)
    print(f"{name}: {json.dumps(info)}", file=sys.stderr)
    t = time.perf_counter()
    db = sqlite_usearch_impl.SQLiteUSearchDB.create(str(db_dir))  # as a later session opens it
    info["open_s"] = round(time.perf_counter() - t, 3)
    n = info["rows"]
    queries = np.load(folder / "queries.npy")[:n_queries]
    res: dict = {"folder": str(folder), "load": info, "filters": {}}
    for fname in FILTERS:
        m = mask(folder, fname)
        truth = ground_truth(folder, queries, m)
        sel = float(m.mean())
        flt = hoplite_filter(fname)
        rows = int(m.sum())
        assert len(db.match_window_ids(**flt)) == rows, "filter mapping mismatch"
        k0 = min(n, max(K, math.ceil(K / max(sel, 1 / n) * SAFETY)))
        entry = {"selectivity": round(sel, 5), "rows": rows, "k0": k0}
        entry["filter_score"] = run_method(db, filter_score, queries, truth, row_of, flt=flt)
        for method, raw in (("ann_filter", False), ("ann_filter_usearch", True)):
            entry[method] = run_method(
                db, ann_filter, queries, truth, row_of, flt=flt, k0=k0, n=n, rows=rows, raw=raw
            )
        res["filters"][fname] = entry
        print(f"{name} {fname}: {json.dumps(entry)}", file=sys.stderr)
    db.db.close()
    return res


METHODS = {
    "filter_score": (filter_score, None),
    "ann_filter": (ann_filter, False),
    "ann_filter_usearch": (ann_filter, True),
}


def serve(folder: Path) -> None:
    """Answer queries on stdin (see the module docstring) until stdin closes."""
    db_dir = WORK / folder.name
    n = len(np.load(folder / "vectors.npy", mmap_mode="r"))
    if (db_dir / "row_of.npy").exists():
        row_of = np.load(db_dir / "row_of.npy")
        info = json.loads((db_dir / "load.json").read_text())
    else:
        print(f"{folder.name}: loading into {db_dir}", file=sys.stderr)
        row_of, info = load(folder, db_dir)
        np.save(db_dir / "row_of.npy", row_of)
        (db_dir / "load.json").write_text(json.dumps(info))
    db = sqlite_usearch_impl.SQLiteUSearchDB.create(str(db_dir))
    queries = np.load(folder / "queries.npy")
    filters: dict[str, tuple[dict, int, int]] = {}
    print(json.dumps({"ready": True, "load": info, "machine": machine()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        name = req["filter"]
        if name not in filters:
            m = mask(folder, name)
            rows, sel = int(m.sum()), float(m.mean())
            k0 = min(n, max(K, math.ceil(K / max(sel, 1 / n) * SAFETY)))
            filters[name] = (hoplite_filter(name), rows, k0)
        flt, rows, k0 = filters[name]
        fn, raw = METHODS[req["method"]]
        kw: dict = {"flt": flt}
        if raw is not None:
            kw.update(k0=k0, n=n, rows=rows, raw=raw)
        q = queries[req["query"]]
        start = time.perf_counter()
        ids, _ = fn(db, q, **kw)
        ms = (time.perf_counter() - start) * 1000
        print(json.dumps({"rows": row_of[ids].tolist(), "ms": ms}), flush=True)
    db.db.close()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--set-dir",
        action="append",
        type=Path,
        help="a set folder made by bench/search.py (repeat for several); "
        f"default: {DATA}/realistic_50000 and {DATA}/uniform_50000",
    )
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--keep-db", action="store_true", help=f"keep the hoplite DBs in {WORK}")
    p.add_argument(
        "--serve", type=Path, metavar="DIR", help="answer queries on stdin for this set folder"
    )
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return
    dirs = args.set_dir or [DATA / "realistic_50000", DATA / "uniform_50000"]
    for d in dirs:
        if not (d / "done").exists():
            p.error(f"{d} is not a finished set (run bench/search.py --n N first)")
    facts = machine()
    print(
        f"machine: {facts['cpu']}, {facts['cores']} cores, {facts['memory_gib']} GiB; "
        f"perch-hoplite {facts['perch_hoplite']}, usearch {facts['usearch']}",
        file=sys.stderr,
    )
    facts["blas_threads"] = os.environ["OPENBLAS_NUM_THREADS"]
    result: dict = {"machine": facts, "queries": args.queries, "k": K, "sets": {}}
    for d in dirs:
        kind, _, n = d.name.rpartition("_")
        result["n"] = int(n)
        result["sets"][kind] = bench_set(d, args.queries)
        if not args.keep_db:
            shutil.rmtree(WORK / d.name, ignore_errors=True)
    facts["load_avg_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"peer-hoplite-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
