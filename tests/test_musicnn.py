"""The `musicnn` model: the checkpoint reader, the numpy network against the original
TensorFlow model (tests/data/musicnn_reference.json, made by bench/musicnn_reference.py), its
tags on real instrument clips, and label search through a real database."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from soundscape.audio import iter_windows
from soundscape.embedders import get_model_class, load_model
from soundscape.embedders.musicnn import MTT_LABELS, MusiCNN, checkpoint_dir
from soundscape.embedders.tfcheckpoint import CheckpointError, read_checkpoint
from soundscape.errors import ModelUnavailable

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((ROOT / "tests" / "data" / "musicnn_reference.json").read_text())
CLIPS = {Path(c["file"]).stem: c for c in REFERENCE["clips"]}
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model() -> MusiCNN:
    return MusiCNN()


@pytest.fixture(scope="module")
def outputs(model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each reference clip windowed as ingest does, through the model: (embeddings, tags)."""
    out = {}
    for stem, clip in CLIPS.items():
        (batch,) = iter_windows(ROOT / clip["file"], 16000, 3.0, 2.0)
        out[stem] = model.embed_audio_and_scores(batch.samples)
    return out


# -- the checkpoint reader -----------------------------------------------------------------


def test_reader_gives_every_tensor_of_the_checkpoint():
    tensors = read_checkpoint(f"{checkpoint_dir()}/")
    assert tensors["conv2d/kernel"].shape == (7, 38, 1, 204)
    assert tensors["dense/kernel"].shape == (1506, 200)
    assert tensors["dense_1/bias"].shape == (50,)
    assert tensors["beta1_power"].shape == ()
    assert all(t.dtype == np.float32 and t.flags.writeable for t in tensors.values())
    assert len(tensors) == 150  # model variables and their Adam slots
    assert np.isfinite(tensors["conv2d_5/kernel"]).all()
    assert tensors["batch_normalization_9/moving_variance"].min() > 0


def test_reader_refuses_damaged_checkpoints(tmp_path):
    source = Path(f"{checkpoint_dir()}")
    index = (source / ".index").read_bytes()
    data = (source / ".data-00000-of-00001").read_bytes()
    (tmp_path / "a.index").write_bytes(index[:-1] + b"\0")  # bad magic
    with pytest.raises(CheckpointError, match="not a TensorFlow checkpoint"):
        read_checkpoint(tmp_path / "a")
    (tmp_path / "b.index").write_bytes(index)
    (tmp_path / "b.data-00000-of-00001").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="beyond the end"):
        read_checkpoint(tmp_path / "b")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path / "missing")
    assert issubclass(CheckpointError, ModelUnavailable)  # the CLI prints it as a message
    assert struct.unpack("<Q", index[-8:])[0] == 0xDB4775248B80FB57


# -- the plugin ------------------------------------------------------------------------------


def test_registered_as_a_labelled_model():
    cls = get_model_class("musicnn")
    assert cls is MusiCNN
    assert cls.unavailable_reason() is None
    assert cls.has_class_scores and cls.fixed_window and not cls.supports_text
    assert (cls.dimension, cls.sample_rate, cls.default_window_s) == (200, 16000, 3.0)
    assert load_model("musicnn").labels == REFERENCE["labels"] == list(MTT_LABELS)
    with pytest.raises(Exception, match="no parameters"):
        load_model("musicnn", n_mels=64)


def test_unavailable_without_the_musicnn_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "musicnn" else real(name, *a)
    )
    reason = MusiCNN.unavailable_reason()
    assert reason is not None and "pip install --no-deps musicnn==0.1.0" in reason
    with pytest.raises(ModelUnavailable, match="musicnn==0.1.0"):
        load_model("musicnn")


def test_matches_the_original_tensorflow_model(outputs):
    """Tag probabilities and the embedding equal the original model's to 1e-4 on every window
    (violin, cello, drum kit, a dog; the last window of each clip zero-padded)."""
    windows = 0
    for stem, clip in CLIPS.items():
        embeddings, tags = outputs[stem]
        assert len(tags) == len(clip["windows"]), stem
        for i, ref in enumerate(clip["windows"]):
            np.testing.assert_allclose(tags[i], ref["tags"], atol=TOLERANCE, err_msg=stem)
            head = np.asarray(ref["embedding_head"]) / ref["embedding_norm"]
            np.testing.assert_allclose(
                embeddings[i, : len(head)], head, atol=TOLERANCE, err_msg=stem
            )
            windows += 1
    assert windows == 7


