"""Audio and pictures the web page serves, always found by a stored id (a window's
``segment_id`` or a recording's id): no part of a request path ever reaches the file system,
and a recording's file is read only through ``media_files.open_stored`` (refused, 410, when it
is a symbolic link or not the file that was ingested).

- ``clip_wav``: the WAV of a window (or of a span of a recording) with 1 s of padding, at
  the recording's own sample rate, as ``search --export`` writes it; ``clip_png`` its
  spectrogram (drawn directly with Pillow: a card's image must come fast).
- ``recording_file``: a recording's stored file, opened and checked, and its MIME type, which
  the app streams from the checked descriptor with HTTP range requests (``byte_range``;
  64 kB chunks: bounded memory for any length).
- ``recording_png``: the annotated spectrogram of ``plot recording`` (detections, anomaly
  scores), built in bounded memory.

PNG figures are cached (a few hundred, least recently used first out).
"""

from __future__ import annotations

import io
import math
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import sqlalchemy as sa
from matplotlib import colormaps
from PIL import Image, ImageDraw
from sqlalchemy.engine import Connection

from soundscape.audio import decode_span, probe
from soundscape.errors import AudioError, SoundscapeError
from soundscape.media_files import (
    STORED_COLUMNS,
    OpenedFile,
    StoredFile,
    open_checked,
    open_stored,
    stored_file,
)
from soundscape.plots import recording_plot, spectrogram_db

#: Padding around a window's clip, seconds (as ``search --export``).
PAD_S = 1.0
#: Longest clip served (seconds, padding included); a longer span is cut at this length.
MAX_CLIP_S = 120.0

#: Size of a clip's spectrogram image (pixels)
PNG_SIZE = (800, 240)
#: magma in entries 0-254 of the palette, cyan (the marks) in 255
_PALETTE = [
    *(np.round(colormaps["magma"](np.linspace(0.0, 1.0, 255))[:, :3] * 255).astype(int).ravel()),
    0, 255, 255,
]  # fmt: skip
#: Highest sample rate a clip's spectrogram is computed at (as plots.PLOT_RATE)
SPECTROGRAM_RATE = 22050

#: MIME types of the formats ingest accepts (browsers play all four).
MIME = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}

# matplotlib's pyplot is not thread-safe and the app runs handlers in a thread pool
_PLOT_LOCK = threading.Lock()


class NotFound(SoundscapeError):
    """No window or recording with that id, or its file is gone."""


@dataclass(frozen=True)
class Span:
    stored: StoredFile
    start_s: float
    end_s: float
    label: str

    @property
    def recording_id(self) -> int:
        return self.stored.recording_id

    @property
    def path(self) -> str:
        return self.stored.path


class LRU:
    """A small thread-safe least-recently-used cache (of PNG bytes, or bytes and a note)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value


CLIP_PNGS = LRU(512)
RECORDING_PNGS = LRU(32)


def window_span(conn: Connection, segment_id: int) -> Span:
    row = conn.execute(
        sa.text(
            f"SELECT {STORED_COLUMNS}, g.start_s, g.end_s, s.name AS sensor "
            "FROM segments g JOIN recordings r ON r.id = g.recording_id "
            "JOIN sensors s ON s.id = g.sensor_id WHERE g.id = :i"
        ),
        {"i": int(segment_id)},
    ).fetchone()
    if row is None:
        raise NotFound(f"no window with id {segment_id}")
    return Span(
        StoredFile.from_row(row), float(row.start_s), float(row.end_s),
        f"{row.sensor} window {segment_id}",
    )  # fmt: skip


def recording_row(conn: Connection, recording_id: int) -> Any:
    row = conn.execute(
        sa.text("SELECT * FROM ranger.recordings WHERE recording_id = :r"),
        {"r": int(recording_id)},
    ).fetchone()
    if row is None:
        raise NotFound(f"no recording with id {recording_id}")
    return row


def recording_span(conn: Connection, recording_id: int, start_s: float, end_s: float) -> Span:
    row = recording_row(conn, recording_id)
    if not (math.isfinite(start_s) and 0 <= start_s < end_s):
        raise SoundscapeError("a span needs 0 <= start < end")
    end = min(end_s, float(row.duration_s))
    if start_s >= end:
        raise SoundscapeError(f"start {start_s:g} s is past the end of recording {recording_id}")
    stored = stored_file(conn, recording_id)
    return Span(stored, start_s, end, f"{row.sensor} {start_s:g}-{end:g} s")


def _padded(span: Span, duration_s: float) -> tuple[float, float]:
    start = max(0.0, span.start_s - PAD_S)
    end = min(duration_s, span.end_s + PAD_S, start + MAX_CLIP_S)
    return start, end


def _decode(span: Span, max_rate: int | None = None) -> tuple[Any, int, float]:
    """(samples, sample rate, clip start in the recording): the padded span at the
    recording's own rate, or at most ``max_rate``."""
    try:
        with open_stored(span.stored) as opened:
            info = probe(opened)
            start, end = _padded(span, info.duration_s)
            rate = min(info.sample_rate, max_rate or info.sample_rate)
            audio = decode_span(opened, rate, start, end)
    except (AudioError, OSError, ValueError) as exc:
        raise NotFound(f"cannot read the audio of recording {span.recording_id}: {exc}") from exc
    return audio, rate, start


