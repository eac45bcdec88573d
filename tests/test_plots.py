"""Plots rendered from real data (the plant of test_anomalies: a real forest soundscape with a
saw, fireworks and a siren mixed in): the right size, and not blank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .test_anomalies import SENSOR, ingest


@pytest.fixture(scope="module")
def plant(module_db_url, tmp_path_factory):
    from click.testing import CliRunner

    from soundscape.cli import cli

    ingest(module_db_url, tmp_path_factory.mktemp("plant"))
    env = {"SOUNDSCAPE_DATABASE_URL": module_db_url}
    runner = CliRunner()
    examples = Path(__file__).resolve().parents[1] / "examples" / "audio"
    for name, clip in (("siren", "firetruck.ogg"), ("saw", "saw.ogg")):
        r = runner.invoke(
            cli,
            ["concepts", "add", name, "--audio", str(examples / clip), "--threshold", "0.5"],
            env=env,
        )
        assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["anomalies", "-s", SENSOR, "--from", "2024-06-02"], env=env)
    assert r.exit_code == 0, r.output
    return module_db_url


@pytest.fixture
def cli_plant(plant, run_cli, monkeypatch):
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", plant)
    return run_cli


def recording_id(plant: str, name: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(plant)
    with engine.connect() as conn:
        rid = conn.execute(
            sa.text("SELECT id FROM recordings WHERE path LIKE :p"), {"p": f"%/{name}"}
        ).scalar_one()
    engine.dispose()
    return rid


def image(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def assert_not_blank(pixels: np.ndarray) -> None:
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 30 and pixels.std() > 20


def test_recording_plot(cli_plant, plant, tmp_path):
    rid = recording_id(plant, "20240602_080000.WAV")
    out = tmp_path / "rec.png"
    r = cli_plant("plot", "recording", rid, "-o", out)
    assert r.exit_code == 0, r.output
    assert "anomalies of run" in r.stderr and "detection(s)" in r.stderr
    pixels = image(out)
    assert pixels.shape == (600, 1200, 3)
    assert_not_blank(pixels)
    # anomalies above the threshold are drawn in red (the saw and the fireworks)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 500
    # a span, at another size
    span = tmp_path / "span.png"
    r = cli_plant(
        "plot",
        "recording",
        rid,
        "--start",
        10,
        "--end",
        20,
        "-o",
        span,
        "--width",
        800,
        "--height",
        400,
        "--concept",
        "saw",
    )
    assert r.exit_code == 0, r.output
    assert "10-20 s" in r.stderr
    assert image(span).shape == (400, 800, 3)
    assert_not_blank(image(span))


def test_activity_heatmap(cli_plant, tmp_path):
    out = tmp_path / "activity.png"
    r = cli_plant("plot", "activity", "--concept", "siren", "--by", "sensor", "-o", out)
    assert r.exit_code == 0, r.output
    pixels = image(out)
    width, height = (int(v) for v in r.stderr.split("(")[1].split(")")[0].split("x"))
    assert pixels.shape == (height, width, 3) and width == 1000
    assert_not_blank(pixels)
    # the siren was heard at 11:00 local on 2 June (and at 14:00 on 1 June by north-1)
    assert "2 day(s), 2 sensor panel(s)" in r.stderr
    out2 = tmp_path / "q.png"
    r = cli_plant(
        "plot", "activity", "--concept", "saw", "-o", out2, "--width", 600, "--height", 300
    )
    assert r.exit_code == 0, r.output
    assert image(out2).shape == (300, 600, 3)


def test_long_spans_stream(monkeypatch, plant):
    """Beyond MAX_DIRECT_S the spectrogram is built column by column from the stream; the
    columns match the directly decoded one."""
    import sqlalchemy as sa

    from soundscape import plots

    engine = sa.create_engine(plant)
    with engine.connect() as conn:
        path = conn.execute(
            sa.text("SELECT path FROM recordings WHERE path LIKE '%20240602_080000.WAV'")
        ).scalar_one()
    engine.dispose()
    direct, rate = plots.long_spectrogram(path, 0, 36, columns=72)
    monkeypatch.setattr(plots, "MAX_DIRECT_S", 1.0)
    streamed, rate2 = plots.long_spectrogram(path, 0, 36, columns=72)
    assert rate == rate2 and abs(streamed.shape[1] - direct.shape[1]) <= 2
    # both put the fireworks' low-frequency burst at 27.3 s
    for db in (direct, streamed):
        low = (10 ** (db[:40] / 10)).sum(axis=0)
        t = (np.argmax(low) + 0.5) * 36 / db.shape[1]
        assert 26.8 <= t <= 29.0, t


def test_errors(cli_plant, tmp_path):
    r = cli_plant("plot", "activity", "--concept", "nothing", "-o", tmp_path / "x.png")
    assert r.exit_code == 1 and "no concept named 'nothing'" in r.stderr
    r = cli_plant("plot", "recording", 9999, "-o", tmp_path / "x.png")
    assert r.exit_code == 1 and "no recording with id 9999" in r.stderr
    r = cli_plant("plot", "recording", 1, "-o", tmp_path / "x.png", "--start", 50, "--end", 40)
    assert r.exit_code == 1
    assert not (tmp_path / "x.png").exists()
