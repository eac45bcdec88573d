"""Near-duplicates: where does a piece of audio occur again, and at which offset?

The query (an audio file, a stored recording, or every recording) is windowed like ingest.
For each query window, pgvector finds its nearest stored windows (``ranger.similar_windows`` /
``ranger.duplicate_pairs`` in sql/analytics.sql). A copy shows up as a run of
consecutive query windows whose matches sit at the same time offset in one recording
(found time = query time + offset), so pairs are grouped by recording and offset and each run
is reported once: query span <-> found span, offset, mean/min score, number of windows.

Alignment. Stored windows start every ``hop`` seconds; a copy that starts at an arbitrary time
is misaligned with them by up to hop/2. An audio query is therefore windowed with a finer hop
(hop / QUERY_HOP_DIVISOR), so some query window is always within hop/8 of each stored window,
and the window-level offset is good to about that. Where both files can be decoded the offset
is then refined by cross-correlating the two waveforms (8 kHz) around it: to a millisecond.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.audio import Source, WindowStream, decode_span, probe, window_array
from soundscape.db import register_vector
from soundscape.embedders import load_model, model_facts
from soundscape.errors import AudioError, SoundscapeError, StoredFileChanged
from soundscape.media_files import StoredFile, open_stored, stored_files
from soundscape.spaces import Space

log = logging.getLogger(__name__)

# The default space is spaces.pick_space(conn, name, purpose="duplicates"): the model ranked
# first for duplicates (BirdNET: its embeddings survive added noise, gain, resampling and mp3).
#: An audio query is windowed every hop / QUERY_HOP_DIVISOR seconds.
QUERY_HOP_DIVISOR = 4
#: Waveform rate and the smallest normalised correlation peak for offset refinement.
REFINE_RATE = 8000
REFINE_MIN_PEAK = 0.3
REFINE_MAX_S = 10.0
#: Query vectors per call of ranger.similar_windows.
CHUNK = 256


# ------------------------------------------------------------------------------ grouping
@dataclass(frozen=True)
class Pair:
    """A query window (start ``q``) matched to a stored window of recording ``rec``."""

    q: float
    rec: int
    f: float
    score: float
    segment_id: int = 0
    #: for --all: the query side's recording (None for an external query)
    qrec: int | None = None


@dataclass
class Run:
    """Consecutive matching windows at one consistent offset: one copy."""

    qrec: int | None
    rec: int
    query_start_s: float
    query_end_s: float
    offset_s: float
    score: float
    min_score: float
    n_windows: int
    segment_ids: list[int]
    found_starts: list[float]
    #: query start of the best-scoring window pair (where to verify the copy)
    best_q: float


def group_pairs(
    pairs: Iterable[Pair],
    query_hop: float,
    found_hop: float,
    window: float,
    min_windows: int = 2,
) -> list[Run]:
    """Group window pairs into runs (see the module docstring).

    Per (query recording, found recording), the best remaining pair seeds an offset; all
    pairs within one hop of it join (a copy misaligned by about hop/2 flips between two
    neighbouring offsets); they are cut into runs along the query time wherever more than one
    window is missing; runs with at least ``min_windows`` distinct found windows are kept. The
    offset is the median over the run's best pair per found window. Repeat until no pairs
    remain, so a recording holding two copies gives two runs.
    """
    hop = max(query_hop, found_hop)
    tol = hop + 1e-3
    max_gap = 2 * hop + 1e-3
    by_key: dict[tuple[int | None, int], list[Pair]] = {}
    for p in pairs:
        by_key.setdefault((p.qrec, p.rec), []).append(p)
    runs: list[Run] = []
    for (qrec, rec), pool in by_key.items():
        pool = sorted(pool, key=lambda p: (-p.score, p.q, p.f))
        while pool:
            d0 = pool[0].f - pool[0].q
            members = [p for p in pool if abs((p.f - p.q) - d0) <= tol]
            taken = {id(p) for p in members}
            pool = [p for p in pool if id(p) not in taken]
            members.sort(key=lambda p: p.q)
            kept: list[Run] = []
            chunk: list[Pair] = []
            for p in members:
                if chunk and p.q - chunk[-1].q > max_gap:
                    kept.extend(_run(qrec, rec, chunk, window, min_windows))
                    chunk = []
                chunk.append(p)
            kept.extend(_run(qrec, rec, chunk, window, min_windows))
            # a found window belongs to one copy: self-similar audio (a periodic siren) must
            # not give more runs at other offsets over the same stretch
            used = {f for r in kept for f in r.found_starts}
            pool = [p for p in pool if p.f not in used]
            runs.extend(kept)
    runs.sort(key=lambda r: (-r.n_windows * r.score, r.rec, r.query_start_s))
    return runs


def _run(qrec: int | None, rec: int, chunk: list[Pair], window: float, min_windows: int):
    best: dict[float, Pair] = {}
    for p in chunk:
        if p.f not in best or p.score > best[p.f].score:
            best[p.f] = p
    if len(best) < min_windows:
        return []
    chosen = sorted(best.values(), key=lambda p: p.f)
    scores = np.array([p.score for p in chosen])
    offset = float(np.median([p.f - p.q for p in chosen]))
    q0 = min(p.q for p in chosen)
    q1 = max(p.q for p in chosen) + window
    return [
        Run(
            qrec=qrec,
            rec=rec,
            query_start_s=q0,
            query_end_s=q1,
            offset_s=offset,
            score=float(scores.mean()),
            min_score=float(scores.min()),
            n_windows=len(chosen),
            segment_ids=[p.segment_id for p in chosen],
            found_starts=[p.f for p in chosen],
            best_q=max(chosen, key=lambda p: p.score).q,
        )
    ]


# ------------------------------------------------------------------------------ refining
def refine_offset(
    query_path: Source,
    query_start_s: float,
    query_end_s: float,
    found_path: Source,
    offset_s: float,
    radius_s: float,
) -> tuple[float, float] | None:
    """Cross-correlate ``[query_start_s, query_end_s)`` of the query with the found
    recording around ``offset_s`` (lags within +-radius_s) at REFINE_RATE. Returns (offset at
    the correlation peak, normalised peak in [0, 1]), or None when the audio cannot be read.

    A copy correlates strongly (gain, resampling, mp3 and moderate noise keep the waveform:
    0.6-1.0); audio that merely sounds alike does not (< 0.2).
    """
    rate = REFINE_RATE
    try:
        q = decode_span(query_path, rate, query_start_s, query_end_s)
        f0 = max(0.0, query_start_s + offset_s - radius_s)
        f = decode_span(found_path, rate, f0, query_end_s + offset_s + radius_s)
    except (AudioError, OSError, ValueError) as exc:
        log.info("cannot verify the match in %s: %s", found_path, exc)
        return None
    n = q.size
    if n < rate // 4 or f.size < n:
        return None
    q = (q - q.mean()).astype(np.float64)
    if not np.any(q):
        return None
    size = 1 << int(np.ceil(np.log2(f.size + n)))
    corr = np.fft.irfft(np.fft.rfft(f, size) * np.conj(np.fft.rfft(q, size)), size)
    corr = corr[: f.size - n + 1]
    # energy of each length-n stretch of f (mean removed): a normalised correlation
    c2 = np.concatenate(([0.0], np.cumsum(f.astype(np.float64) ** 2)))
    c1 = np.concatenate(([0.0], np.cumsum(f.astype(np.float64))))
    energy = (c2[n:] - c2[:-n]) - (c1[n:] - c1[:-n]) ** 2 / n
    ncc = np.abs(corr) / np.sqrt(np.maximum(energy, 1e-12) * float(np.dot(q, q)))
    lag = int(np.argmax(ncc))
    return f0 + lag / rate - query_start_s, float(min(ncc[lag], 1.0))


# ------------------------------------------------------------------------------ queries
@dataclass
class Match:
    """One copy: where in the query, where in the found recording, and the offset between."""

    query: str
    query_recording_id: int | None
    query_start_s: float
    query_end_s: float
    recording_id: int
    path: str
    sensor: str
    start_s: float
    end_s: float
    offset_s: float
    precision_s: float
    score: float
    min_score: float
    n_windows: int
    #: normalised waveform correlation at the offset (None: the audio could not be read)
    correlation: float | None = None
    local: datetime | None = None
    query_path: str | None = None

    @property
    def verified(self) -> bool | None:
        return None if self.correlation is None else self.correlation >= REFINE_MIN_PEAK

    def as_row(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("query_start_s", "query_end_s", "start_s", "end_s", "offset_s"):
            d[key] = float(d[key])
        d["precision_s"] = float(self.precision_s)
        d["score"] = float(self.score)
        d["min_score"] = float(self.min_score)
        d["local"] = self.local.isoformat(sep=" ", timespec="seconds") if self.local else None
        if self.correlation is not None:
            d["correlation"] = float(self.correlation)
        d["verified"] = self.verified
        return d


def default_min_score(space: Space) -> float:
    """The cosine similarity a window pair needs by default: the model's
    ``duplicate_min_score`` (measurements: docs/analytics.md)."""
    return model_facts(space.model).duplicate_min_score


def embed_audio_windows(
    path: Path,
    space: Space,
    hop_s: float,
    start_s: float | None = None,
    end_s: float | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Window a file (or a span of it) like ingest but every ``hop_s``; returns the unit
    vectors, the window starts (seconds in the file) and the duration."""
    model = load_model(space.model, **space.params)
    vectors: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    if start_s is None and end_s is None:
        stream = WindowStream(
            path, space.sample_rate, space.window_s, hop_s, batch_size=model.batch_size
        )
        for batch in stream:
            vectors.append(model.embed_audio(batch.samples))
            starts.append(batch.start_s)
        duration = float(stream.duration_s or 0.0)
        offset = 0.0
    else:
        info = probe(path)
        start = float(start_s or 0.0)
        end = min(float(end_s) if end_s is not None else info.duration_s, info.duration_s)
        if start < 0 or end <= start:
            raise SoundscapeError(
                f"--start/--end must satisfy 0 <= start < end <= {info.duration_s:.1f} s"
            )
        samples = decode_span(path, space.sample_rate, start, end)
        batch = window_array(samples, space.sample_rate, space.window_s, hop_s)
        for i in range(0, len(batch), model.batch_size):
            vectors.append(model.embed_audio(batch.samples[i : i + model.batch_size]))
        starts.append(batch.start_s)
        duration, offset = end, start
    return np.concatenate(vectors), np.concatenate(starts) + offset, duration


