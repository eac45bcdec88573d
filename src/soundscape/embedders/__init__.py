"""Model registry: built-in and third-party embedders found through entry points."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from soundscape.embedders.base import Embedder, l2_normalize
from soundscape.errors import ModelUnavailable, SoundscapeError

ENTRY_POINT_GROUP = "soundscape.models"

__all__ = ["Embedder", "l2_normalize", "get_model_class", "model_classes", "load_model"]

# Built-ins are also listed here so that the package works when run from a source tree
# without being installed (entry points then do not exist).
_BUILTINS = {
    "birdnet": "soundscape.embedders.birdnet:BirdNET",
    "clap": "soundscape.embedders.clap:CLAP",
    "musicnn": "soundscape.embedders.musicnn:MusiCNN",
    "spectral": "soundscape.embedders.spectral:Spectral",
    "voice": "soundscape.embedders.voice:Voice",
}


def _load(target: str) -> type[Embedder]:
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)


@cache
def _entry_points() -> dict[str, str]:
    found = dict(_BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def model_names() -> list[str]:
    return sorted(_entry_points())


def get_model_class(name: str) -> type[Embedder]:
    targets = _entry_points()
    key = name.strip().lower()
    if key not in targets:
        raise SoundscapeError(
            f"unknown model {name!r}; available: {', '.join(sorted(targets))} "
            "(see `soundscape models list`)"
        )
    return _load(targets[key])


def model_classes() -> dict[str, type[Embedder]]:
    return {name: get_model_class(name) for name in model_names()}


def load_model(name: str, **params) -> Embedder:
    """Instantiate a model, raising ``ModelUnavailable`` with a fix when it cannot run here."""
    cls = get_model_class(name)
    reason = cls.unavailable_reason()
    if reason:
        raise ModelUnavailable(f"model {name!r} is not available: {reason}")
    return cls(**params)
