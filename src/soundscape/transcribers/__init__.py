"""Transcriber registry: built-in and third-party speech-to-text models found through the
``soundscape.transcribers`` entry-point group (the contract: ``transcribers/base.py``)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from soundscape.errors import ModelUnavailable, SoundscapeError
from soundscape.transcribers.base import Transcriber, Utterance, Word

ENTRY_POINT_GROUP = "soundscape.transcribers"

__all__ = [
    "Transcriber", "Utterance", "Word", "get_transcriber_class", "is_transcriber",
    "load_transcriber", "transcriber_names",
]  # fmt: skip

# Built-ins are also listed here so that the package works from a source tree that is not
# installed (entry points then do not exist).
_BUILTINS = {"whisper": "soundscape.transcribers.whisper:Whisper"}


def _load(target: str) -> type[Transcriber]:
    module_name, _, attr = target.partition(":")
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)


@cache
def _entry_points() -> dict[str, str]:
    found = dict(_BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def transcriber_names() -> list[str]:
    return sorted(_entry_points())


def is_transcriber(name: str) -> bool:
    """True if ``name`` (as given to ``--model``) names a transcriber, not an embedder."""
    return name.strip().lower() in _entry_points()


def get_transcriber_class(name: str) -> type[Transcriber]:
    targets = _entry_points()
    key = name.strip().lower()
    if key not in targets:
        raise SoundscapeError(
            f"unknown transcriber {name!r}; available: {', '.join(sorted(targets))}"
        )
    return _load(targets[key])


def load_transcriber(name: str, **params) -> Transcriber:
    """Instantiate a transcriber, raising ``ModelUnavailable`` with a fix when it cannot run."""
    cls = get_transcriber_class(name)
    reason = cls.unavailable_reason()
    if reason:
        raise ModelUnavailable(f"model {name!r} is not available: {reason}")
    return cls(**params)
