"""perch-hoplite databases in and out (issue 25), checked against perch-hoplite itself.

perch-hoplite runs in its own venv (``make hoplite-venv``; it pins numpy>=2): tests/
hoplite_peer.py builds a hoplite database through hoplite's API from the BirdNET vectors of the
reserve's real audio, and searches databases with hoplite's own brute force and HNSW search.
soundscape imports that database and must find the same nearest neighbours (top 10 of 20
queries); a space soundscape exports must open in hoplite and search to soundscape's answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from sqlalchemy.engine import make_url

from .conftest import ROOT, Cli

HOPLITE_PYTHON = Path(
    os.environ.get("SOUNDSCAPE_HOPLITE_PYTHON", ROOT / ".venv-hoplite" / "bin" / "python")
)
PEER = Path(__file__).with_name("hoplite_peer.py")
K = 10
N_QUERIES = 20


needs_hoplite = pytest.mark.skipif(
    not HOPLITE_PYTHON.exists(),
    reason=f"no perch-hoplite venv at {HOPLITE_PYTHON}: run `make hoplite-venv` (CI does)",
)


@pytest.fixture(scope="module")
def hoplite_ready() -> None:
    """Skips when perch-hoplite does not import in its venv (checked once per module)."""
    r = subprocess.run(
        [str(HOPLITE_PYTHON), "-c", "import perch_hoplite.db.sqlite_usearch_impl"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode:
        pytest.skip(
            f"perch-hoplite does not import in {HOPLITE_PYTHON} (`make hoplite-venv` makes "
            f"it): {r.stderr.strip()[-300:]}"
        )


def peer(*args: object) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [str(HOPLITE_PYTHON), str(PEER), *map(str, args)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _vector(text: str) -> np.ndarray:
    return np.array(json.loads(text), np.float32)


def soundscape_top(url: str, space: str, queries: np.ndarray) -> list[list[tuple[int, float]]]:
    """soundscape's exact top K of each query in ``space``: (segment id, score)."""
    out = []
    with psycopg.connect(_plain(url)) as conn:
        for q in queries:
            rows = conn.execute(
                "SELECT segment_id, score FROM ranger.search_vector((SELECT id FROM spaces "
                "WHERE name = %s), %s::vector, %s, p_strategy => 'exact')",
                (space, json.dumps([float(x) for x in q]), K),
            ).fetchall()
            out.append([(int(i), float(s)) for i, s in rows])
    return out


def same_top(ours: list[tuple[object, float]], theirs: list[tuple[object, float]]) -> bool:
    """The same K neighbours, but where the K-th place is a tie: a neighbour only one side has
    must score within 1e-3 of that side's K-th (hoplite keeps vectors as float16 and ranks by
    their dot product, soundscape by the cosine of the same float16 values: scores differ by
    ~1e-5, and windows of identical audio tie exactly)."""
    a, b = {k for k, _ in ours}, {k for k, _ in theirs}
    if len(a) != len(ours) or len(b) != len(theirs):
        return False
    if a == b:
        return True
    floor_a, floor_b = min(s for _, s in ours), min(s for _, s in theirs)
    return all(abs(s - floor_b) < 1e-3 for k, s in theirs if k not in a) and all(
        abs(s - floor_a) < 1e-3 for k, s in ours if k not in b
    )


@pytest.fixture(scope="module")
def reserve(reserve_url: str) -> dict:
    """The reserve's BirdNET windows (real audio, soundscape's own BirdNET 2.4 vectors)."""
    with psycopg.connect(_plain(reserve_url)) as conn:
        rows = conn.execute(
            "SELECT g.id, s.name, s.latitude, s.longitude, r.path, r.started_at, g.start_s, "
            "g.end_s, g.embedding::text FROM segments g JOIN recordings r ON r.id = "
            "g.recording_id JOIN sensors s ON s.id = r.sensor_id WHERE g.space_id = "
            "(SELECT id FROM spaces WHERE name = 'birdnet') ORDER BY r.id, g.start_s"
        ).fetchall()
    return {
        "ids": [r[0] for r in rows],
        "rows": rows,
        "vectors": np.stack([_vector(r[8]) for r in rows]),
    }