def similar_windows(
    conn: Connection,
    space: Space,
    vectors: np.ndarray,
    starts: np.ndarray,
    k: int,
    min_score: float,
    exclude_recording: int | None = None,
    strategy: str = "auto",
) -> list[Pair]:
    """Each query window's k nearest stored windows with at least ``min_score``."""
    register_vector(conn)
    pairs: list[Pair] = []
    for i in range(0, len(vectors), CHUNK):
        chunk = [np.asarray(v, np.float32) for v in vectors[i : i + CHUNK]]
        rows = conn.execute(
            sa.text(
                "SELECT * FROM ranger.similar_windows(:space, :vectors, :k, "
                "CAST(:min AS real), CAST(:exclude AS bigint), :strategy)"
            ),
            {
                "space": space.id,
                "vectors": chunk,
                "k": int(k),
                "min": float(min_score),
                "exclude": exclude_recording,
                "strategy": strategy,
            },
        )
        for r in rows:
            pairs.append(
                Pair(
                    q=float(starts[i + r.query_index]),
                    rec=int(r.recording_id),
                    f=float(r.start_s),
                    score=float(r.score),
                    segment_id=int(r.segment_id),
                )
            )
    return pairs


@dataclass(frozen=True)
class _Rec:
    path: str
    sensor: str
    duration_s: float
    started_at: datetime | None
    timezone: str


