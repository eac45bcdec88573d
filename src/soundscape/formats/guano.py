"""GUANO metadata in WAV files (the ``guan`` chunk that Wildlife Acoustics, Titley, AudioMoth
firmware and many loggers write; spec: https://github.com/riggsd/guano-spec).

Reading (:func:`read_guano`, at ingest): the whole block as text, and what soundscape uses of
it (:class:`GuanoInfo`): ``Timestamp`` (the start time, with or without offset), ``Loc
Position`` (latitude and longitude), ``Loc Elevation``, ``Make``/``Model``/``Serial``. A bad
value is a warning and is left out; the file still ingests. Writing (:func:`write_guano`, on
exported clips) uses the ``guano`` package itself, so what it writes is what it reads.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from soundscape.media_files import OpenedFile
from soundscape.results import Hit
from soundscape.timeutil import MAX_YEAR, MIN_YEAR, UTC

#: the chunk id GUANO lives in
CHUNK = b"guan"
#: soundscape's namespace in the GUANO it writes
NAMESPACE = "soundscape"
#: a longer GUANO block is not metadata: skipped with a warning
MAX_BYTES = 1 << 20


@dataclass
class GuanoInfo:
    """What a file's GUANO block says: every field as text (``Namespace|Key`` for namespaced
    ones), and the fields soundscape reads, checked (None when absent or bad)."""

    fields: dict[str, str] = field(default_factory=dict)
    #: aware (the block gave an offset or Z) or naive (the recorder's local time)
    timestamp: datetime | None = None
    latitude: float | None = None
    longitude: float | None = None
    elevation_m: float | None = None
    make: str | None = None
    model: str | None = None
    serial: str | None = None
    #: what was wrong with the block (each says what was done instead)
    warnings: list[str] = field(default_factory=list)

    @property
    def position(self) -> tuple[float, float] | None:
        if self.latitude is None or self.longitude is None:
            return None
        return self.latitude, self.longitude

    def metadata(self) -> dict[str, Any]:
        """The recording's metadata keys: ``guano`` (the whole block), ``device`` (make, model,
        serial) and ``position`` (latitude, longitude, elevation_m), the last two only when
        the block has them."""
        out: dict[str, Any] = {"guano": dict(self.fields)}
        device = {k: v for k, v in (("make", self.make), ("model", self.model),
                                    ("serial", self.serial)) if v}  # fmt: skip
        if device:
            out["device"] = device
        if self.position is not None:
            place: dict[str, Any] = {"latitude": self.latitude, "longitude": self.longitude}
            if self.elevation_m is not None:
                place["elevation_m"] = self.elevation_m
            out["position"] = place
        return out


# ------------------------------------------------------------------------------- reading
def _reader(source: Path | OpenedFile) -> tuple[Any, int]:
    """A ``pread(n, offset)`` on ``source`` and its size."""
    if isinstance(source, OpenedFile):
        return source.pread, source.size
    fd = os.open(source, os.O_RDONLY)
    size = os.fstat(fd).st_size

    def pread(n: int, offset: int) -> bytes:
        return os.pread(fd, n, offset)

    pread.fd = fd  # type: ignore[attr-defined]
    return pread, size


def find_chunk(source: Path | OpenedFile) -> tuple[bytes | None, list[str]]:
    """The bytes of a RIFF/WAVE file's ``guan`` chunk (None for other files or a WAV without
    one), walking the chunk headers only (the audio is never read), and any warning."""
    pread, size = _reader(source)
    try:
        head = pread(12, 0)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None, []
        at = 12
        while at + 8 <= size:
            chunk_id, n = struct.unpack("<4sI", pread(8, at))
            if chunk_id == CHUNK:
                if n > MAX_BYTES:
                    return None, [f"its GUANO chunk is {n} bytes (at most {MAX_BYTES}); ignored"]
                data = pread(n, at + 8)
                if len(data) < n:
                    return None, ["its GUANO chunk is cut short (a truncated file?); ignored"]
                return data, []
            at += 8 + n + (n & 1)  # chunks are word-aligned
        return None, []
    finally:
        fd = getattr(pread, "fd", None)
        if fd is not None:
            os.close(fd)


def parse(data: bytes | str) -> GuanoInfo:
    """A GUANO block's fields (UTF-8, ``Key: value`` lines, ``Namespace|Key`` for namespaced
    keys), with the fields soundscape uses checked; never raises for a bad block."""
    import guano

    info = GuanoInfo()
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
            info.warnings.append("its GUANO block is not UTF-8; read as Latin-1")
    else:
        text = data
    bad_lines = 0
    for line in text.replace("\x00", "").splitlines():
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            bad_lines += 1
            continue
        if value:
            info.fields[key] = value
    if bad_lines:
        info.warnings.append(f"{bad_lines} GUANO line(s) are not 'Key: value'; skipped")
    f = info.fields

    if stamp := f.get("Timestamp"):
        try:
            when = guano.parse_timestamp(stamp)
            if not MIN_YEAR <= when.year <= MAX_YEAR:
                raise ValueError(f"year {when.year} is outside {MIN_YEAR}-{MAX_YEAR}")
            # an offset as an instant (UTC); without one, the recorder's local time
            info.timestamp = when.astimezone(UTC) if when.tzinfo is not None else when
        except (ValueError, TypeError, IndexError, OverflowError) as exc:
            info.warnings.append(
                f"its GUANO Timestamp {stamp!r} is not an ISO 8601 date-time ({exc}); the start "
                "time comes from the file name (or give --start-time)"
            )
    if where := f.get("Loc Position"):
        try:
            lat, lon = (float(v) for v in where.replace(",", " ").split())
            if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
                raise ValueError("latitude must be in -90..90, longitude in -180..180")
            info.latitude, info.longitude = lat, lon
        except ValueError as exc:
            info.warnings.append(
                f"its GUANO Loc Position {where!r} is not 'latitude longitude' in decimal "
                f"degrees ({exc}); no position stored"
            )
    if (height := f.get("Loc Elevation")) and info.position is not None:
        try:
            info.elevation_m = float(height)
        except ValueError:
            info.warnings.append(f"its GUANO Loc Elevation {height!r} is not a number; left out")
    info.make, info.model, info.serial = f.get("Make"), f.get("Model"), f.get("Serial")
    return info


def read_guano(source: Path | OpenedFile) -> GuanoInfo | None:
    """The GUANO block of a WAV file, or None if it has none (or is not a WAV). A block that
    cannot be read at all gives a :class:`GuanoInfo` with only a warning."""
    try:
        data, warnings = find_chunk(source)
    except (OSError, struct.error) as exc:
        return GuanoInfo(warnings=[f"its GUANO chunk could not be read ({exc}); ignored"])
    if data is None:
        return GuanoInfo(warnings=warnings) if warnings else None
    return parse(data)


# ------------------------------------------------------------------------------- writing
def clip_context(conn: Connection, recording_ids: Iterable[int]) -> dict[int, dict[str, object]]:
    """Per recording, the GUANO fields every clip of it carries: its position (its own GUANO
    position, else its sensor's) and the recorder's make, model and serial when its GUANO
    named them."""
    rows = conn.execute(
        sa.text(
            "SELECT r.id, coalesce((r.metadata -> 'position' ->> 'latitude')::float8, "
            "s.latitude) AS lat, coalesce((r.metadata -> 'position' ->> 'longitude')::float8, "
            "s.longitude) AS lon, r.metadata -> 'device' AS device "
            "FROM recordings r JOIN sensors s ON s.id = r.sensor_id WHERE r.id = ANY(:ids)"
        ),
        {"ids": sorted(set(recording_ids))},
    )
    out: dict[int, dict[str, object]] = {}
    for r in rows:
        fields: dict[str, object] = {}
        if r.lat is not None and r.lon is not None:
            fields["Loc Position"] = (float(r.lat), float(r.lon))
        for key in ("make", "model", "serial"):
            if r.device and r.device.get(key):
                fields[key.capitalize()] = r.device[key]
        out[int(r.id)] = fields
    return out


def clip_fields(
    hit: Hit, clip_start_s: float, clip_end_s: float, sample_rate: int, rank: int
) -> dict[str, object]:
    """The GUANO of a clip of ``hit`` cut from ``clip_start_s`` to ``clip_end_s`` of its
    recording: its absolute start with the sensor's UTC offset then (``Timestamp``), length,
    sample rate, the recording's file name, the hit's label as ``Species Auto ID``, and the
    window in soundscape's namespace. (A review clip is written before its verdict: verdicts
    come back through the batch's table.)"""
    fields: dict[str, object] = {
        "Length": clip_end_s - clip_start_s,
        "Samplerate": int(sample_rate),
        "Original Filename": PurePath(hit.path).name,
    }
    if hit.starts_at is not None:
        begin = hit.starts_at.astimezone(UTC) - timedelta(seconds=hit.start_s - clip_start_s)
        local = hit.local
        # the sensor's offset at the hit: its local time minus UTC (whole minutes)
        offset = timedelta(0)
        if local is not None:
            utc = hit.starts_at.astimezone(UTC).replace(tzinfo=None)
            offset = timedelta(minutes=round((local - utc).total_seconds() / 60))
        fields["Timestamp"] = begin.astimezone(timezone(offset)).replace(microsecond=0)
    if hit.label:
        fields["Species Auto ID"] = hit.label
    ns = NAMESPACE
    fields |= {
        f"{ns}|Recording ID": hit.recording_id,
        f"{ns}|Window ID": hit.segment_id,
        f"{ns}|Window Start (s)": f"{hit.start_s:.3f}",
        f"{ns}|Window End (s)": f"{hit.end_s:.3f}",
        f"{ns}|Clip Offset (s)": f"{clip_start_s:.3f}",
        f"{ns}|Sensor": hit.sensor,
        f"{ns}|Site": hit.site,
        f"{ns}|Score": f"{hit.score:.4f}",
        f"{ns}|Rank": rank,
    }
    return fields


def write_guano(wav: Path, fields: Mapping[str, object]) -> None:
    """Add a GUANO block with ``fields`` (``Key`` or ``Namespace|Key``: value; None values
    left out) to the PCM WAV file ``wav``, with the ``guano`` package."""
    import guano

    g = guano.GuanoFile(str(wav))
    g["GUANO|Version"] = "1.0"
    for key, value in fields.items():
        if value is not None and value != "":
            g[key] = value
    g.write(make_backup=False)