@pytest.fixture(scope="module")
def hoplite_db(
    hoplite_ready: None, reserve: dict, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """A hoplite database made by perch-hoplite's API from the reserve's BirdNET windows:
    a deployment per sensor (north-1 with a place), a recording per file (the last without a
    date), its windows and vectors, three annotations, BirdNET 2.4's model_config."""
    folder = tmp_path_factory.mktemp("hoplite")
    recs: dict[str, dict] = {}
    for row_no, (_, sensor, _lat, _lon, path, started, start, end, _) in enumerate(reserve["rows"]):
        name = f"{sensor}/{Path(path).name}"
        rec = recs.setdefault(
            name,
            {"filename": name, "deployment": sensor, "datetime": started.isoformat(),
             "rows": [], "offsets": []},
        )  # fmt: skip
        rec["rows"].append(row_no)
        rec["offsets"].append([float(start), float(end)])
    recordings = list(recs.values())
    recordings[-1]["datetime"] = None
    recordings[0]["annotations"] = [
        {"offsets": [50.0, 53.0], "label": "dog", "label_type": 1, "provenance": "ana"},
        {"offsets": [20.0, 23.0], "label": "dog", "label_type": 0, "provenance": "ana"},
        {"offsets": [21.5, 24.0], "label": "siren", "label_type": 2, "provenance": "model:x"},
    ]
    spec = {
        "deployments": [
            {"name": "north-1", "project": "Marsh", "latitude": 52.5, "longitude": 13.4},
            {"name": "south-1", "project": "Forest"},
        ],
        "recordings": recordings,
        # hoplite's BirdNET V2.4 preset (zoo/model_configs.py), with the reserve's 2 s hop
        "model_config": {
            "model_key": "birdnet",
            "embedding_dim": 1024,
            "model_config": {
                "window_size_s": 3.0,
                "hop_size_s": 2.0,
                "sample_rate": 48000,
                "model_path": "gs://chirp-public-bucket/models/birdnet/V2.4/"
                "BirdNET_GLOBAL_6K_V2.4_Model_FP16.tflite",
                "class_list_name": "birdnet_v2_4",
            },
        },
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    np.save(folder / "vectors.npy", reserve["vectors"])
    built = peer("build", folder / "db", folder / "spec.json", folder / "vectors.npy")
    # the vector rows: every len/20-th window, as queries
    picks = np.linspace(0, len(reserve["vectors"]) - 1, N_QUERIES).astype(int)
    np.save(folder / "queries.npy", reserve["vectors"][picks])
    found = peer("search", folder / "db", folder / "queries.npy", K)
    where = {}  # hoplite window id -> (file name, start)
    for rec in recordings:
        for row, (start, _) in zip(rec["rows"], rec["offsets"]):
            where[built["window_ids"][row]] = (rec["filename"], round(start, 3))
    return {"path": folder / "db", "spec": spec, "picks": picks, "found": found, "where": where}


@pytest.fixture(scope="module")
def imported(module_db_url: str, hoplite_db: dict) -> dict:
    run = Cli(module_db_url)
    (row,) = run.json("import", "hoplite", hoplite_db["path"])
    return row


@needs_hoplite
def test_import_finds_hoplites_own_neighbours(
    module_db_url: str, reserve: dict, hoplite_db: dict, imported: dict
) -> None:
    """The imported windows' top 10 for 20 queries in soundscape equal hoplite's own brute
    force top 10 on the database it made (the space and model come from its model_config)."""
    n = len(reserve["vectors"])
    assert imported == {
        "space": "birdnet", "recordings": 5, "skipped": 0, "windows": n, "annotations": 3,
        "sensors_created": "north-1, south-1",
    }  # fmt: skip
    queries = reserve["vectors"][hoplite_db["picks"]]
    ours = soundscape_top(module_db_url, "birdnet", queries)
    with psycopg.connect(_plain(module_db_url)) as conn:
        where = {
            i: (f, round(s, 3))
            for i, f, s in conn.execute(
                "SELECT g.id, r.metadata->'hoplite'->>'filename', g.start_s FROM segments g "
                "JOIN recordings r ON r.id = g.recording_id"
            )
        }
    theirs = hoplite_db["found"]["exact"]
    assert len(ours) == len(theirs) == N_QUERIES
    equal = 0
    for mine, hers in zip(ours, theirs):
        a = [(where[i], s) for i, s in mine]
        b = [(hoplite_db["where"][i], s) for i, s in hers]
        assert len(a) == len(b) == K
        assert same_top(a, b), (a, b)
        equal += {k for k, _ in a} == {k for k, _ in b}
    # the reserve's recordings are shifted copies of one forest recording: many windows tie
    assert equal >= N_QUERIES // 2, equal


@needs_hoplite
def test_import_keeps_places_times_and_labels(module_db_url: str, imported: dict) -> None:
    with psycopg.connect(_plain(module_db_url)) as conn:
        sensors = conn.execute(
            "SELECT name, site, latitude, longitude, timezone FROM sensors ORDER BY name"
        ).fetchall()
        notes = conn.execute(
            "SELECT label, verdict, author, source, start_s, end_s FROM annotations "
            "ORDER BY start_s"
        ).fetchall()
        starts = conn.execute(
            "SELECT r.metadata->'hoplite'->>'filename', r.started_at, "
            "min(g.starts_at) - r.started_at, r.format FROM recordings r "
            "JOIN segments g ON g.recording_id = r.id GROUP BY r.id ORDER BY r.id"
        ).fetchall()
        (view,) = conn.execute("SELECT count(*) FROM ranger.annotations").fetchone() or (0,)
    assert sensors == [
        ("north-1", "Marsh", 52.5, 13.4, "UTC"),
        ("south-1", "Forest", None, None, "UTC"),
    ]
    assert notes == [
        ("dog", "no", "ana", "hoplite", 20.0, 23.0),
        ("siren", "unsure", "model:x", "hoplite", 21.5, 24.0),
        ("dog", "yes", "ana", "hoplite", 50.0, 53.0),
    ]
    assert view == 3
    assert [s[0].split("/")[0] for s in starts] == ["north-1", "north-1", "north-1", "north-1",
                                                    "south-1"]  # fmt: skip
    for _, started, first, fmt in starts:
        assert started is not None and first.total_seconds() == 0 and fmt == "hoplite"
    # no datetime in hoplite: the start its AudioMoth file name gives
    assert starts[-1][1].isoformat() == "2024-05-01T10:00:00+00:00"


@needs_hoplite
def test_import_again_adds_nothing(module_db_url: str, hoplite_db: dict, imported: dict) -> None:
    run = Cli(module_db_url)
    (again,) = run.json("import", "hoplite", hoplite_db["path"])
    assert (again["recordings"], again["skipped"], again["windows"], again["annotations"]) == (
        0, 5, 0, 0,
    )  # fmt: skip
    with psycopg.connect(_plain(module_db_url)) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM recordings), (SELECT count(*) FROM segments), "
            "(SELECT count(*) FROM annotations), (SELECT count(*) FROM sensors)"
        ).fetchone()
    assert counts == (5, imported["windows"], 3, 2)


