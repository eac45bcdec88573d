"""One embedded vector store answering bench/peers.py's filtered top-k queries (issue 28).

    /work/venvs/lancedb/bin/python bench/peers_engines.py lancedb SET_DIR WORK_DIR

Runs inside the store's own virtual environment (each peer pins its own numpy, pyarrow, ...),
so it imports only numpy and that store. It loads the set folder bench/peers.py wrote
(vectors.npy, sensor.npy, quadrant.npy, day.npy, tod.npy, filters.json, queries.npy) into a
fresh store in WORK_DIR, builds the store's indexes as its documentation advises (each class
below says how and cites the page), prints one JSON line {"ready": true, "load": {...},
"versions": {...}} on stdout, then answers JSON lines {"filter": NAME, "query": I, "k": K} with
{"rows": [set row numbers, best first], "ms": time inside this process}.

Every store keeps the same four columns beside the vector: sensor (int), quadrant (text),
day (int, days since 1970-01-01 local), tod (int, seconds since local midnight). A filter is
any of: sensors IN (...), quadrants IN (...), tod in [from, to) (across midnight when
from > to), day in [from, to] (both inclusive): what `ranger.search_vector` takes.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("LANCE_LOG", "error")  # a deprecation warning per query otherwise

import numpy as np  # noqa: E402

QUADRANTS = np.array(["N", "E", "S", "W"])
BATCH = 10_000


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Engine:
    """A store: ``build`` loads and indexes the set, ``search`` answers one filtered query."""

    name = ""

    def __init__(self, folder: Path, work: Path) -> None:
        self.folder, self.work = folder, work
        self.vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        self.sensor = np.load(folder / "sensor.npy")
        self.quadrant = np.load(folder / "quadrant.npy")
        self.day = np.load(folder / "day.npy")
        self.tod = np.load(folder / "tod.npy")
        self.filters = json.loads((folder / "filters.json").read_text())
        self.n = len(self.vectors)

    def build(self) -> dict:
        raise NotImplementedError

    def search(self, q: np.ndarray, name: str, k: int) -> list[int]:
        raise NotImplementedError

    def versions(self) -> dict:
        return {"numpy": np.__version__}


def sql_where(f: dict) -> str:
    """The filter as a SQL condition on the four columns (LanceDB's and DuckDB's dialect)."""
    parts = []
    if f.get("sensors") is not None:
        parts.append(f"sensor IN ({', '.join(str(s) for s in f['sensors'])})")
    if f.get("quadrants") is not None:
        parts.append(f"quadrant IN ({', '.join(repr(q) for q in f['quadrants'])})")
    if f.get("tod") is not None:
        a, b = f["tod"]
        parts.append(f"(tod >= {a} AND tod < {b})" if a <= b else f"(tod >= {a} OR tod < {b})")
    if f.get("days") is not None:
        parts.append(f"day BETWEEN {f['days'][0]} AND {f['days'][1]}")
    return " AND ".join(parts) or "TRUE"


# ------------------------------------------------------------------------------------ LanceDB
class LanceDB(Engine):
    """LanceDB 0.40, embedded (Lance files in WORK_DIR).

    Tuning, as https://docs.lancedb.com/indexing/vector-index and /indexing/scalar-index say:
    an IVF_HNSW_SQ index with cosine distance and the default partitioning (target partition
    size), m 20 and ef_construction 300 (the defaults of create_index); a BITMAP scalar index
    on the low-cardinality columns (sensor, quadrant) and BTREE on the ranges (day, tod), so
    that the filter is evaluated from the indexes; pre-filtering (`where(..., prefilter=True)`,
    the default); nprobes left to LanceDB's auto-tuning; `ef` at search "start around 1.5 x k
    and increase": PEERS_LANCE_EF (default 64). The same page advises IVF_PQ/IVF_RQ for
    workloads with many filters (HNSW-backed IVF "can show higher latency variance").
    """

    name = "lancedb"

    def build(self) -> dict:
        import lancedb
        import pyarrow as pa

        self.ef = int(os.environ.get("PEERS_LANCE_EF", "64"))
        start = time.perf_counter()
        db = lancedb.connect(str(self.work))
        table = None
        for i in range(0, self.n, BATCH):
            sl = slice(i, min(self.n, i + BATCH))
            v = np.ascontiguousarray(self.vectors[sl], np.float32)
            batch = pa.table(
                {
                    "id": pa.array(np.arange(sl.start, sl.stop, dtype=np.int64)),
                    "sensor": pa.array(self.sensor[sl].astype(np.int32)),
                    "quadrant": pa.array(QUADRANTS[self.quadrant[sl]].tolist()),
                    "day": pa.array(self.day[sl].astype(np.int32)),
                    "tod": pa.array(self.tod[sl].astype(np.int32)),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), v.shape[1]),
                }
            )
            if table is None:
                table = db.create_table("windows", data=batch, mode="overwrite")
            else:
                table.add(batch)
        assert table is not None
        insert_s = time.perf_counter() - start
        t = time.perf_counter()
        table.create_index(metric="cosine", index_type="IVF_HNSW_SQ", vector_column_name="vector")
        vector_s = time.perf_counter() - t
        t = time.perf_counter()
        for col, kind in (("sensor", "BITMAP"), ("quadrant", "BITMAP"), ("day", "BTREE"),
                          ("tod", "BTREE")):  # fmt: skip
            table.create_scalar_index(col, index_type=kind)
        scalar_s = time.perf_counter() - t
        self.table = db.open_table("windows")
        return {
            "insert_s": round(insert_s, 2),
            "vector_index_s": round(vector_s, 2),
            "scalar_index_s": round(scalar_s, 2),
            "build_s": round(insert_s + vector_s + scalar_s, 2),
            "disk_bytes": disk_bytes(self.work),
            "settings": {"index_type": "IVF_HNSW_SQ", "metric": "cosine", "m": 20,
                         "ef_construction": 300, "ef": self.ef, "nprobes": "auto",
                         "prefilter": True, "scalar": "BITMAP sensor, quadrant; BTREE day, tod"},
        }  # fmt: skip

    def search(self, q: np.ndarray, name: str, k: int) -> list[int]:
        where = sql_where(self.filters[name])
        out = (
            self.table.search(q, vector_column_name="vector")
            .distance_type("cosine")
            .where(where, prefilter=True)
            .ef(self.ef)
            .limit(k)
            .select(["id"])
            .to_arrow()
        )
        return out.column("id").to_pylist()

    def versions(self) -> dict:
        return {**super().versions(), "lancedb": version("lancedb"), "pyarrow": version("pyarrow")}


# -------------------------------------------------------------------------------- qdrant-edge
class Qdrant(Engine):
    """qdrant-edge-py 0.9: Qdrant's engine in process (an EdgeShard in WORK_DIR).

    Tuning, as https://qdrant.tech/documentation/concepts/indexing/ (payload index, filterable
    HNSW) and /guides/optimize/ say: payload indexes on every filtered field created before the
    points are added (integer for sensor, day, tod with range support; keyword for quadrant),
    so the optimizer builds the HNSW graph with the extra filter-aware links (payload_m) and
    the query planner answers a filter whose cardinality is under full_scan_threshold from the
    payload index exactly; HNSW m 16, ef_construct 100 (Qdrant's defaults); `optimize()` after
    the upload (the edge shard has no background optimizer); hnsw_ef at search:
    PEERS_QDRANT_EF (default 128).
    """

    name = "qdrant-edge"

    def build(self) -> dict:
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeShard,
            EdgeVectorParams,
            PayloadSchemaType,
            Point,
            UpdateOperation,
        )

        self.ef = int(os.environ.get("PEERS_QDRANT_EF", "128"))
        start = time.perf_counter()
        config = EdgeConfig(vectors={"v": EdgeVectorParams(size=self.vectors.shape[1],
                                                          distance=Distance.Cosine)})  # fmt: skip
        shard = EdgeShard.create(str(self.work), config)
        for col, kind in (("sensor", PayloadSchemaType.Integer), ("day", PayloadSchemaType.Integer),
                          ("tod", PayloadSchemaType.Integer),
                          ("quadrant", PayloadSchemaType.Keyword)):  # fmt: skip
            shard.update(UpdateOperation.create_field_index(col, kind))
        quads = QUADRANTS[self.quadrant].tolist()
        for i in range(0, self.n, 1000):
            hi = min(self.n, i + 1000)
            v = np.asarray(self.vectors[i:hi], np.float32)
            points = [
                Point(
                    j,
                    {"v": v[j - i].tolist()},
                    {
                        "sensor": int(self.sensor[j]),
                        "quadrant": quads[j],
                        "day": int(self.day[j]),
                        "tod": int(self.tod[j]),
                    },
                )  # fmt: skip
                for j in range(i, hi)
            ]
            shard.update(UpdateOperation.upsert_points(points))
        insert_s = time.perf_counter() - start
        t = time.perf_counter()
        shard.optimize()
        shard.flush()
        optimize_s = time.perf_counter() - t
        self.shard = shard
        info = shard.info()
        return {
            "insert_s": round(insert_s, 2),
            "vector_index_s": round(optimize_s, 2),
            "build_s": round(insert_s + optimize_s, 2),
            "disk_bytes": disk_bytes(self.work),
            "info": str(info)[:500],
            "settings": {"m": 16, "ef_construct": 100, "hnsw_ef": self.ef,
                         "payload_index": "integer sensor, day, tod; keyword quadrant"},
        }  # fmt: skip

    def _filter(self, f: dict):
        from qdrant_edge import FieldCondition, Filter, MatchAny, RangeFloat

        must, should = [], None
        if f.get("sensors") is not None:
            must.append(FieldCondition("sensor", match=MatchAny([int(s) for s in f["sensors"]])))
        if f.get("quadrants") is not None:
            must.append(FieldCondition("quadrant", match=MatchAny(list(f["quadrants"]))))
        if f.get("tod") is not None:
            a, b = f["tod"]
            if a <= b:
                must.append(FieldCondition("tod", range=RangeFloat(gte=a, lt=b)))
            else:
                should = [FieldCondition("tod", range=RangeFloat(gte=a)),
                          FieldCondition("tod", range=RangeFloat(lt=b))]  # fmt: skip
        if f.get("days") is not None:
            d0, d1 = f["days"]
            must.append(FieldCondition("day", range=RangeFloat(gte=d0, lte=d1)))
        return Filter(must=must, should=should)

    def search(self, q: np.ndarray, name: str, k: int) -> list[int]:
        from qdrant_edge import Query, QueryRequest, SearchParams

        if not hasattr(self, "_filters"):
            self._filters = {n: self._filter(f) for n, f in self.filters.items()}
        res = self.shard.query(
            QueryRequest(
                limit=k,
                query=Query.Nearest(q.tolist(), using="v"),
                filter=self._filters[name],
                params=SearchParams(hnsw_ef=self.ef),
            )
        )
        return [int(p.id) for p in res]

    def versions(self) -> dict:
        return {**super().versions(), "qdrant-edge-py": version("qdrant-edge-py")}


# ---------------------------------------------------------------------------------- DuckDB+vss
class DuckDB(Engine):
    """DuckDB 1.5.5 with the vss extension (loaded from the duckdb-extension-vss wheel).

    Tuning, as https://duckdb.org/docs/stable/core_extensions/vss says: a FLOAT[1024] column, an
    HNSW index `USING HNSW (vec) WITH (metric = 'cosine')` built after the bulk insert (M 16,
    ef_construction 128, its defaults), `hnsw_enable_experimental_persistence` for a database
    file, queries as `ORDER BY array_cosine_distance(vec, q) LIMIT k` (the form the index
    serves), `hnsw_ef_search` PEERS_DUCKDB_EF (default 64); one thread (the 2-core machine is
    shared; PostgreSQL answers a query with one backend). The docs say the index is used for
    a top-k with a WHERE clause only as a scan that filters what it returns.
    """

    name = "duckdb-vss"

    def build(self) -> dict:
        import duckdb
        import duckdb_extension_vss
        import pyarrow as pa  # noqa: F401  (duckdb reads numpy/arrow without copying)

        ext = next(Path(duckdb_extension_vss.__file__).parent.rglob("vss.duckdb_extension"))
        self.ef = int(os.environ.get("PEERS_DUCKDB_EF", "64"))
        start = time.perf_counter()
        con = duckdb.connect(str(self.work / "peers.duckdb"))
        con.execute(f"LOAD '{ext}'")
        con.execute("SET threads = 1")
        con.execute("SET hnsw_enable_experimental_persistence = true")
        d = self.vectors.shape[1]
        con.execute(
            f"CREATE TABLE windows (id BIGINT, sensor INTEGER, quadrant VARCHAR, day INTEGER, "
            f"tod INTEGER, vec FLOAT[{d}])"
        )
        for i in range(0, self.n, BATCH):
            hi = min(self.n, i + BATCH)
            v = np.ascontiguousarray(self.vectors[i:hi], np.float32)
            batch = pa.table(
                {
                    "id": np.arange(i, hi, dtype=np.int64),
                    "sensor": self.sensor[i:hi].astype(np.int32),
                    "quadrant": QUADRANTS[self.quadrant[i:hi]].tolist(),
                    "day": self.day[i:hi].astype(np.int32),
                    "tod": self.tod[i:hi].astype(np.int32),
                    "vec": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), d),
                }
            )
            con.register("batch", batch)
            con.execute("INSERT INTO windows SELECT * FROM batch")
            con.unregister("batch")
        con.execute("CHECKPOINT")
        insert_s = time.perf_counter() - start
        t = time.perf_counter()
        con.execute("SET threads = 2")  # the build may use both cores, as PostgreSQL's does
        con.execute(
            "CREATE INDEX windows_hnsw ON windows USING HNSW (vec) WITH (metric = 'cosine')"
        )
        con.execute("CHECKPOINT")
        con.execute("SET threads = 1")
        index_s = time.perf_counter() - t
        con.execute(f"SET hnsw_ef_search = {self.ef}")
        self.con, self.d = con, d
        return {
            "insert_s": round(insert_s, 2),
            "vector_index_s": round(index_s, 2),
            "build_s": round(insert_s + index_s, 2),
            "disk_bytes": disk_bytes(self.work),
            "settings": {"metric": "cosine", "M": 16, "ef_construction": 128,
                         "hnsw_ef_search": self.ef, "threads": 1},
        }  # fmt: skip

    def search(self, q: np.ndarray, name: str, k: int) -> list[int]:
        where = sql_where(self.filters[name])
        rows = self.con.execute(
            f"SELECT id FROM windows WHERE {where} "
            f"ORDER BY array_cosine_distance(vec, ?::FLOAT[{self.d}]) LIMIT {int(k)}",
            [q.tolist()],
        ).fetchall()
        return [int(r[0]) for r in rows]

    def plan(self, name: str) -> str:
        """The operators of the query's plan, top down (the vector literal left out)."""
        q = np.zeros(self.d, np.float32)
        q[0] = 1
        where = sql_where(self.filters[name])
        text = self.con.execute(
            f"EXPLAIN SELECT id FROM windows WHERE {where} "
            f"ORDER BY array_cosine_distance(vec, ?::FLOAT[{self.d}]) LIMIT 10",
            [q.tolist()],
        ).fetchall()[0][1]
        ops = re.findall(r"\b(HNSW_INDEX_SCAN|SEQ_SCAN|FILTER|HASH_JOIN|TOP_N|ORDER_BY)\b", text)
        return " <- ".join(ops)

    def versions(self) -> dict:
        return {**super().versions(), "duckdb": version("duckdb"),
                "duckdb-extension-vss": version("duckdb-extension-vss")}  # fmt: skip


# ----------------------------------------------------------------------------- perch-hoplite
class Hoplite(Engine):
    """perch-hoplite (SQLite + USearch), through its own API as bench/peer_hoplite.py does.

    Hoplite's `search()` takes no metadata filter, so a user answers a filtered query the way
    its agile/call_density.py does: `match_window_ids(deployments_filter, recordings_filter,
    windows_filter)` (one SQL join) and brute force over those ids' float16 embeddings
    (route filter_score), or USearch's HNSW top K then the filter, doubling K until k pass
    (route ann_filter_usearch; K starts at k / selectivity x 2). PEERS_HOPLITE_ROUTE picks
    one (default: filter_score below 20,000 passing windows, else ann_filter_usearch, the
    faster one at equal recall in issue 15's runs). Mapping: deployment = sensor (extra
    column quadrant), recording = one day of one sensor, window offsets = tod, extra INTEGER
    column tod_s (hoplite's offsets are a BLOB its filters cannot compare).
    """

    name = "hoplite"

    def build(self) -> dict:
        import datetime as dt

        from perch_hoplite.db import sqlite_usearch_impl

        self.dt = dt
        start = time.perf_counter()
        db = sqlite_usearch_impl.SQLiteUSearchDB.create(
            str(self.work), usearch_cfg=sqlite_usearch_impl.get_default_usearch_config(
                self.vectors.shape[1])
        )  # fmt: skip
        db.add_extra_table_column("windows", "tod_s", int)
        sensors = np.unique(self.sensor)
        quad_of = {
            int(s): str(QUADRANTS[self.quadrant[np.argmax(self.sensor == s)]]) for s in sensors
        }
        dep = {int(s): db.insert_deployment(f"s{int(s)}", "bench", quadrant=quad_of[int(s)])
               for s in sensors}  # fmt: skip
        recs: dict[tuple[int, int], int] = {}
        for s, d in sorted(set(zip(self.sensor.tolist(), self.day.tolist()))):
            recs[(s, d)] = db.insert_recording(f"s{s}/{d}.wav", self.midnight(d), dep[s])
        order = np.lexsort((self.tod, self.day, self.sensor))
        row_of = np.zeros(self.n + 1, np.int64)
        for i in range(0, self.n, 2048):
            rows = order[i : i + 2048]
            windows = [
                {"recording_id": int(recs[(int(self.sensor[r]), int(self.day[r]))]),
                 "offsets": [float(self.tod[r]), float(self.tod[r]) + 3.0],
                 "tod_s": int(self.tod[r])}
                for r in rows
            ]  # fmt: skip
            ids = np.asarray(db.insert_windows_batch(
                windows, np.asarray(self.vectors[rows]), handle_duplicates="allow"))  # fmt: skip
            if ids.max() >= len(row_of):
                row_of = np.concatenate([row_of, np.zeros(ids.max() + 1 - len(row_of), np.int64)])
            row_of[ids] = rows
        db.commit()
        build_s = time.perf_counter() - start
        self.db, self.row_of = db, row_of
        self.route = os.environ.get("PEERS_HOPLITE_ROUTE", "")
        self.counts = {n: int(self._mask(f).sum()) for n, f in self.filters.items()}
        return {
            "build_s": round(build_s, 2),
            "disk_bytes": disk_bytes(self.work),
            "settings": {"usearch": "float16, IP, hoplite's default config",
                         "route": self.route or "filter_score < 20000 rows, else ann_filter_usearch"},
        }  # fmt: skip

    def midnight(self, day: int):
        dt = self.dt
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=int(day))

    def _mask(self, f: dict) -> np.ndarray:
        m = np.ones(self.n, bool)
        if f.get("sensors") is not None:
            m &= np.isin(self.sensor, f["sensors"])
        if f.get("quadrants") is not None:
            m &= np.isin(QUADRANTS[self.quadrant], f["quadrants"])
        if f.get("tod") is not None:
            a, b = f["tod"]
            m &= (
                ((self.tod >= a) & (self.tod < b)) if a <= b else ((self.tod >= a) | (self.tod < b))
            )
        if f.get("days") is not None:
            m &= (self.day >= f["days"][0]) & (self.day <= f["days"][1])
        return m

    def _hoplite_filter(self, f: dict) -> dict:
        from ml_collections import config_dict

        out = {}
        if f.get("tod") is not None:
            a, b = f["tod"]
            assert a <= b, "hoplite's windows_filter has no OR: across midnight is two queries"
            out["windows_filter"] = config_dict.create(gte=dict(tod_s=a), lt=dict(tod_s=b))
        if f.get("sensors") is not None:
            out["deployments_filter"] = config_dict.create(
                isin=dict(name=[f"s{int(s)}" for s in f["sensors"]]))  # fmt: skip
        if f.get("quadrants") is not None:
            out["deployments_filter"] = config_dict.create(isin=dict(quadrant=list(f["quadrants"])))
        if f.get("days") is not None:
            out["recordings_filter"] = config_dict.create(
                gte=dict(datetime=self.midnight(f["days"][0])),
                lt=dict(datetime=self.midnight(f["days"][1] + 1)),
            )
        return out

    def search(self, q: np.ndarray, name: str, k: int) -> list[int]:
        from perch_hoplite.db import score_functions

        if not hasattr(self, "_filters"):
            self._filters = {n: self._hoplite_filter(f) for n, f in self.filters.items()}
        flt, rows = self._filters[name], self.counts[name]
        route = self.route or ("filter_score" if rows < 20000 else "ann_filter_usearch")
        if route == "filter_score":
            ids = np.asarray(self.db.match_window_ids(**flt), np.int64)
            if not len(ids):
                return []
            s = score_functions.numpy_dot(self.db.get_embeddings_batch(ids), q)
            top = np.argsort(-s)[:k] if len(ids) <= k else np.argpartition(-s, k - 1)[:k]
            top = top[np.argsort(-s[top])]
            return self.row_of[ids[top]].tolist()
        kk = min(self.n, max(k, math.ceil(k / max(rows / self.n, 1 / self.n) * 2)))
        allowed = None
        while True:
            m = self.db.ui.search(q, count=kk)
            cand = np.asarray(m.keys, np.int64)
            if allowed is None:
                allowed = np.asarray(self.db.match_window_ids(**flt), np.int64)
            keep = cand[np.isin(cand, allowed)]
            if len(keep) >= k or kk >= self.n:
                return self.row_of[keep[:k]].tolist()
            kk = min(self.n, kk * 2)

    def versions(self) -> dict:
        return {**super().versions(), "perch-hoplite": version("perch-hoplite"),
                "usearch": version("usearch")}  # fmt: skip


ENGINES = {e.name: e for e in (LanceDB, Qdrant, DuckDB, Hoplite)}


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] not in ENGINES:
        sys.exit(f"usage: peers_engines.py {{{','.join(ENGINES)}}} SET_DIR WORK_DIR")
    folder, work = Path(sys.argv[2]), Path(sys.argv[3])
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    engine = ENGINES[sys.argv[1]](folder, work)
    load = engine.build()
    queries = np.load(folder / "queries.npy")
    hello = {"ready": True, "engine": engine.name, "load": load, "versions": engine.versions()}
    if isinstance(engine, DuckDB):
        hello["plans"] = {n: engine.plan(n) for n in engine.filters}
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        q = np.ascontiguousarray(queries[req["query"]], np.float32)
        start = time.perf_counter()
        rows = engine.search(q, req["filter"], int(req.get("k", 10)))
        ms = (time.perf_counter() - start) * 1000
        print(json.dumps({"rows": [int(r) for r in rows], "ms": ms}), flush=True)


if __name__ == "__main__":
    main()
