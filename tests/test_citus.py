"""soundscape on a real Citus cluster: a coordinator and two workers (PostgreSQL 15, built by
../shared/vendor/citus/build.sh), started on free ports in a temporary folder.

The same reserve of real audio (tests/reserve.py) is ingested into the single-node test
database (PostgreSQL 18) and, through the coordinator, into the cluster; every ranger question
must get the same answer on both: identical with the exact strategy (up to the last bits of
float32 sums: see `_assert_same`), recall@10 >= 0.95 against exact with HNSW. A worker stopped mid-query is a clear error, and the next query after it is
back succeeds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa

from soundscape import cluster

from . import reserve
from .conftest import SHARED_AUDIO, server_dir
from .reserve import EXAMPLES

MISSING = cluster.citus_missing()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        MISSING is not None,
        reason=f"{MISSING}: run ../shared/vendor/citus/build.sh (as root) to test on Citus",
    ),
]

SIREN = EXAMPLES / "firetruck.ogg"
#: real clips of the shared collection, queued and ingested by a worker on the cluster
QUEUED = [
    "clips/vehicles/emergency/firetruck.ogg",
    "clips/household/tools/saw.ogg",
    "clips/animals/mammals/dogs/dog.ogg",
]


@pytest.fixture(scope="module")
def citus():
    """A coordinator and two workers on free ports (never 9700: a developer's cluster)."""
    base = Path(tempfile.mkdtemp(prefix="soundscape-citus-", dir=server_dir()))
    base.chmod(0o711)
    c = cluster.LocalCluster(base / "cluster", workers=2, port=cluster.free_port_range(3))
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)


def _cli(url: str, *args: str):
    from click.testing import CliRunner

    from soundscape.cli import cli

    return CliRunner().invoke(
        cli, [str(a) for a in args], env={"SOUNDSCAPE_DATABASE_URL": url}, catch_exceptions=False
    )


def _fill(url: str, folder: Path) -> None:
    for name, (site, quadrant, tz) in reserve.SENSORS.items():
        r = _cli(
            url, "sensors", "add", name, "--site", site, "--quadrant", quadrant, "--timezone", tz
        )
        assert r.exit_code == 0, r.output
        r = _cli(url, "ingest", str(folder / name), "-s", name, "-m", "birdnet,spectral", "-q")
        assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def dbs(citus, reserve_url, reserve_folder):
    """(single-node URL, cluster URL): the reserve ingested into both the same way (the
    single node's is this module's copy of conftest's ``reserve_template``, filled by the same
    commands as ``_fill``; the cluster is another server, so it is filled here)."""
    url = citus.url()
    up = _cli(url, "db", "upgrade")
    assert up.exit_code == 0, up.output
    assert "segments: distributed by hash of id" in up.stderr, up.stderr
    _fill(url, reserve_folder)
    return reserve_url, url


def _rows(url: str, sql: str, **params) -> list[tuple]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


#: The two servers run different builds of pgvector (the embedded wheel's, and the one
#: build.sh compiles into PostgreSQL 15): on some CPUs their float32 sums differ in the last
#: bits (0.82346 against 0.82347 rounded), so scores are compared to this tolerance and
#: windows whose scores tie within it may swap places.
TOL = 1e-5


