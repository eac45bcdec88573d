"""Model outputs of a file being ingested, committed as they come: an ingest cut off by an
outage resumes without running the model again over what it had done.

A recording is stored in one transaction (nothing of it is visible before its last window is,
and an outage stores nothing), so an ingest cut off near the end of a ten-hour file used to
start over. Now, while a space's windows are embedded, every ``EVERY_S`` seconds the vectors
and class scores computed since are committed on a connection of their own into
``ingest_checkpoints``, keyed by the file's SHA-256, the space and the first window of each
batch. When the same file is ingested again into the same space (the worker's retry, the same
command run again) a batch found there is not embedded again: decoding still reads the file
from the start (cheap next to a model), and the recording's transaction stores the windows as
before. The checkpoints of a file are deleted in the transaction that stores it, or when it
fails for good; ``prune`` drops those of files never finished.

What is checked: a batch is reused only if its window starts are those just decoded; the space
(model, version, window, hop) is part of the key, so another model or setting embeds anew.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from soundscape.embedders.scores import top_k as scores_top_k

log = logging.getLogger(__name__)

#: commit the outputs gathered since the last commit this often (seconds of model time): a
#: file embedded in less time never writes a checkpoint; an outage costs at most this much
EVERY_S = 20.0
#: checkpoints of files never finished are dropped after this many days (``prune``)
KEEP_DAYS = 14

#: per window, the model's class scores kept (top-k indices and values, -1 / NaN padded)
Scores = tuple[np.ndarray, np.ndarray]


@dataclass
class Batch:
    """One batch's model outputs: the starts of the windows embedded, their vectors, and
    their top class scores (``None`` for a model without class scores)."""

    first_s: float
    starts: np.ndarray  # float64 [n]
    vectors: np.ndarray  # float32 [n, dim]
    scores: Scores | None = None


@dataclass
class Checkpoints:
    """The checkpoints of one file in one space, read and written on ``engine`` (not in the
    recording's transaction). Every database error here is logged and ignored: a checkpoint
    only saves work, and the ingest itself meets the same outage and reports it."""

    engine: Engine
    sha256: str
    space_id: int
    every_s: float | None = None  # None: EVERY_S
    clock: Callable[[], float] = time.monotonic
    #: first window start of each stored batch (loaded by ``open``)
    stored: set[float] = field(default_factory=set)
    pending: list[Batch] = field(default_factory=list)
    reused: int = 0
    _since: float = 0.0

    def open(self) -> Checkpoints:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT first_s FROM ingest_checkpoints WHERE sha256 = :h AND space_id = :s"
                    ),
                    {"h": self.sha256, "s": self.space_id},
                )
                self.stored = {float(r[0]) for r in rows}
        except sa.exc.SQLAlchemyError:
            log.debug("cannot read the checkpoints of %s", self.sha256, exc_info=True)
        self._since = self.clock()
        return self

    def get(self, first_s: float, starts: np.ndarray) -> Batch | None:
        """The stored outputs of the batch starting at ``first_s``, if its windows are
        ``starts``; else None (embed it)."""
        if float(np.float32(first_s)) not in self.stored:
            return None
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.text(
                        "SELECT starts, dim, vectors, score_k, score_idx, score_val "
                        "FROM ingest_checkpoints WHERE sha256 = :h AND space_id = :s "
                        "AND first_s = :f"
                    ),
                    {"h": self.sha256, "s": self.space_id, "f": float(np.float32(first_s))},
                ).first()
        except sa.exc.SQLAlchemyError:
            log.debug("cannot read a checkpoint of %s", self.sha256, exc_info=True)
            return None
        if row is None:
            return None
        got = np.asarray(row.starts, dtype=np.float64)
        if got.shape != starts.shape or not np.allclose(got, starts, atol=1e-3):
            return None
        n, dim = len(got), int(row.dim)
        vectors = np.frombuffer(row.vectors, dtype=np.float32).reshape(n, dim)
        scores = None
        if row.score_k is not None:
            k = int(row.score_k)
            idx = np.frombuffer(row.score_idx, dtype=np.int32).reshape(n, k)
            val = np.frombuffer(row.score_val, dtype=np.float32).reshape(n, k)
            scores = (idx, val)
        self.reused += n
        return Batch(first_s, starts, vectors, scores)

    def add(self, batch: Batch) -> None:
        """Keep a batch's outputs; commit what was kept once ``every_s`` have passed."""
        self.pending.append(batch)
        every = EVERY_S if self.every_s is None else self.every_s
        if self.clock() - self._since >= every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        rows = [_row(self.sha256, self.space_id, b) for b in self.pending]
        self.pending = []
        self._since = self.clock()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO ingest_checkpoints (sha256, space_id, first_s, starts, dim, "
                        "vectors, score_k, score_idx, score_val) VALUES (:h, :s, :f, :starts, "
                        ":dim, :v, :k, :i, :val) ON CONFLICT DO NOTHING"
                    ),
                    rows,
                )
        except sa.exc.SQLAlchemyError:
            log.debug("cannot write checkpoints of %s", self.sha256, exc_info=True)


def _row(sha256: str, space_id: int, b: Batch) -> dict:
    vectors = np.ascontiguousarray(b.vectors, dtype=np.float32)
    k = idx = val = None
    if b.scores is not None:
        k = int(b.scores[0].shape[1])
        idx = np.ascontiguousarray(b.scores[0], dtype=np.int32).tobytes()
        val = np.ascontiguousarray(b.scores[1], dtype=np.float32).tobytes()
    return {
        "h": sha256,
        "s": space_id,
        "f": float(np.float32(b.first_s)),
        "starts": [float(x) for x in b.starts],
        "dim": int(vectors.shape[1]),
        "v": vectors.tobytes(),
        "k": k,
        "i": idx,
        "val": val,
    }


def top_k(scores: np.ndarray, k: int) -> Scores:
    """What a checkpoint keeps of a model's class scores: ``embedders.scores.top_k`` as int32
    indices and float32 scores."""
    idx, val = scores_top_k(scores, k)
    return idx.astype(np.int32), val.astype(np.float32)


def clear(conn: Connection, sha256: str) -> None:
    """Drop a file's checkpoints (in the transaction that stores it, or records its failure)."""
    conn.execute(sa.text("DELETE FROM ingest_checkpoints WHERE sha256 = :h"), {"h": sha256})


def prune(conn: Connection, days: float = KEEP_DAYS) -> int:
    """Drop checkpoints of files not finished for ``days`` days; how many rows went."""
    result = conn.execute(
        sa.text(
            "DELETE FROM ingest_checkpoints WHERE created_at < now() - make_interval(secs => :d)"
        ),
        {"d": days * 86400},
    )
    return int(result.rowcount or 0)
