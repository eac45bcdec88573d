"""MusiCNN (MagnaTagATune): 200-d music embeddings and 50 tag probabilities, in numpy.

The weights are the ``MTT_musicnn`` TensorFlow v1 checkpoint inside the ``musicnn`` 0.1.0 wheel
(ISC licence, Pons & Serra 2019). They are located on disk and read with
``soundscape.embedders.tfcheckpoint``; ``musicnn`` itself is never imported (it needs
TensorFlow and pins numpy<1.17). The network (``musicnn.models.build_musicnn``) runs here in
numpy, batch normalisation in inference mode; ``bench/musicnn_reference.py`` checks it against
the original TensorFlow graph (tests/data/musicnn_reference.json).
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits

from soundscape.embedders.base import Embedder, l2_normalize
from soundscape.embedders.birdnet import inference_threads
from soundscape.embedders.tfcheckpoint import read_checkpoint
from soundscape.errors import ModelUnavailable, SoundscapeError

#: the checkpoint folder inside the musicnn package (its files are ``.index``, ``.data-...``)
CHECKPOINT = "MTT_musicnn"
INSTALL_HINT = "pip install --no-deps musicnn==0.1.0"

#: musicnn.configuration.MTT_LABELS, in the order of the model's outputs
MTT_LABELS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip

#: tf.compat.v1.layers.batch_normalization's default epsilon
BN_EPSILON = 1e-3


def checkpoint_dir() -> Path | None:
    """``<site-packages>/musicnn/MTT_musicnn``, or None when the musicnn package is not
    installed. Found without importing musicnn. The checkpoint's prefix is this folder with a
    trailing separator (its files are named ``.index`` and ``.data-00000-of-00001``)."""
    try:
        spec = importlib.util.find_spec("musicnn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / CHECKPOINT


def _missing_reason() -> str | None:
    prefix = checkpoint_dir()
    if prefix is None:
        return (
            f"the MusiCNN checkpoint is missing: {INSTALL_HINT} (its wheel ships the "
            "MagnaTagATune model; soundscape reads it without TensorFlow and never imports musicnn)"
        )
    for name in (".index", ".data-00000-of-00001"):
        if not (prefix / name).is_file():
            return (
                f"{prefix / name} not found: {INSTALL_HINT} --force-reinstall "
                "(its wheel ships the MagnaTagATune checkpoint)"
            )
    return None


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    mel = hz / (200.0 / 3)
    log = hz >= 1000.0
    mel[log] = 15.0 + np.log(hz[log] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = mel * (200.0 / 3)
    log = mel >= 15.0
    hz[log] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel[log] - 15.0))
    return hz


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` triangular mel filters from 0 Hz to Nyquist, area-normalised
    ("slaney"): what ``librosa.filters.mel(sr=..., n_fft=..., n_mels=...)`` returns."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array([sample_rate / 2.0]))[0], n_mels + 2))
    ramps = edges[:, None] - fft_hz[None, :]
    widths = np.diff(edges)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


class _Layers:
    """The MTT_musicnn weights, with each batch normalisation folded into a scale and shift."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        def bn(i: int) -> tuple[np.ndarray, np.ndarray]:
            name = "batch_normalization" + (f"_{i}" if i else "")
            gamma, beta = tensors[f"{name}/gamma"], tensors[f"{name}/beta"]
            mean, var = tensors[f"{name}/moving_mean"], tensors[f"{name}/moving_variance"]
            scale = (gamma / np.sqrt(var + np.float32(BN_EPSILON))).astype(np.float32)
            return scale, (beta - mean * scale).astype(np.float32)

        def conv(i: int) -> tuple[np.ndarray, np.ndarray]:
            """A conv kernel ``[kh, kw, 1, out]`` as a ``[kh * kw, out]`` matrix, and its bias."""
            name = "conv2d" + (f"_{i}" if i else "")
            kernel = tensors[f"{name}/kernel"]
            return kernel.reshape(-1, kernel.shape[-1]), tensors[f"{name}/bias"]

        try:
            self.bn = [bn(i) for i in range(11)]
            self.conv = [conv(i) for i in range(8)]
            self.dense = (tensors["dense/kernel"], tensors["dense/bias"])
            self.output = (tensors["dense_1/kernel"], tensors["dense_1/bias"])
        except KeyError as exc:
            raise ModelUnavailable(
                f"the MusiCNN checkpoint lacks tensor {exc}; expected musicnn 0.1.0's "
                f"MTT_musicnn ({INSTALL_HINT} --force-reinstall)"
            ) from exc
        if self.output[1].shape != (len(MTT_LABELS),) or self.dense[1].shape != (200,):
            raise ModelUnavailable("the MusiCNN checkpoint has unexpected shapes")