def _close(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    numbers = (float, Decimal)
    if isinstance(a, numbers) or isinstance(b, numbers):
        try:
            return math.isclose(float(a), float(b), rel_tol=TOL, abs_tol=TOL)
        except (TypeError, ValueError):
            return False
    return a == b


def _assert_same(got: list, want: list, score: str | int = "score", what: object = "") -> None:
    """The same rows in the same order, but for floats within TOL and near-ties (scores within
    TOL) in either order: the same score at every rank, and the same rows but for those that
    tie with the last one (which of them makes the cut is the last bits' choice)."""
    assert len(got) == len(want), (what, got, want)
    if all(_close(g, w) for g, w in zip(got, want)):
        return

    def unranked(row):  # a rank follows the order, which the scores check below
        return {k: v for k, v in row.items() if k != "rank"} if isinstance(row, dict) else row

    left = [unranked(g) for g in got]
    for w in map(unranked, want):
        match = next((i for i, g in enumerate(left) if _close(g, w)), None)
        if match is None:
            assert _close(w[score], want[-1][score]), (what, "missing on the cluster", w)
        else:
            left.pop(match)
    assert all(_close(g[score], want[-1][score]) for g in left), (what, "only on the cluster", left)
    for rank, (g, w) in enumerate(zip(got, want)):
        assert _close(g[score], w[score]), (what, "order differs at", rank, g, w)


def _view(url: str, sql: str) -> list[dict]:
    """Rows as dicts without ids (from sequences) and timestamps (from the clock)."""
    skip = {
        "segment_id",
        "recording_id",
        "run",
        "run_id",
        "created_at",
        "refreshed_at",
        "ingested_at",
        "error_id",
        "occurred_at",
        "detected_at",
    }
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return [
                {k: v for k, v in r._mapping.items() if k not in skip}
                for r in conn.execute(sa.text(sql))
            ]
    finally:
        engine.dispose()


def test_layout_shards_and_worker_settings(dbs, citus):
    _, url = dbs
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        where = {p.table: p for p in cluster.layout(conn)}
        n_workers = len(cluster.workers(conn))
    engine.dispose()
    assert n_workers == 2
    assert (where["segments"].kind, where["segments"].column) == ("distributed", "id")
    for table in ("segment_scores", "detections", "classifier_detections", "anomaly_scores"):
        assert (where[table].kind, where[table].column) == ("distributed", "segment_id"), table
    for table in ("sensors", "recordings", "spaces", "space_labels", "concepts"):
        assert where[table].kind == "reference", table
    # annotations (its reviewer trigger) stays on the coordinator, as a Citus local table
    for table in ("jobs", "ingest_errors", "alembic_version", "annotations"):
        assert where[table].kind == "local", table
    # every shard of every space's partition has its HNSW index, on the workers
    shards = _rows(
        url,
        "SELECT count(*) FROM citus_shards WHERE table_name::text LIKE 'segments_space_%'",
    )[0][0]
    spaces = _rows(url, "SELECT count(*) FROM spaces")[0][0]
    assert spaces == 2 and shards == spaces * n_workers
    hnsw = 0
    for node in (1, 2):
        with psycopg.connect(citus.url(node)) as conn:
            hnsw += conn.execute(
                "SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'segments_space_%' "
                "AND indexdef LIKE '%USING hnsw%'"
            ).fetchone()[0]
            assert conn.execute("SHOW hnsw.iterative_scan").fetchone()[0] == "relaxed_order"
    assert hnsw == shards
    # a second upgrade changes nothing
    again = _cli(url, "db", "upgrade")
    assert again.exit_code == 0 and "distributed" not in again.stderr, again.stderr


def _vectors(url: str, space: str, n: int) -> list[str]:
    """Query vectors: n windows of the reserve spread over its recordings (text form)."""
    return [
        r[0]
        for r in _rows(
            url,
            "SELECT g.embedding::text FROM segments g JOIN spaces sp ON sp.id = g.space_id "
            "WHERE sp.name = :s ORDER BY hashint8(g.id) LIMIT :n",
            s=space,
            n=n,
        )
    ]


#: filters of ranger.search_vector (named arguments), as the search tests use them
FILTERS = {
    "none": "",
    "quadrant": ", p_quadrants => ARRAY['N']",
    "site": ", p_sites => ARRAY['Forest']",
    "sensors": ", p_sensors => ARRAY['north-1', 'south-1']",
    "time": ", p_time_from => '02:00', p_time_to => '03:00'",
    "midnight": ", p_time_from => '23:00', p_time_to => '01:00'",
    "dates": ", p_date_from => '2024-05-01', p_date_to => '2024-05-02'",
    "instants": ", p_at_from => '2024-05-01T11:00:00+02:00', p_at_to => '2024-05-01T13:00+02'",
    "min_score": ", p_min_score => 0.8",
}


def _search(url: str, space: str, vec: str, where: str, strategy: str, k: int = 10):
    return _rows(
        url,
        "SELECT regexp_replace(path, '^.*/', ''), start_s, score, sensor, "
        f"local_date, local_time, method FROM ranger.search_vector((SELECT id FROM spaces "
        f"WHERE name = :s), CAST(:v AS vector), {k}{where}, p_strategy => :m)",
        s=space,
        v=vec,
        m=strategy,
    )


@pytest.mark.parametrize("space", ["birdnet", "spectral"])
def test_exact_search_is_identical(dbs, space):
    single, citus_url = dbs
    for name, where in FILTERS.items():
        for vec in _vectors(single, space, 8):
            one = _search(single, space, vec, where, "exact")
            got = _search(citus_url, space, vec, where, "exact")
            _assert_same(got, one, 2, (space, name))


@pytest.mark.parametrize("space", ["birdnet", "spectral"])
def test_hnsw_recall_against_exact(dbs, space):
    _, citus_url = dbs
    recalls = []
    for name, where in FILTERS.items():
        for vec in _vectors(citus_url, space, 5):
            truth = {r[:2] for r in _search(citus_url, space, vec, where, "exact")}
            hnsw = {r[:2] for r in _search(citus_url, space, vec, where, "hnsw")}
            if truth:
                recalls.append(len(hnsw & truth) / len(truth))
            else:
                assert hnsw == set(), name
    assert np.mean(recalls) >= 0.95, np.mean(recalls)


def test_auto_uses_the_index_past_the_exact_limit(dbs):
    """With more windows passing than the exact-scan limit, auto searches the index on both:
    a coordinator has no row estimate (its own tables hold no rows), so it must count first
    (the capped scan) rather than take the exact path that a small estimate chooses on one
    server; the 1M benchmark once caught it scanning 500,000 windows exactly."""
    single, citus_url = dbs
    vec = _vectors(single, "birdnet", 1)[0]
    for url in dbs:
        methods = _rows(
            url,
            "SELECT DISTINCT method FROM ranger.search_vector((SELECT id FROM spaces WHERE "
            "name = 'birdnet'), CAST(:v AS vector), 5, p_exact_limit => 8)",
            v=vec,
        )
        assert methods == [("hnsw",)], url


@pytest.mark.parametrize("kind", ["pca", "bit"])
def test_a_compact_index_on_the_cluster(dbs, citus, kind):
    """`spaces index --type pca|bit` on the coordinator: the space's function reaches the
    workers (each shard's index is built on it), and the index's candidates, re-ranked in
    float32, find the exact answers (recall@10 >= 0.95) with float32 scores."""
    _, citus_url = dbs
    try:
        r = _cli(citus_url, "spaces", "index", "birdnet", "--type", kind)
        assert r.exit_code == 0, r.output
        fn = f"_{kind}" if kind == "pca" else "_bits"
        on_workers = _rows(
            citus_url,
            "SELECT result FROM run_command_on_workers($$SELECT count(*) FROM pg_proc p "
            "JOIN pg_class c ON c.relname = 'segments_space_' || "
            "(SELECT id FROM spaces WHERE name = 'birdnet') "
            f"WHERE p.proname = c.relname || '{fn}'$$)",
        )
        assert on_workers == [("1",), ("1",)], on_workers
        recalls = []
        for name, where in FILTERS.items():
            for vec in _vectors(citus_url, "birdnet", 4):
                exact = _search(citus_url, "birdnet", vec, where, "exact")
                hnsw = _search(citus_url, "birdnet", vec, where, "hnsw")
                assert {row[-1] for row in hnsw} <= {"hnsw"}, name
                truth = {row[:2]: row[2] for row in exact}
                for row in hnsw:
                    if row[:2] in truth:
                        assert _close(row[2], truth[row[:2]]), (name, row)
                if truth:
                    recalls.append(len({row[:2] for row in hnsw} & set(truth)) / len(truth))
        assert np.mean(recalls) >= 0.95, np.mean(recalls)
    finally:
        r = _cli(citus_url, "spaces", "index", "birdnet", "--type", "halfvec")
        assert r.exit_code == 0, r.output


def _cli_json(url: str, *args: str) -> list[dict]:
    r = _cli(url, *args, "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    for row in rows:  # ids come from sequences, timestamps from the clock; the rest must match
        for key in [k for k in row if k in ("segment_id", "recording_id", "run", "run_id")]:
            row.pop(key)
        for key in [k for k in row if k in ("created_at", "refreshed_at", "ingested_at")]:
            row.pop(key)
    return rows


SEARCHES = [
    ("siren", "--events"),
    ("siren", "-n", "20"),
    ("siren", "--events", "--quadrant", "N"),
    ("siren", "--events", "--site", "Forest"),
    ("siren", "--events", "--time", "23:00-01:00", "--to", "2024-05-31"),
    ("siren", "--events", "--from", "2024-05-01T11:00:00+02:00", "--to", "2024-05-01T13:00+02:00"),
    ("birdsong", "-n", "5"),
    ("--audio", str(SIREN), "--events", "-n", "6"),
    ("--audio", str(SIREN), "--space", "spectral", "--quadrant", "S", "-n", "3"),
    ("--audio", str(SIREN), "--time", "02:00-03:00", "--strategy", "exact"),
    # one sentence (issue 29): its time and quadrant, and night as clock time (no positions)
    ("siren at 2 am in the north quadrant",),
    ("a siren at night",),
]


def _id(args) -> str:
    values = args.values[0] if hasattr(args, "values") else args
    return " ".join(Path(v).name for v in values)[:50]


@pytest.mark.parametrize("args", SEARCHES, ids=[_id(a) for a in SEARCHES])
def test_cli_searches_answer_the_same(dbs, args):
    single, citus_url = dbs
    one = _cli_json(single, "search", *args)
    assert one
    _assert_same(_cli_json(citus_url, "search", *args), one)


def test_concepts_classify_anomalies_and_views(dbs):
    single, citus_url = dbs
    for url in dbs:
        for args in (
            ("concepts", "add", "siren", "--text", "siren"),
            ("concepts", "add", "siren-like", "--audio", str(SIREN), "--threshold", "0.7"),
        ):
            r = _cli(url, *args)
            assert r.exit_code == 0, r.output
    for args in (
        ("search", "--concept", "siren", "--events"),
        ("search", "--concept", "siren-like"),
        ("concepts", "list"),
        ("classify", "--labels", "siren, dark-eyed junco, dog", "--space", "birdnet", "-n", "0"),
        ("classify", "--labels", "siren, dog", "--space", "birdnet", "--per", "recording"),
        ("anomalies", "-s", "north-1", "--from", "2024-05-01", "--baseline-to", "2024-04-30"),
        ("labels", "top", "--all-species"),
        ("recordings", "list"),
    ):
        one = _cli_json(single, *args)
        assert one, args
        _assert_same(_cli_json(citus_url, *args), one, what=args)
    for view, order in (
        ("ranger.windows", "path, start_s, space"),
        ("ranger.window_labels", "path, start_s"),
        ("ranger.anomalies", "rank"),
        ("ranger.sensors", "sensor"),
        ("ranger.concepts", "name"),
        ("ranger.ingest_errors", "path"),
    ):
        sql = f"SELECT * FROM {view} ORDER BY {order}"
        _assert_same(_view(citus_url, sql), _view(single, sql), what=view)
    _same_detection_views(single, citus_url)


#: the views of detections (concepts' and classifiers'), each in a total order
DETECTION_VIEWS = (
    ("ranger.detections", "source, concept, label, path, start_s"),
    ("ranger.activity_by_hour", "source, concept, label, site, day, hour"),
    ("ranger.species_daily", "source, detector, label, sensor, local_date"),
    ("ranger.species_daily_all", "source, detector, label, sensor, local_date"),
    ("ranger.classifiers", "name, version, label"),
    ("ranger.classifier_detections", "classifier, version, label, path, start_s"),
)


def _same_detection_views(single: str, citus_url: str) -> None:
    for view, order in DETECTION_VIEWS:
        sql = f"SELECT * FROM {view} ORDER BY {order}"
        _assert_same(_view(citus_url, sql), _view(single, sql), what=view)
    # the same column types (the views were rewritten for Citus)
    types = (
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'ranger' ORDER BY table_name, ordinal_position"
    )
    assert _rows(citus_url, types) == _rows(single, types)


#: annotations of the reserve (recording file, start, end, label, verdict): two sirens, a dog
ANNOTATIONS = [
    ("20240501_003000.WAV", 20.0, 26.0, "siren", "yes"),
    ("20240501_100000.WAV", 10.0, 16.0, "siren", "yes"),
    ("20240501_003000.WAV", 50.0, 53.0, "dog", "yes"),
    ("20240501_215930.WAV", 0.0, 10.0, "siren", "no"),
]


def test_classifier_train_classify_and_views(dbs):
    """A classifier trained from a few annotations, its detections stored by `classify
    --classifier` (twice: the second run updates the stored rows), and the views that read
    them: the same on the cluster as on one server."""
    single, citus_url = dbs
    for url in dbs:
        ids = dict(_rows(url, "SELECT regexp_replace(path, '^.*/', ''), id FROM recordings"))
        for name, start, end, label, verdict in ANNOTATIONS:
            r = _cli(
                url, "annotate", "add", "--recording", ids[name], "--start", start,
                "--end", end, "--label", label, "--verdict", verdict, "--author", "t",
            )  # fmt: skip
            assert r.exit_code == 0, r.output
    for args in (
        ("train", "sirens", "--space", "birdnet"),
        ("classify", "--classifier", "sirens", "-n", "0"),
        ("classify", "--classifier", "sirens", "-n", "0"),  # again: stored rows are updated
        ("search", "--classifier", "sirens", "--label", "siren", "-n", "5"),
    ):
        one = _cli_json(single, *args)
        assert one, args
        _assert_same(_cli_json(citus_url, *args), one, what=args)
    detected = _rows(
        citus_url, "SELECT count(*) FROM ranger.detections WHERE source = 'classifier'"
    )
    assert detected[0][0] > 0
    _same_detection_views(single, citus_url)


def test_review_leaves_out_annotated_windows(dbs, tmp_path):
    """Review batches of the classifier of the test above: windows that overlap no annotation
    of the label (annotations is a table of the coordinator on Citus), the same on both."""
    single, citus_url = dbs
    ranked = (
        "SELECT regexp_replace(path, '^.*/', ''), start_s, end_s, score "
        "FROM ranger.search_classifier('sirens', 'siren', 50, p_order => :o, "
        "p_unlabelled => :u) ORDER BY 4 DESC, 1, 2"
    )

    def annotated(rows):  # windows overlapping the first siren annotation
        return [w for w in rows if w[0] == "20240501_003000.WAV" and w[1] < 26 and w[2] > 20]

    for order in ("top", "margin"):
        assert annotated(_rows(single, ranked, o=order, u=False)), order
        one = _rows(single, ranked, o=order, u=True)
        assert one and not annotated(one), order
        _assert_same(_rows(citus_url, ranked, o=order, u=True), one, 3, order)
    # the random strategy's own query (soundscape.classifiers.pick_for_review), end to end
    batch = {}
    for url in dbs:
        out = tmp_path / ("citus" if url == citus_url else "single")
        r = _cli(url, "review", "--classifier", "sirens", "--label", "siren",
                 "--strategy", "random", "-n", "3", "--out", out)  # fmt: skip
        assert r.exit_code == 0, r.output
        rows = [line.split("\t")[7:10] for line in (out / "review.txt").open()][1:]
        batch[url] = [(Path(p).name, float(s), lab) for p, s, lab in rows]
    assert len(batch[single]) == 3
    _assert_same(batch[citus_url], batch[single], 1)


# before test_jobs_queue_on_the_coordinator, which ingests more audio into the cluster only
def test_per_window_index_searches(dbs):
    """Anomalies and duplicates with the HNSW strategy (one index scan per window, which Citus
    cannot push down as one statement; the coordinator runs one per window): the same answers
    as one server's exact scans (the reserve is small enough for HNSW to find every
    neighbour)."""
    single, citus_url = dbs
    for args in (
        ("anomalies", "-s", "north-1", "--from", "2024-05-01", "--baseline-to", "2024-04-30"),
        ("duplicates", "--audio", str(SIREN), "--space", "spectral"),
    ):
        one = _cli_json(single, *args, "--strategy", "exact")
        assert one, args
        both = _cli_json(citus_url, *args, "--strategy", "hnsw")
        assert {r.pop("method", "hnsw") for r in both} == {"hnsw"}, args
        _assert_same(both, [{k: v for k, v in r.items() if k != "method"} for r in one], what=args)
    # every pair of recordings sharing audio, at the same offset (the windows counted and the
    # scores may differ: the reserve repeats audio, and which of several equally near windows
    # are a window's k nearest is the index's choice)
    args = ("duplicates", "--all", "--space", "spectral", "--min-score", "0.95")
    one = _cli_json(single, *args, "--strategy", "exact")
    both = _cli_json(citus_url, *args, "--strategy", "hnsw")
    assert one

    def pairs(rows: list[dict]) -> set[tuple]:
        return {(Path(r["query_path"]).name, Path(r["path"]).name, r["offset_s"]) for r in rows}

    assert pairs(both) == pairs(one)


def test_jobs_queue_on_the_coordinator(dbs):
    """The queue is a local table of the coordinator: SKIP LOCKED claims work as on one server."""
    _, url = dbs
    files = [SHARED_AUDIO / p for p in QUEUED]
    r = _cli(url, "enqueue", *map(str, files), "-s", "south-1", "-m", "spectral")
    assert r.exit_code == 0, r.output
    r = _cli(url, "worker", "--once")
    assert r.exit_code == 0, r.output
    done = _rows(url, "SELECT status, count(*) FROM jobs GROUP BY status")
    assert done == [("done", len(files))]
    found = _cli_json(url, "search", "--audio", str(files[0]), "--space", "spectral", "-n", "1")
    assert found[0]["path"].endswith("firetruck.ogg")  # the clip itself ranks first


def _subprocess_search(url: str) -> subprocess.Popen:
    env = {**os.environ, "SOUNDSCAPE_DATABASE_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "soundscape", "search", "siren", "--events", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_worker_stopped_mid_query(dbs, citus):
    _, url = dbs
    before = _cli_json(url, "search", "siren", "--events")
    node = 2
    port = citus.port + node
    shard = _rows(
        url,
        "SELECT shard_name FROM citus_shards WHERE table_name::text = 'segment_scores' "
        "AND nodeport = :p LIMIT 1",
        p=port,
    )[0][0]
    # hold a lock on one of the worker's shards, so the search waits there, mid-query
    locker = psycopg.connect(citus.url(node))
    locker.execute("SET citus.enable_manual_changes_to_shards = on")
    locker.execute(f"LOCK TABLE {shard} IN ACCESS EXCLUSIVE MODE")
    proc = _subprocess_search(url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with psycopg.connect(citus.url(node), autocommit=True) as conn:
                waiting = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ).fetchone()[0]
            if waiting:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("the search never reached the locked shard")
        citus.stop_node(node)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        locker.close()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert f"the Citus cluster lost 127.0.0.1:{port}" in err, err
    assert "run the same command again" in err
    citus.start_node(node)
    assert _cli_json(url, "search", "siren", "--events") == before