def test_top_tags_name_the_instruments(outputs):
    def top(stem: str, n: int = 5) -> list[str]:
        """The clip's first (full, unpadded) window's best tags."""
        return [MTT_LABELS[i] for i in np.argsort(-outputs[stem][1][0])[:n]]

    assert {"violin", "strings"} & set(top("violin"))
    assert {"cello", "strings"} & set(top("cello", 3))
    assert "drums" in top("drumkit", 3)
    assert "drums" not in top("violin") and "drums" not in top("cello")
    # the clips do not all get the same tags (what musicnn's float16 overflow does)
    assert len({tuple(top(stem, 3)) for stem in CLIPS}) == len(CLIPS)


def test_loud_audio_stays_finite_and_silence_is_a_valid_vector(model):
    """A full-scale window overflows float16 (10000 * mel > 65504); the log is float32 here."""
    t = np.arange(48000, dtype=np.float32) / 16000
    loud = np.sign(np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # full-scale square wave
    mel = model.log_mel(loud[None])
    assert mel.dtype == np.float32 and mel.shape == (1, 187, 96)
    assert np.isfinite(mel).all() and mel.max() > np.log10(65504)
    embeddings, tags = model.embed_audio_and_scores(np.stack([loud, np.zeros(48000, np.float32)]))
    assert np.isfinite(embeddings).all() and np.isfinite(tags).all()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    assert ((tags > 0) & (tags < 1)).all()
    with pytest.raises(ValueError, match="48000"):
        model.embed_audio_and_scores(np.zeros((1, 16000), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        model.embed_audio_and_scores(np.full((1, 48000), np.nan, np.float32))


# -- end to end: ingest and label search in a real database ---------------------------------


@pytest.fixture(scope="module")
def music_db(module_db_url):
    from click.testing import CliRunner

    from soundscape.cli import cli

    env = {"SOUNDSCAPE_DATABASE_URL": module_db_url}
    runner = CliRunner()
    r = runner.invoke(cli, ["sensors", "add", "studio", "--timezone", "UTC"], env=env)
    assert r.exit_code == 0, r.output
    files = [str(ROOT / c["file"]) for c in REFERENCE["clips"]]
    r = runner.invoke(cli, ["ingest", *files, "-s", "studio", "-m", "musicnn", "-q"], env=env)
    assert r.exit_code == 0, r.output
    return module_db_url


def test_label_search_finds_the_drum_kit_first(music_db, run_cli, monkeypatch):
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", music_db)
    result = run_cli("search", "drums", "--space", "musicnn", "--json")
    assert result.exit_code == 0, result.output
    assert "labels drums" in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows and Path(rows[0]["path"]).name == "drumkit.ogg"
    cello = [
        json.loads(x)
        for x in run_cli("search", "cello", "--space", "musicnn", "--json").stdout.splitlines()
    ]
    assert Path(cello[0]["path"]).name == "cello.ogg"
    # the stored scores are the model's: the drum kit's best stored score for "drums"
    ref = max(w["tags"][MTT_LABELS.index("drums")] for w in CLIPS["drumkit"]["windows"])
    assert rows[0]["score"] == pytest.approx(ref, abs=TOLERANCE)


def test_models_list_shows_musicnn(music_db, run_cli):
    rows = [json.loads(x) for x in run_cli("models", "list", "--json").stdout.splitlines()]
    (row,) = [r for r in rows if r["name"] == "musicnn"]
    assert row["available"] and row["classes"] and row["dimension"] == 200


def test_a_tag_is_found_without_naming_the_space(music_db, run_cli, monkeypatch):
    """BirdNET is the preferred labelled space; a text only MusiCNN's tags match goes there,
    and BirdNET's field word "birdsong" does not select MusiCNN's tags."""
    monkeypatch.setenv("SOUNDSCAPE_DATABASE_URL", music_db)
    dog = str(ROOT / next(c["file"] for c in REFERENCE["clips"] if "dog" in c["file"]))
    r = run_cli("ingest", dog, "-s", "studio", "-m", "birdnet", "-q")
    assert r.exit_code == 0, r.output
    result = run_cli("search", "drums", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows and Path(rows[0]["path"]).name == "drumkit.ogg"
    assert run_cli("search", "dog", "--json").exit_code == 0  # still BirdNET's class
    refused = run_cli("search", "birdsong", "--space", "musicnn")
    assert refused.exit_code == 1 and "no musicnn label matches" in refused.output
