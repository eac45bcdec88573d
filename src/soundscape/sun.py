"""Where the sun is: civil dawn, sunrise, sunset and civil dusk at a place on a local date, and
the sun filter's language ("dawn", "sunrise-30m..sunrise+2h").

The filter itself runs in SQL (``ranger.in_sun_filter`` on ``ranger.sun_periods``,
sql/search.sql); this module mirrors its two parts so that Python can check and show a filter
before it runs: ``parse_sun`` is ``ranger._sun_spec``, ``sun_minutes`` is
``ranger._sun_minutes`` (NOAA's solar calculator: the equations of NOAA's "General Solar
Position Calculations" and its sunrise/sunset spreadsheet, after Meeus). tests/test_sun.py
checks that both agree and that they are within 2 minutes of published tables.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from soundscape.errors import SoundscapeError

#: the anchors in the order they come in a day, and the sun's zenith angle at each (degrees:
#: 90.833 is the horizon with refraction and the disc's radius, 96 civil twilight)
ANCHORS = ("dawn", "sunrise", "sunset", "dusk")
ZENITH = {"dawn": 96.0, "sunrise": 90.833, "sunset": 90.833, "dusk": 96.0}
#: the sun words and the ranges they stand for (ranger._sun_spec has the same table)
WORDS = {
    "dawn": "dawn-30m..sunrise+1h",
    "sunrise": "sunrise-30m..sunrise+30m",
    "day": "sunrise..sunset",
    "sunset": "sunset-30m..sunset+30m",
    "dusk": "sunset-1h..dusk+30m",
    "night": "dusk..dawn",
}
_END = r"(dawn|sunrise|sunset|dusk)(([+-])((\d+)h)?((\d+)(min|m))?)?"
_RANGE = re.compile(rf"^{_END}\.\.{_END}$")


@dataclass(frozen=True)
class SunRange:
    """A sun filter: from anchor ``a`` plus ``a_min`` minutes to anchor ``b`` plus ``b_min``
    minutes, ``b`` on the next day when it comes first in a day (``next_day``: night)."""

    a: str
    a_min: int
    b: str
    b_min: int

    @property
    def next_day(self) -> bool:
        return (ANCHORS.index(self.b), self.b_min) <= (ANCHORS.index(self.a), self.a_min)

    def __str__(self) -> str:
        """The canonical text (what SQL receives): ``sunrise-30m..sunrise+2h``."""
        return f"{_end(self.a, self.a_min)}..{_end(self.b, self.b_min)}"


def _end(anchor: str, minutes: int) -> str:
    if not minutes:
        return anchor
    h, m = divmod(abs(minutes), 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "")
    return f"{anchor}{'-' if minutes < 0 else '+'}{text}"


def parse_sun(text: str) -> SunRange:
    """A sun filter (a word of ``WORDS`` or ``A[±offset]..B[±offset]``) as a ``SunRange``; a
    bad one is an error saying what to write."""
    v = re.sub(r"\s+", "", (text or "").lower())
    v = WORDS.get(v, v)
    m = _RANGE.match(v)
    if m is None or (m[3] and not (m[5] or m[7])) or (m[11] and not (m[13] or m[15])):
        raise SoundscapeError(
            f"bad sun filter {text!r}: give a word ({', '.join(WORDS)}) or a range of "
            "dawn/sunrise/sunset/dusk with offsets, e.g. 'sunrise-30m..sunrise+2h'"
        )

    def minutes(sign: str | None, h: str | None, mi: str | None) -> int:
        return (-1 if sign == "-" else 1) * (int(h or 0) * 60 + int(mi or 0))

    return SunRange(m[1], minutes(m[3], m[5], m[7]), m[9], minutes(m[11], m[13], m[15]))


def _position(jd: float) -> tuple[float, float]:
    """The sun's declination (degrees) and the equation of time (minutes) at Julian day jd."""

    def sin(d: float) -> float:
        return math.sin(math.radians(d))

    def cos(d: float) -> float:
        return math.cos(math.radians(d))

    t = (jd - 2451545.0) / 36525.0
    l0 = 280.46646 + t * (36000.76983 + t * 0.0003032)
    m = 357.52911 + t * (35999.05029 - 0.0001537 * t)
    e = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    om = 125.04 - 1934.136 * t
    app = (
        l0
        + sin(m) * (1.914602 - t * (0.004817 + 0.000014 * t))
        + sin(2 * m) * (0.019993 - 0.000101 * t)
        + sin(3 * m) * 0.000289
        - 0.00569
        - 0.00478 * sin(om)
    )
    eps = (
        23 + (26 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60) / 60
    ) + 0.00256 * cos(om)
    y = math.tan(math.radians(eps / 2)) ** 2
    decl = math.degrees(math.asin(sin(eps) * sin(app)))
    eot = 4 * math.degrees(
        y * sin(2 * l0)
        - 2 * e * sin(m)
        + 4 * e * y * sin(m) * cos(2 * l0)
        - 0.5 * y * y * sin(4 * l0)
        - 1.25 * e * e * sin(2 * m)
    )
    return decl, eot