def _recordings(conn: Connection, ids: Iterable[int]) -> dict[int, _Rec]:
    rows = conn.execute(
        sa.text(
            "SELECT r.id, r.path, s.name, r.duration_s, r.started_at, s.timezone "
            "FROM recordings r JOIN sensors s ON s.id = r.sensor_id WHERE r.id = ANY(:ids)"
        ),
        {"ids": sorted(set(ids))},
    )
    return {r[0]: _Rec(*r[1:]) for r in rows}


def _refine_stored(
    stored: dict[int, StoredFile],
    run: Run,
    query_path: str,
    s0: float,
    s1: float,
    offset_s: float,
    radius_s: float,
) -> tuple[float, float] | None:
    """``refine_offset`` on the stored recordings of a run, each read by its stored identity
    (``media_files.open_stored``); None when one is not the file ingested."""
    with contextlib.ExitStack() as stack:
        try:
            found = stack.enter_context(open_stored(stored[run.rec]))
            query: Source = query_path
            if run.qrec is not None:
                query = stack.enter_context(open_stored(stored[run.qrec]))
        except (StoredFileChanged, KeyError) as exc:
            log.info("cannot verify the match in recording %s: %s", run.rec, exc)
            return None
        return refine_offset(query, s0, s1, found, offset_s, radius_s)


