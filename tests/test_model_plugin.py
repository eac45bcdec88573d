"""Adding a model is one file (issue 27): a small embedder in a module of its own, declared in
the ``soundscape.models`` entry-point group as a third-party package declares it, and nothing
else changed. Its class attributes are all soundscape needs: ingest stores its windows and
class scores in its own space, the space is picked by the model's own ranks, label search
reads its field words, Raven tables get its band and ``duplicates`` its threshold (a real
database, real audio)."""

from __future__ import annotations

import csv
import io
import json
import sys
import textwrap

import pytest
import sqlalchemy as sa

from soundscape import embedders
from soundscape.duplicates import default_min_score
from soundscape.embedders import Embedder
from soundscape.export import band_hz
from soundscape.spaces import PURPOSES, get_space, pick_space

from .conftest import Cli, real_audio

MODULE = "soundscape_test_tiny_model"

#: the whole model: what a plugin author writes
TINY = '''
import numpy as np

from soundscape.embedders import Embedder, l2_normalize


class Tiny(Embedder):
    """Band energies of 1 s windows at 8 kHz, and three classes from loudness and pitch."""

    name = "tiny"
    version = "1"
    dimension = 16
    sample_rate = 8000
    default_window_s = 1.0
    default_hop_s = 1.0
    has_class_scores = True
    description = "a test model in one file"
    preference = {"text": 0, "audio": 0, "anomalies": 0, "duplicates": 0, "labels": 0}
    band_hz = (100.0, 3000.0)
    duplicate_min_score = 0.93
    field_words = {"racket": ("Loud",), "critters": ("*birds*",)}
    non_species_classes = frozenset({"Loud", "Quiet"})

    @property
    def labels(self):
        return ["Turdus merula_Eurasian Blackbird", "Loud_Loud", "Quiet_Quiet"]

    def embed_audio_and_scores(self, batch):
        power = np.abs(np.fft.rfft(batch, axis=1)) ** 2
        bands = np.array_split(power, self.dimension, axis=1)
        energy = np.stack([b.sum(axis=1) for b in bands], axis=1) + 1e-9
        vectors = l2_normalize(np.log(energy) - np.log(energy).min(axis=1, keepdims=True) + 1)
        high = energy[:, 6:].sum(axis=1) / energy.sum(axis=1)  # above 1.5 kHz
        loud = np.clip(np.sqrt((batch**2).mean(axis=1)) / 0.05, 0, 1)
        scores = np.stack([high, loud, 1 - loud], axis=1).astype(np.float32)
        return vectors, scores
'''


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The model's file on ``sys.path`` with an installed distribution's entry point naming it;
    the registry reads entry points afresh (and forgets them after the test)."""
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(TINY))
    info = tmp_path / "soundscape_tiny-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: soundscape-tiny\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[soundscape.models]\ntiny = {MODULE}:Tiny\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    monkeypatch.setattr(embedders.MODELS, "_found", None)
    yield
    sys.modules.pop(MODULE, None)


def test_a_model_added_from_one_file_works_end_to_end(tiny, db_url, tmp_path):
    cls = embedders.get_model_class("tiny")
    assert cls.__module__ == MODULE and issubclass(cls, Embedder)
    run = Cli(db_url)
    assert "tiny" in run("models", "list").stdout

    # ingest: its own space beside a built-in model's, with its class labels
    blackbird, saw = real_audio("clips/animals/birds/blackbird.ogg"), real_audio("saw.ogg")
    run("sensors", "add", "north-1", "--timezone", "Europe/Berlin")
    for path in (blackbird, saw):
        run("ingest", path, "-s", "north-1", "-m", "tiny,spectral", "-q")
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            space = get_space(conn, "tiny")
            assert (space.model, space.dimension, space.window_s) == ("tiny", 16, 1.0)
            windows = conn.execute(
                sa.text("SELECT count(*) FROM segments WHERE space_id = :s"), {"s": space.id}
            ).scalar_one()
            assert windows >= 8  # 7.9 s of blackbird and the saw, a window per second
            # preferences: its ranks put it before spectral for every purpose, anomalies too
            # (where spectral ranks first among the built-ins)
            assert {p: pick_space(conn, purpose=p).model for p in PURPOSES} == dict.fromkeys(
                PURPOSES, "tiny"
            )
            spectral = get_space(conn, "spectral")
            assert embedders.model_facts("spectral").preference["anomalies"] > 0
            # the facts export and duplicates read
            assert default_min_score(space) == 0.93 and default_min_score(spectral) == 0.80
            assert band_hz(44100, space) == (100.0, 3000.0)
            assert band_hz(4000, space) == (100.0, 2000.0)  # never above Nyquist
    finally:
        engine.dispose()

    # search: a field word of the model's own, in the space it picks
    raven = tmp_path / "raven"
    out = run("search", "racket", "-n", "3", "--json", "--raven", raven)
    hits = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(hits) == 3 and {h["label"] for h in hits} == {"Loud"}
    rows = [
        row
        for table in raven.glob("*.selections.txt")
        for row in csv.DictReader(io.StringIO(table.read_text()), delimiter="\t")
    ]
    assert len(rows) == 3
    assert {(float(r["Low Freq (Hz)"]), float(r["High Freq (Hz)"])) for r in rows} == {
        (100.0, 3000.0)
    }
    # "*birds*": its species classes, not the classes it names non-species
    out = run("search", "critters", "-n", "50", "--json")
    labels = {json.loads(line)["label"] for line in out.stdout.splitlines() if line.strip()}
    assert labels == {"Eurasian Blackbird"}
    miss = run("search", "zzzq", code=1)
    assert "field words: critters, racket, ..." in miss.stderr

    # duplicates: the space it ranks first in, at its own threshold
    dup = run("duplicates", "--audio", blackbird, "--json")
    assert "searching space tiny (window pairs scoring >= 0.93)" in dup.stderr
    found = [json.loads(line) for line in dup.stdout.splitlines() if line.strip()]
    assert found and all(m["min_score"] >= 0.93 for m in found)  # its weakest window pair
    assert found[0]["recording_id"] == 1 and found[0]["offset_s"] == 0  # itself, as stored


def test_the_built_in_models_keep_the_former_tables():
    """The facts moved onto the built-in classes say what the tables outside them said
    (spaces.PREFERENCES, duplicates.DEFAULT_MIN_SCORE, export.MODEL_BAND_HZ, occurrence.MODEL,
    speakers.VOICE_MODEL): a model that ranks no purpose comes after those that do."""
    from soundscape.embedders.birdnet import FIELD_WORDS, NON_SPECIES_CLASSES
    from soundscape.occurrence import model_name
    from soundscape.speakers import voice_model

    classes = embedders.model_classes()
    ranked = {
        p: tuple(n for n in sorted(classes, key=lambda n: classes[n].preference.get(p, 99))
                 if p in classes[n].preference)
        for p in PURPOSES
    }  # fmt: skip
    assert ranked == {
        "text": ("clap", "birdnet", "spectral"),
        "audio": ("clap", "birdnet", "spectral"),
        "anomalies": ("spectral", "birdnet", "clap"),
        "duplicates": ("birdnet", "spectral", "clap"),
        "labels": ("birdnet",),
    }
    assert {n: c.duplicate_min_score for n, c in classes.items()} == {
        "birdnet": 0.70, "clap": 0.80, "indices": 0.999, "musicnn": 0.80, "spectral": 0.80,
        "voice": 0.80,
    }  # fmt: skip
    assert {n: c.band_hz for n, c in classes.items() if c.band_hz} == {"birdnet": (0, 15000)}
    assert classes["birdnet"].field_words is FIELD_WORDS and FIELD_WORDS["saw"] == ("Power tools",)
    assert classes["birdnet"].non_species_classes is NON_SPECIES_CLASSES
    assert {n for n, c in classes.items() if c.field_words} == {"birdnet"}
    assert (model_name(), voice_model()) == ("birdnet", "voice")
    assert embedders.model_facts("not-installed") is Embedder  # a missing plugin's space
