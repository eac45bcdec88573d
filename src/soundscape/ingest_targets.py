"""What ingest stores of a recording, behind one interface: a ``Target``.

An embedder's target (``SpaceTarget``, here) streams windows through the model and stores them
as segments of its space; a transcriber's (``speech.TranscriptTarget``) streams speech chunks
through the model and stores utterances. ``soundscape.ingest`` loops over the targets of a
recording without knowing which is which (``store``): each target ``begin``s a ``Writer`` in
the recording's transaction, is ``feed``-ed its own stream's batches one at a time (bounded
memory; the ingest's ``on_batch`` check runs after each) and ``finish``-es with what it stored.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from soundscape.audio import Source, WindowBatch, WindowStream
from soundscape.checkpoints import Batch, Checkpoints, top_k
from soundscape.db import raw_connection
from soundscape.embedders import Embedder
from soundscape.errors import AudioError
from soundscape.spaces import Space
from soundscape.timeutil import window_times

#: per window, keep the top TOP_K class scores at or above SCORE_FLOOR
TOP_K = 5
SCORE_FLOOR = 0.05

SEGMENT_COPY = (
    "COPY segments (id, space_id, recording_id, sensor_id, start_s, end_s, starts_at, "
    "local_date, local_time, embedding) FROM STDIN WITH (FORMAT BINARY)"
)
SEGMENT_TYPES = [
    "int8", "int4", "int8", "int4", "float4", "float4", "timestamptz", "date", "time", "vector",
]  # fmt: skip
_SCORE_COPY = (
    "COPY segment_scores (space_id, segment_id, label_id, score) FROM STDIN WITH (FORMAT BINARY)"
)
_SCORE_TYPES = ["int4", "int8", "int4", "float4"]

Progress = Callable[[float], None]


@dataclass
class Recording:
    """The recording being stored, as its targets see it (in the ingest transaction)."""

    id: int
    sensor_id: int
    tz: ZoneInfo
    #: the file to decode (a stored one comes opened and checked: media_files.open_stored)
    source: Source
    started_at: datetime | None
    allow_truncated: bool = False
    #: the file's SHA-256: the key of its checkpoints (None: no checkpoints)
    sha256: str | None = None
    #: where checkpoints are written, outside the recording's transaction: never an engine
    #: whose commits mean something else (the worker's ingest engine marks its job done on
    #: every commit), so the ingest passes its own ``side_engine``
    side_engine: Engine | None = None

    def times(self, offsets: np.ndarray | list[float]) -> list[tuple]:
        """(absolute, local date, local time) of these offsets (all None without a start)."""
        if self.started_at is None:
            return [(None, None, None)] * len(offsets)
        return window_times(self.started_at, offsets, self.tz)


@dataclass
class Stored:
    """What a target stored of a recording: windows or utterances, the duration decoded, and
    why the file is truncated (when that is allowed)."""

    count: int
    duration_s: float
    truncated: str | None
    #: windows whose model outputs came from an interrupted ingest's checkpoints
    reused: int = 0


class Writer(Protocol):
    """One target's storing of one recording, begun in its transaction."""

    def batches(self) -> Generator[Any, None, None]:
        """The target's own stream of the recording (windows, speech chunks), lazily."""
        ...

    def feed(self, batch: Any) -> None:
        """Model and store one batch (and report the audio it finished to ``on_progress``)."""
        ...

    def finish(self) -> Stored: ...


class Target(Protocol):
    """Something ingest stores of every recording: a space's windows, a transcript."""

    #: the key of its count in ``FileResult.segments`` (a space's or transcriber's name)
    @property
    def name(self) -> str: ...

    def has(self, conn: Connection, recording_id: int) -> bool:
        """True if the recording already holds what this target stores (skip it)."""
        ...

    def clear(self, conn: Connection, recording_id: int) -> None:
        """Remove what this target stored of the recording (``--replace``)."""
        ...

    def begin(
        self, conn: Connection, recording: Recording, on_progress: Progress | None
    ) -> Writer: ...


def store(
    conn: Connection,
    target: Target,
    recording: Recording,
    on_progress: Progress | None = None,
    on_batch: Callable[[], None] | None = None,
    on_windows: Callable[[WindowBatch, WindowStream], None] | None = None,
) -> Stored:
    """Store ``target``'s part of ``recording``, one batch at a time; ``on_batch`` runs after
    every batch and may raise to abandon the file (the caller's transaction rolls back).
    ``on_windows`` sees every batch of a space's decoded windows and its stream (the
    recording's stored spectrogram is made from them, ``overview_images``)."""
    writer = target.begin(conn, recording, on_progress)
    stream = writer.stream if isinstance(writer, SegmentWriter) else None
    with closing(writer.batches()) as batches:
        for batch in batches:
            writer.feed(batch)
            if on_windows is not None and stream is not None:
                on_windows(batch, stream)
            if on_batch is not None:
                on_batch()
    return writer.finish()


