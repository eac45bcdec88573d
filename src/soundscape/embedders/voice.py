"""The ``voice`` model: who speaks. Resemblyzer's GE2E speaker encoder, a 256-d voice print per
window of speech.

Resemblyzer 0.1.4 (Apache-2.0) ships its weights (``resemblyzer/pretrained.pt``, 17 MB) inside
the wheel, so nothing is downloaded; it runs on torch on the CPU. Install::

    pip install 'soundscape[voice]'
    pip install --no-deps resemblyzer==0.1.4

(its ``webrtcvad`` dependency does not build without pkg_resources; the extra brings
``webrtcvad-wheels`` instead, and faster-whisper for the Silero VAD of ``soundscape.vad``).

What a window's vector is. The encoder is an LSTM over 40-band mel power frames (25 ms every
10 ms) that embeds *partial utterances* of 1.6 s (160 frames); Resemblyzer's
``embed_utterance`` averages the partials of an utterance. Here every window is turned into
the same fixed set of partials, evenly spaced so that the first starts at the window's start
and the last ends at its end (at most 0.8 s apart, as Resemblyzer's default rate of 1.3
partials per second), so a whole batch of windows goes through the LSTM in one call; each
window's vector is the L2-normalised mean of its partials' vectors. The window is first
brought up to -30 dBFS (Resemblyzer's ``normalize_volume(..., increase_only=True)``); its
silence is not trimmed (``trim_long_silences`` would give each window another length):
windows with too little speech are not embedded at all (``select_windows``).

Which windows. Only windows of speech are stored: ``select_windows`` runs the Silero VAD
(``soundscape.vad.speech_regions``) over each contiguous run of windows of a batch and keeps a
window when speech covers at least ``MIN_SPEECH_FRACTION`` (half) of it, i.e. at least one
second of a 2 s window: less than that and the voice print is mostly the background's (a
window with 0.5 s of speech scored 0.1-0.2 lower against its own speaker than a full one
here). A forest soundscape stores no voice windows.

Window and hop: 2 s every 1 s. Measured on ``../shared/audio/podcast`` (three synthetic
voices, two of which the encoder finds nearly identical, cosine 0.97 between their
enrolments): diarisation from 2 s / 1 s windows attributed 93-96 % of the speech time to the
right speaker, 3 s / 1.5 s windows only 80 % (a 3 s window more often straddles a change of
speaker, and there are half as many windows per sentence to vote) and 1.5 s / 0.75 s 76-79 %
(one partial per window: noisy). Two partials per window (0-1.6 s and 0.4-2.0 s) and a one-second
resolution for who speaks when.
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from soundscape import vad
from soundscape.embedders.base import Embedder, l2_normalize
from soundscape.embedders.birdnet import inference_threads
from soundscape.errors import ModelUnavailable, SoundscapeError

#: modules the extra provides (checked with find_spec, never imported, by unavailable_reason)
REQUIRED_MODULES = ("torch", "librosa", "faster_whisper")
INSTALL_HINT = (
    "install the voice extra and Resemblyzer itself: pip install 'soundscape[voice]' && "
    "pip install --no-deps resemblyzer==0.1.4"
)
#: a window is speech when the VAD's regions cover at least this fraction of it
MIN_SPEECH_FRACTION = 0.5

# Resemblyzer's hyper-parameters (resemblyzer/hparams.py); the weights were trained on them.
_SAMPLE_RATE = 16000
_MEL_WINDOW = 400  # 25 ms
_MEL_HOP = 160  # 10 ms
_MEL_BANDS = 40
_PARTIAL_FRAMES = 160  # 1.6 s
_PARTIAL_SAMPLES = _PARTIAL_FRAMES * _MEL_HOP
#: longest step between partials (Resemblyzer's default rate: 1.3 partials per second)
_MAX_PARTIAL_STEP = int(round(_SAMPLE_RATE / 1.3 / _MEL_HOP))  # 77 frames
_TARGET_DBFS = -30.0
_VAD_FRAME = 480  # 30 ms
_VAD_SMOOTHING = 8
_VAD_MAX_SILENCE = 6
_INT16_MAX = 2**15 - 1


def _missing_modules() -> list[str]:
    missing = []
    for name in (*REQUIRED_MODULES, "resemblyzer"):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def weights_path() -> str | None:
    """Where Resemblyzer's ``pretrained.pt`` is (inside the installed package), or None."""
    try:
        spec = importlib.util.find_spec("resemblyzer")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    return str(path) if path.is_file() else None


