"""Search at scale: filtered top-10 queries on N windows of 1024-d vectors.

    python bench/search.py [--n 1000000] [--sets realistic,uniform] [--queries 50]

Two vector sets, because recall depends heavily on how vectors are made:
- realistic: grown from real BirdNET embeddings of the example and test audio (windows of the
  clips and of the forest soundscape): each vector mixes two real windows with a random weight
  and adds Gaussian noise, so the set has the clustered, low-intrinsic-dimension structure of
  real embeddings;
- uniform: uniform random directions (i.i.d. Gaussian, normalised), the hard case for HNSW.

Windows are spread over 20 sensors (5 sites, 4 quadrants), every day of 2024 and uniform local
times of day. Filters (time of day x quadrant x date) select ~50 %, 10 %, 1 % and 0.1 %.
Ground truth is exact brute force in numpy over the same vectors and metadata. For each set and
selectivity: recall@10 and p50/p95 latency of `ranger.search_vector` (auto strategy: HNSW with
iterative scan or exact, as it decides), of forced HNSW and, for the selective filters, of
forced exact. Also: COPY rows/s and HNSW build time and size.

Layout variants, measured in the same run on the same vectors:
- --index vector,halfvec,bit: the space's HNSW index in float32, float16 or one bit per
  dimension around the space's mean (issue 14's compact index: candidates re-ranked by the
  float32 distance), rebuilt on the same table (vectors stay float32 in the table); the index
  size is reported per window;
- --storage toast,inline: vectors out of line in TOAST (PostgreSQL's default for rows over
  2 kB) or inline in the table row (toast_tuple_target = 8160), each a separate load.

Vectors and metadata are kept in /tmp (npy) so the peer benchmark can reuse them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EXAMPLES, ROOT, ScratchDatabase, machine, write_result  # noqa: E402

from soundscape.spaces import (  # noqa: E402
    BIT_EF_CONSTRUCTION,
    BIT_M,
    COMPACT_TYPES,
    DEFAULT_INDEX_TYPE,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
)

DATA = Path("/tmp/soundscape-bench-search")
DIM = 1024
N_SENSORS = 20
QUADRANTS = ["N", "E", "S", "W"]
DAY0 = date(2024, 1, 1)
N_DAYS = 366
CHUNK = 20000

# name: (quadrants or None, sensor index or None, (time from s, time to s), (day from, day to))
FILTERS = {
    "50%": (None, None, (0, 12 * 3600), None),
    "10%": (["N"], None, (0, int(9.6 * 3600)), None),
    "1%": (None, 0, (0, int(4.8 * 3600)), None),
    "0.1%": (None, 0, (0, int(4.8 * 3600)), (121, 121 + 37)),  # ~1/10 of the year from 1 May
    # the ranger's question: one quadrant, one month (June), morning
    "1%+date": (["N"], None, (0, int(11.7 * 3600)), (152, 182)),
}
EXACT_MAX_ROWS = 20000  # also force the exact strategy on filters passing at most this many


def seeds() -> np.ndarray:
    """Real BirdNET embeddings of windows of every example and test clip."""
    from soundscape.audio import iter_windows
    from soundscape.embedders import load_model

    model = load_model("birdnet")
    files = sorted(EXAMPLES.glob("*.ogg")) + sorted((ROOT / "tests" / "data").glob("*.ogg"))
    shared = ROOT.parent / "shared" / "audio" / "clips"
    if shared.is_dir():
        files += sorted(shared.rglob("*.ogg"))
    files.append(EXAMPLES / "xc563936.mp3")
    out = []
    for f in files:
        for batch in iter_windows(f, 48000, 3.0, 1.0):
            out.append(model.embed_audio(batch.samples))
    return np.concatenate(out)


def make_set(kind: str, n: int, rng: np.random.Generator) -> Path:
    folder = DATA / f"{kind}_{n}"
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    vec = np.lib.format.open_memmap(folder / "vectors.npy", "w+", np.float32, (n, DIM))
    if kind == "realistic":
        base = seeds()
        np.save(folder / "seeds.npy", base)
    for i in range(0, n, CHUNK):
        m = min(CHUNK, n - i)
        if kind == "realistic":
            a, b = rng.integers(0, len(base), m), rng.integers(0, len(base), m)
            w = rng.uniform(0.5, 1.0, (m, 1)).astype(np.float32)
            x = base[a] * w + base[b] * (1 - w)
            x += (
                rng.normal(scale=0.25, size=(m, DIM)).astype(np.float32)
                * np.linalg.norm(x, axis=1, keepdims=True)
                / np.sqrt(DIM)
            )
        else:
            x = rng.normal(size=(m, DIM)).astype(np.float32)
        vec[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    vec.flush()
    np.save(folder / "sensor.npy", rng.integers(0, N_SENSORS, n).astype(np.int16))
    np.save(folder / "day.npy", rng.integers(0, N_DAYS, n).astype(np.int16))
    np.save(folder / "tod.npy", rng.integers(0, 86400, n).astype(np.int32))
    if kind == "realistic":
        base = np.load(folder / "seeds.npy")
        a, b = rng.integers(0, len(base), 200), rng.integers(0, len(base), 200)
        q = base[a] * 0.7 + base[b] * 0.3 + rng.normal(scale=0.02, size=(200, DIM))
    else:
        q = rng.normal(size=(200, DIM))
    np.save(
        folder / "queries.npy", (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    )
    (folder / "done").write_text("ok")
    return folder


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


def load(db, folder: Path, space_name: str, storage: str) -> dict:
    """COPY the set into its own space (ids = row number + offset), without its HNSW index."""
    import sqlalchemy as sa

    from soundscape.db import register_vector
    from soundscape.embedders.base import Embedder
    from soundscape.ingest import SEGMENT_COPY, SEGMENT_TYPES
    from soundscape.spaces import drop_hnsw_index, ensure_space

    class Bench(Embedder):
        name = space_name
        version = "1"
        dimension = DIM
        sample_rate = 48000
        default_window_s = 3.0
        default_hop_s = 3.0

    vec = np.load(folder / "vectors.npy", mmap_mode="r")
    sensor = np.load(folder / "sensor.npy")
    day = np.load(folder / "day.npy")
    tod = np.load(folder / "tod.npy")
    n = len(vec)
    engine = db.db.engine
    with engine.begin() as conn:
        space = ensure_space(conn, Bench, 3.0, 3.0)
        drop_hnsw_index(conn, space)
        if storage == "inline":
            conn.execute(sa.text(f"ALTER TABLE {space.partition} SET (toast_tuple_target = 8160)"))
        have = conn.execute(sa.text("SELECT count(*) FROM sensors WHERE name LIKE 's__'")).scalar()
        if not have:
            for i in range(N_SENSORS):
                conn.execute(
                    sa.text(
                        "INSERT INTO sensors (name, site, quadrant, timezone) "
                        "VALUES (:n, :s, :q, 'UTC')"
                    ),
                    {"n": f"s{i:02d}", "s": f"site{i % 5}", "q": QUADRANTS[i % 4]},
                )
            ids = (
                conn.execute(sa.text("SELECT id FROM sensors WHERE name LIKE 's__' ORDER BY name"))
                .scalars()
                .all()
            )
            rows = [
                {"s": ids[i], "p": f"/bench/s{i:02d}/{d}.wav", "h": f"{i:032d}{d:032d}"}
                for i in range(N_SENSORS)
                for d in range(N_DAYS)
            ]
            conn.execute(
                sa.text(
                    "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, sample_rate, "
                    "channels, duration_s) VALUES (:s, :p, :h, 0, 'wav', 48000, 1, 86400)"
                ),
                rows,
            )
        sensor_ids = (
            conn.execute(sa.text("SELECT id FROM sensors WHERE name LIKE 's__' ORDER BY name"))
            .scalars()
            .all()
        )
        rec = {
            (r.sensor_id, r.path.rsplit("/", 1)[1]): r.id
            for r in conn.execute(
                sa.text("SELECT id, sensor_id, path FROM recordings WHERE path LIKE '/bench/%'")
            )
        }
        rec_ids = np.array(
            [[rec[(sensor_ids[i], f"{d}.wav")] for d in range(N_DAYS)] for i in range(N_SENSORS)]
        )
    offset = space.id * 10**9
    t = time.perf_counter()
    with engine.begin() as conn:
        register_vector(conn)
        raw = conn.connection.driver_connection
        with raw.cursor().copy(SEGMENT_COPY) as copy:
            copy.set_types(SEGMENT_TYPES)
            # recording by recording, in time order, as soundscape's ingest writes them (a file
            # at a time) and as bench/peer_hoplite.py loads hoplite: the windows of one
            # sensor-day sit together in the heap and in TOAST; ids stay the set's row numbers
            order = np.lexsort((tod, day, sensor))
            for i in range(0, n, CHUNK):
                v = np.asarray(vec[order[i : i + CHUNK]])
                for j, r in enumerate(order[i : i + CHUNK]):
                    r = int(r)
                    d = DAY0 + timedelta(days=int(day[r]))
                    at = datetime.combine(d, datetime.min.time(), tzinfo=timezone.utc) + timedelta(
                        seconds=int(tod[r])
                    )
                    copy.write_row(
                        (
                            offset + r,
                            space.id,
                            int(rec_ids[sensor[r], day[r]]),
                            sensor_ids[sensor[r]],
                            float(tod[r]),
                            float(tod[r]) + 3,
                            at,
                            d,
                            at.time().replace(tzinfo=None),
                            v[j],
                        )
                    )
    copy_s = time.perf_counter() - t
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"VACUUM ANALYZE {space.partition}"))
        size = conn.execute(
            sa.text(
                f"SELECT pg_total_relation_size('{space.partition}'), "
                f"pg_relation_size('{space.partition}')"
            )
        ).one()
    return {
        "space": space,
        "offset": offset,
        "rows": n,
        "storage": storage,
        "copy_s": copy_s,
        "copy_rows_per_s": n / copy_s,
        "table_bytes": size[0],
        "heap_bytes": size[1],
    }


def build_index(db, space, index_type: str, check: bool = False):
    """(Re)build the space's HNSW index as index_type, with the recommended settings; with
    ``check``, then measure its recall as `soundscape spaces index` does (the recall guard,
    soundscape.recall: auto follows what it finds)."""
    import sqlalchemy as sa

    from soundscape.recall import check_space
    from soundscape.spaces import set_index_type

    with db.db.engine.begin() as conn:
        conn.execute(sa.text("SET maintenance_work_mem = '8GB'"))
        conn.execute(sa.text("SET max_parallel_maintenance_workers = 1"))
        space, build_s = set_index_type(conn, space, index_type)
        size = conn.execute(sa.text(f"SELECT pg_relation_size('{space.partition}_hnsw')")).scalar()
        rows = conn.execute(sa.text(f"SELECT count(*) FROM {space.partition}")).scalar()
    guard = None
    if check:
        with db.db.engine.begin() as conn:
            c = check_space(conn, space)
        guard = {
            "recall": round(c.recall, 4), "worst_decile": round(c.recall_worst_decile, 4),
            "guard": c.guard, "guard_ef": c.guard_ef, "seconds": round(c.seconds, 1),
        }  # fmt: skip
    return space, {
        "index_type": index_type,
        "check": guard,
        "hnsw_build_s": build_s,
        "index_bytes": size,
        "index_bytes_per_window": round(size / max(rows, 1), 1),
        "load_avg_after_build": os.getloadavg(),
    }


def run_queries(
    db,
    space,
    offset: int,
    queries: np.ndarray,
    name: str,
    variants: dict[str, tuple],
    truth: list[set[int]],
    per_query: bool = False,
) -> dict[str, dict]:
    """Recall@10 and latency of each variant (label: (strategy, ef_search or None[, candidates
    per result of a bit index or None])). The variants take turns query by query, so none of
    them runs against warmer caches."""
    from datetime import time as dtime

    import sqlalchemy as sa

    from soundscape.search import Filters, Query, run

    quads, sensor, (t0, t1), days = FILTERS[name]
    f = Filters(
        quadrants=quads,
        sensors=[f"s{sensor:02d}"] if sensor is not None else None,
        time_from=dtime(t0 // 3600, t0 % 3600 // 60),
        time_to=dtime(t1 // 3600, t1 % 3600 // 60),
        date_from=DAY0 + timedelta(days=days[0]) if days else None,
        date_to=DAY0 + timedelta(days=days[1] - 1) if days else None,
    )
    lat: dict[str, list] = {v: [] for v in variants}
    rec: dict[str, list] = {v: [] for v in variants}
    methods: dict[str, set] = {v: set() for v in variants}
    with db.db.engine.connect() as conn:

        def search(q: np.ndarray, variant: str):
            strategy, ef, *rest = variants[variant]
            for setting in ("soundscape.bit_candidates", "soundscape.pca_candidates"):
                conn.execute(
                    sa.text("SELECT set_config(:s, :c, false)"),
                    {"s": setting, "c": str(rest[0]) if rest and rest[0] else ""},
                )
            return run(
                conn, Query(space, "q", vector=q), f, limit=10, strategy=strategy, ef_search=ef
            )

        for v in variants:  # warm-up
            search(queries[0], v)
        for q, t in zip(queries, truth):
            for v in variants:
                start = time.perf_counter()
                hits = search(q, v)
                lat[v].append((time.perf_counter() - start) * 1000)
                got = {h.segment_id - offset for h in hits}
                rec[v].append(len(got & t) / max(1, min(10, len(t))))
                methods[v].update(h.method for h in hits)
    out = {}
    for v in variants:
        ms = sorted(lat[v])
        out[v] = {
            "recall_at_10": round(float(np.mean(rec[v])), 4),
            "min_recall": round(float(np.min(rec[v])), 2),
            "p50_ms": round(statistics.median(ms), 2),
            "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
            "methods": sorted(methods[v]),
        }
        if per_query:
            out[v]["per_query"] = rec[v]
    return out


def tune_server(db) -> None:
    """Settings for a 1M x 1024-d table on this machine (documented in docs/benchmarks.md)."""
    import sqlalchemy as sa

    from soundscape import embedded_db

    with db.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for k, v in (
            ("shared_buffers", "6GB"),
            ("effective_cache_size", "16GB"),
            ("maintenance_work_mem", "8GB"),
            ("work_mem", "64MB"),
            ("max_wal_size", "8GB"),
            ("checkpoint_timeout", "30min"),
        ):
            conn.execute(sa.text(f"ALTER SYSTEM SET {k} = '{v}'"))
    db.db.engine.dispose()
    embedded_db.stop()
    embedded_db.start()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--sets", default="realistic,uniform")
    p.add_argument("--queries", type=int, default=50)
    p.add_argument(
        "--ef-sweep",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[],
        help="also run forced HNSW at these hnsw.ef_search values, e.g. 200,400,1000",
    )
    p.add_argument("--m", type=int, default=HNSW_M, help="HNSW m of the bench index")
    p.add_argument(
        "--ef-construction", type=int, default=HNSW_EF_CONSTRUCTION, help="HNSW ef_construction"
    )
    p.add_argument("--bit-m", type=int, default=BIT_M, help="HNSW m of a bit index")
    p.add_argument(
        "--candidates",
        "--bit-candidates",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[],
        help="a compact index (bit, pca): also run forced HNSW with these candidates per "
        "result, e.g. 40,120",
    )
    p.add_argument(
        "--bit-ef-construction", type=int, default=BIT_EF_CONSTRUCTION, help="ef_construction (bit)"
    )
    p.add_argument(
        "--index", default=DEFAULT_INDEX_TYPE, help="HNSW index types: halfvec,vector,bit,pca"
    )
    p.add_argument("--storage", default="toast", help="vector storage: toast,inline")
    p.add_argument("--check", action="store_true",
                   help="measure each index's recall after its build (`spaces check`): auto "
                   "then follows the recall guard, as after `spaces index`")  # fmt: skip
    args = p.parse_args()
    import soundscape.spaces as spaces_module

    spaces_module.HNSW_M, spaces_module.HNSW_EF_CONSTRUCTION = args.m, args.ef_construction
    spaces_module.BIT_M, spaces_module.BIT_EF_CONSTRUCTION = args.bit_m, args.bit_ef_construction
    rng = np.random.default_rng(7)
    result: dict = {
        "machine": machine(),
        "n": args.n,
        "hnsw": {"m": args.m, "ef_construction": args.ef_construction},
        "bit": {"m": args.bit_m, "ef_construction": args.bit_ef_construction},
        "sets": {},
    }
    db = ScratchDatabase()
    try:
        tune_server(db)
        for kind in args.sets.split(","):
            t = time.perf_counter()
            folder = make_set(kind, args.n, rng)
            print(f"{kind}: vectors ready in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            queries = np.load(folder / "queries.npy")[: args.queries]
            truths = {name: ground_truth(folder, queries, mask(folder, name)) for name in FILTERS}
            for storage in args.storage.split(","):
                info = load(db, folder, f"bench_{kind}_{storage}", storage)
                space = info.pop("space")
                print(f"{kind} {storage}: {json.dumps(info)}", file=sys.stderr)
                for index_type in args.index.split(","):
                    space, built = build_index(db, space, index_type, args.check)
                    default = (storage, index_type) == ("toast", DEFAULT_INDEX_TYPE)
                    label = kind if default else f"{kind}+{storage}+{index_type}"
                    print(f"{label}: {json.dumps(built)}", file=sys.stderr)
                    res = {"load": {**info, **built}, "filters": {}}
                    for name in FILTERS:
                        m = mask(folder, name)
                        entry = {"selectivity": round(float(m.mean()), 5), "rows": int(m.sum())}
                        variants: dict[str, tuple] = {
                            "auto": ("auto", None),
                            "hnsw": ("hnsw", None),
                        }
                        if m.sum() <= EXACT_MAX_ROWS:
                            variants["exact"] = ("exact", None)
                        for ef in args.ef_sweep:
                            variants[f"hnsw_ef{ef}"] = ("hnsw", ef)
                        if index_type in COMPACT_TYPES:
                            for c in args.candidates:
                                variants[f"hnsw_F{c}"] = ("hnsw", None, c)
                        entry.update(
                            run_queries(
                                db, space, info["offset"], queries, name, variants, truths[name]
                            )
                        )
                        entry["load_avg"] = os.getloadavg()
                        res["filters"][name] = entry
                        print(f"{label} {name}: {json.dumps(entry)}", file=sys.stderr)
                    result["sets"][label] = res
                    write_result("search-partial", result)
    finally:
        db.close()
    write_result("search", result)


if __name__ == "__main__":
    main()