def _to_matches(
    conn: Connection,
    runs: list[Run],
    query: str,
    query_path: str | None,
    query_duration: float | None,
    query_hop: float,
    space: Space,
    verify: bool,
) -> list[Match]:
    """Runs -> matches: place them in both files, and where both files can be read, verify
    each by waveform correlation (dropping those that do not correlate) and refine its
    offset; finally drop duplicates that refining made identical."""
    recs = _recordings(conn, [r.rec for r in runs] + [r.qrec for r in runs if r.qrec])
    stored = stored_files(conn, recs)
    out: list[Match] = []
    for run in runs:
        found = recs[run.rec]
        qpath = recs[run.qrec].path if run.qrec is not None else query_path
        qdur = recs[run.qrec].duration_s if run.qrec is not None else query_duration
        q0, q1 = run.query_start_s, min(run.query_end_s, qdur or run.query_end_s)
        offset = run.offset_s
        step = space.hop_s if run.qrec is not None else query_hop
        precision = step / 2
        correlation = None
        if verify and qpath is not None:
            # verify on up to REFINE_MAX_S around the best window pair
            mid = run.best_q + space.window_s / 2
            s0 = max(q0, min(mid - REFINE_MAX_S / 2, q1 - REFINE_MAX_S))
            s1 = min(q1, s0 + REFINE_MAX_S)
            refined = _refine_stored(stored, run, qpath, s0, s1, offset, space.hop_s + 0.25)
            if refined is not None:
                correlation = refined[1]
                if correlation < REFINE_MIN_PEAK:
                    continue
                offset, precision = refined[0], 1.0 / REFINE_RATE
        # a copy cannot start before its recording does, nor end after it
        q0 = max(q0, -offset)
        q1 = min(q1, found.duration_s - offset)
        start = q0 + offset
        local = None
        if found.started_at is not None:
            instant = found.started_at + timedelta(seconds=start)
            local = instant.astimezone(ZoneInfo(found.timezone)).replace(tzinfo=None)
        out.append(
            Match(
                query=query if run.qrec is None else f"recording {run.qrec}",
                query_recording_id=run.qrec,
                query_start_s=q0,
                query_end_s=q1,
                recording_id=run.rec,
                path=found.path,
                sensor=found.sensor,
                start_s=start,
                end_s=q1 + offset,
                offset_s=offset,
                precision_s=precision,
                score=run.score,
                min_score=run.min_score,
                n_windows=run.n_windows,
                correlation=correlation,
                local=local,
                query_path=qpath,
            )
        )
    return _dedupe(out)


def _dedupe(matches: list[Match]) -> list[Match]:
    """Merge matches of the same two files at the same offset (refining can make two runs,
    or one run broken by missing windows, the same copy): one copy is reported once."""
    kept: list[Match] = []
    for m in sorted(matches, key=lambda m: (-m.n_windows, -m.score)):
        twin = next(
            (
                k
                for k in kept
                if (k.query_recording_id, k.recording_id, k.query_path)
                == (m.query_recording_id, m.recording_id, m.query_path)
                and abs(k.offset_s - m.offset_s) <= max(k.precision_s, m.precision_s, 0.01)
            ),
            None,
        )
        if twin is None:
            kept.append(m)
            continue
        n = twin.n_windows + m.n_windows
        twin.score = (twin.score * twin.n_windows + m.score * m.n_windows) / n
        twin.min_score = min(twin.min_score, m.min_score)
        twin.n_windows = n
        twin.query_start_s = min(twin.query_start_s, m.query_start_s)
        twin.query_end_s = max(twin.query_end_s, m.query_end_s)
        twin.start_s = twin.query_start_s + twin.offset_s
        twin.end_s = twin.query_end_s + twin.offset_s
    kept.sort(key=lambda m: (-m.score, -m.n_windows, m.recording_id, m.start_s))
    return kept