def partial_starts(window_samples: int) -> list[int]:
    """Frame offsets of the 1.6 s partials that cover a window: evenly spaced, the first at 0,
    the last ending at the window's last frame, at most ``_MAX_PARTIAL_STEP`` frames apart."""
    n_frames = 1 + window_samples // _MEL_HOP  # librosa's centred frames
    span = n_frames - _PARTIAL_FRAMES
    if span <= 0:
        return [0]
    count = int(np.ceil(span / _MAX_PARTIAL_STEP)) + 1
    return [int(round(i * span / (count - 1))) for i in range(count)]


def _preprocess(window: np.ndarray) -> np.ndarray:
    """Resemblyzer's ``preprocess_wav`` for a 16 kHz window: volume up to -30 dBFS (never
    down), then silences longer than 0.2 s shortened (webrtcvad, mode 3, on 30 ms frames
    smoothed over 8 frames and dilated by 6). A window whose voiced part is shorter than half
    a partial is kept whole."""
    import webrtcvad

    x = np.asarray(window, dtype=np.float64)
    rms = np.sqrt(np.mean((x * _INT16_MAX) ** 2))
    change = _TARGET_DBFS - 20 * np.log10(max(rms, 1e-9) / _INT16_MAX)
    if change > 0:
        x = x * 10 ** (min(change, 120.0) / 20)
    frame = _VAD_FRAME
    usable = len(x) - len(x) % frame
    pcm = np.clip(np.round(x[:usable] * _INT16_MAX), -32768, 32767).astype("<i2").tobytes()
    detector = webrtcvad.Vad(3)
    flags = np.array(
        [
            detector.is_speech(pcm[k * 2 : (k + frame) * 2], _SAMPLE_RATE)
            for k in range(0, usable, frame)
        ],
        dtype=np.float64,
    )
    if flags.size == 0:
        return x.astype(np.float32)
    width = _VAD_SMOOTHING
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    smooth = np.convolve(padded, np.ones(width) / width, mode="valid")
    mask = np.round(smooth).astype(bool)
    reach = _VAD_MAX_SILENCE // 2  # binary dilation by a structure of MAX_SILENCE + 1 frames
    dilated = np.convolve(mask.astype(np.int64), np.ones(2 * reach + 1, np.int64), "same") > 0
    voiced = x[:usable][np.repeat(dilated, frame)]
    if len(voiced) < _PARTIAL_SAMPLES // 2:
        return x.astype(np.float32)
    return voiced.astype(np.float32)


def _partials(x: np.ndarray) -> list[np.ndarray]:
    """The mel frames ``[160, 40]`` of each 1.6 s partial covering ``x`` (``partial_starts``),
    as Resemblyzer's ``wav_to_mel_spectrogram`` computes them (mel power, not log)."""
    import librosa

    if len(x) < _PARTIAL_SAMPLES:
        x = np.pad(x, (0, _PARTIAL_SAMPLES - len(x)))
    mel = librosa.feature.melspectrogram(
        y=x, sr=_SAMPLE_RATE, n_fft=_MEL_WINDOW, hop_length=_MEL_HOP, n_mels=_MEL_BANDS
    )
    frames = mel.astype(np.float32).T  # [frames, bands]
    return [frames[s : s + _PARTIAL_FRAMES] for s in partial_starts(len(x))]


