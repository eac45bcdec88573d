"""A stored low-resolution spectrogram per recording (table ``recording_overviews``, 0037), so
the recording page's plot of a long file is drawn without decoding its audio again.

- ``compute_overview``: the log-power spectrogram of a whole file at ``OVERVIEW_BINS``
  linear frequency bins (0 to half of at most ``plots.PLOT_RATE``) and at most
  ``MAX_COLUMNS`` time columns (each the mean power of the frames it covers), streamed in
  bounded memory, quantised to uint8 over ``DB_RANGE`` dB below its loudest cell. An hour
  is ~0.5 MB raw, a few hundred KB as the stored PNG (greyscale, lossless).
- ``store_overview`` / ``load_overview``: the row (``INSERT ... ON CONFLICT`` replaces it).
- ``ensure_overview``: the stored one, or computed from the stored file (read by its checked
  identity, ``media_files.open_stored``) and stored: the backfill of recordings ingested
  before 0037, on their first plot.

Ingest stores one for every new recording (``ingest.Ingestor._store``, same transaction),
made by ``OverviewBuilder`` from the windows a space already decodes (a model at 22.05 kHz or
more, such as BirdNET or CLAP, or at the file's own rate; windows without gaps); otherwise
(e.g. only the 16 kHz spectral model on a 48 kHz file) ``compute_overview`` decodes the file
once more.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.audio import Opened, WindowBatch, WindowStream, probe
from soundscape.errors import AudioError, SoundscapeError
from soundscape.media_files import open_stored, stored_file

log = logging.getLogger(__name__)

#: frequency bins of a stored overview (linear, 0 to sample_rate / 2)
OVERVIEW_BINS = 128
#: most time columns of a stored overview (an hour: one column per 0.88 s)
MAX_COLUMNS = 4096
#: dB below the loudest cell that the 256 grey levels cover (the plot shows 80 dB too)
DB_RANGE = 80.0
#: highest sample rate an overview decodes at (plots.PLOT_RATE: 11 kHz of spectrum)
OVERVIEW_RATE = 22050


@dataclass
class Overview:
    """A recording's low-resolution spectrogram: ``image`` uint8 ``[bins, columns]``, row 0
    the lowest frequency; column k covers ``[k * column_s, (k + 1) * column_s)``."""

    image: np.ndarray
    column_s: float
    sample_rate: int
    db_max: float
    db_range: float = DB_RANGE

    @property
    def columns(self) -> int:
        return int(self.image.shape[1])

    def db(self, start_s: float, end_s: float) -> tuple[np.ndarray, float, float]:
        """dB ``[bins, columns]`` of the columns overlapping ``[start_s, end_s)`` and the
        span they cover (from, to) in seconds."""
        a = max(0, int(np.floor(start_s / self.column_s)))
        b = min(self.columns, max(a + 1, int(np.ceil(end_s / self.column_s))))
        part = self.image[:, a:b].astype(np.float32)
        db = self.db_max - self.db_range + part * (self.db_range / 255.0)
        return db, a * self.column_s, b * self.column_s

    def png(self) -> bytes:
        from PIL import Image  # deferred (comes with matplotlib)

        out = io.BytesIO()
        Image.fromarray(self.image[::-1]).save(out, format="PNG", optimize=True)
        return out.getvalue()

    @staticmethod
    def from_png(data: bytes, column_s: float, sample_rate: int, db_max: float,
                 db_range: float) -> Overview:  # fmt: skip
        from PIL import Image

        image = np.asarray(Image.open(io.BytesIO(data)).convert("L"))[::-1].copy()
        return Overview(image, column_s, sample_rate, db_max, db_range)


def _fft_size(rate: int) -> int:
    return 1024 if rate >= 16000 else 512


def _column_power(samples: np.ndarray, n_fft: int) -> np.ndarray:
    """Mean power spectrum of a column's samples (Hann frames, n_fft/4 hop), pooled into
    ``OVERVIEW_BINS`` bins."""
    x = np.asarray(samples, np.float32)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[:: n_fft // 4]
    power = (np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2).mean(axis=0)
    usable = power[: (len(power) - 1) // OVERVIEW_BINS * OVERVIEW_BINS]
    return usable.reshape(OVERVIEW_BINS, -1).mean(axis=1)


class OverviewBuilder:
    """The overview built from the windows an ingest already decodes (one space's stream):
    the first ``hop`` samples of each window, in order, tile the audio (a window starts every
    hop), at the model's rate. Columns are made as the audio arrives, so memory stays that of
    one column plus the result. Unusable (``ok`` false) when windows leave gaps (hop longer
    than the window) or arrive out of order; ``compute_overview`` decodes the file then."""

    def __init__(self, duration_s: float, file_rate: int) -> None:
        """``duration_s`` (the header's) sets the column length; a stream below
        ``min(file_rate, OVERVIEW_RATE)`` lacks frequencies the overview shows (unusable)."""
        self.duration_s = float(duration_s)
        self.min_rate = min(int(file_rate), OVERVIEW_RATE)
        self.ok = True
        self._pending: np.ndarray | None = None  # the newest window (all of it may be last)
        self._stream: WindowStream | None = None
        self.rate = 0
        self._buf: list[np.ndarray] = []
        self._have = 0  # samples in _buf
        self._next = 0  # index of the next window expected (by its first sample)
        self._taken = 0  # samples taken so far
        self._cols: list[np.ndarray] = []

    def _setup(self, rate: int) -> None:
        self.rate = rate
        self.n_fft = _fft_size(min(rate, OVERVIEW_RATE)) * max(1, rate // OVERVIEW_RATE)
        self.top_hz = min(rate, OVERVIEW_RATE) / 2
        shown = min(rate, OVERVIEW_RATE)  # columns as long as compute_overview's
        self.column_s = max(self.duration_s / MAX_COLUMNS, _fft_size(shown) / shown)
        hz = np.fft.rfftfreq(self.n_fft, 1 / rate)
        edges = np.linspace(0, self.top_hz, OVERVIEW_BINS + 1)
        # each output bin averages the FFT bins whose centre falls in it (at least one)
        self._starts = np.minimum(np.searchsorted(hz, edges[:-1]), len(hz) - 1)
        self._ends = np.maximum(np.searchsorted(hz, edges[1:]), self._starts + 1)

    def tap(self, batch: WindowBatch, stream: WindowStream) -> None:
        """``ingest_targets.store``'s hook: a batch of the stream a space embeds. The first
        stream that carries the overview's spectrum without gaps is used, the others left."""
        if self._stream is None:
            if stream.sample_rate < self.min_rate or stream.hop_samples > stream.window_samples:
                return
            self._stream = stream
        if stream is not self._stream:
            return
        self.feed(batch.samples, batch.start_s, stream.sample_rate, stream.hop_samples)

    def feed(self, samples: np.ndarray, start_s: np.ndarray, rate: int, hop: int) -> None:
        """One batch of windows (``samples`` [B, W]) of a stream at ``rate`` with ``hop``."""
        if not self.ok or not self.duration_s > 0:
            self.ok = False
            return
        if not self.rate:
            self._setup(rate)
        if rate != self.rate or rate < self.min_rate or hop > samples.shape[1]:
            self.ok = False
            return
        for row, at in zip(samples, start_s):
            if round(float(at) * rate) != self._next * hop:
                self.ok = False
                return
            self._next += 1
            if self._pending is not None:
                self._push(self._pending[:hop])
            self._pending = np.asarray(row, np.float32)

    def _push(self, part: np.ndarray) -> None:
        self._buf.append(part)
        self._have += len(part)
        self._taken += len(part)
        while True:
            k = len(self._cols)
            end = round((k + 1) * self.column_s * self.rate)
            begin = round(k * self.column_s * self.rate)
            if self._have < end - begin:
                return
            if k >= 2 * MAX_COLUMNS:  # a header that understated the length: decode instead
                self.ok, self._cols, self._buf, self._have = False, [], [], 0
                return
            audio = np.concatenate(self._buf)
            self._cols.append(self._column(audio[: end - begin]))
            rest = audio[end - begin :]
            self._buf, self._have = [rest], len(rest)

    def _column(self, x: np.ndarray) -> np.ndarray:
        n = self.n_fft
        if len(x) < n:
            x = np.pad(x, (0, n - len(x)))
        frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 4]
        power = (np.abs(np.fft.rfft(frames * np.hanning(n), axis=-1)) ** 2).mean(axis=0)
        total = np.concatenate(([0.0], np.cumsum(power)))
        return (total[self._ends] - total[self._starts]) / (self._ends - self._starts)

    def finish(self, n_samples: int | None = None) -> Overview | None:
        """The overview of the first ``n_samples`` fed (default: the tapped stream's decoded
        length: the last window's zero padding left out), or None when unusable or empty."""
        if not self.ok or not self.rate:
            return None
        if n_samples is None and self._stream is not None:
            n_samples = self._stream.n_samples
        if self._pending is not None:  # the last window, all of it but its zero padding
            real = len(self._pending) if n_samples is None else n_samples - self._taken
            self._push(self._pending[: max(0, real)])
            self._pending = None
        if self._have >= self.n_fft // 2:  # the short last column
            self._cols.append(self._column(np.concatenate(self._buf)))
        if not self._cols:
            return None
        db = 10 * np.log10(np.maximum(np.stack(self._cols, axis=1), 1e-10))
        db_max = float(db.max())
        image = np.clip(np.round((db - (db_max - DB_RANGE)) * (255.0 / DB_RANGE)), 0, 255)
        return Overview(image.astype(np.uint8), self.column_s, int(2 * self.top_hz), db_max)


def compute_overview(source: str | Path | Opened, duration_s: float | None = None) -> Overview:
    """The overview of a whole file, streamed (memory: one batch of columns plus the
    float32 result, ~2 MB at most). ``duration_s`` (default: the header's) sets the column
    length, ``max(duration / MAX_COLUMNS, one FFT frame)``."""
    info = probe(source)
    rate = min(info.sample_rate, OVERVIEW_RATE)
    n_fft = _fft_size(rate)
    duration = float(duration_s if duration_s is not None else info.duration_s or 0.0)
    column_s = max(duration / MAX_COLUMNS, n_fft / rate)
    stream = WindowStream(source, rate, column_s, column_s, batch_size=64, allow_truncated=True)
    cols: list[np.ndarray] = []
    for batch in stream:
        for samples in batch.samples:
            cols.append(_column_power(samples, n_fft))
    if not cols:
        raise AudioError(f"{stream.path}: no audio to draw")
    db = 10 * np.log10(np.maximum(np.stack(cols, axis=1), 1e-10))
    db_max = float(db.max())
    image = np.clip(np.round((db - (db_max - DB_RANGE)) * (255.0 / DB_RANGE)), 0, 255)
    return Overview(image.astype(np.uint8), column_s, rate, db_max)


def store_overview(conn: Connection, recording_id: int, overview: Overview) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO recording_overviews (recording_id, column_s, columns, bins, "
            "sample_rate, db_max, db_range, image) "
            "VALUES (:r, :cs, :c, :b, :sr, :m, :dr, :img) "
            "ON CONFLICT (recording_id) DO UPDATE SET column_s = EXCLUDED.column_s, "
            "columns = EXCLUDED.columns, bins = EXCLUDED.bins, "
            "sample_rate = EXCLUDED.sample_rate, db_max = EXCLUDED.db_max, "
            "db_range = EXCLUDED.db_range, image = EXCLUDED.image, created_at = EXCLUDED.created_at"
        ),
        {
            "r": recording_id,
            "cs": overview.column_s,
            "c": overview.columns,
            "b": int(overview.image.shape[0]),
            "sr": overview.sample_rate,
            "m": overview.db_max,
            "dr": overview.db_range,
            "img": overview.png(),
        },
    )


