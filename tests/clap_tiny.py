"""A tiny, random, fully offline CLAP 2023 for tests of the real msclap code path.

Builds, once per session:

- a one-layer GPT-2 directory (``.../tiny-gpt2``: msclap dispatches on the substrings "gpt" and
  "clip" of the path) with a byte-level tokenizer: the 256 GPT-2 byte symbols in GPT-2's order,
  so that '!' (msclap's pad token, counted as padding because its id is 0) is id 0, plus
  ``<|endoftext|>``, and no merges. ``n_embd`` is 768 because msclap's text projection takes
  ``transformer_embed_dim`` (768) from its own config, not from the GPT-2 config;
- a checkpoint holding the full state dict of a randomly initialised (seeded) CLAP, built with
  the production code from an empty checkpoint. Every later load gives the same model, in
  any process.

The model is the real HTS-AT (full size) with random weights, so vectors have no meaning but
shapes, dtypes, determinism, batching and the ingest path are real.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass(frozen=True)
class TinyClap:
    weights: Path
    text_model: Path

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that make ``load_model("clap")`` use the tiny model offline."""
        return {
            "SOUNDSCAPE_CLAP_WEIGHTS": str(self.weights),
            "SOUNDSCAPE_CLAP_TEXT_MODEL": str(self.text_model),
            **OFFLINE,
        }


def build_text_model(directory: Path) -> Path:
    """Write a one-layer GPT-2 with a byte-level tokenizer into ``directory``."""
    import torch
    from transformers import GPT2Config, GPT2Model, GPT2TokenizerFast
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    directory.mkdir(parents=True, exist_ok=True)
    # bytes_to_unicode lists the printable bytes first ('!' .. '~' ...), as GPT-2's vocabulary.
    vocab = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    assert vocab["!"] == 0
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=128,
        n_embd=768,
        n_layer=1,
        n_head=12,
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
    )
    torch.manual_seed(0)
    GPT2Model(config).save_pretrained(directory)
    # Loading vocab.json + merges.txt and saving back adds tokenizer.json and its config.
    GPT2TokenizerFast.from_pretrained(directory).save_pretrained(directory)
    return directory


def build(root: Path) -> TinyClap:
    """Build the tiny text model and a checkpoint of a seeded random CLAP under ``root``."""
    import torch

    from soundscape.embedders.clap import CLAP

    text_model = build_text_model(root / "tiny-gpt2")
    weights = root / "clap-tiny.pth"
    torch.save({"model": {}}, weights)
    torch.manual_seed(0)
    model = CLAP(weights=weights, text_model=str(text_model))
    clap = model._load()
    torch.save({"model": clap.state_dict()}, weights)
    return TinyClap(weights=weights, text_model=text_model)


@pytest.fixture(scope="session")
def tiny_clap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyClap]:
    """The tiny offline CLAP (built once per session)."""
    pytest.importorskip("msclap")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE.items():
            mp.setenv(key, value)
        tiny = build(tmp_path_factory.mktemp("clap"))
    yield tiny


@pytest.fixture
def clap_env(tiny_clap: TinyClap, monkeypatch: pytest.MonkeyPatch) -> TinyClap:
    """Point ``load_model("clap")`` (and the CLI) at the tiny model for one test."""
    for key, value in tiny_clap.env.items():
        monkeypatch.setenv(key, value)
    return tiny_clap


def subprocess_env(extra: dict[str, str], drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The current environment plus ``extra``, without the keys in ``drop``."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env
