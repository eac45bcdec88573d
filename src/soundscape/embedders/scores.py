"""Helpers for per-class scores of classifier models (``Embedder.has_class_scores``)."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best classes as fixed-size arrays ``[B, k]``: int64 class indices and
    their scores (same dtype as ``scores``), best first; equal scores are ordered by class
    index, NaN scores come last. What ingest keeps (and checkpoints) of a model's scores."""
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D [windows, classes], got shape {s.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    k = min(k, s.shape[1])
    classes = np.broadcast_to(np.arange(s.shape[1]), s.shape)
    idx = np.lexsort((classes, -s), axis=-1)[:, :k]  # NaN sorts last
    return idx.astype(np.int64, copy=False), np.take_along_axis(s, idx, axis=1)


def top_scores(
    scores: np.ndarray, k: int = 5, floor: float = 0.1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pick each row's ``k`` best classes scoring at least ``floor`` (``top_k`` cut at the
    floor).

    ``scores`` is ``[B, n_classes]``. Returns one ``(indices, values)`` pair per row: int64 class
    indices and their scores (same dtype as ``scores``), best first; equal scores are ordered by
    class index, so the result is deterministic. Rows with nothing above the floor (or ``k == 0``)
    give empty arrays; NaN scores are never picked.
    """
    idx, val = top_k(scores, k)
    keep = val >= floor  # NaN never passes
    return [(i[m], v[m]) for i, v, m in zip(idx, val, keep, strict=True)]
