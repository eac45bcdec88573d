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


# ------------------------------------------------------------------ stored overviews (0037)
def _low_peak_s(db: np.ndarray, seconds: float) -> float:
    """Where the low frequencies (below ~3.4 kHz) are loudest, in seconds."""
    low = (10 ** (db[: db.shape[0] * 3400 // 11025] / 10)).sum(axis=0)
    return float((np.argmax(low) + 0.5) * seconds / db.shape[1])


def test_ingest_stores_overview(plant):
    """Every ingested recording has its low-resolution spectrogram stored, and it is the
    audio's: the fireworks' low-frequency burst at 27.3 s shows where it does when decoded."""
    import sqlalchemy as sa

    from soundscape.overview_images import MAX_COLUMNS, OVERVIEW_BINS, load_overview

    engine = sa.create_engine(plant)
    with engine.connect() as conn:
        missing = conn.execute(
            sa.text(
                "SELECT count(*) FROM recordings r WHERE NOT EXISTS "
                "(SELECT FROM recording_overviews o WHERE o.recording_id = r.id)"
            )
        ).scalar()
        sizes = conn.execute(sa.text("SELECT max(length(image)) FROM recording_overviews"))
        ov = load_overview(conn, recording_id(plant, "20240602_080000.WAV"))
    engine.dispose()
    assert missing == 0
    assert sizes.scalar() < 200_000
    assert ov is not None and ov.image.dtype == np.uint8
    assert ov.image.shape[0] == OVERVIEW_BINS and ov.columns <= MAX_COLUMNS
    db, t0, t1 = ov.db(0, 36)
    assert t0 == 0 and abs(t1 - 36) < 0.1
    assert 26.8 <= _low_peak_s(db, t1) <= 29.0
    assert db.max() == pytest.approx(ov.db_max, abs=0.5) and db.std() > 3


def test_recording_plot_from_stored_overview(plant, tmp_path, monkeypatch):
    """The plot of a recording is drawn from its stored overview (no audio decoded); a span
    too short for the overview's columns is decoded."""
    import sqlalchemy as sa

    from soundscape import plots

    rid = recording_id(plant, "20240602_080000.WAV")
    engine = sa.create_engine(plant)
    with engine.connect() as conn:
        real = plots.long_spectrogram
        monkeypatch.setattr(plots, "long_spectrogram", lambda *a, **k: pytest.fail("decoded"))
        whole = plots.recording_plot(conn, rid, tmp_path / "a.png")
        assert whole.details["spectrogram"] == "stored"
        assert_not_blank(image(tmp_path / "a.png"))
        monkeypatch.setattr(plots, "long_spectrogram", real)
        short = plots.recording_plot(conn, rid, tmp_path / "b.png", start_s=10, end_s=12)
        assert short.details["spectrogram"] == "decoded"
    engine.dispose()


def test_first_view_backfills_overview(plant):
    """A recording without a stored overview (ingested before 0037) gets one on the web
    page's first plot, committed, and the next plot reads it."""
    import sqlalchemy as sa

    from soundscape.web import media

    rid = recording_id(plant, "20240602_080000.WAV")
    engine = sa.create_engine(plant)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM recording_overviews WHERE recording_id = :r"), {"r": rid})
    media.RECORDING_PNGS._items.clear()
    with engine.connect() as conn:
        png, source = media.recording_png(conn, rid, width=900, height=400)
    assert png.startswith(b"\x89PNG") and source == "stored"
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT columns FROM recording_overviews WHERE recording_id = :r"), {"r": rid}
        ).scalar()
    engine.dispose()
    assert stored and stored >= plots_min_columns()


def plots_min_columns() -> int:
    from soundscape.plots import MIN_COLUMNS

    return MIN_COLUMNS


def test_overview_from_the_ingest_windows(plant):
    """The overview built from the windows an ingest decodes (overlapping or not, at the
    model's rate) is the one decoded on its own; a stream below the file's spectrum, or
    with gaps between windows, is not used."""
    import sqlalchemy as sa

    from soundscape.audio import WindowStream
    from soundscape.overview_images import OverviewBuilder, compute_overview

    engine = sa.create_engine(plant)
    with engine.connect() as conn:
        path = conn.execute(
            sa.text("SELECT path FROM recordings WHERE path LIKE '%20240602_080000.WAV'")
        ).scalar_one()
    engine.dispose()
    ref = compute_overview(path)
    for rate, window, hop in ((48000, 3.0, 3.0), (32000, 5.0, 2.5), (22050, 1.0, 0.4)):
        stream = WindowStream(path, rate, window, hop, batch_size=16)
        built = OverviewBuilder(36.0, 48000)
        for batch in stream:
            built.tap(batch, stream)
        ov = built.finish()
        assert ov is not None and ov.image.shape == ref.image.shape, rate
        assert ov.sample_rate == ref.sample_rate and ov.column_s == ref.column_s
        a, b = ov.image.astype(float).ravel(), ref.image.astype(float).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.95, rate
        assert 26.8 <= _low_peak_s(ov.db(0, 36)[0], 36) <= 29.0
    for rate, window, hop in ((16000, 1.0, 1.0), (48000, 1.0, 2.0)):
        stream = WindowStream(path, rate, window, hop, batch_size=16)
        built = OverviewBuilder(36.0, 48000)
        for batch in stream:
            built.tap(batch, stream)
        assert built.finish() is None, rate


def test_ingest_decodes_the_file_once(plant, monkeypatch, tmp_path):
    """Ingest makes the overview from the windows it embeds, without decoding it again."""
    import sqlalchemy as sa

    from soundscape import overview_images
    from soundscape.db import make_engine
    from soundscape.ingest import Ingestor

    engine = make_engine(plant)
    with engine.connect() as conn:
        path = conn.execute(
            sa.text("SELECT path FROM recordings WHERE path LIKE '%20240602_080000.WAV'")
        ).scalar_one()
    # at 16 kHz, the spectral model's rate: its windows carry the whole spectrum
    import soundfile as sf
    import soxr

    audio, rate = sf.read(path, dtype="float32")
    copy = tmp_path / "20240603_080000.WAV"
    sf.write(copy, soxr.resample(audio, rate, 16000), 16000, subtype="PCM_16")
    monkeypatch.setattr(
        overview_images, "compute_overview", lambda *a, **k: pytest.fail("decoded again")
    )
    result = Ingestor(engine, SENSOR, ["spectral"]).ingest_file(copy)
    assert result.status == "stored", result.reason
    with engine.connect() as conn:
        ov = overview_images.load_overview(conn, result.recording_id)
        conn.execute(sa.text("DELETE FROM recordings WHERE id = :r"), {"r": result.recording_id})
        conn.commit()
    engine.dispose()
    assert ov is not None and ov.sample_rate == 16000 and ov.columns >= 500
