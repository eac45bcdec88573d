"""Acoustic indices as a model (issue 25): scikit-maad's numbers on real audio, the vector and
the named values SQL reads back from it, ``ranger.indices_daily`` answering "nights where ACI
at north-1 dropped below its 30-day median", and ``soundscape plot indices``."""

from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import sqlalchemy as sa

from soundscape.embedders import get_model_class, load_model
from soundscape.embedders.indices import Indices

from .conftest import Cli, real_audio

RATE = Indices.sample_rate

#: the question of issue 25, as a reader asks it of ranger.indices_daily: a night (20:00 to
#: 04:00 local, named by its evening) is the median of its hours' medians; its 30-day median
#: is that of the 30 nights before it
NIGHTS_BELOW_MEDIAN = """
WITH nights AS (
    SELECT CASE WHEN hour < 12 THEN local_date - 1 ELSE local_date END AS night,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY median) AS aci
      FROM ranger.indices_daily
     WHERE sensor = 'north-1' AND index = 'aci' AND (hour >= 20 OR hour < 4)
     GROUP BY 1
)
SELECT n.night, n.aci, m.median_30d
  FROM nights n
  CROSS JOIN LATERAL (
      SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY p.aci) AS median_30d
        FROM nights p
       WHERE p.night >= n.night - 30 AND p.night < n.night) m
 WHERE n.aci < m.median_30d
 ORDER BY n.night
"""


def _load(name: str) -> np.ndarray:
    import librosa

    y, _ = librosa.load(real_audio(name), sr=RATE, mono=True)
    return y.astype(np.float32)


def _maad(s: np.ndarray) -> np.ndarray:
    """The eight maad indices of ``s`` (24 kHz), called as the model's docstring says."""
    from maad import features, sound

    s = s.astype(np.float64)
    psd, _, fn, _ = sound.spectrogram(s, RATE, nperseg=1024, noverlap=512, mode="psd")
    amp = np.sqrt(psd)
    _, _, aci = features.acoustic_complexity_index(amp)
    bands = {"fmin": 0, "fmax": 10000, "bin_step": 1000, "dB_threshold": -50}
    adi = features.acoustic_diversity_index(amp, fn, **bands)
    aei = features.acoustic_eveness_index(amp, fn, **bands)
    bi = features.bioacoustics_index(amp, fn, flim=(2000, 8000))
    ndsi = features.soundscape_index(
        psd, fn, flim_bioPh=(2000, 10000), flim_antroPh=(1000, 1000), R_compatible=False
    )[0]
    ht = features.temporal_entropy(s, compatibility="QUT", mode="fast", Nt=512)
    hf = features.frequency_entropy(psd, compatibility="QUT")[0]
    return np.array([aci, adi, aei, bi, ndsi, ht, hf, ht * hf])


def test_indices_equal_scikit_maad_on_real_audio():
    model = load_model("indices")
    forest = _load("soundscapes/xc563936.mp3")
    truck = _load("clips/vehicles/firetruck.ogg")
    windows = [forest[: 60 * RATE], forest[12 * RATE : 42 * RATE], truck]
    for w in windows:
        ours = model.compute(w[None])[0]
        assert np.allclose(ours[:8], _maad(w), rtol=2e-4, atol=1e-6), (ours, _maad(w))
    # a batch gives the same numbers as one window at a time (three 60 s windows: two passes)
    batch = np.stack([forest[: 60 * RATE], forest[6 * RATE : 66 * RATE], forest[-60 * RATE :]])
    assert np.allclose(
        model.compute(batch), np.vstack([model.compute(b[None]) for b in batch]), rtol=1e-6
    )
    # the last window of a file, zero-padded to 60 s, is computed on its audio only
    padded = np.zeros((1, 60 * RATE), np.float32)
    padded[0, : len(truck)] = truck
    assert np.allclose(model.compute(padded), model.compute(truck[None]), rtol=1e-9)
    # the indices tell a forest morning from a siren: more biophony, more complexity
    f, t = model.compute(windows[0][None])[0], model.compute(truck[None])[0]
    assert f[Indices.NAMES.index("ndsi")] > 0.5 > t[Indices.NAMES.index("ndsi")]
    assert f[0] > t[0]


