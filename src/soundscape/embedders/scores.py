"""Helpers for per-class scores of classifier models (``Embedder.has_class_scores``)."""

from __future__ import annotations

import numpy as np


def top_scores(
    scores: np.ndarray, k: int = 5, floor: float = 0.1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pick each row's ``k`` best classes scoring at least ``floor``.

    ``scores`` is ``[B, n_classes]``. Returns one ``(indices, values)`` pair per row: int64 class
    indices and their scores (same dtype as ``scores``), best first; equal scores are ordered by
    class index, so the result is deterministic. Rows with nothing above the floor (or ``k == 0``)
    give empty arrays; NaN scores are never picked.
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D [windows, classes], got shape {s.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if s.shape[0] == 0:
        return []
    rows, cols = np.nonzero(s >= floor)  # row-major: grouped by row
    values = s[rows, cols]
    # sort by row, then score descending, then class index
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    # rank of each hit within its row; keep the first k
    starts = np.searchsorted(rows, np.arange(s.shape[0]))
    rank = np.arange(rows.size) - starts[rows]
    keep = rank < k
    rows, cols, values = rows[keep], cols[keep], values[keep]
    bounds = np.cumsum(np.bincount(rows, minlength=s.shape[0]))[:-1]
    return list(
        zip(
            np.split(cols.astype(np.int64, copy=False), bounds),
            np.split(values, bounds),
            strict=True,
        )
    )