@needs_hoplite
def test_interrupted_import_resumes(db_url: str, hoplite_db: dict, reserve: dict) -> None:
    """An import stopped after two recordings keeps them; the next one adds the rest (with
    --defer-index: the space's HNSW index is dropped meanwhile and built at the end)."""
    from soundscape import hoplite
    from soundscape.db import make_engine

    class Stop(Exception):
        pass

    def stop_after_two(s: hoplite.ImportSummary) -> None:
        if s.recordings == 2:
            raise Stop

    def hnsw() -> list[str]:
        with psycopg.connect(_plain(db_url)) as conn:
            return [
                r[0]
                for r in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%hnsw%' "
                    "AND tablename LIKE 'segments_space_%'"
                )
            ]

    engine = make_engine(db_url)
    try:
        with pytest.raises(Stop):
            hoplite.import_hoplite(
                engine, hoplite_db["path"], defer_index=True, on_recording=stop_after_two
            )
        assert hnsw() == []  # dropped for the import, until one finishes
        rest = hoplite.import_hoplite(engine, hoplite_db["path"], defer_index=True)
    finally:
        engine.dispose()
    assert (rest.recordings, rest.skipped) == (3, 2)
    (index,) = hnsw()  # built again at the end
    with psycopg.connect(_plain(db_url)) as conn:
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (recording_id, start_s)) FROM segments"
        ).fetchone()
        conn.execute("SET enable_seqscan = off")  # 180 rows: the planner would scan
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT id FROM " + index.removesuffix("_hnsw") + " ORDER BY "
                "embedding::halfvec(1024) <=> (SELECT embedding::halfvec(1024) FROM segments "
                "LIMIT 1) LIMIT 10"
            )
        )
    assert n == distinct == len(reserve["vectors"])
    assert index in plan  # the rebuilt index serves nearest-neighbour queries


