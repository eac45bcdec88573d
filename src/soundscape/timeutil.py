"""Recording start times: parse them from file names and place windows in UTC and local time.

Aware datetimes carry a known instant (UTC or an explicit offset); naive datetimes are the
recorder's local wall-clock time and must be localized with the sensor's time zone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from pathlib import PurePath
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["localize", "parse_iso_start", "parse_start_time", "window_times"]

UTC = timezone.utc

# AudioMoth: the whole stem is YYYYMMDD_HHMMSS, in UTC by default
_AUDIOMOTH = re.compile(r"(\d{4})(\d{2})(\d{2})_(\d{2})(\d{2})(\d{2})")
# Song Meter (Wildlife Acoustics): PREFIX_YYYYMMDD_HHMMSS[_...], recorder local time
_SONGMETER = re.compile(r"[A-Za-z0-9-]+_(\d{4})(\d{2})(\d{2})_(\d{2})(\d{2})(\d{2})(?:_.*)?")
# ISO-like date-time, possibly embedded in a longer name
_ISO = re.compile(
    r"(?<![0-9])"
    r"(?:(?P<Y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})|(?P<Y2>\d{4})(?P<m2>\d{2})(?P<d2>\d{2}))"
    r"[Tt_ ]"
    r"(?:(?P<H>\d{2})(?P<s1>[:-]?)(?P<M>\d{2})(?P=s1)(?P<S>\d{2}))"
    r"(?P<frac>[.,]\d{1,6})?"
    r"(?P<tz>[Zz](?![A-Za-z0-9])|[+-]\d{2}:?\d{2}(?![0-9]))?"
    r"(?![0-9])"
)
# a trailing file extension (letters first, short), e.g. ".WAV", ".flac", ".mp3"
_EXT = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,4}$")

#: the years a recording may start in (older or later is a typo; year 1 with an offset east
#: of UTC did not even fit Python's datetime once converted to UTC)
MIN_YEAR, MAX_YEAR = 1800, 2999

_ISO_HELP = (
    "expected ISO 8601 like 2024-03-31T01:30:00Z, 2024-03-31T03:30:00+02:00 (an instant) or "
    "2024-03-31 01:30:00 (local time of the recorder, localized with the site's time zone)"
)


def _stem(name: str) -> str:
    base = PurePath(name.replace("\\", "/")).name
    return _EXT.sub("", base)


def _mk(y: str, mo: str, d: str, h: str, mi: str, s: str, us: int | str = 0) -> datetime | None:
    try:
        return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), int(us))
    except ValueError:
        return None


def _offset(tz: str | None) -> timezone | None:
    """Parse Z / +HH:MM / +HHMM; None if absent or implausible."""
    if not tz:
        return None
    if tz in "Zz":
        return UTC
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hh, mm = int(digits[:2]), int(digits[2:])
    if hh > 14 or mm > 59:
        return None
    return timezone(sign * timedelta(hours=hh, minutes=mm))


def _from_iso_match(m: re.Match[str]) -> datetime | None:
    y, mo, d = (m["Y"], m["m"], m["d"]) if m["Y"] else (m["Y2"], m["m2"], m["d2"])
    us = round(float("0." + m["frac"][1:]) * 1_000_000) if m["frac"] else 0
    dt = _mk(y, mo, d, m["H"], m["M"], m["S"], min(us, 999_999))
    if dt is None:
        return None
    if m["tz"]:
        off = _offset(m["tz"])
        if off is None:
            return None
        return dt.replace(tzinfo=off).astimezone(UTC)
    return dt


def parse_start_time(name: str) -> datetime | None:
    """Recording start from a file name (basename; extension ignored).

    Aware (UTC) for AudioMoth names and names with Z or an offset; naive (recorder local time)
    for Song Meter and other ISO-like names without zone; None if nothing valid is found.
    """
    stem = _stem(name)
    if m := _AUDIOMOTH.fullmatch(stem):
        dt = _mk(*m.groups())
        return None if dt is None else dt.replace(tzinfo=UTC)
    if m := _SONGMETER.fullmatch(stem):
        dt = _mk(*m.groups())
        if dt is not None:
            return dt
    for m in _ISO.finditer(stem):
        dt = _from_iso_match(m)
        if dt is not None:
            return dt
    return None


def parse_iso_start(text: str) -> datetime:
    """Parse a --start-time value: aware (UTC) if it has Z or an offset, else naive local time.

    Raises ValueError with the accepted forms if the text is not a valid date-time.
    """
    s = text.strip()
    if not s:
        raise ValueError(f"empty start time: {_ISO_HELP}")
    iso = s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s
    dt: datetime | None
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        m = _ISO.fullmatch(s)
        dt = _from_iso_match(m) if m else None
    if dt is None:
        raise ValueError(f"invalid start time {text!r}: {_ISO_HELP}")
    if not MIN_YEAR <= dt.year <= MAX_YEAR:  # 0001-01-01T00:00+14:00 overflowed into year 0
        raise ValueError(
            f"start time {text!r}: year {dt.year} is outside {MIN_YEAR}-{MAX_YEAR}; {_ISO_HELP}"
        )
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return dt


def localize(dt: datetime, tz: ZoneInfo) -> datetime:
    """Naive local wall time -> aware in ``tz``; aware -> converted to UTC.

    A nonexistent wall time (DST gap) is shifted forward by the gap; an ambiguous one (DST
    overlap) takes the first occurrence (fold=0).
    """
    if dt.tzinfo is not None and dt.utcoffset() is not None:
        return dt.astimezone(UTC)
    # fold=0 uses the offset in force before a transition: for a gap this maps to the instant
    # one gap later, for an overlap to the first occurrence. Round-trip to normalize.
    return dt.replace(tzinfo=tz, fold=0).astimezone(UTC).astimezone(tz)


def window_times(
    start_utc: datetime, offsets_s: Sequence[float] | np.ndarray, tz: ZoneInfo
) -> list[tuple[datetime, date, time]]:
    """Per window offset: (absolute start in UTC, local date, local time of day) at the sensor.

    Each instant is converted separately, so DST transitions inside a recording are handled.
    """
    if start_utc.tzinfo is None or start_utc.utcoffset() is None:
        raise ValueError("start_utc must be timezone-aware; localize() a naive recorder time first")
    t0 = start_utc.astimezone(UTC)
    out: list[tuple[datetime, date, time]] = []
    for off in np.asarray(offsets_s, dtype=np.float64).ravel().tolist():
        t = t0 + timedelta(seconds=off)
        local = t.astimezone(tz)
        out.append((t, local.date(), local.time()))
    return out
