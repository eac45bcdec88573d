"""Transcriber registry: built-in and third-party speech-to-text models found through the
``soundscape.transcribers`` entry-point group (the contract: ``transcribers/base.py``)."""

from __future__ import annotations

from soundscape.plugins import Registry
from soundscape.transcribers.base import Transcriber, Utterance, Word

ENTRY_POINT_GROUP = "soundscape.transcribers"

__all__ = [
    "Transcriber", "Utterance", "Word", "get_transcriber_class", "is_transcriber",
    "load_transcriber", "transcriber_names",
]  # fmt: skip

# Built-ins are also listed here so that the package works from a source tree that is not
# installed (entry points then do not exist).
_BUILTINS = {"whisper": "soundscape.transcribers.whisper:Whisper"}

TRANSCRIBERS: Registry[Transcriber] = Registry(ENTRY_POINT_GROUP, _BUILTINS, "transcriber")


def transcriber_names() -> list[str]:
    return TRANSCRIBERS.names()


def is_transcriber(name: str) -> bool:
    """True if ``name`` (as given to ``--model``) names a transcriber, not an embedder."""
    return name in TRANSCRIBERS


def get_transcriber_class(name: str) -> type[Transcriber]:
    return TRANSCRIBERS.get(name)


def load_transcriber(name: str, **params) -> Transcriber:
    """Instantiate a transcriber, raising ``ModelUnavailable`` with a fix when it cannot run."""
    return TRANSCRIBERS.load(name, **params)
