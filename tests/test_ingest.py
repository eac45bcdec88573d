"""Ingest end to end: real audio -> decode -> windows -> BirdNET/spectral -> PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import soundfile as sf
import sqlalchemy as sa

from soundscape.audio import decode_span
from soundscape.embedders import load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "audio"
SOUNDSCAPE = EXAMPLES / "xc563936.mp3"
BERLIN = ZoneInfo("Europe/Berlin")


def expected_windows(duration: float, window: float, hop: float) -> int:
    """Window 0 always; window k>0 while k*hop < duration and the previous one ended early."""
    n = 1
    while n * hop < duration and (n - 1) * hop + window < duration:
        n += 1
    return n


def scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


@pytest.fixture
def sensor(cli_env, run_cli):
    result = run_cli(
        "sensors",
        "add",
        "north-1",
        "--site",
        "Marsh",
        "--quadrant",
        "N",
        "--lat",
        "52.5",
        "--lon",
        "13.4",
        "--timezone",
        "Europe/Berlin",
    )
    assert result.exit_code == 0, result.output
    return "north-1"


def test_real_soundscape_with_birdnet_and_spectral(sensor, engine, run_cli):
    result = run_cli(
        "ingest",
        SOUNDSCAPE,
        "--sensor",
        sensor,
        "--model",
        "birdnet,spectral",
        "--start-time",
        "2024-05-01T05:30:00+02:00",
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["summary"]["stored"] == 1 and out["summary"]["failed"] == 0

    info = sf.info(str(SOUNDSCAPE))
    duration = scalar(engine, "SELECT duration_s FROM recordings")
    assert duration == pytest.approx(info.frames / info.samplerate, abs=0.05)
    n_birdnet = expected_windows(duration, 3.0, 2.0)
    n_spectral = expected_windows(duration, 3.0, 2.0)
    assert out["files"][0]["segments"] == {"birdnet": n_birdnet, "spectral": n_spectral}
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM segments s JOIN spaces p ON p.id = s.space_id "
            "WHERE p.name = 'birdnet'",
        )
        == n_birdnet
    )

    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT g.start_s, g.end_s, g.starts_at, g.local_date, g.local_time, "
                "g.embedding::text FROM segments g JOIN spaces p ON p.id = g.space_id "
                "WHERE p.name = 'birdnet' ORDER BY g.start_s"
            )
        ).fetchall()
    assert [r.start_s for r in rows] == [2.0 * k for k in range(n_birdnet)]
    assert rows[-1].end_s == pytest.approx(duration, abs=1e-3)
    assert all(r.end_s - r.start_s == pytest.approx(3.0) for r in rows[:-1])
    start = datetime(2024, 5, 1, 3, 30, tzinfo=timezone.utc)
    for k, r in enumerate(rows):
        at = start + timedelta(seconds=2.0 * k)
        assert r.starts_at == at
        local = at.astimezone(BERLIN)
        assert (r.local_date, r.local_time) == (local.date(), local.time().replace(tzinfo=None))

    # The stored vectors are BirdNET's embeddings of exactly those windows.
    model = load_model("birdnet")
    for k in (0, 7, n_birdnet - 1):
        audio = decode_span(SOUNDSCAPE, 48000, 2.0 * k, 2.0 * k + 3.0)
        window = np.zeros(144000, np.float32)
        window[: len(audio)] = audio[:144000]
        expect = model.embed_audio(window[None])[0]
        stored = np.array(json.loads(rows[k].embedding), dtype=np.float32)
        assert np.allclose(stored, expect, atol=1e-4), k

    # Class scores were kept and a real bird species is among what BirdNET heard (the forest
    # soundscape is North American, the sensor in Berlin: --all-species keeps its birds, which
    # BirdNET's location/season filter leaves out by default).
    top = run_cli("labels", "top", "--min-score", "0.3", "--all-species", "--json").stdout
    top = top.splitlines()
    labels = [json.loads(line) for line in top]
    assert labels, "no class scores stored"
    non_birds = {
        "Dog",
        "Engine",
        "Environmental",
        "Fireworks",
        "Gun",
        "Human non-vocal",
        "Human vocal",
        "Human whistle",
        "Noise",
        "Power tools",
        "Siren",
    }
    assert any(lab["common"] not in non_birds for lab in labels)

    ranger = run_cli("recordings", "list", "--json").stdout.splitlines()
    rec = json.loads(ranger[0])
    assert rec["sensor"] == sensor and rec["spaces"] == "birdnet,spectral"
    assert rec["started_local"].startswith("2024-05-01T05:30:00")

    stats = json.loads(run_cli("stats", "--json").stdout)
    assert stats["recordings"] == 1
    assert {s["space"]: s["segments"] for s in stats["spaces"]} == {
        "birdnet": n_birdnet,
        "spectral": n_spectral,
    }


def test_idempotent_replace_and_adding_a_space(sensor, engine, run_cli, tmp_path):
    clip = tmp_path / "dog.ogg"
    shutil.copy(EXAMPLES / "dog.ogg", clip)
    assert run_cli("ingest", clip, "-s", sensor, "-m", "spectral", "-q").exit_code == 0
    ids = scalar(engine, "SELECT array_agg(id ORDER BY id) FROM segments")

    again = run_cli("ingest", clip, "-s", sensor, "-m", "spectral", "-q")
    assert again.exit_code == 0
    assert "skipped 1" in again.stderr
    assert scalar(engine, "SELECT array_agg(id ORDER BY id) FROM segments") == ids

    # A copy under another name is the same recording (same SHA-256).
    copy = tmp_path / "copy_of_dog.ogg"
    shutil.copy(clip, copy)
    dup = run_cli("ingest", copy, "-s", sensor, "-m", "spectral")
    assert "already stored as" in dup.stderr
    assert scalar(engine, "SELECT count(*) FROM recordings") == 1

    replaced = run_cli("ingest", clip, "-s", sensor, "-m", "spectral", "--replace", "-q")
    assert replaced.exit_code == 0 and "stored 1" in replaced.stderr
    new_ids = scalar(engine, "SELECT array_agg(id ORDER BY id) FROM segments")
    assert len(new_ids) == len(ids) and set(new_ids).isdisjoint(ids)

    # A second model adds its space to the stored recording instead of skipping it.
    more = run_cli("ingest", clip, "-s", sensor, "-m", "spectral,birdnet", "-q", "--json")
    assert json.loads(more.stdout)["files"][0]["segments"] == {"birdnet": 1}
    assert scalar(engine, "SELECT count(*) FROM recordings") == 1
    assert scalar(engine, "SELECT count(*) FROM recording_spaces") == 2


def test_bad_files_are_reported_and_the_rest_goes_on(sensor, engine, run_cli, tmp_path):
    folder = tmp_path / "card"
    folder.mkdir()
    shutil.copy(EXAMPLES / "owl.ogg", folder / "owl.ogg")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("this is not audio\n" * 100)
    good = tmp_path / "tone.wav"
    sf.write(good, np.sin(np.linspace(0, 2000, 16000 * 5)).astype(np.float32), 16000)
    data = good.read_bytes()
    (folder / "truncated.flac").write_bytes(b"fLaC" + data[40:2000])
    unsupported = tmp_path / "readme.txt"
    unsupported.write_text("hello")
    missing = tmp_path / "missing.wav"

    result = run_cli(
        "ingest", folder, unsupported, missing, "-s", sensor, "-m", "spectral", "--json", "-q"
    )
    assert result.exit_code == 1
    summary = json.loads(result.stdout)["summary"]
    assert (summary["stored"], summary["failed"]) == (1, 5)
    assert "stored 1, skipped 0, failed 5" in result.stderr
    assert "supported: wav, flac, ogg, mp3" in result.stderr
    with engine.connect() as conn:
        errors = dict(conn.execute(sa.text("SELECT path, error FROM ingest_errors")).fetchall())
    assert {Path(p).name for p in errors} == {
        "empty.wav",
        "notes.wav",
        "truncated.flac",
        "readme.txt",
        "missing.wav",
    }
    assert "empty" in errors[str(folder / "empty.wav")].lower()
    # Nothing half-written: only the good file's recording and windows are stored.
    assert scalar(engine, "SELECT count(*) FROM recordings") == 1
    assert scalar(engine, "SELECT count(DISTINCT recording_id) FROM segments") == 1

    # --fail-fast stops at the first failure.
    ff = run_cli("ingest", folder, "-s", sensor, "-m", "spectral", "--fail-fast", "-q")
    assert ff.exit_code == 1 and "failed 1" in ff.stderr


def test_short_silent_and_unknown_start(sensor, engine, run_cli, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 16000)
    silent = tmp_path / "silent.flac"
    sf.write(silent, np.zeros(16000 * 7, np.int16), 16000)
    result = run_cli(
        "ingest", short, silent, "-s", sensor, "-m", "spectral,birdnet", "--json", "-q"
    )
    assert result.exit_code == 0, result.output
    files = {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}
    assert files["short.wav"]["segments"] == {"spectral": 1, "birdnet": 1}
    assert files["silent.flac"]["segments"] == {"spectral": 3, "birdnet": 3}
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT g.end_s, g.starts_at, g.local_time FROM segments g JOIN recordings r "
                "ON r.id = g.recording_id WHERE r.path LIKE '%short.wav' LIMIT 1"
            )
        ).one()
        finite = conn.execute(
            sa.text("SELECT bool_and(vector_norm(embedding) BETWEEN 0.99 AND 1.01) FROM segments")
        ).scalar()
    assert row.end_s == pytest.approx(0.5)
    assert row.starts_at is None and row.local_time is None
    assert finite


def test_local_time_across_daylight_saving_change(sensor, engine, run_cli, tmp_path):
    """AudioMoth names are UTC; local time follows Europe/Berlin across the spring-forward gap."""
    path = tmp_path / "20240331_005950.WAV"
    sf.write(
        path,
        np.random.default_rng(1).normal(0, 0.05, 16000 * 20).astype(np.float32),
        16000,
        format="WAV",
    )
    result = run_cli(
        "ingest", path, "-s", sensor, "-m", "spectral", "--window", "5", "--hop", "5", "-q"
    )
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT start_s, starts_at, local_date, local_time::text FROM segments ORDER BY start_s"
            )
        ).fetchall()
    # 00:59:50 UTC is 01:59:50 CET; ten seconds later clocks have jumped to 03:00 CEST.
    assert [r.local_time for r in rows] == ["01:59:50", "01:59:55", "03:00:00", "03:00:05"]
    assert rows[0].starts_at == datetime(2024, 3, 31, 0, 59, 50, tzinfo=timezone.utc)
    assert all(str(r.local_date) == "2024-03-31" for r in rows)
    # The space records the user's window and hop.
    assert scalar(engine, "SELECT name FROM spaces") == "spectral-w5-h5"


def test_cli_usage_and_setup_errors(cli_env, run_cli, tmp_path, sensor):
    clip = EXAMPLES / "crow.ogg"
    nosensor = run_cli("ingest", clip, "-s", "nobody", "-m", "spectral")
    assert nosensor.exit_code == 1 and "soundscape sensors add nobody" in nosensor.stderr
    fixed = run_cli("ingest", clip, "-s", sensor, "-m", "birdnet", "--window", "5")
    assert fixed.exit_code == 2 and "only accepts 3 s windows" in fixed.stderr
    unknown = run_cli("ingest", clip, "-s", sensor, "-m", "nosuchmodel")
    assert unknown.exit_code == 1 and "available: birdnet" in unknown.stderr
    start = run_cli("ingest", EXAMPLES, "-s", sensor, "--start-time", "2024-01-01T00:00:00")
    assert start.exit_code == 2
    badtime = run_cli("ingest", clip, "-s", sensor, "--start-time", "yesterday")
    assert badtime.exit_code == 2
    assert run_cli("ingest").exit_code == 2
    tz = run_cli("sensors", "add", "x", "--timezone", "Europe/Berlinn")
    assert tz.exit_code == 1 and "Europe/Berlin" in tz.stderr
    dup = run_cli("sensors", "add", sensor)
    assert dup.exit_code == 1 and "--update" in dup.stderr


@pytest.mark.slow
def test_killed_ingest_leaves_nothing_partial_and_resumes(sensor, engine, db_url, tmp_path):
    """SIGKILL mid-file: the file in progress leaves no trace; re-running stores the rest."""
    folder = tmp_path / "card"
    folder.mkdir()
    shutil.copy(EXAMPLES / "cuckoo.ogg", folder / "a_cuckoo.ogg")
    audio, rate = sf.read(SOUNDSCAPE, dtype="float32", always_2d=True)
    loop = np.tile(audio[:, 0], 10)  # 12 minutes: long enough to be killed in the middle
    sf.write(folder / "b_long.flac", loop, rate)

    env = {**os.environ, "SOUNDSCAPE_DATABASE_URL": db_url}
    cmd = [
        sys.executable,
        "-m",
        "soundscape",
        "ingest",
        str(folder),
        "-s",
        sensor,
        "-m",
        "birdnet",
        "-q",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while scalar(engine, "SELECT count(*) FROM recordings") < 1:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # Wait until the long file's windows are being written (COPY into segments is active).
        while not scalar(
            engine, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY segments%'"
        ):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
        assert proc.poll() is None, "ingest finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    # Give the server a moment to notice the dead client and roll its transaction back.
    deadline = time.monotonic() + 30
    while scalar(
        engine,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY segments%' "
        "AND pid <> pg_backend_pid()",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert scalar(engine, "SELECT array_agg(path) FROM recordings") == [
        str((folder / "a_cuckoo.ogg").resolve())
    ]
    first = scalar(engine, "SELECT count(*) FROM segments")
    assert first == scalar(engine, "SELECT sum(n_segments) FROM recording_spaces")
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM segment_scores s LEFT JOIN segments g "
            "ON g.id = s.segment_id WHERE g.id IS NULL",
        )
        == 0
    )

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "stored 1, skipped 1, failed 0" in rerun.stderr
    n_long = scalar(
        engine,
        "SELECT n_segments FROM recording_spaces rs JOIN recordings r "
        "ON r.id = rs.recording_id WHERE r.path LIKE '%b_long.flac'",
    )
    assert n_long == expected_windows(len(loop) / rate, 3.0, 2.0)
    assert scalar(engine, "SELECT count(*) FROM segments") == first + n_long


@pytest.mark.slow
def test_ingest_memory_stays_bounded_on_a_long_file(sensor, engine, tmp_path):
    """A 1-hour file goes through decode -> windows -> model -> COPY without being held in
    memory: traced allocations stay far below the decoded file's size (230 MB at 16 kHz)."""
    import tracemalloc

    from soundscape.ingest import Ingestor

    def write(path: Path, minutes: int) -> Path:
        rng = np.random.default_rng(3)
        with sf.SoundFile(path, "w", samplerate=8000, channels=1, subtype="PCM_16") as f:
            for _ in range(minutes):
                f.write((rng.normal(0, 0.1, 8000 * 60)).astype(np.float32))
        return path

    ingestor = Ingestor(engine, sensor, ["spectral"])
    peaks = {}
    for minutes in (6, 60):
        path = write(tmp_path / f"long_{minutes}.wav", minutes)
        tracemalloc.start()
        try:
            result = ingestor.ingest_file(path)
            _, peaks[minutes] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.status == "stored", result.reason
        assert result.segments == {"spectral": expected_windows(minutes * 60.0, 3.0, 2.0)}
    # Flat in file length (ten times the audio, about the same peak) and small in absolute terms.
    assert peaks[60] < 1.25 * peaks[6] + 5 * 2**20, peaks
    assert peaks[60] < 100 * 2**20, f"peak traced memory {peaks[60] / 2**20:.0f} MB"