@needs_hoplite
def test_import_birdnet_analyzer_database(
    db_url: str, reserve: dict, hoplite_db: dict, tmp_path: Path
) -> None:
    """A database as BirdNET-Analyzer's embeddings command writes it (perch-hoplite 0.1.3:
    sources, embeddings with float32 [start, end], labels of windows, its settings): imported
    on one sensor with no --model, starts from the AudioMoth file names, and the neighbours of
    hoplite's own brute force on the same vectors."""
    spec = {"recordings": []}
    for rec in hoplite_db["spec"]["recordings"]:
        path = f"/data/audiomoth/{rec['filename']}"  # BirdNET-Analyzer stores the full path
        notes = [a for a in rec.get("annotations", []) if a["label_type"] in (0, 1)]
        spec["recordings"].append({**rec, "filename": path, "annotations": notes})
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    np.save(tmp_path / "vectors.npy", reserve["vectors"])
    built = peer("build-legacy", tmp_path / "db", tmp_path / "spec.json", tmp_path / "vectors.npy")
    assert len(built["window_ids"]) == len(reserve["vectors"])
    run = Cli(db_url)
    run("sensors", "add", "moth-7", "--timezone", "Europe/Berlin")
    (row,) = run.json("import", "hoplite", tmp_path / "db", "-s", "moth-7")
    n = len(reserve["vectors"])
    assert row == {
        "space": "birdnet", "recordings": 5, "skipped": 0, "windows": n, "annotations": 2,
        "sensors_created": "",
    }  # fmt: skip
    with psycopg.connect(_plain(db_url)) as conn:
        recs = conn.execute(
            "SELECT r.path, r.started_at AT TIME ZONE 'UTC', s.name FROM recordings r "
            "JOIN sensors s ON s.id = r.sensor_id ORDER BY r.id"
        ).fetchall()
        notes = conn.execute(
            "SELECT label, verdict, author, start_s, end_s FROM annotations ORDER BY start_s"
        ).fetchall()
        where = {
            i: (f.removeprefix("/data/audiomoth/"), round(s, 3))
            for i, f, s in conn.execute(
                "SELECT g.id, r.path, g.start_s FROM segments g "
                "JOIN recordings r ON r.id = g.recording_id"
            )
        }
    starts = {p: str(t) for p, t, _ in recs}
    assert starts["/data/audiomoth/north-1/20240501_003000.WAV"] == "2024-05-01 00:30:00"
    assert starts["/data/audiomoth/south-1/20240501_100000.WAV"] == "2024-05-01 10:00:00"
    assert len(starts) == 5 and {r[2] for r in recs} == {"moth-7"}
    assert notes == [("dog", "no", "ana", 20.0, 23.0), ("dog", "yes", "ana", 50.0, 53.0)]
    queries = reserve["vectors"][hoplite_db["picks"]]
    for mine, hers in zip(soundscape_top(db_url, "birdnet", queries), hoplite_db["found"]["exact"]):
        a = [(where[i], s) for i, s in mine]
        b = [(hoplite_db["where"][i], s) for i, s in hers]
        assert same_top(a, b), (a, b)


@needs_hoplite
def test_import_refuses_what_it_cannot_read(db_url: str, hoplite_db: dict, tmp_path: Path) -> None:
    run = Cli(db_url)
    r = run("import", "hoplite", tmp_path, code=1)
    assert "not a hoplite database" in r.stderr
    r = run("import", "hoplite", hoplite_db["path"], "--model", "spectral", code=1)
    assert "--model" in r.stderr
    r = run("import", "hoplite", hoplite_db["path"], "-s", "nowhere=north-1", code=1)
    assert "no deployment named nowhere" in r.stderr


