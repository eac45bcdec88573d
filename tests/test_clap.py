"""CLAP 2023 (msclap) through the real msclap classes, offline, with a tiny random model.

Skipped as a whole when the ``clap`` extra is not installed. The ``real_clap`` test runs only
when ``SOUNDSCAPE_CLAP_WEIGHTS`` points at the real ``CLAP_weights_2023.pth``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

# Found, not imported: importing msclap imports torch (seconds), and `make test-fast` collects
# this module too before it deselects its (slow) tests.
if importlib.util.find_spec("msclap") is None:
    pytest.skip("msclap is not installed (the clap extra)", allow_module_level=True)

from soundscape.audio import WindowStream, decode_span  # noqa: E402
from soundscape.db import make_engine  # noqa: E402
from soundscape.embedders import get_model_class, load_model  # noqa: E402
from soundscape.embedders.clap import CLAP, WEIGHTS_FILE  # noqa: E402
from soundscape.errors import SoundscapeError  # noqa: E402

from . import clap_tiny  # noqa: E402
from .clap_tiny import TinyClap, subprocess_env  # noqa: E402
from .conftest import _fresh_database, real_audio  # noqa: E402

# End-to-end: builds msclap models (torch). `make test-fast` (-m "not slow") skips it.
pytestmark = pytest.mark.slow

# The tiny-model fixtures (to move to conftest.py once other modules need them).
tiny_clap = clap_tiny.tiny_clap
clap_env = clap_tiny.clap_env

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "audio"
FIRETRUCK = EXAMPLES / "firetruck.ogg"  # 10.3 s -> 2 windows of 7 s every 6 s
SOUNDSCAPE = EXAMPLES / "xc563936.mp3"  # 72 s
WINDOW = 7 * 44100
CLI = [sys.executable, "-m", "soundscape"]


def expected_windows(duration: float, window: float, hop: float) -> int:
    n = 1
    while n * hop < duration and (n - 1) * hop + window < duration:
        n += 1
    return n


@pytest.fixture(scope="module")
def model(tiny_clap: TinyClap) -> CLAP:
    return CLAP(weights=tiny_clap.weights, text_model=str(tiny_clap.text_model))


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    """Three real 7 s windows at 44.1 kHz (the fire truck, two of the forest soundscape)."""
    rows = [decode_span(FIRETRUCK, 44100, 0, 7), decode_span(SOUNDSCAPE, 44100, 0, 7)]
    rows += [decode_span(SOUNDSCAPE, 44100, 60, 67)]
    return np.stack([r[:WINDOW] for r in rows]).astype(np.float32)


# -- the model --------------------------------------------------------------------------------


def test_registered_and_described() -> None:
    cls = get_model_class("clap")
    assert cls is CLAP
    assert (cls.dimension, cls.sample_rate, cls.version) == (1024, 44100, "2023")
    assert (cls.default_window_s, cls.default_hop_s, cls.fixed_window) == (7.0, 6.0, False)
    assert cls.supports_text and not cls.has_class_scores
    assert cls.unavailable_reason() is None


def test_embed_audio(model: CLAP, audio: np.ndarray) -> None:
    vectors, scores = model.embed_audio_and_scores(audio)
    assert scores is None
    assert vectors.shape == (3, 1024) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Batch invariance: one window at a time gives the same vectors (up to float rounding).
    single = np.concatenate([model.embed_audio(audio[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(single, vectors, atol=1e-5)
    # Deterministic, and different windows give different vectors.
    np.testing.assert_array_equal(model.embed_audio(audio), vectors)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3


def test_embed_audio_edge_cases(model: CLAP, audio: np.ndarray) -> None:
    # Silence, other window lengths (stretched / averaged over crops by HTS-AT), empty batch.
    silent = model.embed_audio(np.zeros((1, WINDOW), np.float32))
    for x in (silent, model.embed_audio(audio[:1, : 3 * 44100])):
        assert np.isfinite(x).all()
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    long = np.concatenate([audio[0], audio[1]])[None]  # 14 s
    assert model.embed_audio(long).shape == (1, 1024)
    assert model.embed_audio(np.zeros((0, WINDOW), np.float32)).shape == (0, 1024)
    with pytest.raises(ValueError, match="at least 1024 samples"):
        model.embed_audio(np.zeros((1, 500), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        model.embed_audio(np.full((1, WINDOW), np.nan, np.float32))


def test_embed_text(model: CLAP) -> None:
    texts = ["a dog barking", "a siren", "birds singing at dawn", "x " * 200]
    vectors = model.embed_text(texts)
    assert vectors.shape == (4, 1024) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(model.embed_text(texts), vectors)
    np.testing.assert_allclose(model.embed_text(texts[1:2])[0], vectors[1], atol=1e-5)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3
    assert model.embed_text([]).shape == (0, 1024)


def test_tokenize_matches_msclap(model: CLAP, tiny_clap: TinyClap) -> None:
    """Our batch tokenisation is msclap's ``preprocess_text``, plus truncation of long texts."""
    from soundscape.embedders.clap import _wrapper

    texts = ["a dog barking", "fireworks exploding over the city"]
    ours = model.tokenize(texts)
    wrapper = _wrapper()(str(tiny_clap.weights), str(tiny_clap.text_model))
    theirs = wrapper.preprocess_text(texts)
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy())
    long = model.tokenize(["word " * 100])["input_ids"][0].numpy()
    assert long.shape == (77,) and long[-1] == model._tokenizer.convert_tokens_to_ids(
        "<|endoftext|>"
    )