# ------------------------------------------------------------------------- spaces
@dataclass
class SpaceTarget:
    """A model and the space it writes windows into."""

    model: Embedder
    space: Space

    @property
    def name(self) -> str:
        return self.space.name

    def has(self, conn: Connection, recording_id: int) -> bool:
        return (
            conn.execute(
                sa.text("SELECT 1 FROM recording_spaces WHERE recording_id = :r AND space_id = :s"),
                {"r": recording_id, "s": self.space.id},
            ).first()
            is not None
        )

    def clear(self, conn: Connection, recording_id: int) -> None:
        params = {"r": recording_id, "s": self.space.id}
        conn.execute(
            sa.text("DELETE FROM segments WHERE recording_id = :r AND space_id = :s"), params
        )
        conn.execute(
            sa.text("DELETE FROM recording_spaces WHERE recording_id = :r AND space_id = :s"),
            params,
        )

    def begin(
        self, conn: Connection, recording: Recording, on_progress: Progress | None
    ) -> SegmentWriter:
        return SegmentWriter(conn, self, recording, on_progress)


class SegmentWriter:
    """Stream windows of a recording through the model and COPY them (with class scores)."""

    def __init__(
        self,
        conn: Connection,
        target: SpaceTarget,
        recording: Recording,
        on_progress: Progress | None,
    ) -> None:
        self.conn, self.target, self.recording = conn, target, recording
        self.on_progress = on_progress
        space = target.space
        self.stream = WindowStream(
            recording.source,
            space.sample_rate,
            space.window_s,
            space.hop_s,
            batch_size=target.model.batch_size,
            allow_truncated=recording.allow_truncated,
        )
        self.n = 0
        self.covered = 0.0
        self.checkpoints = (
            Checkpoints(recording.side_engine, recording.sha256, space.id).open()
            if recording.sha256 is not None and recording.side_engine is not None
            else None
        )

    def batches(self) -> Generator[WindowBatch, None, None]:
        yield from prefetch(self.stream)

    def feed(self, batch: WindowBatch) -> None:
        # the windows the model embeds (``select_windows``: voice keeps speech only)
        kept = batch.subset(self.target.model.select_windows(batch.samples, batch.start_s))
        if len(kept):
            self._write(kept)
        if self.on_progress is not None:
            end = float(batch.end_s[-1])
            self.on_progress(max(0.0, end - self.covered))
            self.covered = max(self.covered, end)

    def _outputs(self, batch: WindowBatch) -> Batch:
        """The model's outputs for the batch: from an interrupted ingest's checkpoint, or
        embedded now (and checkpointed)."""
        first = float(batch.start_s[0])
        if self.checkpoints is not None:
            cached = self.checkpoints.get(first, batch.start_s)
            if cached is not None:
                return cached
        space = self.target.space
        vectors, scores = self.target.model.embed_audio_and_scores(batch.samples)
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            at = float(batch.start_s[int(np.argmax(bad))])
            raise AudioError(
                f"{self.stream.path}: model {space.model} gave non-finite values for the "
                f"window at {at:.2f} s: the audio holds extreme sample values (a float file "
                "not scaled to [-1, 1]?). Rescale or re-encode it (e.g. sox in.wav -b 16 "
                "out.wav gain -n)."
            )
        top = top_k(np.asarray(scores), TOP_K) if scores is not None else None
        out = Batch(first, batch.start_s, np.asarray(vectors, dtype=np.float32), top)
        if self.checkpoints is not None:
            self.checkpoints.add(out)
        return out

    def _write(self, batch: WindowBatch) -> None:
        space, rec = self.target.space, self.recording
        outputs = self._outputs(batch)
        vectors = outputs.vectors
        with raw_connection(self.conn).cursor() as cur:
            ids = [
                r[0]
                for r in cur.execute(
                    "SELECT nextval('segments_id_seq') FROM generate_series(1, %s)",
                    [len(vectors)],
                )
            ]
            times = rec.times(batch.start_s)
            with cur.copy(SEGMENT_COPY) as copy:
                copy.set_types(SEGMENT_TYPES)
                for j, seg_id in enumerate(ids):
                    start, end = float(batch.start_s[j]), float(batch.end_s[j])
                    copy.write_row(
                        (seg_id, space.id, rec.id, rec.sensor_id, start, end, *times[j],
                         vectors[j])
                    )  # fmt: skip
            if outputs.scores is not None:
                with cur.copy(_SCORE_COPY) as copy:
                    copy.set_types(_SCORE_TYPES)
                    for seg_id, idx, val in zip(ids, *outputs.scores):
                        for label_id, score in zip(idx.tolist(), val.tolist()):
                            if score >= SCORE_FLOOR:  # NaN never passes
                                copy.write_row((space.id, seg_id, label_id, score))
        self.n += len(ids)

    def finish(self) -> Stored:
        self.conn.execute(
            sa.text(
                "INSERT INTO recording_spaces (recording_id, space_id, n_segments) "
                "VALUES (:r, :s, :n)"
            ),
            {"r": self.recording.id, "s": self.target.space.id, "n": self.n},
        )
        assert self.stream.duration_s is not None  # set once the stream is exhausted
        reused = self.checkpoints.reused if self.checkpoints is not None else 0
        return Stored(self.n, self.stream.duration_s, self.stream.truncated, reused)


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate ``items`` in a background thread, ``depth`` items ahead.

    Decoding and resampling (libsndfile, soxr) release the GIL, so on two cores the next
    batches are decoded while the model embeds this one; memory stays bounded by ``depth``.
    Exceptions from the producer are raised in the consumer.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="soundscape-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