@needs_hoplite
def test_export_opens_and_searches_in_hoplite(
    hoplite_ready: None, reserve_url: str, reserve: dict, tmp_path: Path
) -> None:
    """The reserve's BirdNET space, exported, opens in perch-hoplite: its brute force top 10
    equals soundscape's for 20 queries (window id = segment id), its HNSW search finds them,
    and deployments, annotations and metadata are there."""
    with psycopg.connect(_plain(reserve_url)) as conn:
        conn.execute(
            "INSERT INTO annotations (recording_id, start_s, end_s, label, verdict, author) "
            "SELECT id, 10, 13, 'siren', 'yes', 'ana' FROM recordings ORDER BY id LIMIT 1"
        )
    run = Cli(reserve_url)
    r = run("export", "hoplite", "birdnet", tmp_path / "none", "-s", "nowhere", code=1)
    assert "no sensor named nowhere" in r.stderr
    (row,) = run.json("export", "hoplite", "birdnet", tmp_path / "out")
    n = len(reserve["vectors"])
    assert (row["windows"], row["recordings"], row["deployments"], row["annotations"]) == (
        n, 5, 2, 1,
    )  # fmt: skip
    picks = np.linspace(0, n - 1, N_QUERIES).astype(int)
    queries = reserve["vectors"][picks]
    np.save(tmp_path / "q.npy", queries)
    found = peer("search", tmp_path / "out", tmp_path / "q.npy", K)
    assert found["count_embeddings"] == found["windows"] == n
    assert found["deployments"] == ["north-1", "south-1"]
    assert found["annotations"] == [["siren", 1, "ana"]]
    assert {"usearch_config", "model_config", "soundscape_export"} <= set(found["metadata"])
    assert found["extra_columns"]["windows"] == ["local_time", "starts_at"]
    ours = soundscape_top(reserve_url, "birdnet", queries)
    hits = 0
    for mine, exact, approx in zip(ours, found["exact"], found["approx"]):
        assert same_top(mine, [(i, s) for i, s in exact]), (mine, exact)
        hits += len({i for i, _ in mine} & {i for i, _ in approx})
    assert hits / (K * N_QUERIES) >= 0.9  # hoplite's HNSW search finds soundscape's top 10


def test_export_refuses_a_used_folder_and_unknown_names(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    r = Cli(db_url)("export", "hoplite", "birdnet", tmp_path, code=1)
    assert "not an empty folder" in r.stderr
    r = Cli(db_url)("export", "hoplite", "birdnet", tmp_path / "new", code=1)
    assert "no space named 'birdnet'" in r.stderr
    assert not (tmp_path / "new").exists()


def test_annotation_source_migration(db_url: str) -> None:
    """0033 allows source 'hoplite'; its downgrade keeps such annotations as 'import' ones
    (with a note) and the check refuses 'hoplite' again; upgrading allows it again."""
    import sqlalchemy as sa
    from alembic import command

    from soundscape.db import alembic_config, make_engine, upgrade

    insert = (
        "INSERT INTO annotations (recording_id, start_s, end_s, label, source) "
        "VALUES ((SELECT id FROM recordings), 0, 1, 'dog', :src)"
    )
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO sensors (name) VALUES ('s')"))
            conn.execute(
                sa.text(
                    "INSERT INTO recordings (sensor_id, path, sha256, size_bytes, format, "
                    "sample_rate, channels, duration_s) SELECT id, 'x', repeat('a', 64), 0, "
                    "'hoplite', 48000, 1, 10 FROM sensors"
                )
            )
            conn.execute(sa.text(insert), {"src": "hoplite"})
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0032")
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT source, note FROM annotations")).one()
            assert row == ("import", "(imported from a hoplite database)")
            with pytest.raises(sa.exc.IntegrityError):
                conn.execute(sa.text(insert), {"src": "hoplite"})
        upgrade(engine, "head")
        with engine.begin() as conn:
            conn.execute(sa.text(insert), {"src": "hoplite"})
            with pytest.raises(sa.exc.IntegrityError):
                conn.execute(sa.text(insert), {"src": "elsewhere"})
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