@cache
def _layers(directory: Path) -> _Layers:
    return _Layers(read_checkpoint(os.path.join(directory, "")))


def _relu_bn(x: np.ndarray, bias: np.ndarray, bn: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """conv bias + ReLU, then batch normalisation (inference), in place."""
    x += bias
    np.maximum(x, 0, out=x)
    x *= bn[0]
    x += bn[1]
    return x


def _rows(windows: np.ndarray, width: int) -> np.ndarray:
    """Sliding windows as a C-contiguous ``[n, width]`` matrix (im2col). Contiguous matters:
    numpy's matmul only calls BLAS for such layouts; a strided view of overlapping windows
    takes its slow generic loop (measured 5x slower for the temporal convolutions)."""
    return np.ascontiguousarray(windows.reshape(-1, width))


def _pad_time(x: np.ndarray, before: int, after: int) -> np.ndarray:
    return np.pad(x, ((before, after), (0, 0)))


class MusiCNN(Embedder):
    """MusiCNN trained on MagnaTagATune: 3 s at 16 kHz -> 200-d embedding + 50 tag scores.

    Preprocessing follows musicnn: a 96-band mel power spectrogram (n_fft 512, hop 256, Hann,
    centred frames, librosa's Slaney mel filters), the first 187 frames of the window, then
    ``log10(10000 * mel + 1)`` in float32 (musicnn's own float16 cast overflows under numpy 2).
    The embedding is musicnn's "penultimate" feature (the 200-unit dense layer after ReLU and
    batch normalisation), L2-normalised; the scores are the sigmoid of the 50 tag logits.
    """

    name: ClassVar[str] = "musicnn"
    version: ClassVar[str] = "mtt-0.1.0"
    dimension: ClassVar[int] = 200
    sample_rate: ClassVar[int] = 16000
    default_window_s: ClassVar[float] = 3.0
    default_hop_s: ClassVar[float] = 2.0
    fixed_window: ClassVar[bool] = True
    batch_size: ClassVar[int] = 16
    supports_text: ClassVar[bool] = False
    has_class_scores: ClassVar[bool] = True
    description: ClassVar[str] = (
        "MusiCNN (MagnaTagATune): music, 50 tags (instruments, genres, voice), 3 s windows "
        "at 16 kHz (musicnn 0.1.0 checkpoint, ISC; run in numpy)"
    )

    #: samples per window (3.0 s at 16 kHz) and the model's input size
    window_length: ClassVar[int] = 48000
    n_frames: ClassVar[int] = 187
    n_mels: ClassVar[int] = 96
    n_fft: ClassVar[int] = 512
    hop_length: ClassVar[int] = 256

    def __init__(self, **params: Any) -> None:
        if params:
            raise SoundscapeError(
                f"model 'musicnn' takes no parameters, got: {', '.join(sorted(params))}"
            )
        super().__init__()
        self._mel_basis: np.ndarray | None = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _missing_reason()

    @property
    def labels(self) -> list[str]:
        """The 50 MagnaTagATune tags (score column order)."""
        return list(MTT_LABELS)

    def _weights(self) -> _Layers:
        reason = _missing_reason()
        directory = checkpoint_dir()
        if reason or directory is None:
            raise ModelUnavailable(f"model 'musicnn' is not available: {reason}")
        return _layers(directory)

    # -- preprocessing ---------------------------------------------------------------------
    def log_mel(self, batch: np.ndarray) -> np.ndarray:
        """``[B, 48000]`` audio -> the model input ``[B, 187, 96]`` (time, mel), float32.

        librosa's ``melspectrogram`` (musicnn's preprocessing) in plain numpy: frames centred
        on every 256th sample with zero padding, a periodic Hann window, |rfft|², Slaney mel
        filters. (librosa itself costs seconds of just-in-time compilation at first use.)
        """
        if self._mel_basis is None:
            self._mel_basis = slaney_mel_filters(self.sample_rate, self.n_fft, self.n_mels)
        half = self.n_fft // 2
        padded = np.pad(np.asarray(batch, np.float32), ((0, 0), (half, half)))
        frames = sliding_window_view(padded, self.n_fft, axis=1)[
            :, : self.n_frames * self.hop_length : self.hop_length
        ]  # [B, 187, 512]
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.n_fft) / self.n_fft)
        spectrum = np.fft.rfft(frames * window.astype(np.float32), axis=-1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)  # [B, 187, 257]
        mel = power @ self._mel_basis.T  # [B, 187, 96]
        return np.log10(np.float32(10000) * mel + np.float32(1))

    # -- network ---------------------------------------------------------------------------
    @staticmethod
    def _frontend_and_midend(w: _Layers, x: np.ndarray) -> np.ndarray:
        """One patch ``[187, 96]`` -> the dense mid-end features ``[187, 753]``."""
        t = x.shape[0]
        x = x * w.bn[0][0] + w.bn[0][1]
        padded = _pad_time(x, 3, 3)
        branches = []
        # timbral: 204 filters of 7 frames x 38 and 7 x 67 mel bands, max over frequency
        for conv, bn in ((0, 1), (1, 2)):
            kernel, bias = w.conv[conv]
            width = kernel.shape[0] // 7
            cols = _rows(sliding_window_view(padded, (7, width)), 7 * width)
            y = _relu_bn(cols @ kernel, bias, w.bn[bn])
            branches.append(y.reshape(t, -1, kernel.shape[1]).max(axis=1))
        # temporal: 51 filters of 128, 64 and 32 frames ('same' padding), max over frequency
        for conv, bn in ((2, 3), (3, 4), (4, 5)):
            kernel, bias = w.conv[conv]
            k = kernel.shape[0]
            cols = _rows(sliding_window_view(_pad_time(x, (k - 1) // 2, k // 2), k, axis=0), k)
            y = _relu_bn(cols @ kernel, bias, w.bn[bn])
            branches.append(y.reshape(t, x.shape[1], -1).max(axis=1))
        front = np.concatenate(branches, axis=1)  # [187, 561]
        # mid-end: three 7-frame convolutions over all channels, the last two residual
        features = [front]
        h = front
        for i, (conv, bn) in enumerate(((5, 6), (6, 7), (7, 8))):
            kernel, bias = w.conv[conv]
            cols = _rows(sliding_window_view(_pad_time(h, 3, 3), (7, h.shape[1])), 7 * h.shape[1])
            y = _relu_bn(cols @ kernel, bias, w.bn[bn])
            h = y if i == 0 else y + h
            features.append(h)
        return np.concatenate(features, axis=1)

    def forward(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model input ``[B, 187, 96]`` -> (penultimate features ``[B, 200]``, logits
        ``[B, 50]``), before normalisation."""
        w = self._weights()
        pooled = []
        for patch in mel:
            f = self._frontend_and_midend(w, patch)
            # temporal pooling; musicnn flattens [max, mean] per channel, interleaved
            pooled.append(np.stack([f.max(axis=0), f.mean(axis=0)], axis=1).reshape(-1))
        flat = np.stack(pooled) * w.bn[9][0] + w.bn[9][1]
        dense = _relu_bn(flat @ w.dense[0], w.dense[1], w.bn[10])
        logits = dense @ w.output[0] + w.output[1]
        return dense, logits

    def embed_audio_and_scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[B, 48000]`` float32 -> (unit embeddings ``[B, 200]``, tag probabilities
        ``[B, 50]``), both float32."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.window_length:
            raise ValueError(
                f"MusiCNN needs a [windows, {self.window_length}] batch (exactly "
                f"{self.default_window_s} s at {self.sample_rate} Hz per window), "
                f"got shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("audio batch contains NaN or infinite samples")
        if x.shape[0] == 0:
            return (
                np.zeros((0, self.dimension), np.float32),
                np.zeros((0, len(MTT_LABELS)), np.float32),
            )
        with threadpool_limits(limits=inference_threads(), user_api="blas"):
            embeddings, logits = self.forward(self.log_mel(x))
        bad = ~np.isfinite(embeddings).all(axis=1) | ~embeddings.any(axis=1)
        if bad.any():
            embeddings[bad] = 1.0
        scores = np.exp(-np.logaddexp(np.float32(0), -logits)).astype(np.float32, copy=False)
        return l2_normalize(embeddings), scores
