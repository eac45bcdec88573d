"""Voice activity detection: where in a piece of audio someone speaks.

The Silero VAD model that ships inside ``faster-whisper`` (an ONNX file run by onnxruntime; no
torch, nothing downloaded), about 500x real time on one core. The speech models use it so that
only speech is transcribed (``whisper``) or embedded (``voice``): a forest soundscape costs
almost nothing and yields nothing.

``faster-whisper`` is an optional dependency (``pip install 'soundscape[speech]'``); it is
imported on the first call, so importing this module is cheap.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from typing import Any

import numpy as np

from soundscape.errors import ModelUnavailable

#: the sample rate Silero VAD works at
SAMPLE_RATE = 16000


def unavailable_reason() -> str | None:
    """None when the VAD can run here, else what to install."""
    if importlib.util.find_spec("faster_whisper") is None:
        return (
            "voice activity detection needs faster-whisper (its Silero VAD model): "
            "pip install 'soundscape[speech]'"
        )
    return None


@cache
def _vad() -> Any:
    """The faster_whisper.vad module (imported once, on first use)."""
    reason = unavailable_reason()
    if reason is not None:
        raise ModelUnavailable(reason)
    import faster_whisper.vad as vad  # optional heavy dependency, loaded on first use

    return vad


def speech_regions(
    samples: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    threshold: float = 0.5,
    min_silence_s: float = 0.5,
    pad_s: float = 0.2,
    min_speech_s: float = 0.25,
) -> list[tuple[float, float]]:
    """Speech regions of mono ``samples`` as ``(start_s, end_s)`` pairs, in order.

    ``threshold``: Silero's speech probability above which a 32 ms frame is speech.
    Regions closer than ``min_silence_s`` are joined, each is padded by ``pad_s`` on both
    sides (clipped to the audio), and regions shorter than ``min_speech_s`` are dropped.
    ``samples`` must be at 16 kHz (Silero's rate); other rates are an error, since resampling
    belongs to the caller's decoder.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"speech_regions needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
    x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return []
    vad = _vad()
    options = vad.VadOptions(
        threshold=threshold,
        min_speech_duration_ms=int(min_speech_s * 1000),
        min_silence_duration_ms=int(min_silence_s * 1000),
        speech_pad_ms=int(pad_s * 1000),
    )
    stamps = vad.get_speech_timestamps(x, options, sampling_rate=SAMPLE_RATE)
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def speech_fraction(regions: list[tuple[float, float]], start_s: float, end_s: float) -> float:
    """How much of ``[start_s, end_s)`` the ``regions`` cover (0..1)."""
    length = end_s - start_s
    if length <= 0:
        return 0.0
    covered = sum(max(0.0, min(e, end_s) - max(s, start_s)) for s, e in regions)
    return min(1.0, covered / length)
