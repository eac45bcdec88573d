"""The transcriber interface: what a speech-to-text model ("what is said") implements.

A transcriber turns a chunk of mono 16 kHz speech (at most ``max_chunk_s`` seconds; soundscape
cuts recordings at silences found by voice activity detection, ``soundscape.vad``) into
utterances with word timestamps. Transcribers are found through the ``soundscape.transcribers``
entry-point group, beside the embedders' ``soundscape.models`` (``embedders/base.py``), so a
third-party package can add one with::

    [project.entry-points."soundscape.transcribers"]
    mymodel = "mypackage.module:MyTranscriber"

and ``soundscape ingest --model mymodel`` then stores its utterances. Weights must load lazily
(on the first ``transcribe`` call) so that listing models is cheap, and must never be
downloaded behind the user's back: ``unavailable_reason`` says what to install instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass
class Word:
    """A recognised word and its times (seconds; relative to the chunk a transcriber was
    given, to the recording once soundscape has placed it)."""

    word: str
    start_s: float
    end_s: float
    probability: float | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "w": self.word,
            "s": round(self.start_s, 3),
            "e": round(self.end_s, 3),
        }
        if self.probability is not None:
            out["p"] = round(float(self.probability), 3)
        return out


@dataclass
class Utterance:
    """A stretch of speech the model transcribed as one unit (a sentence or phrase)."""

    start_s: float
    end_s: float
    text: str
    words: list[Word] = field(default_factory=list)
    language: str | None = None


class Transcriber:
    """Base class for speech-to-text models.

    Class attributes describe the model; ``version`` is stored with every transcript, so a new
    version (other weights or decoding) transcribes recordings again instead of skipping them.
    """

    #: registry name, e.g. ``"whisper"``
    name: ClassVar[str]
    #: model version stored with each transcript (weights + decoding settings)
    version: ClassVar[str]
    #: the sample rate ``transcribe`` expects (Whisper and Silero VAD: 16 kHz)
    sample_rate: ClassVar[int] = 16000
    #: the longest chunk ``transcribe`` accepts, in seconds
    max_chunk_s: ClassVar[float] = 30.0
    #: the language spoken, when the model knows only one (``None``: detected per chunk)
    language: ClassVar[str | None] = None
    #: one line for ``soundscape models list``
    description: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when the model can run here, else why not and how to fix it."""
        return None

    def transcribe(self, samples: np.ndarray) -> list[Utterance]:
        """Transcribe one chunk (float32 mono at ``sample_rate``, at most ``max_chunk_s``).

        Returns utterances in order, times relative to the chunk's first sample, each with its
        words; silence or noise gives an empty list (never invented text)."""
        raise NotImplementedError