def load_overview(conn: Connection, recording_id: int) -> Overview | None:
    row = conn.execute(
        sa.text(
            "SELECT column_s, sample_rate, db_max, db_range, image "
            "FROM recording_overviews WHERE recording_id = :r"
        ),
        {"r": recording_id},
    ).fetchone()
    if row is None:
        return None
    return Overview.from_png(
        bytes(row.image), float(row.column_s), int(row.sample_rate), float(row.db_max),
        float(row.db_range),
    )  # fmt: skip


def has_overview(conn: Connection, recording_id: int) -> bool:
    return bool(
        conn.execute(
            sa.text("SELECT EXISTS (SELECT FROM recording_overviews WHERE recording_id = :r)"),
            {"r": recording_id},
        ).scalar()
    )


def ingest_overview(conn: Connection, recording_id: int, source: str | Path | Opened,
                    duration_s: float | None, built: OverviewBuilder | None = None) -> bool:  # fmt: skip
    """At ingest: store the recording's overview (in the caller's transaction) unless it has
    one: the one ``built`` from the windows the ingest decoded, or else decoded again here.
    A file that decoded for its targets but not here is only logged (its first plot tries
    again). True when one was stored."""
    if has_overview(conn, recording_id):
        return False
    try:
        overview = built.finish() if built is not None else None
        overview = overview or compute_overview(source, duration_s)
    except (AudioError, OSError, ValueError) as exc:
        log.warning("no stored spectrogram for recording %s: %s", recording_id, exc)
        return False
    store_overview(conn, recording_id, overview)
    return True


def ensure_overview(conn: Connection, recording_id: int) -> Overview:
    """The stored overview, or (a recording ingested before 0037) computed from its stored
    file and stored in a transaction of its own. A connection that may not write (a
    reader) gets the computed one without storing it. The caller commits (the row is
    written in a savepoint of its transaction)."""
    found = load_overview(conn, recording_id)
    if found is not None:
        return found
    try:
        with open_stored(stored_file(conn, recording_id)) as opened:
            duration = conn.execute(
                sa.text("SELECT duration_s FROM recordings WHERE id = :r"), {"r": recording_id}
            ).scalar()
            overview = compute_overview(opened, duration)
    except (AudioError, OSError) as exc:
        raise SoundscapeError(f"cannot read recording {recording_id}'s audio: {exc}") from exc
    try:
        with conn.begin_nested():
            store_overview(conn, recording_id, overview)
    except sa.exc.DBAPIError as exc:  # e.g. a read-only role: draw it, store nothing
        log.info("recording %s's spectrogram not stored: %s", recording_id, exc.orig)
    return overview
