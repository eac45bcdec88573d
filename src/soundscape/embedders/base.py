"""The embedder interface every model ("space") implements.

A model turns fixed-length mono windows of audio into L2-normalised float32 vectors. Models are
found through the ``soundscape.models`` entry-point group, so a third-party package can add one
with::

    [project.entry-points."soundscape.models"]
    mymodel = "mypackage.module:MyEmbedder"

Weights must load lazily (on the first ``embed_*`` call), so that listing models is cheap.

Everything soundscape needs to know about a model is a class attribute of its embedder, so
that adding a model is one file: what it computes (name, version, dimension, rate, windows,
``supports_text``, ``has_class_scores``) and how the rest of soundscape uses its spaces:

- ``preference``: its rank per purpose when no space is named (``spaces.pick_space``;
  purposes in ``spaces.PURPOSES``, lower first; unranked spaces come after, oldest first);
- ``band_hz``: the band it listens to, where narrower than the audio (Raven exports);
- ``duplicate_min_score``: the cosine similarity a pair of windows needs to count as the same
  sound (``soundscape duplicates``);
- ``field_words`` and ``non_species_classes``: everyday words for its classes (label search)
  and which classes are not species;
- ``voice_prints``: whether its vectors are voice prints, so that its spaces hold the enrolled
  speakers (``soundscape.speakers``);
- ``has_occurrence_model``: whether the location/season lists (``soundscape.occurrence``,
  computed by BirdNET V2.4's meta model) are stored under its name: only for a model whose
  class indices are BirdNET V2.4's.

The defaults below fit a model that declares none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np


class Embedder:
    """Base class for audio embedding models.

    Class attributes describe the model; instances may carry parameters (``params``) that
    change the vectors and are stored with the space (for example a different mel setup).
    """

    #: registry name, e.g. ``"birdnet"``
    name: ClassVar[str]
    #: model version; a new version means a new space (vectors are not comparable)
    version: ClassVar[str]
    dimension: ClassVar[int]
    #: sample rate (Hz) the model expects; audio is resampled to it
    sample_rate: ClassVar[int]
    default_window_s: ClassVar[float]
    default_hop_s: ClassVar[float]
    #: True when the model only accepts windows of exactly ``default_window_s``
    fixed_window: ClassVar[bool] = False
    #: the shortest and longest windows (s) the model gives meaningful vectors for
    min_window_s: ClassVar[float] = 0.1
    max_window_s: ClassVar[float] = 60.0
    #: how many windows to embed per call
    batch_size: ClassVar[int] = 32
    #: True when ``embed_text`` is implemented (text-to-audio search)
    supports_text: ClassVar[bool] = False
    #: True when ``embed_audio_and_scores`` returns per-class scores (see ``labels``)
    has_class_scores: ClassVar[bool] = False
    #: one line for ``soundscape models list``
    description: ClassVar[str] = ""

    # -- how soundscape uses the model's spaces (module docstring) ----------------------------
    #: rank per purpose (``spaces.PURPOSES``) when no space is named: lower first; a purpose
    #: left out ranks the model after every model that names it
    preference: ClassVar[Mapping[str, int]] = {}
    #: (low, high) Hz the model listens to where narrower than the audio, else None (full band)
    band_hz: ClassVar[tuple[float, float] | None] = None
    #: cosine similarity a window pair needs to be called a near-duplicate
    duplicate_min_score: ClassVar[float] = 0.80
    #: everyday words -> its class names (label search); ``"*birds*"`` means every species class
    field_words: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: its classes that are not species (never dropped by the occurrence lists, not birds)
    non_species_classes: ClassVar[frozenset[str]] = frozenset()
    #: True when its vectors are voice prints: its spaces are the speakers' (soundscape.speakers)
    voice_prints: ClassVar[bool] = False
    #: True when the location/season lists (``soundscape.occurrence``) are its (BirdNET's classes)
    has_occurrence_model: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)

    @property
    def logit_scale(self) -> float:
        """Text-encoder models: the factor on cosine similarities before a zero-shot softmax
        (a model with a learned temperature overrides this)."""
        return 100.0

    # -- availability -----------------------------------------------------------------------
    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when the model can run here, else why not and how to fix it."""
        return None

    @classmethod
    def weights_missing(cls) -> str | None:
        """None when the model's weights are on this machine (shipped, given, or cached), else
        which are missing and how to get them. Never touches the network: a model may still
        download missing weights on first use when online (``load_model`` does not refuse)."""
        return None

    # -- which windows --------------------------------------------------------------------------
    def select_windows(self, samples: np.ndarray, start_s: np.ndarray) -> np.ndarray:
        """Which windows of a batch to embed and store: a bool mask ``[B]`` for ``samples``
        (float32 ``[B, window_samples]`` at ``sample_rate``) whose windows start at
        ``start_s`` seconds (float64 ``[B]``, ascending; consecutive windows may overlap).

        The default keeps every window. A model whose vectors only mean something for some
        sounds overrides it: ``voice`` keeps windows of speech. Ingest and backfill store only
        the windows kept (a recording with none is complete in that space with zero windows);
        query examples are embedded from the windows kept.
        """
        return np.ones(len(samples), dtype=bool)

    # -- inference ----------------------------------------------------------------------------
    def embed_audio(self, batch: np.ndarray) -> np.ndarray:
        """Embed ``batch`` (float32 ``[B, window_samples]`` mono at ``sample_rate``).

        Returns float32 ``[B, dimension]``, each row L2-normalised (never all-zero, never NaN).
        """
        return self.embed_audio_and_scores(batch)[0]

    def embed_audio_and_scores(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Like ``embed_audio`` but also returns per-class scores ``[B, len(labels)]``
        in [0, 1] for models with ``has_class_scores`` (else ``None``)."""
        raise NotImplementedError

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Embed search texts into the audio space (float32 ``[N, dimension]``, L2-normalised)."""
        raise NotImplementedError(f"model {self.name!r} has no text encoder")

    @property
    def labels(self) -> list[str] | None:
        """Class names for ``embed_audio_and_scores`` scores, or None."""
        return None

    def window_samples(self, window_s: float) -> int:
        return int(round(window_s * self.sample_rate))


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)
