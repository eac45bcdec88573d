"""Bytes per window of the storage layouts a sensor-year could use, measured, and the sizes they
give at 10M and 15.8M windows (issue 28, docs/scaling.md "Sensor-year").

    python bench/sensor_year.py --home /tmp/soundscape-bench-peers/pg_100k [--space peers_100000]

Reads the space bench/peers.py (or bench/realaudio.py) loaded into a kept embedded database
(real-audio BirdNET windows, 1024-d) and copies its windows into scratch tables, one per
layout, then measures each with pg_relation_size (heap), the TOAST relation and its index, and
the indexes:

- default: the space's partition as soundscape stores it (float32 `vector` in TOAST, the
  B-trees, the halfvec HNSW index);
- halfvec_toast: the same columns with the embedding as `halfvec(1024)` (float16, 2,056 B),
  default TOAST settings (moved out of line: over the ~2 kB row threshold);
- halfvec_inline: the same with `toast_tuple_target = 4096` and the column's storage MAIN
  (kept in the row: 3 rows a page);
- pca index: the 32-axis float16 HNSW index of `spaces index --type pca` (268.3 B a window at
  1M, docs/benchmarks.md), added to the halfvec layouts for the compact variant;
- the B-trees of the partition are counted in every layout.

Then prints, for 10,000,000 and 15,800,000 windows (a BirdNET recorder's year at a 2 s hop),
the disk of each layout and the memory its searches want hot (the index, plus the heap rows an
index scan checks its filters on), next to this machine's 24 GB. Writes
bench/results/sensor-year-<time>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, write_result  # noqa: E402

COLUMNS = "id, space_id, recording_id, sensor_id, start_s, end_s, starts_at, local_date, local_time"
PCA_BYTES = 268.3  # a window of the pca index at 1M (docs/benchmarks.md, issue 14)
SIZES = (10_000_000, 15_800_000)
MEMORY_GB = 24


def sizes(conn, table: str) -> dict:
    r = conn.execute(
        sa.text(
            "SELECT pg_relation_size(c.oid), coalesce(pg_total_relation_size(c.reltoastrelid), 0),"
            " pg_indexes_size(c.oid), (SELECT count(*) FROM " + table + ") "
            "FROM pg_class c WHERE c.oid = to_regclass(:t)"
        ),
        {"t": table},
    ).one()
    n = r[3]
    return {
        "rows": n,
        "heap_B": round(r[0] / n, 1),
        "toast_B": round(r[1] / n, 1),
        "indexes_B": round(r[2] / n, 1),
        "total_B": round((r[0] + r[1] + r[2]) / n, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--home", type=Path, required=True, help="a kept bench database")
    p.add_argument("--space", default="peers_100000")
    args = p.parse_args()
    db = ScratchDatabase(args.home)
    out: dict = {"machine": machine(), "layouts": {}}
    try:
        with db.db.engine.begin() as conn:
            sid, part = conn.execute(
                sa.text("SELECT id, 'segments_space_' || id FROM spaces WHERE name = :n"),
                {"n": args.space},
            ).one()
            hnsw = conn.execute(
                sa.text("SELECT pg_relation_size(to_regclass(:i))"), {"i": f"{part}_hnsw"}
            ).scalar()
            default = sizes(conn, part)
            default["hnsw_B"] = round(hnsw / default["rows"], 1)
            default["btrees_B"] = round(default["indexes_B"] - default["hnsw_B"], 1)
            out["layouts"]["default"] = default
            btrees = default["btrees_B"]
            for name, inline in (("halfvec_toast", False), ("halfvec_inline", True)):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS bench_{name}"))
                conn.execute(
                    sa.text(
                        f"CREATE TABLE bench_{name} AS SELECT {COLUMNS}, "
                        f"embedding::halfvec(1024) AS emb FROM {part} WITH NO DATA"
                    )
                )
                if inline:
                    conn.execute(
                        sa.text(
                            f"ALTER TABLE bench_{name} ALTER COLUMN emb SET STORAGE MAIN, "
                            "SET (toast_tuple_target = 4096)"
                        )
                    )
                conn.execute(
                    sa.text(
                        f"INSERT INTO bench_{name} SELECT {COLUMNS}, embedding::halfvec(1024) "
                        f"FROM {part}"
                    )
                )
                conn.execute(sa.text(f"ANALYZE bench_{name}"))
                s = sizes(conn, f"bench_{name}")
                s["btrees_B"] = btrees  # the same B-trees as the partition's
                s["total_B"] = round(s["heap_B"] + s["toast_B"] + btrees, 1)
                out["layouts"][name] = s
                conn.execute(sa.text(f"DROP TABLE bench_{name}"))
    finally:
        db.close()
    lay = out["layouts"]
    d = lay["default"]
    plans = {
        "default (float32 in TOAST, halfvec HNSW)": (d["total_B"], d["hnsw_B"] + d["heap_B"]),
        "default + pca index instead of halfvec": (
            d["total_B"] - d["hnsw_B"] + PCA_BYTES,
            PCA_BYTES + d["heap_B"],
        ),
        "halfvec in TOAST + pca index": (lay["halfvec_toast"]["total_B"] + PCA_BYTES,
                                         PCA_BYTES + lay["halfvec_toast"]["heap_B"]),
        "halfvec inline + pca index": (lay["halfvec_inline"]["total_B"] + PCA_BYTES,
                                       PCA_BYTES + lay["halfvec_inline"]["heap_B"]),
    }  # fmt: skip
    out["plans"] = {}
    print(f"{'layout':<44}{'B/window':>9}{'hot B/w':>9}" + "".join(
        f"{f'{n / 1e6:.1f}M disk':>13}{'hot':>8}" for n in SIZES))  # fmt: skip
    for name, (total, hot) in plans.items():
        row = {"bytes_per_window": round(total, 1), "hot_bytes_per_window": round(hot, 1)}
        cells = ""
        for n in SIZES:
            row[f"disk_gb_{n}"] = round(total * n / 1e9, 1)
            row[f"hot_gb_{n}"] = round(hot * n / 1e9, 1)
            cells += f"{total * n / 1e9:11.1f}GB{hot * n / 1e9:6.1f}GB"
        out["plans"][name] = row
        print(f"{name:<44}{total:9.0f}{hot:9.0f}{cells}")
    for name, s in lay.items():
        print(f"  measured {name}: {s}")
    write_result("sensor-year", out)


if __name__ == "__main__":
    main()