def test_runtime_options_are_not_params(clap_env: TinyClap) -> None:
    """load_model("clap") works from the environment alone; paths never enter the space key."""
    model = load_model("clap")
    assert model.params == {}
    assert model.weights_path == str(clap_env.weights)
    assert model.text_model == str(clap_env.text_model)
    with pytest.raises(SoundscapeError, match="takes no parameters"):
        load_model("clap", fmax=14000)


def test_missing_weights_file(clap_env: TinyClap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUNDSCAPE_CLAP_WEIGHTS", "/nonexistent/CLAP_weights_2023.pth")
    assert "is not a file" in CLAP.unavailable_reason()
    with pytest.raises(SoundscapeError, match="is not a file"):
        load_model("clap")
    monkeypatch.delenv("SOUNDSCAPE_CLAP_WEIGHTS")
    monkeypatch.setenv("SOUNDSCAPE_CLAP_TEXT_MODEL", str(clap_env.weights.parent))
    with pytest.raises(SoundscapeError, match="contains 'gpt'"):
        CLAP(weights=clap_env.weights)


def fake_hub_cache(root: Path, repo: str, files: dict[str, Path]) -> Path:
    """Lay ``files`` (name -> target) out as the Hugging Face cache holds a download of
    ``repo``; returns the snapshot directory."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name, target in files.items():
        (snapshot / name).symlink_to(target)
    return snapshot


def test_weights_and_gpt2_from_the_hub_cache(
    tiny_clap: TinyClap, model: CLAP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the variables, files already in the Hugging Face cache are used as they are,
    without asking the hub (which on a machine without network retries for ~25 s per file)."""
    import huggingface_hub
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    weights = fake_hub_cache(hub, "microsoft/msclap", {WEIGHTS_FILE: tiny_clap.weights})
    gpt2 = fake_hub_cache(hub, "gpt2", {f.name: f for f in tiny_clap.text_model.iterdir()})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    for key in ("SOUNDSCAPE_CLAP_WEIGHTS", "SOUNDSCAPE_CLAP_TEXT_MODEL"):
        monkeypatch.delenv(key, raising=False)

    cached = load_model("clap")
    assert cached.params == {}
    assert cached.weights_path == str(weights / WEIGHTS_FILE)
    assert cached.text_model == str(gpt2)
    texts = ["a dog barking", "rain"]
    np.testing.assert_array_equal(cached.embed_text(texts), model.embed_text(texts))


def test_checkpoint_with_python_objects_loads(tiny_clap: TinyClap, tmp_path: Path) -> None:
    """torch >= 2.6 refuses pickled Python objects by default (weights_only=True), which
    checkpoints saved by training scripts often hold; the model retries a full load."""
    import argparse

    import torch

    weights = tmp_path / "with-args.pth"
    torch.save({"model": {}, "args": argparse.Namespace(epochs=1)}, weights)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(weights)
    model = CLAP(weights=weights, text_model=str(tiny_clap.text_model))
    assert model.embed_text(["rain"]).shape == (1, 1024)
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ


# -- ingest ------------------------------------------------------------------------------------


@pytest.fixture
def other_db_url(admin_url: str, template_url: str):
    """A second fresh database for the same test."""
    yield from _fresh_database(admin_url)


def add_sensor(run_cli, url: str) -> None:
    result = run_cli("sensors", "add", "north-1", "--timezone", "Europe/Berlin", "--database", url)
    assert result.exit_code == 0, result.output


def stored_vectors(url: str) -> list[tuple[str, float, float, np.ndarray]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT r.path, s.start_s, s.end_s, s.embedding::text AS e FROM segments s "
                    "JOIN spaces p ON p.id = s.space_id JOIN recordings r ON r.id = s.recording_id "
                    "WHERE p.name = 'clap' ORDER BY r.path, s.start_s"
                )
            ).fetchall()
    finally:
        engine.dispose()
    return [
        (Path(r.path).name, r.start_s, r.end_s, np.array(json.loads(r.e), np.float32)) for r in rows
    ]


