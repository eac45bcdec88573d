"""Acoustic indices as a model: soundscape ecology's standard measures, per window.

Each window (60 s by default, as the field computes them) gets nine numbers, computed as
scikit-maad 1.5.2 computes them (Ulloa et al. 2021, *Methods in Ecology and Evolution*
12:2334) on the same spectrogram (``maad.sound.spectrogram``: Hann, 1024 samples, half
overlap, at 24 kHz), vectorised over a batch in numpy (``tests/test_indices.py`` checks every
index against maad's own functions):

- ``aci``: Acoustic Complexity Index, ``maad.features.acoustic_complexity_index`` (sum over
  frequency bins; Pieretti et al. 2011);
- ``adi`` / ``aei``: Acoustic Diversity / Evenness Index, 1 kHz bands to 10 kHz, -50 dB
  threshold (``acoustic_diversity_index`` / ``acoustic_eveness_index``, soundecology's
  defaults; Villanueva-Rivera et al. 2011);
- ``bi``: Bioacoustic Index, 2-8 kHz (``bioacoustics_index``, soundecology-compatible;
  Boelman et al. 2007);
- ``ndsi``: Normalised Difference Soundscape Index, anthrophony 1-2 kHz, biophony 2-11 kHz
  (``soundscape_index`` on 1 kHz bins; Kasten et al. 2012);
- ``ht`` / ``hf`` / ``h``: temporal entropy of the envelope (``temporal_entropy``, QUT), spectral
  entropy of the mean spectrum (``frequency_entropy``, QUT) and their product, the acoustic
  entropy index H (Sueur et al. 2008);
- ``level_db``: the window's RMS level in dB re full scale (floor -120 dB).

**The vector.** Each index ``x`` is standardised with fixed constants of the model (``SCALE``:
``z = (f(x) - centre) / scale``, ``f`` = log1p for ACI, identity otherwise), so that typical
windows spread over about one unit; a constant ``ANCHOR`` component is appended and the vector
L2-normalised. The anchor makes cosine similarity see how far a window is from the typical one
(windows near the centre are alike, not pointing in random directions), and it makes the
named values recoverable from the stored vector alone: ``z_i = ANCHOR * v_i / v_last``. SQL reads
them that way (``ranger.acoustic_indices``, sql/indices.sql, with the same constants; a test
keeps the two in step), so every path that stores windows (ingest, backfill, checkpoints, the
job queue) stores the named values too, with no second table to keep consistent.

Windows padded with zeros at the end of a file are computed on their audio only; a window of
digital silence gets fixed values (``ACI = 0``, entropies 1, ``ADI = ln 10``, ``AEI = 0``,
``BI = 0``, ``NDSI = 0``), where maad would give NaN or divide by zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from soundscape.embedders.base import Embedder
from soundscape.errors import SoundscapeError

#: maad.util's floor for zero probabilities and amplitudes (``_MIN_``)
_MIN = np.finfo(float).eps


class Indices(Embedder):
    """Nine acoustic indices per window (scikit-maad's formulas), standardised into a vector."""

    name: ClassVar[str] = "indices"
    version: ClassVar[str] = "1"  # bump whenever the vectors or the constants change
    sample_rate: ClassVar[int] = 24000  # spectrum to 12 kHz: NDSI's biophony ends at 11 kHz
    default_window_s: ClassVar[float] = 60.0
    default_hop_s: ClassVar[float] = 60.0
    min_window_s: ClassVar[float] = 1.0
    #: a 5-minute window takes ~300 MB while computed (one window per pass)
    max_window_s: ClassVar[float] = 300.0
    batch_size: ClassVar[int] = 2  # 60 s windows: ~6 MB of audio each
    #: samples computed in one pass (two 60 s windows)
    samples_per_pass: ClassVar[int] = 2 * 60 * 24000
    description: ClassVar[str] = (
        "acoustic indices (ACI, ADI, AEI, BI, NDSI, H...; scikit-maad's formulas; 60 s windows)"
    )
    #: a summary of a minute, not a sound: never a near-duplicate unless practically equal
    duplicate_min_score: ClassVar[float] = 0.999

    #: the indices, in vector order (the last vector component is the anchor)
    NAMES: ClassVar[tuple[str, ...]] = (
        "aci", "adi", "aei", "bi", "ndsi", "ht", "hf", "h", "level_db",
    )  # fmt: skip
    #: name -> (log1p first?, centre, scale): fixed, from the shared real recordings (soundscape
    #: and clips, 60 s windows); sql/indices.sql holds the same numbers
    SCALE: ClassVar[Mapping[str, tuple[bool, float, float]]] = {
        "aci": (True, 5.8, 0.3),
        "adi": (False, 1.9, 0.5),
        "aei": (False, 0.4, 0.25),
        "bi": (False, 130.0, 100.0),
        "ndsi": (False, 0.0, 0.6),
        "ht": (False, 0.9, 0.1),
        "hf": (False, 0.6, 0.18),
        "h": (False, 0.5, 0.18),
        "level_db": (False, -30.0, 20.0),
    }
    ANCHOR: ClassVar[float] = 1.0
    dimension: ClassVar[int] = 10  # len(NAMES) + the anchor

    nperseg: ClassVar[int] = 1024
    #: envelope frame (maad's ``Nt``) for the temporal entropy
    env_frame: ClassVar[int] = 512
    db_threshold: ClassVar[float] = -50.0
    adi_fmax: ClassVar[float] = 10000.0
    band_step: ClassVar[float] = 1000.0
    bi_band: ClassVar[tuple[float, float]] = (2000.0, 8000.0)
    level_floor_db: ClassVar[float] = -120.0

    def __init__(self, **params: Any) -> None:
        if params:
            raise SoundscapeError(
                f"model 'indices' takes no parameters, got: {', '.join(sorted(params))}"
            )
        super().__init__()

    # -- the indices ----------------------------------------------------------------------------
    def compute(self, batch: np.ndarray) -> np.ndarray:
        """``[B, n]`` float32 audio at 24 kHz -> the named indices ``[B, len(NAMES)]`` (float64).

        Rows ending in a run of exact zeros (the padded last window of a file) are computed on
        the audio before it."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"expected a [windows, samples] batch, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("audio batch contains NaN or infinite samples")
        out = np.zeros((x.shape[0], len(self.NAMES)), dtype=np.float64)
        if x.shape[0] == 0:
            return out
        nonzero = x != 0
        end = x.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
        end[~nonzero.any(axis=1)] = x.shape[1]  # silent throughout: the whole window
        full = end >= x.shape[1] - self.nperseg // 2  # a few zero samples change nothing
        # as many rows per pass as keep its arrays (~50 bytes a sample) near two minutes' worth
        step = max(1, int(self.samples_per_pass // x.shape[1]))
        if full.all() and len(x) <= step:
            return self._compute(x)
        rows = np.flatnonzero(full)
        for k in range(0, len(rows), step):
            out[rows[k : k + step]] = self._compute(x[rows[k : k + step]])
        for i in np.flatnonzero(~full):
            out[i] = self._compute(x[i : i + 1, : int(end[i])])[0]
        return out

    def _compute(self, x: np.ndarray) -> np.ndarray:
        """The indices of equally long rows (padded to two spectrogram frames if shorter)."""
        from scipy import fft

        n = self.nperseg
        if x.shape[1] < 2 * n:
            x = np.pad(x, ((0, 0), (0, 2 * n - x.shape[1])))
        hop = n // 2
        frames = np.lib.stride_tricks.sliding_window_view(x, n, axis=1)[:, ::hop]
        # maad.sound.spectrogram keeps len // hop - 1 frames (scipy's count, the same here)
        frames = frames[:, : x.shape[1] // hop - 1]
        frames = frames - frames.mean(axis=-1, keepdims=True)  # scipy's detrend='constant'
        frames *= np.hanning(n + 1)[:-1].astype(np.float32)  # periodic Hann (scipy's 'hann')
        spec = fft.rfft(frames, axis=-1)[..., :-1]  # [B, T, F]; maad drops the Nyquist bin
        psd = (spec.real.astype(np.float64) ** 2 + spec.imag.astype(np.float64) ** 2).transpose(
            0, 2, 1
        )  # [B, F, T]; a constant factor (maad's density scaling) changes no index
        amp = np.sqrt(psd)
        fn = np.arange(n // 2) * (self.sample_rate / n)
        df = fn[1] - fn[0]

        # ACI: per bin, sum |I(t+1) - I(t)| / sum I(t), summed over bins
        total = amp.sum(axis=-1)
        dsum = np.abs(np.diff(amp, axis=-1)).sum(axis=-1)
        aci = np.where(total > 0, dsum / np.where(total > 0, total, 1.0), 0.0).sum(axis=-1)

        # ADI / AEI: per 1 kHz band, the share of cells within 50 dB of the spectrogram's max
        peak = amp.max(axis=(1, 2), keepdims=True)
        silent = peak[:, 0, 0] <= 0
        rel = amp / np.where(peak > 0, peak, 1.0)
        loud = rel >= 10 ** (self.db_threshold / 20)  # 20 log10(rel) >= threshold
        bands = int(np.floor(self.adi_fmax / self.band_step))
        shares = np.stack(
            [
                loud[:, _index_bw(fn, (k * self.band_step, (k + 1) * self.band_step)), :].mean(
                    axis=(1, 2)
                )
                for k in range(bands)
            ],
            axis=-1,
        )  # [B, bands]
        adi = _entropy(shares) * np.log(bands)
        aei = _gini(shares)

        # BI: area of the mean spectrum (dB re its max) above its minimum, 2-8 kHz, / df
        mean_db = 20 * np.log10(np.maximum(rel.mean(axis=-1), _MIN))  # [B, F]
        band = mean_db[:, _index_bw(fn, self.bi_band)]
        bi = (band - band.min(axis=-1, keepdims=True)).sum(axis=-1) / df

        # NDSI: mean power per 1 kHz bin; anthrophony the 1-2 kHz bin, biophony 2-11 kHz
        edges = np.arange(0.0, fn[-1] + self.band_step, self.band_step)
        binned = np.stack(
            [psd[:, (fn >= lo) & (fn < hi), :].mean(axis=1) for lo, hi in zip(edges, edges[1:])],
            axis=1,
        )  # [B, bins, T]
        starts = edges[:-1]
        anthro = binned[:, _index_bw(starts, (1000.0, 1000.0)), :].sum(axis=(1, 2))
        bio = binned[:, _index_bw(starts, (2000.0, 10000.0)), :].sum(axis=(1, 2))
        both = anthro + bio
        ndsi = np.where(both > 0, (bio - anthro) / np.where(both > 0, both, 1.0), 0.0)

        # Ht: entropy of the squared envelope (max |s| per 512-sample frame); Hf: of the mean
        # power spectrum; H = Ht * Hf
        nt = self.env_frame
        k = x.shape[1] // nt
        env = np.abs(x[:, : k * nt].reshape(len(x), k, nt)).max(axis=-1).astype(np.float64)
        ht = _entropy(env**2)
        hf = _entropy(psd.mean(axis=-1))

        rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1))
        level = np.maximum(20 * np.log10(np.maximum(rms, 1e-30)), self.level_floor_db)

        out = np.stack([aci, adi, aei, bi, ndsi, ht, hf, ht * hf, level], axis=-1)
        out[silent, :5] = (0.0, np.log(bands), 0.0, 0.0, 0.0)
        return out

    # -- the vector ---------------------------------------------------------------------------
    def standardise(self, values: np.ndarray) -> np.ndarray:
        """Named indices ``[B, len(NAMES)]`` -> unit vectors ``[B, dimension]`` (float32)."""
        z = np.empty((len(values), self.dimension), dtype=np.float64)
        for i, name in enumerate(self.NAMES):
            log, centre, scale = self.SCALE[name]
            v = values[:, i]
            z[:, i] = ((np.log1p(v) if log else v) - centre) / scale
        z[:, -1] = self.ANCHOR
        return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)

    def values(self, vectors: np.ndarray) -> np.ndarray:
        """Stored unit vectors -> the named indices (what ``ranger.acoustic_indices`` reads)."""
        v = np.asarray(vectors, dtype=np.float64)
        z = self.ANCHOR * v[:, :-1] / v[:, -1:]
        out = np.empty_like(z)
        for i, name in enumerate(self.NAMES):
            log, centre, scale = self.SCALE[name]
            out[:, i] = np.expm1(centre + scale * z[:, i]) if log else centre + scale * z[:, i]
        return out

    def embed_audio_and_scores(self, batch: np.ndarray) -> tuple[np.ndarray, None]:
        return self.standardise(self.compute(batch)), None


def _index_bw(fn: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """maad.util.index_bw: the bins from the one nearest ``band[0]`` to the one nearest
    ``band[1]``, both included."""
    lo = fn[np.abs(fn - band[0]).argmin()]
    hi = fn[np.abs(fn - band[1]).argmin()]
    return (fn >= lo) & (fn <= hi)


def _entropy(x: np.ndarray) -> np.ndarray:
    """maad.util.entropy along the last axis: Shannon entropy of ``x / sum(x)`` over ln(n)
    (1 for an all-zero row; zero probabilities count as maad's ``_MIN_``)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    total = x.sum(axis=-1, keepdims=True)
    p = x / np.where(total > 0, total, 1.0)
    p = np.where(p == 0, _MIN, p)
    h = -(p * np.log(p)).sum(axis=-1) / np.log(n)
    return np.where(total[..., 0] > 0, h, 1.0)


def _gini(x: np.ndarray) -> np.ndarray:
    """maad's ``_gini`` (uncorrected) along the last axis; 0 for an all-zero row."""
    s = np.sort(np.asarray(x, dtype=np.float64), axis=-1)
    n = s.shape[-1]
    total = s.sum(axis=-1)
    g = 2 * (s * np.arange(1, n + 1)).sum(axis=-1) / np.where(total > 0, total, 1.0) - (n + 1)
    return np.where(total > 0, g / n, 0.0)
