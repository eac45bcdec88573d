"""Anomalies on real audio with known answers.

A sensor's baseline day is the first half of the real forest soundscape (three recordings);
the next day is its second half (new bird calls: natural variation the method must tolerate)
with a real saw, fireworks and a fire-truck siren mixed in at known offsets. A second sensor
heard the same siren on the baseline day: if its windows leaked into pump-1's baseline, the
siren would look ordinary and the test would fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
import soundfile as sf
import soxr
import sqlalchemy as sa

# End-to-end: hours of synthetic plant audio. `make test-fast` (-m "not slow") skips it.
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "audio"
RATE = 48000
SENSOR = "pump-1"
# recording -> (clip, offset s) mixed into the period's recordings
CLIPS = {
    "20240602_080000.WAV": (("saw.ogg", 13.0), ("fireworks.ogg", 27.3)),
    "20240602_090000.WAV": (("firetruck.ogg", 8.0),),
}


def load(name: str) -> np.ndarray:
    data, rate = sf.read(EXAMPLES / name, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return soxr.resample(mono, rate, RATE).astype(np.float32) if rate != RATE else mono


def mix(audio: np.ndarray, clip: str, offset_s: float, peak: float) -> None:
    x = load(clip)
    x = x * (peak / np.abs(x).max())
    i = int(offset_s * RATE)
    n = min(len(x), len(audio) - i)
    audio[i : i + n] += x[:n]


def build(folder: Path) -> dict[str, list[Path]]:
    """Write the recordings (AudioMoth names: UTC start) per sensor folder."""
    forest = load("xc563936.mp3")
    first, second = forest[: 36 * RATE], forest[36 * RATE : 72 * RATE]
    audio = {
        (SENSOR, "20240601_080000.WAV"): first * 0.5,
        (SENSOR, "20240601_090000.WAV"): np.roll(first, 9 * RATE) * 0.3,
        (SENSOR, "20240601_100000.WAV"): np.roll(first, 21 * RATE) * 0.4,
        (SENSOR, "20240602_080000.WAV"): second * 0.5,
        (SENSOR, "20240602_090000.WAV"): np.roll(second, 17 * RATE) * 0.5,
        ("north-1", "20240601_120000.WAV"): np.roll(second, 5 * RATE) * 0.5,
    }
    peaks = {"saw.ogg": 0.5, "fireworks.ogg": 0.9, "firetruck.ogg": 0.5}
    for name, clips in CLIPS.items():
        for clip, offset in clips:
            mix(audio[(SENSOR, name)], clip, offset, peaks[clip])
    mix(audio[("north-1", "20240601_120000.WAV")], "firetruck.ogg", 8.0, 0.5)
    out: dict[str, list[Path]] = {}
    for (sensor, name), samples in audio.items():
        path = folder / sensor / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.clip(samples, -1, 1), RATE, subtype="PCM_16")
        out.setdefault(sensor, []).append(path)
    return out


def ingest(url: str, folder: Path, models: str = "spectral") -> None:
    from click.testing import CliRunner

    from soundscape.cli import cli

    runner = CliRunner()
    env = {"SOUNDSCAPE_DATABASE_URL": url}
    for sensor, paths in build(folder).items():
        r = runner.invoke(
            cli,
            ["sensors", "add", sensor, "--timezone", "Europe/Berlin", "--site", "Works"],
            env=env,
        )
        assert r.exit_code == 0, r.output
        r = runner.invoke(
            cli, ["ingest", str(paths[0].parent), "-s", sensor, "-m", models, "-q"], env=env
        )
        assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def plant(module_db_url, tmp_path_factory):
    ingest(module_db_url, tmp_path_factory.mktemp("plant"))
    return module_db_url


@pytest.fixture
def anomalies(plant, run_cli, monkeypatch):
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", plant)

    def go(*args):
        result = run_cli("anomalies", *args, "--json")
        return [json.loads(line) for line in result.stdout.splitlines()], result

    return go


def covers(row, name: str, offset: float) -> bool:
    return Path(row["path"]).name == name and row["start_s"] <= offset < row["end_s"]


def held(row, name: str, clip: str, offset: float) -> float:
    """How much of the clip the window holds, relative to 1.5 s (or the whole clip if shorter)."""
    if Path(row["path"]).name != name:
        return 0.0
    duration = sf.info(str(EXAMPLES / clip)).duration
    inside = max(0.0, min(row["end_s"], offset + duration) - max(row["start_s"], offset))
    return inside / min(1.5, duration)


def test_mixed_in_clips_are_the_top_events(anomalies):
    events, result = anomalies("-s", SENSOR, "--from", "2024-06-02")
    assert result.exit_code == 0, result.output
    # the default baseline: pump-1's three recordings of the day before (18 windows each)
    assert "against 54 baseline window(s)" in result.stderr
    assert "space spectral" in result.stderr
    truth = [(name, offset) for name, clips in CLIPS.items() for _, offset in clips]
    assert len(events) == len(truth)  # nothing else scores 2 or more
    for name, offset in truth:
        assert any(covers(e, name, offset) for e in events), (name, offset, events)
    assert all(e["score"] >= 4 for e in events)
    assert [e["score"] for e in events] == sorted((e["score"] for e in events), reverse=True)
    saw, siren = events[0], events[1]
    assert {Path(saw["path"]).name, Path(siren["path"]).name} == set(CLIPS)
    # ranked windows: every window holding 1.5 s of a clip (or all of a shorter one) ranks
    # above every window holding none
    windows, _ = anomalies("-s", SENSOR, "--from", "2024-06-02", "--windows", "--top", "36")
    assert len(windows) == 36 and windows[0]["score"] > 10
    clips = [(n, c, o) for n, cs in CLIPS.items() for c, o in cs]
    share = [max(held(w, n, c, o) for n, c, o in clips) for w in windows]
    strong = [w["score"] for w, h in zip(windows, share) if h >= 0.99]
    ordinary = [w["score"] for w, h in zip(windows, share) if h == 0]
    assert len(strong) >= 7 and min(strong) > max(ordinary)
    assert np.median(ordinary) < 1.6 and max(ordinary) < 3


def test_baseline_time_of_day_and_strategies(anomalies, plant):
    # explicit baseline day, only 10:00-11:00 local: the 08:00 UTC recordings of each day
    events, result = anomalies(
        "-s",
        SENSOR,
        "--baseline-from",
        "2024-06-01",
        "--baseline-to",
        "2024-06-01",
        "--from",
        "2024-06-02",
        "--time",
        "10:00-11:00",
    )
    assert result.exit_code == 0, result.output
    assert "against 18 baseline window(s)" in result.stderr
    assert {Path(e["path"]).name for e in events} == {"20240602_080000.WAV"}
    assert all(e["local"].startswith("2024-06-02 10:") for e in events)
    # the default period is everything after the baseline
    after, result = anomalies("-s", SENSOR, "--baseline-to", "2024-06-01", "--top", "3")
    assert result.exit_code == 0 and len(after) == 3
    # the index scan and the exact scan rank alike here
    engine = sa.create_engine(plant)
    with engine.connect() as conn:
        ranked = {}
        for strategy in ("exact", "hnsw"):
            rows = conn.execute(
                sa.text(
                    "SELECT segment_id, method FROM ranger.anomaly_scores('pump-1', 'spectral', "
                    "10, p_date_from => DATE '2024-06-02', p_strategy => :s) LIMIT 8"
                ),
                {"s": strategy},
            ).fetchall()
            assert {r.method for r in rows} == {strategy}
            ranked[strategy] = [r.segment_id for r in rows]
        assert ranked["exact"] == ranked["hnsw"]
    engine.dispose()


def test_errors(anomalies, run_cli):
    _, result = anomalies("-s", SENSOR)
    assert result.exit_code == 2 and "--from" in result.stderr
    _, result = anomalies("-s", "nobody", "--from", "2024-06-02")
    assert result.exit_code == 1 and "unknown sensor 'nobody'" in result.stderr
    _, result = anomalies("-s", SENSOR, "--from", "2024-06-01")
    assert result.exit_code == 1 and "baseline has 0 window(s)" in result.stderr
    _, result = anomalies("-s", SENSOR, "--from", "2024-06-02", "--space", "birdnet")
    assert result.exit_code == 1 and "no space named 'birdnet'" in result.stderr
    _, result = anomalies("-s", SENSOR, "--from", "2024-07-01")
    assert result.exit_code == 1 and "no windows" in result.stderr
    _, result = anomalies("-s", SENSOR, "--from", "'; DROP TABLE segments; --")
    assert result.exit_code == 2


def test_stored_runs_and_reader_role(anomalies, plant, run_cli, monkeypatch):
    events, result = anomalies("-s", SENSOR, "--from", "2024-06-02", "--top", "1")
    run = events[0]["run"]
    r = run_cli("db", "create-reader", "--password", "pw-analytics")
    assert r.exit_code == 0, r.output
    url = (
        sa.engine.make_url(plant)
        .set(drivername="postgresql", username="soundscape_reader", password="pw-analytics")
        .render_as_string(False)
    )
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT rank, score, sensor, site, local_date, local_time, path, start_s "
            "FROM ranger.anomalies WHERE run = %s ORDER BY rank",
            [run],
        ).fetchall()
        assert len(rows) == 36 and [r[0] for r in rows] == list(range(1, 37))
        assert rows[0][2:4] == (SENSOR, "Works") and rows[0][1] == pytest.approx(
            events[0]["score"], abs=0.01
        )
        runs = conn.execute(
            "SELECT sensor, space, k, baseline_windows, n_windows, params->>'date_from' "
            "FROM ranger.anomaly_runs WHERE run = %s",
            [run],
        ).fetchone()
        assert runs == (SENSOR, "spectral", 10, 54, 36, "2024-06-02")
        scored = conn.execute(
            "SELECT count(*), max(score) FROM ranger.anomaly_scores('pump-1', 'spectral', 10, "
            "p_date_from => DATE '2024-06-02')"
        ).fetchone()
        assert scored[0] == 36 and scored[1] == pytest.approx(rows[0][1], abs=1e-4)
        for stmt in ("SELECT count(*) FROM anomaly_scores", "DELETE FROM anomaly_runs"):
            with pytest.raises(psycopg.errors.Error):
                conn.execute(stmt)
