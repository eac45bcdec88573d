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

Ingest stores one for every new recording (``ingest.Ingestor._store``, same transaction).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.audio import Opened, WindowStream, probe
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
            "db_range = EXCLUDED.db_range, image = EXCLUDED.image, created_at = now()"
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


def ingest_overview(conn: Connection, recording_id: int, source: str | Path | Opened,
                    duration_s: float | None) -> bool:  # fmt: skip
    """At ingest: store the recording's overview (in the caller's transaction) unless it has
    one. A file that decoded for its targets but not here is only logged (its first plot
    tries again). True when one was stored."""
    if conn.execute(
        sa.text("SELECT EXISTS (SELECT FROM recording_overviews WHERE recording_id = :r)"),
        {"r": recording_id},
    ).scalar():
        return False
    try:
        overview = compute_overview(source, duration_s)
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