class Voice(Embedder):
    """Resemblyzer (GE2E, VoxCeleb/LibriSpeech speakers): 256-d voice prints at 16 kHz."""

    name: ClassVar[str] = "voice"
    version: ClassVar[str] = "resemblyzer-0.1.4"
    dimension: ClassVar[int] = 256
    sample_rate: ClassVar[int] = _SAMPLE_RATE
    default_window_s: ClassVar[float] = 2.0
    default_hop_s: ClassVar[float] = 1.0
    fixed_window: ClassVar[bool] = False
    #: one partial utterance; at most 30 s (voice prints of longer spans blur speakers)
    min_window_s: ClassVar[float] = 1.6
    max_window_s: ClassVar[float] = 30.0
    batch_size: ClassVar[int] = 32
    supports_text: ClassVar[bool] = False
    has_class_scores: ClassVar[bool] = False
    description: ClassVar[str] = (
        "Resemblyzer speaker encoder (GE2E): who speaks, 256-d per 2 s window of speech "
        "(windows without speech are skipped)"
    )
    voice_prints: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        if params:
            raise SoundscapeError(
                f"model 'voice' takes no parameters, got: {', '.join(sorted(params))}"
            )
        super().__init__()
        reason = self.unavailable_reason()
        if reason:
            raise ModelUnavailable(f"model 'voice' is not available: {reason}")
        self._encoder: Any = None
        self._lock = threading.Lock()

    # -- availability ---------------------------------------------------------------------
    @classmethod
    def unavailable_reason(cls) -> str | None:
        missing = _missing_modules()
        if missing:
            return f"{INSTALL_HINT} (missing: {', '.join(missing)})"
        if weights_path() is None:
            return (
                "Resemblyzer's weights (resemblyzer/pretrained.pt) are missing from its "
                "package; reinstall it: pip install --no-deps --force-reinstall "
                "resemblyzer==0.1.4"
            )
        return None

    # -- loading --------------------------------------------------------------------------
    def _load(self) -> Any:
        with self._lock:
            if self._encoder is not None:
                return self._encoder
            import torch

            torch.set_num_threads(inference_threads())
            try:
                # resemblyzer's audio module imports a deprecated scipy path (a warning only)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    from resemblyzer.voice_encoder import VoiceEncoder
            except (ImportError, OSError) as exc:
                raise ModelUnavailable(
                    f"model 'voice' is not available: importing resemblyzer failed "
                    f"({type(exc).__name__}: {exc}); {INSTALL_HINT}"
                ) from None
            encoder = VoiceEncoder("cpu", verbose=False, weights_fpath=weights_path())
            encoder.eval()
            self._encoder = encoder
            return encoder

    # -- which windows ----------------------------------------------------------------------
    def select_windows(self, samples: np.ndarray, start_s: np.ndarray) -> np.ndarray:
        """Windows with speech: the VAD's regions cover at least ``MIN_SPEECH_FRACTION`` of
        them. The VAD runs once over each run of overlapping or touching windows (the audio
        they span, rebuilt from the windows), so it sees the context of every window."""
        samples = np.asarray(samples, dtype=np.float32)
        count, width = samples.shape
        keep = np.zeros(count, dtype=bool)
        window_s = width / self.sample_rate
        starts = np.asarray(start_s, dtype=np.float64)
        i = 0
        while i < count:
            j = i + 1  # [i, j) is a run of windows with no gap between them
            while j < count and starts[j] - starts[j - 1] <= window_s + 1e-9:
                j += 1
            offsets = np.round((starts[i:j] - starts[i]) * self.sample_rate).astype(np.int64)
            audio = np.zeros(int(offsets[-1]) + width, dtype=np.float32)
            for k, at in enumerate(offsets):
                audio[at : at + width] = samples[i + k]
            regions = vad.speech_regions(audio, self.sample_rate)
            for k, at in enumerate(offsets):
                begin = at / self.sample_rate
                covered = vad.speech_fraction(regions, begin, begin + window_s)
                keep[i + k] = covered >= MIN_SPEECH_FRACTION
            i = j
        return keep

    # -- inference ------------------------------------------------------------------------
    def embed_audio_and_scores(self, batch: np.ndarray) -> tuple[np.ndarray, None]:
        import torch

        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 2:
            raise SoundscapeError(f"voice expects [B, samples] windows, got shape {x.shape}")
        if x.shape[1] < _PARTIAL_SAMPLES // 2:
            raise SoundscapeError(
                f"voice windows must be at least {self.min_window_s} s, got "
                f"{x.shape[1] / self.sample_rate:.2f} s"
            )
        encoder = self._load()
        partials: list[np.ndarray] = []
        owner: list[int] = []
        for i, window in enumerate(x):
            for mel in _partials(_preprocess(window)):
                partials.append(mel)
                owner.append(i)
        with torch.inference_mode():
            flat = torch.from_numpy(np.stack(partials))
            embedded = np.nan_to_num(encoder(flat).numpy(), nan=0.0)
        out = np.zeros((len(x), embedded.shape[1]), dtype=np.float32)
        np.add.at(out, np.asarray(owner), embedded)
        # never all-zero (the contract): an all-silent ReLU output gets a fixed unit vector
        dead = ~(np.abs(out).sum(axis=1) > 0)
        out[dead] = 1.0
        return l2_normalize(out), None
