"""Model registry: built-in and third-party embedders found through entry points."""

from __future__ import annotations

from soundscape.embedders.base import Embedder, l2_normalize
from soundscape.errors import SoundscapeError
from soundscape.plugins import Registry

ENTRY_POINT_GROUP = "soundscape.models"

__all__ = [
    "Embedder", "l2_normalize", "get_model_class", "model_classes", "model_facts", "load_model",
]  # fmt: skip

# Built-ins are also listed here so that the package works when run from a source tree
# without being installed (entry points then do not exist).
_BUILTINS = {
    "birdnet": "soundscape.embedders.birdnet:BirdNET",
    "clap": "soundscape.embedders.clap:CLAP",
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