def clip_wav(span: Span) -> bytes:
    """The span with padding as a 16-bit WAV at the recording's own sample rate."""
    audio, rate, _ = _decode(span)
    out = io.BytesIO()
    sf.write(out, audio, rate, subtype="PCM_16", format="WAV")
    return out.getvalue()


def spectrogram_image(
    audio: np.ndarray, rate: int, marks: tuple[float, ...] = (), size: tuple[int, int] = PNG_SIZE
) -> bytes:
    """A log-power spectrogram (``plots.spectrogram_db``, 80 dB range, magma colours) as a
    bare 8-bit PNG, 0 Hz at the bottom up to half the sample rate, with cyan lines at
    ``marks`` (seconds). Drawn with numpy and Pillow: tens of milliseconds, where a matplotlib
    figure (``search --export``) takes about a second."""
    db = spectrogram_db(audio, rate)
    level = np.clip((db - (db.max() - 80.0)) / 80.0, 0.0, 1.0)[::-1]
    image = Image.fromarray((level * 254).astype(np.uint8), mode="L")
    image = image.resize(size, Image.Resampling.BILINEAR).convert("P")
    image.putpalette(_PALETTE)
    duration = max(len(audio), 1) / rate
    draw = ImageDraw.Draw(image)
    for t in marks:
        x = round(t / duration * (size[0] - 1))
        draw.line([(x, 0), (x, size[1])], fill=255, width=2)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=3)
    return out.getvalue()


def clip_png(span: Span) -> bytes:
    """The spectrogram of the padded clip with the span's edges marked."""

    def make() -> bytes:
        audio, rate, start = _decode(span, SPECTROGRAM_RATE)
        return spectrogram_image(audio, rate, (span.start_s - start, span.end_s - start))

    key = (span.recording_id, span.stored.sha256, span.start_s, span.end_s)
    return CLIP_PNGS.get_or_make(key, make)


def recording_file(conn: Connection, recording_id: int) -> tuple[OpenedFile, str]:
    """The stored file of a recording, opened and checked (``media_files.open_checked``; the
    caller closes it), and its MIME type. ``StoredFileChanged`` if it is not the file that
    was ingested."""
    recording_row(conn, recording_id)
    stored = stored_file(conn, recording_id)
    fmt = (stored.format or Path(stored.path).suffix.lstrip(".")).lower()
    return open_checked(stored), MIME.get(fmt, "application/octet-stream")


class RangeNotSatisfiable(SoundscapeError):
    """A ``Range`` header that selects no byte of the file (HTTP 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The byte range ``[start, end)`` a ``Range`` header asks for, or None for the whole file
    (no header, another unit, several ranges or a malformed one: RFC 9110 lets a server ignore
    those). ``RangeNotSatisfiable`` if it starts past the end."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, dash, last = header[len("bytes=") :].strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise RangeNotSatisfiable(f"an empty range of a {size}-byte file")
        return max(0, size - n), size
    start = int(first)
    if last and not last.isdigit():
        return None
    end = min(size, int(last) + 1) if last else size
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(f"the range starts past the end of a {size}-byte file")
    return start, end


def recording_png(
    conn: Connection,
    recording_id: int,
    start_s: float | None = None,
    end_s: float | None = None,
    width: int = 1200,
    height: int = 520,
) -> tuple[bytes, str]:
    """``plot recording``'s figure: spectrogram, detections above, anomaly scores below; and
    where its spectrogram came from (``"stored"`` overview or ``"decoded"`` audio). A
    recording without a stored overview gets one now (committed), for the next views."""
    recording_row(conn, recording_id)
    if not all(math.isfinite(x) for x in (start_s, end_s) if x is not None):
        raise SoundscapeError("start and end must be numbers of seconds")
    # drawn from the stored overview, but only while the stored file is the one ingested
    # (StoredFileChanged, 410, as every audio route; an unchanged identity costs one fstat)
    with open_stored(stored_file(conn, recording_id)):
        pass
    last_change = conn.execute(
        sa.text(
            "SELECT (SELECT count(*) FROM ranger.detections WHERE recording_id = :r), "
            "(SELECT max(id) FROM anomaly_runs)"
        ),
        {"r": recording_id},
    ).one()

    def make() -> tuple[bytes, str]:
        with tempfile.TemporaryDirectory() as tmp, _PLOT_LOCK:
            png = Path(tmp) / "recording.png"
            made = recording_plot(
                conn, recording_id, png, start_s, end_s, width=width, height=height, backfill=True
            )
            conn.commit()  # the overview stored by the backfill, if any
            return png.read_bytes(), str(made.details["spectrogram"])

    key = (recording_id, start_s, end_s, width, height, tuple(last_change))
    return RECORDING_PNGS.get_or_make(key, make)