def find_audio(
    conn: Connection,
    path: Path,
    space: Space,
    min_score: float | None = None,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    k: int = 20,
    min_windows: int = 2,
    verify: bool = True,
    strategy: str = "auto",
) -> list[Match]:
    """Where the audio of ``path`` (or a span of it) occurs in the stored recordings."""
    hop = space.hop_s / QUERY_HOP_DIVISOR
    vectors, starts, duration = embed_audio_windows(path, space, hop, start_s, end_s)
    score = default_min_score(space) if min_score is None else min_score
    pairs = similar_windows(conn, space, vectors, starts, k, score, strategy=strategy)
    runs = group_pairs(pairs, hop, space.hop_s, space.window_s, min_windows)
    return _to_matches(conn, runs, path.name, str(path), duration, hop, space, verify)


def find_recording(
    conn: Connection,
    recording_id: int,
    space: Space,
    min_score: float | None = None,
    *,
    k: int = 20,
    min_windows: int = 2,
    verify: bool = True,
    strategy: str = "auto",
) -> list[Match]:
    """Where a stored recording's audio occurs in other recordings (its stored windows are
    the query; the recording's own windows are never matches)."""
    register_vector(conn)
    rows = conn.execute(
        sa.text(
            "SELECT start_s, embedding FROM segments WHERE space_id = :s AND recording_id = :r "
            "ORDER BY start_s"
        ),
        {"s": space.id, "r": recording_id},
    ).fetchall()
    if not rows:
        exists = conn.execute(
            sa.text("SELECT 1 FROM recordings WHERE id = :r"), {"r": recording_id}
        ).fetchone()
        if exists is None:
            raise SoundscapeError(
                f"no recording with id {recording_id} (soundscape recordings list)"
            )
        raise SoundscapeError(f"recording {recording_id} has no windows in space {space.name}")
    vectors = np.stack([np.asarray(r.embedding.to_numpy(), np.float32) for r in rows])
    starts = np.array([r.start_s for r in rows], dtype=np.float64)
    score = default_min_score(space) if min_score is None else min_score
    pairs = similar_windows(conn, space, vectors, starts, k, score, recording_id, strategy)
    pairs = [Pair(p.q, p.rec, p.f, p.score, p.segment_id, recording_id) for p in pairs]
    runs = group_pairs(pairs, space.hop_s, space.hop_s, space.window_s, min_windows)
    return _to_matches(
        conn, runs, f"recording {recording_id}", None, None, space.hop_s, space, verify
    )


def find_all(
    conn: Connection,
    space: Space,
    min_score: float | None = None,
    *,
    k: int = 3,
    min_windows: int = 2,
    verify: bool = True,
    strategy: str = "auto",
) -> list[Match]:
    """Audio shared by two recordings anywhere in the space: per window its ``k`` nearest
    windows of other recordings, grouped like a query; each pair of recordings is reported
    once (query = the older recording id)."""
    score = default_min_score(space) if min_score is None else min_score
    rows = conn.execute(
        sa.text("SELECT * FROM ranger.duplicate_pairs(:s, :k, CAST(:m AS real), :strategy)"),
        {"s": space.id, "k": int(k), "m": float(score), "strategy": strategy},
    )
    pairs = [
        Pair(
            q=float(r.start_a),
            rec=int(r.recording_b),
            f=float(r.start_b),
            score=float(r.score),
            segment_id=int(r.segment_b),
            qrec=int(r.recording_a),
        )
        for r in rows
    ]
    runs = group_pairs(pairs, space.hop_s, space.hop_s, space.window_s, min_windows)
    return _to_matches(conn, runs, "", None, None, space.hop_s, space, verify)
