"""Species-level facts at scale: ranger.species_daily, label search and `labels top` with and
without BirdNET's location/season filter.

    python bench/species.py [--n 200000] [--sensors 10] [--days 60] [--repeat 3]

A scratch embedded database gets a BirdNET-like space (BirdNET's 6,522 labels; 8-d placeholder
vectors: these queries never read the embeddings, which real 1024-d rows keep out of line in
TOAST) with N windows of 1,000 per recording, spread over ``--sensors`` sensors near Berlin
and ``--days`` local days, and each window's top-5 class scores (>= 0.05; 400 distinct
classes; score = max(0.05, u^5), so about 13 % of stored scores reach 0.5). Each sensor's
occurrence lists are computed with the real occurrence model. Then each query runs
``--repeat`` times (median wall time):

- ``species_daily``: the whole view; a 3-day window; one site; ``species_daily_all``;
- ``search_labels``: the owls, every class, and every class at one site over 3 days, with the
  filter (default) and with ``p_all_species``;
- ``labels top``: ``soundscape.species.top_labels`` with and without ``all_species``.

Results go to bench/results/species-*.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ScratchDatabase, machine, write_result  # noqa: E402

LOAD = """
INSERT INTO sensors (name, site, quadrant, latitude, longitude, timezone)
SELECT 's' || i, 'site' || (i % 4), 'Q' || (i % 2), 52 + i * 0.01, 13 + i * 0.01,
       'Europe/Berlin'
  FROM generate_series(1, :sensors) i;
INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, sample_rate, channels,
                        duration_s, started_at)
SELECT (SELECT id FROM sensors WHERE name = 's' || ((i % :sensors) + 1)), '/x/' || i || '.wav',
       md5(i::text) || md5(i::text), 1, 'wav', 48000, 1, 2000,
       '2024-04-01'::timestamptz + (i % :days) * interval '1 day' + (i % 24) * interval '1 hour'
  FROM generate_series(1, :recordings) i;
INSERT INTO segments (space_id, recording_id, sensor_id, start_s, end_s, starts_at, local_date,
                      local_time, embedding)
SELECT :space, r.id, r.sensor_id, k * 2, k * 2 + 3, r.started_at + k * interval '2 s',
       ((r.started_at + k * interval '2 s') AT TIME ZONE 'Europe/Berlin')::date,
       ((r.started_at + k * interval '2 s') AT TIME ZONE 'Europe/Berlin')::time,
       '[1,0,0,0,0,0,0,0]'
  FROM recordings r, generate_series(0, 999) k;
INSERT INTO segment_scores (space_id, segment_id, label_id, score)
SELECT DISTINCT ON (g.id, lab) :space, g.id, lab, sc
  FROM segments g,
       LATERAL (SELECT (abs(hashint8(g.id * 7 + j)) % 400) * 16 AS lab,
                       greatest(0.05, power(random(), 5))::real AS sc
                  FROM generate_series(1, 5) j) x
 WHERE g.space_id = :space;
"""


def load(db: ScratchDatabase, n: int, sensors: int, days: int) -> tuple[int, float]:
    from soundscape.occurrence import occurrence_model, refresh_occurrence

    labels = occurrence_model().labels
    t0 = time.perf_counter()
    with db.db.engine.begin() as conn:
        space = conn.execute(
            sa.text(
                "INSERT INTO spaces (name, model, model_version, dimension, window_s, hop_s, "
                "sample_rate, index_type) VALUES ('birdnet', 'birdnet', '2.4', 8, 3, 2, 48000, "
                "'halfvec') RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            sa.text(
                f"CREATE TABLE segments_space_{space} PARTITION OF segments FOR VALUES IN ({space})"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO space_labels (space_id, label_id, name, scientific, common) "
                "VALUES (:s, :i, :n, :sci, :c)"
            ),
            [
                {"s": space, "i": i, "n": lab, "sci": lab.split("_")[0], "c": lab.split("_")[1]}
                for i, lab in enumerate(labels)
            ],
        )
        for statement in LOAD.split(";\n"):
            if statement.strip():
                conn.execute(
                    sa.text(statement),
                    {"sensors": sensors, "days": days, "recordings": n // 1000, "space": space},
                )
        refresh_occurrence(conn)
    with db.db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    return space, time.perf_counter() - t0


def timed(db: ScratchDatabase, repeat: int, sql: str, **params) -> dict:
    times = []
    rows = 0
    with db.db.engine.connect() as conn:
        for _ in range(repeat):
            t = time.perf_counter()
            rows = len(conn.execute(sa.text(sql), params).all())
            times.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(times), 3), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--sensors", type=int, default=10)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    result: dict = {"machine": machine(), "args": vars(args)}
    db = ScratchDatabase()
    try:
        space, load_s = load(db, args.n, args.sensors, args.days)
        result["load_s"] = round(load_s, 1)
        with db.db.engine.connect() as conn:
            result["scores"] = (
                conn.execute(
                    sa.text(
                        "SELECT count(*) AS stored, count(*) FILTER (WHERE score >= 0.5) AS high "
                        "FROM segment_scores"
                    )
                )
                .one()
                ._asdict()
            )
            result["occurrence_rows"] = conn.execute(
                sa.text("SELECT count(*) FROM occurrence")
            ).scalar()
            owls = conn.execute(
                sa.text("SELECT array_agg(label_id) FROM space_labels WHERE common ILIKE '%owl%'")
            ).scalar()
            every = list(range(6522))
        days = {"d1": "2024-04-10", "d2": "2024-04-12"}
        q = {}
        q["species_daily"] = timed(db, args.repeat, "SELECT * FROM ranger.species_daily")
        q["species_daily_all"] = timed(db, args.repeat, "SELECT * FROM ranger.species_daily_all")
        q["species_daily_3_days"] = timed(
            db,
            args.repeat,
            "SELECT DISTINCT site, local_date, label FROM ranger.species_daily "
            "WHERE local_date BETWEEN CAST(:d1 AS date) AND CAST(:d2 AS date)",
            **days,
        )
        q["species_daily_one_site"] = timed(
            db, args.repeat, "SELECT * FROM ranger.species_daily WHERE site = 'site1'"
        )
        search = (
            "SELECT * FROM ranger.search_labels(:s, CAST(:l AS integer[]), 10, "
            "p_sites => CAST(:sites AS text[]), p_date_from => CAST(:d1 AS date), "
            "p_date_to => CAST(:d2 AS date), p_all_species => :all)"
        )
        for name, labels, filtered in (
            ("owls", owls, False),
            ("every_class", every, False),
            ("every_class_site_3_days", every, True),
        ):
            for all_species in (False, True):
                q[f"search_labels_{name}{'_all_species' if all_species else ''}"] = timed(
                    db,
                    args.repeat,
                    search,
                    s=space,
                    l=labels,
                    sites=["site1"] if filtered else None,
                    d1=days["d1"] if filtered else None,
                    d2=days["d2"] if filtered else None,
                    all=all_species,
                )
        from soundscape.spaces import get_space
        from soundscape.species import top_labels

        for all_species in (False, True):
            times = []
            with db.db.engine.connect() as conn:
                sp = get_space(conn, "birdnet")
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    top_labels(conn, sp, all_species=all_species)
                    times.append(time.perf_counter() - t)
            q[f"labels_top{'_all_species' if all_species else ''}"] = {
                "median_s": round(statistics.median(times), 3)
            }
        result["queries"] = q
        for k, v in q.items():
            print(f"{k:45s} {v}")
        write_result("species", result)
    finally:
        db.close()


if __name__ == "__main__":
    main()