def _pass(
    lat: float, lon: float, day: date, zenith: float, rising: bool, at: float | None
) -> float:
    lat = min(max(lat, -89.999), 89.999)
    jd = 2451544.5 + (day - date(2000, 1, 1)).days + (720 - 4 * lon if at is None else at) / 1440
    decl, eot = _position(jd)
    r = math.radians
    cos_ha = math.cos(r(zenith)) / (math.cos(r(lat)) * math.cos(r(decl))) - math.tan(
        r(lat)
    ) * math.tan(r(decl))
    if cos_ha > 1:
        return math.inf
    if cos_ha < -1:
        return -math.inf
    return 720 - 4 * lon - eot + (-4 if rising else 4) * math.degrees(math.acos(cos_ha))


def sun_minutes(lat: float, lon: float, day: date, anchor: str) -> float:
    """When ``anchor`` happens on ``day`` at the place: minutes after 00:00 UTC of ``day``
    (``inf``: the sun stays below it all day, ``-inf``: above it all day)."""
    zenith, rising = ZENITH[anchor], anchor in ("dawn", "sunrise")
    first = _pass(lat, lon, day, zenith, rising, None)
    if math.isinf(first):
        return first
    second = _pass(lat, lon, day, zenith, rising, first)
    return first if math.isinf(second) else second


def sun_time(lat: float, lon: float, day: date, anchor: str) -> datetime | None:
    """The instant (UTC) of ``anchor`` on ``day`` at the place, None on a day without it."""
    m = sun_minutes(lat, lon, day, anchor)
    if math.isinf(m):
        return None
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(minutes=m)


def anchor_at(lat: float, lon: float, tz: str, day: date, anchor: str) -> datetime:
    """The instant of ``anchor`` on local date ``day`` (``ranger._sun_at``): on a day without
    it, a rising anchor is the start of the local day when the sun stays above it all day and
    the end when it stays below; a setting anchor the opposite."""
    m = sun_minutes(lat, lon, day, anchor)
    if not math.isinf(m):
        return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(minutes=m)
    rising = anchor in ("dawn", "sunrise")
    start = (m < 0) == rising  # above all day and rising, or below all day and setting
    local = day if start else day + timedelta(days=1)
    return datetime(local.year, local.month, local.day, tzinfo=ZoneInfo(tz))


def in_sun(lat: float, lon: float, tz: str, at: datetime, sun: SunRange) -> bool:
    """Whether instant ``at`` is in the sun filter's period at the place (``ranger.in_sun_filter``
    for one window: a period starting on the local date before, of or after ``at``'s)."""
    local = at.astimezone(ZoneInfo(tz)).date()
    for shift in (-1, 0, 1):
        day = local + timedelta(days=shift)
        t0 = anchor_at(lat, lon, tz, day, sun.a) + timedelta(minutes=sun.a_min)
        end_day = day + timedelta(days=int(sun.next_day))
        t1 = anchor_at(lat, lon, tz, end_day, sun.b) + timedelta(minutes=sun.b_min)
        if t0 <= at < t1:
            return True
    return False
