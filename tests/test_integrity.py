"""Data integrity under hostile input (issue 10, items 4-8): truncated files of every format,
files that change while they are ingested, two ingests of one file with different models, a
database that goes away mid-batch, and data errors a retry cannot fix."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
import soundfile as sf
import sqlalchemy as sa

from soundscape.errors import AudioError, ConnectionLost
from soundscape.ingest import Ingestor
from soundscape.sensors import add_sensor
from soundscape.worker import is_permanent

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "audio"
SOUNDSCAPE = EXAMPLES / "xc563936.mp3"


def _count(engine, sql: str, **params) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar())


@pytest.fixture
def sensor(engine, cli_env) -> str:
    with engine.begin() as conn:
        add_sensor(conn, "north-1", site="North Marsh", quadrant="N", timezone="Europe/Berlin")
    return "north-1"


@pytest.fixture(scope="module")
def truncated(tmp_path_factory) -> dict[str, Path]:
    """Real audio cut in half, in each format (and the same audio complete, as wav)."""
    folder = tmp_path_factory.mktemp("truncated")
    audio, rate = sf.read(EXAMPLES / "firetruck.ogg", dtype="float32", always_2d=True)
    audio = np.tile(audio.mean(axis=1), 3)[: rate * 10]  # 10 s of a real siren
    out = {}
    for ext, kwargs in (("wav", {}), ("ogg", {}), ("flac", {})):
        full = folder / f"full.{ext}"
        sf.write(full, audio, rate, **kwargs)
        data = full.read_bytes()
        half = folder / f"half.{ext}"
        half.write_bytes(data[: len(data) // 2])
        out[ext] = half
    data = SOUNDSCAPE.read_bytes()
    (folder / "half.mp3").write_bytes(data[: len(data) // 2])
    out["mp3"] = folder / "half.mp3"
    out["complete"] = folder / "full.wav"
    return out


@pytest.mark.parametrize("fmt", ["wav", "ogg", "flac", "mp3"])
def test_truncated_file_is_a_bad_file_unless_allowed(fmt, truncated, sensor, engine, run_cli):
    path = truncated[fmt]
    bad = run_cli("ingest", path, "-s", sensor, "-m", "spectral", "-q")
    assert bad.exit_code == 1
    assert "truncated" in bad.stderr and "--allow-truncated" in bad.stderr
    assert _count(engine, "SELECT count(*) FROM recordings") == 0
    assert _count(engine, "SELECT count(*) FROM segments") == 0
    assert _count(engine, "SELECT count(*) FROM ingest_errors WHERE error LIKE '%truncated%'") == 1

    kept = run_cli("ingest", path, "-s", sensor, "-m", "spectral", "--allow-truncated", "--json")
    assert kept.exit_code == 0, kept.output
    assert "warning:" in kept.stderr
    result = json.loads(kept.stdout)["files"][0]
    assert result["status"] == "stored" and result["warning"]
    with engine.connect() as conn:
        duration, mark = conn.execute(
            sa.text("SELECT duration_s, metadata->>'truncated' FROM recordings")
        ).one()
    assert mark == result["warning"]
    full = 10.0 if fmt != "mp3" else sf.info(SOUNDSCAPE).duration
    assert 0.3 * full < duration < 0.7 * full  # about the half that was there


def test_complete_files_are_not_flagged(truncated, sensor, engine, run_cli):
    shared = sorted((EXAMPLES).glob("*.ogg")) + [SOUNDSCAPE, truncated["complete"]]
    result = run_cli("ingest", *shared, "-s", sensor, "-m", "spectral", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    files = json.loads(result.stdout)["files"]
    assert [f["warning"] for f in files] == [None] * len(shared)


@pytest.mark.slow
def test_file_that_changes_during_ingest_is_refused(sensor, engine, tmp_path):
    path = tmp_path / "growing.flac"
    audio, rate = sf.read(SOUNDSCAPE, dtype="float32")
    sf.write(path, audio, rate)
    ingestor = Ingestor(engine, sensor, ["spectral", "birdnet"])
    calls = 0

    def grow() -> None:  # a recorder still writing the file: one more second of audio
        nonlocal calls
        calls += 1
        if calls == 2:
            sf.write(path, np.concatenate([audio, audio[:rate]]), rate)

    ingestor.on_batch = grow
    result = ingestor.ingest_file(path)
    assert result.status == "failed" and "changed while it was being ingested" in result.reason
    assert _count(engine, "SELECT count(*) FROM recordings") == 0
    assert _count(engine, "SELECT count(*) FROM segments") == 0
    # Once it stops changing, it is stored whole, under the hash of what was decoded.
    ingestor.on_batch = None
    again = ingestor.ingest_file(path)
    assert again.status == "stored" and set(again.segments) == {"spectral", "birdnet"}


@pytest.mark.slow
def test_two_ingests_of_one_file_with_different_models_both_store(sensor, engine, db_url):
    """The second waits for the first to commit, then adds its own space (it used to give up
    with 'stored concurrently by another process')."""
    first = Ingestor(engine, sensor, ["birdnet"])
    second_engine = sa.create_engine(engine.url)
    second = Ingestor(second_engine, sensor, ["spectral"])
    inserted = threading.Event()

    def hold() -> None:  # keep the first transaction open a while after its INSERT
        if not inserted.is_set():
            inserted.set()
            time.sleep(1.5)

    first.on_batch = hold
    results: dict[str, object] = {}
    t = threading.Thread(target=lambda: results.setdefault("first", first.ingest_file(SOUNDSCAPE)))
    t.start()
    assert inserted.wait(60)
    results["second"] = second.ingest_file(SOUNDSCAPE)
    t.join(60)
    second_engine.dispose()
    assert results["first"].status == "stored", results["first"].reason
    assert results["second"].status == "stored", results["second"].reason
    assert _count(engine, "SELECT count(*) FROM recordings") == 1
    assert _count(engine, "SELECT count(*) FROM recording_spaces") == 2


def test_lost_connection_stops_the_batch_and_a_rerun_resumes(sensor, engine, admin_url):
    ingestor = Ingestor(engine, sensor, ["spectral"])
    dbname = engine.url.database

    def pull_the_plug() -> None:  # what `db stop` does to the ingest's connection
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [dbname],
            )

    ingestor.on_batch = pull_the_plug
    with pytest.raises(ConnectionLost, match="run the same command again"):
        ingestor.ingest_file(SOUNDSCAPE)
    ingestor.on_batch = None
    assert _count(engine, "SELECT count(*) FROM ingest_errors") == 0  # not the file's fault
    assert _count(engine, "SELECT count(*) FROM recordings") == 0
    assert ingestor.ingest_file(SOUNDSCAPE).status == "stored"


def test_extreme_samples_fail_at_once_as_a_bad_file(sensor, engine, tmp_path):
    path = tmp_path / "huge.wav"
    rng = np.random.default_rng(0)
    sf.write(path, (rng.standard_normal(48000 * 4) * 1e31).astype(np.float32), 48000, "FLOAT")
    result = Ingestor(engine, sensor, ["spectral"]).ingest_file(path)
    assert result.status == "failed" and "non-finite" in result.reason
    assert isinstance(result.exception, AudioError) and is_permanent(result.exception)
    assert _count(engine, "SELECT count(*) FROM recordings") == 0


def test_data_exceptions_are_permanent_for_the_worker(engine):
    with engine.connect() as conn, pytest.raises(sa.exc.DataError) as err:
        conn.execute(sa.text("SELECT '[NaN]'::vector"))
    assert is_permanent(err.value)
    assert is_permanent(psycopg.errors.NumericValueOutOfRange())
    assert not is_permanent(psycopg.OperationalError("server closed the connection"))