def test_backfill_adds_a_space_and_reports_moved_or_changed_files(
    sensor, engine, run_cli, tmp_path
):
    files = []
    for name in ("dog.ogg", "owl.ogg", "crow.ogg"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
        files.append(tmp_path / name)
    start = run_cli(
        "ingest",
        files[0],
        "-s",
        sensor,
        "-m",
        "spectral",
        "-q",
        "--start-time",
        "2024-05-01T03:00:00Z",
    )
    assert start.exit_code == 0
    assert run_cli("ingest", *files[1:], "-s", sensor, "-m", "spectral", "-q").exit_code == 0
    files[1].unlink()  # moved away
    data, rate = sf.read(files[2])
    sf.write(files[2], data * 0.5, rate)  # changed in place

    result = run_cli("backfill", "-m", "birdnet", "--json", "-q")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["summary"] == {**out["summary"], "stored": 1, "failed": 2}
    assert "no longer there" in result.stderr and "changed since it was ingested" in result.stderr
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT r.path, p.name, g.starts_at FROM segments g JOIN spaces p ON p.id = g.space_id "
                "JOIN recordings r ON r.id = g.recording_id WHERE p.name = 'birdnet'"
            )
        ).fetchall()
        errors = conn.execute(sa.text("SELECT count(*) FROM ingest_errors")).scalar()
    # the dog got BirdNET windows, with the recording's stored start time
    assert {Path(r.path).name for r in rows} == {"dog.ogg"}
    assert rows[0].starts_at == datetime(2024, 5, 1, 3, tzinfo=timezone.utc)
    assert errors == 2
    # resumable / idempotent: nothing left to do for the dog
    again = run_cli("backfill", "-m", "birdnet", "--json", "-q")
    assert json.loads(again.stdout)["summary"]["stored"] == 0