def test_vector_is_standardised_and_gives_the_named_values_back():
    model = load_model("indices")
    cls = get_model_class("indices")
    assert cls is Indices and cls.dimension == len(Indices.NAMES) + 1
    assert (cls.default_window_s, cls.default_hop_s) == (60.0, 60.0)
    forest = _load("soundscapes/xc563936.mp3")
    batch = np.stack(
        [forest[: 30 * RATE], forest[30 * RATE : 60 * RATE], np.zeros(30 * RATE, np.float32)]
    )
    values = model.compute(batch)
    vectors = model.embed_audio(batch)
    assert vectors.dtype == np.float32 and vectors.shape == (3, Indices.dimension)
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.allclose(model.values(vectors), values, rtol=1e-5, atol=1e-4)
    # standardised: the forest's indices sit within a few units of the centre
    z = vectors[:2, :-1] / vectors[:2, -1:] * Indices.ANCHOR
    assert np.abs(z).max() < 4
    # digital silence: fixed, finite values (maad divides by zero there)
    silent = dict(zip(Indices.NAMES, values[2]))
    assert silent["aci"] == 0 and silent["level_db"] == Indices.level_floor_db
    assert silent["ht"] == 1 and silent["hf"] == 1 and silent["adi"] == pytest.approx(np.log(10))
    with pytest.raises(Exception, match="takes no parameters"):
        load_model("indices", window=3)


# --------------------------------------------------------------------------- in the database
#: nights at north-1 (evening dates from FIRST): "rich" = a part of the forest recording,
#: "poor" = the fire-truck siren (a steadier sound: lower ACI)
FIRST = date(2024, 5, 1)
NIGHTS = ["rich"] * 6 + ["poor", "rich", "poor"]


def _write(path: Path, samples: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(samples, -1, 1), RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def nights(module_db_url, tmp_path_factory) -> dict:
    """Nine nights at north-1 and one at south-1, one 20 s file each at 21:30 local (AudioMoth
    names, in UTC), ingested with --model indices (60 s windows: one padded window per file). The
    rich nights are ordered by their ACI, so each is above the median of the nights before
    it: the question's answer is exactly the poor nights."""
    folder = tmp_path_factory.mktemp("nights")
    model = Indices()
    forest = _load("soundscapes/xc563936.mp3")
    truck = _load("clips/vehicles/firetruck.ogg")
    parts = [forest[k * 6 * RATE : (k * 6 + 20) * RATE] for k in range(7)]
    parts.sort(key=lambda p: model.compute(p[None])[0, 0])
    siren = np.concatenate([truck, truck])[: 20 * RATE]
    files: dict[str, Path] = {}
    rich = iter(parts)
    for i, kind in enumerate(NIGHTS):
        day = FIRST + timedelta(days=i)
        audio = next(rich) if kind == "rich" else siren * (0.5 + 0.1 * i)  # distinct files
        files[day.isoformat()] = _write(folder / "north-1" / f"{day:%Y%m%d}_193000.WAV", audio)
    # south-1's only night is poor, on a date north-1 was rich: never mixed into north-1's
    _write(folder / "south-1" / f"{FIRST + timedelta(days=7):%Y%m%d}_193000.WAV", siren * 0.3)
    run = Cli(module_db_url)
    for sensor in ("north-1", "south-1"):
        run("sensors", "add", sensor, "--timezone", "Europe/Berlin", "--site", "Marsh")
        run("ingest", folder / sensor, "-s", sensor, "-m", "indices", "-q")
    return {"url": module_db_url, "files": files, "run": run, "folder": folder}


def test_named_values_in_sql_equal_the_model(nights):
    from soundscape.db import make_engine

    engine = make_engine(nights["url"])
    model = Indices()
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT a.*, r.path FROM ranger.acoustic_indices a "
                    "JOIN recordings r ON r.id = a.recording_id ORDER BY a.segment_id"
                )
            ).all()
            spaces = conn.execute(
                sa.text("SELECT name, window_s, hop_s, sample_rate FROM spaces")
            ).all()
    finally:
        engine.dispose()
    assert [tuple(s) for s in spaces] == [("indices", 60.0, 60.0, RATE)]
    assert len(rows) == len(NIGHTS) + 1  # one (padded) 60 s window per 20 s file
    for row in rows:
        audio, rate = sf.read(row.path, dtype="float32")
        assert rate == RATE
        padded = np.zeros((1, 60 * RATE), np.float32)
        padded[0, : len(audio)] = audio
        expected = model.compute(padded)[0]
        got = np.array([getattr(row, n) for n in Indices.NAMES])
        assert np.allclose(got, expected, rtol=1e-4, atol=1e-3), (row.path, got, expected)
        assert row.local_time.isoformat() == "21:30:00"