def test_ingest_twice_gives_identical_vectors(
    clap_env: TinyClap, cli_env: str, other_db_url: str, run_cli
) -> None:
    """The same files through ingest, once in-process and once in a new process, into two
    fresh databases: identical vectors, and the right windows."""
    files = [FIRETRUCK, SOUNDSCAPE]
    add_sensor(run_cli, cli_env)
    result = run_cli("ingest", *files, "-s", "north-1", "-m", "clap", "--json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["stored"] == 2

    add_sensor(run_cli, other_db_url)
    env = subprocess_env({**clap_env.env, "SOUNDSCAPE_DATABASE_URL": other_db_url})
    proc = subprocess.run(
        [*CLI, "ingest", *map(str, files), "-s", "north-1", "-m", "clap", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr

    first, second = stored_vectors(cli_env), stored_vectors(other_db_url)
    assert len(first) == len(second) == 2 + expected_windows(72.0, 7.0, 6.0) == 14
    for a, b in zip(first, second):
        assert a[:3] == b[:3]
        np.testing.assert_array_equal(a[3], b[3])
        assert abs(np.linalg.norm(a[3]) - 1.0) < 1e-5
    starts = [r[1] for r in first if r[0] == "firetruck.ogg"]
    assert starts == [0.0, 6.0]


def test_stored_vectors_are_the_windows(clap_env: TinyClap, cli_env: str, run_cli) -> None:
    """Ingest feeds the model exact 7 s windows (the last one zero-padded), nothing random."""
    add_sensor(run_cli, cli_env)
    result = run_cli("ingest", FIRETRUCK, "-s", "north-1", "-m", "clap", "-q")
    assert result.exit_code == 0, result.output
    rows = stored_vectors(cli_env)
    model = load_model("clap")
    for _name, start, _end, stored in rows:
        samples = decode_span(FIRETRUCK, 44100, start, start + 7.0)
        window = np.zeros(WINDOW, np.float32)
        window[: min(WINDOW, len(samples))] = samples[:WINDOW]
        np.testing.assert_allclose(model.embed_audio(window[None])[0], stored, atol=1e-4)


def test_models_list_shows_clap_available(clap_env: TinyClap, run_cli) -> None:
    # available: msclap imports and the weights and GPT-2 are here (the tiny ones); without
    # them test_validation.py checks it is not
    result = run_cli("models", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    clap = rows["clap"]
    assert clap["available"] is True and clap["reason"] == ""
    assert (clap["dimension"], clap["sample_rate"], clap["text"]) == (1024, 44100, True)


def test_offline_without_weights_is_a_clear_error(tmp_path: Path, cli_env: str, run_cli) -> None:
    add_sensor(run_cli, cli_env)
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    env = subprocess_env(
        {
            "SOUNDSCAPE_DATABASE_URL": cli_env,
            "HF_HOME": str(hf_home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        },
        drop=("SOUNDSCAPE_CLAP_WEIGHTS", "SOUNDSCAPE_CLAP_TEXT_MODEL", "HF_HUB_CACHE"),
    )
    proc = subprocess.run(
        [*CLI, "ingest", str(FIRETRUCK), "-s", "north-1", "-m", "clap", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())
    assert "SOUNDSCAPE_CLAP_WEIGHTS" in message and WEIGHTS_FILE in message
    assert "--weights" in message
    assert "connect to the internet once" in message
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr


# -- msclap's process-wide warnings filter -----------------------------------------------------


def run_python(code: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_msclap_warnings_side_effect_is_undone(tiny_clap: TinyClap) -> None:
    env = subprocess_env(tiny_clap.env)
    probe = """
        import warnings
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn("probe", UserWarning)
        blanket = ("ignore", None, Warning, None, 0) in warnings.filters
        print(len(seen), blanket)
    """
    # The side effect is real: a plain import of msclap silences every warning.
    assert run_python("import msclap\n" + textwrap.dedent(probe), env) == "0 True"
    # Through soundscape (import, load, embed) warnings still work.
    load = """
        import numpy as np
        from soundscape.embedders import load_model
        model = load_model("clap")
        model.embed_audio(np.zeros((1, 308700), np.float32))
        model.embed_text(["a siren"])
        import sys
        assert "msclap" in sys.modules
    """
    assert run_python(textwrap.dedent(load) + textwrap.dedent(probe), env) == "1 False"


# -- the real model ------------------------------------------------------------------------------

REAL_WEIGHTS = os.environ.get("SOUNDSCAPE_CLAP_WEIGHTS", "")


@pytest.mark.real_clap
@pytest.mark.skipif(
    not (REAL_WEIGHTS and Path(REAL_WEIGHTS).is_file()),
    reason="set SOUNDSCAPE_CLAP_WEIGHTS to the real CLAP_weights_2023.pth",
)
def test_real_clap_zero_shot_on_real_clips() -> None:
    """Text queries rank the right real clip first (cosine with the mean window vector)."""
    model = CLAP()

    def clip_vector(name: str) -> np.ndarray:
        stream = WindowStream(real_audio(name), 44100, 7.0, 6.0, batch_size=4)
        vectors = np.concatenate([model.embed_audio(b.samples) for b in stream])
        mean = vectors.mean(axis=0)
        return mean / np.linalg.norm(mean)

    pairs = [
        ("a dog barking", "dog.ogg", "violin.ogg"),
        ("a siren", "firetruck.ogg", "owl.ogg"),
        ("birds singing", "blackbird.ogg", "saw.ogg"),
        ("fireworks exploding", "fireworks.ogg", "cuckoo.ogg"),
    ]
    texts = model.embed_text([p[0] for p in pairs])
    for text, (query, right, wrong) in zip(texts, pairs):
        good, bad = float(text @ clip_vector(right)), float(text @ clip_vector(wrong))
        assert good > bad, f"{query!r}: {right} {good:.3f} <= {wrong} {bad:.3f}"


# -- the whole product path with the tiny model: ingest, text search, classify, backfill -------


def test_text_search_classify_and_backfill_through_msclap(
    clap_env: TinyClap, cli_env: str, run_cli
) -> None:
    """With random weights the rankings mean nothing; the plumbing (text encoder -> SQL search,
    softmax classification stored for ranger, backfill of a BirdNET-only database) is real."""
    add_sensor(run_cli, cli_env)
    # A database first filled with another model ...
    first = run_cli("ingest", FIRETRUCK, SOUNDSCAPE, "-s", "north-1", "-m", "spectral", "-q")
    assert first.exit_code == 0, first.output
    # ... gets CLAP by backfill.
    back = run_cli("backfill", "-m", "clap", "--json", "-q")
    assert back.exit_code == 0, back.output
    summary = json.loads(back.stdout)["summary"]
    assert summary["stored"] == 2
    n_clap = expected_windows(10.324, 7, 6) + expected_windows(71.983, 7, 6)
    assert summary["segments"] == n_clap

    # Text search picks the space with a text encoder by itself.
    hits = run_cli("search", "a fire truck siren", "-n", "5", "--json")
    assert hits.exit_code == 0, hits.output
    assert "searching space clap by text" in hits.stderr
    rows = [json.loads(x) for x in hits.stdout.splitlines()]
    assert len(rows) == 5 and all(-1 <= r["score"] <= 1 for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)

    # Zero-shot classification: a softmax over the labels for every window, stored.
    out = run_cli("classify", "--labels", "siren, birds, rain", "-n", "0", "--json")
    assert out.exit_code == 0, out.output
    windows = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(windows) == n_clap
    assert all(
        r["label"] in {"siren", "birds", "rain"} and 1 / 3 <= r["score"] <= 1 for r in windows
    )
    engine = sa.create_engine(cli_env)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT count(*) FROM ranger.window_labels WHERE space = 'clap'")
        ).scalar()
    engine.dispose()
    assert stored == n_clap

    # A concept from text works the same way.
    concept = run_cli("concepts", "add", "siren", "--text", "a siren", "--threshold", "-1")
    assert concept.exit_code == 0, concept.output
    assert "detection" in concept.stderr
