"""Model registry: built-in and third-party embedders found through entry points."""

from __future__ import annotations

from soundscape.embedders.base import Embedder, l2_normalize
from soundscape.errors import SoundscapeError
from soundscape.plugins import Registry

ENTRY_POINT_GROUP = "soundscape.models"

__all__ = [
    "Embedder", "l2_normalize", "get_model_class", "model_classes", "model_facts", "load_model",
]  # fmt: skip

# The built-in models, listed here only (not also as entry points in pyproject.toml): a source
# tree run without installing it (PYTHONPATH=src) has no entry points, and an editable install
# made before a model was added does not list it. Third-party models come from the
# ``soundscape.models`` entry-point group; everything else about a model is its class's.
_BUILTINS = {
    "birdnet": "soundscape.embedders.birdnet:BirdNET",
    "clap": "soundscape.embedders.clap:CLAP",
    "indices": "soundscape.embedders.indices:Indices",
    "musicnn": "soundscape.embedders.musicnn:MusiCNN",
    "spectral": "soundscape.embedders.spectral:Spectral",
    "voice": "soundscape.embedders.voice:Voice",
}

MODELS: Registry[Embedder] = Registry(
    ENTRY_POINT_GROUP, _BUILTINS, "model", " (see `soundscape models list`)"
)


def model_names() -> list[str]:
    return MODELS.names()


def get_model_class(name: str) -> type[Embedder]:
    return MODELS.get(name)


def model_classes() -> dict[str, type[Embedder]]:
    return {name: get_model_class(name) for name in model_names()}


def model_facts(name: str) -> type[Embedder]:
    """Where to read a model's facts (``preference``, ``band_hz``, ``duplicate_min_score``,
    ``field_words``, ...): its class, or ``Embedder``'s defaults when no model of that name is
    registered here (a space made by a plugin that is not installed)."""
    try:
        return get_model_class(name)
    except SoundscapeError:
        return Embedder


def load_model(name: str, **params) -> Embedder:
    """Instantiate a model, raising ``ModelUnavailable`` with a fix when it cannot run here."""
    return MODELS.load(name, **params)