def test_nights_where_aci_dropped_below_its_30_day_median(nights):
    import psycopg

    from soundscape.db import make_engine

    engine = make_engine(nights["url"])
    try:
        with engine.connect() as conn:
            daily = conn.execute(
                sa.text(
                    "SELECT sensor, local_date, hour, windows, q1, median, q3 "
                    "FROM ranger.indices_daily WHERE index = 'aci' ORDER BY 1, 2"
                )
            ).all()
            found = conn.execute(sa.text(NIGHTS_BELOW_MEDIAN)).all()
    finally:
        engine.dispose()
    assert len(daily) == len(NIGHTS) + 1
    assert all(r.hour == 21 and r.windows == 1 and r.q1 == r.median == r.q3 for r in daily)
    poor = [FIRST + timedelta(days=i) for i, kind in enumerate(NIGHTS) if kind == "poor"]
    assert [r.night for r in found] == poor
    assert all(r.aci < r.median_30d for r in found)
    # the same through psycopg, as a BI tool sends it
    url = nights["url"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        nights_found = [r[0] for r in conn.execute(NIGHTS_BELOW_MEDIAN)]
    assert nights_found == poor


def test_plot_indices(nights, tmp_path):
    from PIL import Image

    run = nights["run"]
    out = tmp_path / "aci.png"
    r = run("plot", "indices", "--index", "ACI", "-o", out, "--width", 800)
    assert "2 sensor panel(s)" in r.stderr and "9 day(s)" in r.stderr
    assert Image.open(out).size[0] == 800
    r = run("plot", "indices", "--index", "ndsi", "-s", "south-1", "-o", out)
    assert "1 sensor panel(s)" in r.stderr and "1 day(s)" in r.stderr
    bad = run("plot", "indices", "--index", "nope", "-o", out, code=2)
    assert "nope" in bad.stderr
    unknown = run("plot", "indices", "-s", "west-9", "-o", out, code=1)
    assert "west-9" in unknown.stderr
    empty = run("plot", "indices", "--from", "2030-01-01", "-o", out, code=1)
    assert "widen --from/--to" in empty.stderr


def test_activity_page_colours_by_an_index(nights):
    from fastapi.testclient import TestClient

    from soundscape.db import open_database
    from soundscape.web import WebConfig, create_app

    db = open_database(nights["url"])
    try:
        with TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), db)) as client:
            page = client.get("/activity?kind=index&name=ACI&by=sensor")
            assert page.status_code == 200
            assert "sensor north-1" in page.text and "sensor south-1" in page.text
            cells = re.findall(r'fill="(#[0-9a-f]{6})"><title>([^<]*)</title>', page.text)
            filled = [(c, t) for c, t in cells if "aci " in t]
            assert len(filled) == len(NIGHTS) + 1  # one hour of one night each
            # the rich nights are drawn brighter than the poor ones (magma/viridis: low = dark)
            by_value = sorted(filled, key=lambda ct: float(ct[1].rsplit(" ", 1)[1]))
            assert by_value[0][0] != by_value[-1][0]
            assert all("21:00" in t for _, t in filled)
            bad = client.get("/activity?kind=index&name=nope")
            assert bad.status_code == 400 and "aci" in bad.text
    finally:
        db.engine.dispose()


def test_anomalies_in_the_indices_space(nights):
    """The standardised vectors work for the kNN anomaly score: after six rich nights, the two
    poor nights score above the rich one between them."""
    rows = nights["run"].json(
        "anomalies", "-s", "north-1", "--space", "indices", "--from", "2024-05-07",
        "--k", "3", "--windows", "--top", "10",
    )  # fmt: skip
    score = {r["local"][:10]: r["score"] for r in rows}
    assert set(score) == {"2024-05-07", "2024-05-08", "2024-05-09"}
    assert min(score["2024-05-07"], score["2024-05-09"]) > 2 * score["2024-05-08"]
