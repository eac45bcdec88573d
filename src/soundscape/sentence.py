"""One sentence, one search: "bird songs at 3:00 AM in the North Quadrant" as a
``SearchRequest`` (text "bird song", local time 02:30-03:30, quadrant N), with how it was
understood (``bird song · 02:30-03:30 local · quadrant N``) and the words it ignored.

``parse_sentence`` is the parser (no database: the stored place names and today are given);
``understand`` reads them from the database and settles the sound: what remains of the
sentence is searched as text, the way ``soundscape search TEXT`` does (``search.match_labels``
and the text routes), trying its singular and, if that fails, leaving out the words after a
place preposition that named no stored place (those are reported as ignored).

What is understood (docs/search.md has the table):
- times of day: "at 3 AM", "at 3:00 am", "around 03:00", "at noon", "at midnight" (a window
  of +-30 min), "between 2 and 4 am", "from 10 pm to 2 am", "22:00-04:00", "after midnight"
  (00:00-04:00), "in the morning/afternoon/evening";
- dates: "today", "yesterday", "last week" (the 7 days before today), "this week", "last N
  days", "in June" (the latest June begun), "in June 2024", "in 2024", "since 1 May", "until
  May 3", "on 2024-05-01", ISO dates and ranges (2024-05-01..2024-05-03), seasons ("this
  spring", "last summer", "winter 2024": meteorological, by the hemisphere of ``south``);
- places: quadrants ("North Quadrant", "quadrant N", "in the north"), sites and sensors by
  name, fuzzy-matched against what is stored;
- the sun (``soundscape.sun``): "at dawn", "dawn chorus", "at dusk", "at night", "during the
  day", "at sunrise", "1 hour after sunrise", "2 hours before sunset", "after dusk".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import sqlalchemy as sa
from rapidfuzz import fuzz, process
from sqlalchemy.engine import Connection

from soundscape.errors import NoLabelMatch, SoundscapeError
from soundscape.queries import Filters
from soundscape.search import ARG_TYPES, SearchRequest, resolve_query
from soundscape.sun import parse_sun

#: the sound words that say nothing of the sound ("find bird songs", "recordings of owls")
FILLER = frozenset(
    [
        "find",
        "show",
        "list",
        "give",
        "get",
        "me",
        "us",
        "all",
        "any",
        "some",
        "the",
        "a",
        "an",
        "of",
        "with",
        "there",
        "were",
        "was",
        "is",
        "are",
        "be",
        "been",
        "recordings",
        "recording",
        "windows",
        "window",
        "clips",
        "clip",
        "sounds",
        "sound",
        "heard",
        "hear",
        "hearing",
        "please",
        "what",
        "which",
        "when",
        "where",
        "who",
        "and",
        "or",
        "for",
        "that",
        "this",
        "those",
        "these",
        "during",
    ]
)
#: prepositions that may introduce a place
PLACE_WORDS = ("in", "at", "near", "from", "by", "around")
MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )  # fmt: skip
    for m in names
}
_MONTH = r"(january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)"  # noqa: E501
SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}
COMPASS = {
    "north": "N", "south": "S", "east": "E", "west": "W", "northeast": "NE",
    "north-east": "NE", "northwest": "NW", "north-west": "NW", "southeast": "SE",
    "south-east": "SE", "southwest": "SW", "south-west": "SW", "central": "C", "centre": "C",
    "center": "C",
}  # fmt: skip
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "half an": 0.5,
           "an": 1, "a": 1}  # fmt: skip
#: how wide a window "at 3 AM" is, either side (minutes)
AROUND_MINUTES = 30
#: how close (rapidfuzz ratio, 0-100) a word must be to a stored site or sensor name
PLACE_MIN_SCORE = 85.0


@dataclass
class Understanding:
    """A sentence as a search: the sound (``text``: None for place and time only), the
    filters, how each part was read (``parts``: (kind, shown), kinds sound/time/date/sun/
    place) and the words ignored."""

    sentence: str
    text: str | None
    filters: Filters
    parts: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    #: phrases after a place preposition that matched no stored place (kept in ``text``
    #: until ``understand`` finds the sound without them)
    unplaced: list[str] = field(default_factory=list)

    def line(self) -> str:
        """``bird song · 02:30-03:30 local · quadrant N`` (and what was ignored)."""
        parts = [shown for _, shown in self.parts] or ["everything"]
        out = " · ".join(parts)
        if self.ignored:
            out += f" (ignored: {', '.join(self.ignored)})"
        return out

    def part_params(self) -> list[tuple[str, str, list[tuple[str, str]]]]:
        """Each part as (kind, shown, the search page's parameters that say it): the sound as
        ``q``, the time as ``time``, dates as ``from``/``to``, the sun as ``sun``, places as
        ``quadrant``/``site``/``sensor``; a page drops one part by leaving its out."""
        f = self.filters
        out: list[tuple[str, str, list[tuple[str, str]]]] = []
        for kind, shown in self.parts:
            params: list[tuple[str, str]] = []
            if kind == "sound" and self.text:
                params = [("q", self.text)]
            elif kind == "time" and f.time_from and f.time_to:
                params = [("time", f"{_hhmm(f.time_from)}-{_hhmm(f.time_to)}")]
            elif kind == "date":
                params = [(k, str(v)) for k, v in (("from", f.date_from), ("to", f.date_to)) if v]
            elif kind == "sun" and f.sun:
                params = [("sun", f.sun)]
            elif kind.startswith("place:"):
                key = kind.removeprefix("place:")
                params = [(key.removesuffix("s"), v) for v in getattr(f, key) or []]
            out.append((kind, shown, params))
        return out

    def as_dict(self) -> dict[str, Any]:
        """For JSON: the line, the parts, the ignored words and the request's fields."""
        return {
            "sentence": self.sentence,
            "understood": self.line(),
            "parts": [{"kind": k, "shown": s} for k, s in self.parts],
            "ignored": self.ignored,
            "text": self.text,
            "filters": {k: str(v) for k, v in self.filters.given().items()},
        }


@dataclass
class _State:
    s: str  # the sentence being eaten: understood phrases become spaces
    today: date
    south: bool
    filters: Filters = field(default_factory=Filters)
    parts: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    #: "dawn chorus": the birds, when nothing else names the sound
    chorus: bool = False

    def eat(self, m: re.Match[str]) -> None:
        # eaten text becomes NULs: no word, and no pattern reaches across it
        self.s = self.s[: m.start()] + "\0" * (m.end() - m.start()) + self.s[m.end() :]

    def set(self, kind: str, shown: str, **values: Any) -> None:
        self.filters = replace(self.filters, **values)
        self.parts = [p for p in self.parts if p[0] != kind] + [(kind, shown)]


def _clock(h: str, m: str | None, ampm: str | None) -> time | None:
    hour, minute = int(h), int(m or 0)
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm.startswith("p") else 0)
    if not (0 <= hour < 24 and 0 <= minute < 60):
        return None
    return time(hour, minute)


def _shift(t: time, minutes: int) -> time:
    total = (t.hour * 60 + t.minute + minutes) % 1440
    return time(total // 60, total % 60)


def _hhmm(t: time) -> str:
    return t.strftime("%H:%M")


_AMPM = r"(a\.?m\.?|p\.?m\.?)"
_T = rf"(\d{{1,2}})(?:[:.h](\d{{2}}))?\s*{_AMPM}?"


def _times(st: _State) -> None:
    """Times of day: ranges first, then single times (a window around them), then words."""

    def time_range(a: time, b: time, m: re.Match[str]) -> None:
        if a == b:
            st.ignored.append(m.group(0).strip())
        else:
            st.set("time", f"{_hhmm(a)}-{_hhmm(b)} local", time_from=a, time_to=b)
        st.eat(m)

    for pat in (
        rf"\b(?:between|from)\s+{_T}\s+(?:and|to|until|till)\s+{_T}",
        r"(?<![\d-])(\d{1,2}):(\d{2})()\s*(?:-|–|to)\s*(\d{1,2}):(\d{2})()(?![\d-])",
    ):
        for m in list(re.finditer(pat, st.s)):
            h1, m1, p1, h2, m2, p2 = m.groups()
            # "between 2 and 4 am": the am/pm of the second time is the first's too
            a, b = _clock(h1, m1, p1 or p2), _clock(h2, m2, p2 or p1)
            if p2 and not p1 and a and b and a > b and int(h1) <= 12:
                a = _clock(h1, m1, "pm" if p2.startswith("a") else "am")
            if a is None or b is None:
                st.ignored.append(m.group(0).strip())
                st.eat(m)
            else:
                time_range(a, b, m)
    single = rf"\b(?:at|around|about|near|circa|c\.|~)?\s*\b{_T}(?![\w-])"
    for m in list(re.finditer(single, st.s)):
        h, mi, ampm = m.groups()
        if not (ampm or mi):  # a bare number is not a time ("2 owls")
            continue
        if mi is None and not ampm:
            continue
        t = _clock(h, mi, ampm)
        if t is None:
            st.ignored.append(m.group(0).strip())
            st.eat(m)
            continue
        a, b = _shift(t, -AROUND_MINUTES), _shift(t, AROUND_MINUTES)
        st.set("time", f"{_hhmm(a)}-{_hhmm(b)} local", time_from=a, time_to=b)
        st.eat(m)
    words = {
        r"\b(?:at|around)\s+midnight\b": (time(23, 30), time(0, 30)),
        r"\bafter\s+midnight\b|\bin\s+the\s+small\s+hours\b": (time(0, 0), time(4, 0)),
        r"\b(?:at|around)\s+(?:noon|midday)\b": (time(11, 30), time(12, 30)),
        r"\b(?:in\s+the\s+)?mornings?\b": (time(6, 0), time(12, 0)),
        r"\b(?:in\s+the\s+)?afternoons?\b": (time(12, 0), time(18, 0)),
        r"\b(?:in\s+the\s+)?evenings?\b": (time(18, 0), time(22, 0)),
    }
    for pat, (a, b) in words.items():
        for m in list(re.finditer(pat, st.s)):
            time_range(a, b, m)


def _month_range(year: int, month: int) -> tuple[date, date]:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return date(year, month, 1), nxt - timedelta(days=1)


def _day(text: str, today: date) -> date | None:
    """'1 May', 'May 1st', '2024-05-01', '1 May 2024' (no year: the latest one not after
    today)."""
    t = text.strip()
    try:
        return date.fromisoformat(t)
    except ValueError:
        pass
    m = re.fullmatch(rf"(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\s*(\d{{4}})?", t) or None
    if m:
        d, mon, y = int(m[1]), MONTHS[m[2]], m[3]
    else:
        m = re.fullmatch(rf"{_MONTH}\s+(\d{{1,2}})(?!\d)(?:st|nd|rd|th)?,?\s*(\d{{4}})?", t)
        if not m:
            return None
        d, mon, y = int(m[2]), MONTHS[m[1]], m[3]
    try:
        day = date(int(y) if y else today.year, mon, d)
    except ValueError:
        return None
    if not y and day > today:
        day = day.replace(year=today.year - 1)
    return day


_DAY = rf"(\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?:\s+\d{{4}})?|{_MONTH}\s+\d{{1,2}}(?!\d)(?:st|nd|rd|th)?(?:,?\s*\d{{4}})?)"  # noqa: E501


def _dates(st: _State) -> None:
    today = st.today

    def put(a: date | None, b: date | None, m: re.Match[str], shown: str | None = None) -> None:
        if a is not None and b is not None and a > b:
            st.ignored.append(m.group(0).strip())
        else:
            if shown is None or (
                a is not None and b is not None and shown[:5] in ("since", "until")
            ):
                shown = f"{a}" if a == b else f"{a or 'any'}..{b or 'any'}"
            st.set("date", shown, date_from=a, date_to=b)
        st.eat(m)

    two = rf"\b(?:from|between)\s+(?P<a>{_DAY})\s+(?:to|and|until|till)\s+(?P<b>{_DAY})"
    for m in list(re.finditer(two, st.s)):
        put(_day(m["a"], today), _day(m["b"], today), m)
    for m in list(re.finditer(r"\b(\d{4}-\d{2}-\d{2})\s*\.\.\s*(\d{4}-\d{2}-\d{2})\b", st.s)):
        put(date.fromisoformat(m[1]), date.fromisoformat(m[2]), m)
    for m in list(re.finditer(rf"\b(?:since|after|from)\s+{_DAY}", st.s)):
        d = _day(m[1], today)
        if d is not None:
            put(d, st.filters.date_to, m, f"since {d}")
    for m in list(re.finditer(rf"\b(?:until|till|before|up\s+to)\s+{_DAY}", st.s)):
        d = _day(m[1], today)
        if d is not None:
            put(st.filters.date_from, d, m, f"until {d}")
    for m in list(re.finditer(rf"\b(?:on\s+)?{_DAY}", st.s)):
        d = _day(m[1], today)
        if d is not None:
            put(d, d, m)
    simple = {
        r"\btoday\b": (today, today, "today"),
        r"\byesterday\b": (today - timedelta(days=1), today - timedelta(days=1), "yesterday"),
        r"\b(?:last|past|previous)\s+week\b": (
            today - timedelta(days=7), today - timedelta(days=1), "last week"),
        r"\bthis\s+week\b": (today - timedelta(days=today.weekday()), today, "this week"),
        r"\bthis\s+month\b": (today.replace(day=1), today, "this month"),
        r"\b(?:this|so\s+far\s+this)\s+year\b": (today.replace(month=1, day=1), today,
                                                "this year"),
    }  # fmt: skip
    for pat, (a, b, shown) in simple.items():
        for m in list(re.finditer(pat, st.s)):
            put(a, b, m, f"{shown} ({a}..{b})" if a != b else f"{shown} ({a})")
    for m in list(re.finditer(r"\b(?:the\s+)?(?:last|past)\s+(\d+)\s+days\b", st.s)):
        a = today - timedelta(days=int(m[1]) - 1)
        put(a, today, m, f"last {m[1]} days ({a}..{today})")
    for m in list(re.finditer(r"\b(?:last|previous)\s+month\b", st.s)):
        first = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
        a, b = _month_range(first.year, first.month)
        put(a, b, m, f"last month ({a}..{b})")
    for m in list(
        re.finditer(rf"\b(?:in\s+|during\s+)?{_MONTH}(?:\s+(?:of\s+)?(\d{{4}}))?\b", st.s)
    ):
        if m[1] == "may" and not m[2] and not re.match(r"\s*(in|during)\s", m.group(0)):
            continue  # "may" the verb
        month = MONTHS[m[1]]
        year = int(m[2]) if m[2] else (today.year if month <= today.month else today.year - 1)
        a, b = _month_range(year, month)
        put(a, b, m, f"{date(year, month, 1):%B %Y} ({a}..{b})")
    _seasons_and_years(st, put)


def _seasons_and_years(st: _State, put: Callable[..., None]) -> None:
    """``_dates``' seasons ("this spring", "last winter", "summer 2024": shifted six months
    when every sensor is in the southern hemisphere) and years ("in 2024")."""
    today = st.today
    for m in list(
        re.finditer(r"\b(?:(this|last|in|during)\s+(?:the\s+)?)?(spring|summer|autumn|fall|winter)"
                    r"(?:\s+(?:of\s+)?(\d{4}))?\b", st.s)
    ):  # fmt: skip
        start = SEASONS[m[2]] + (6 if st.south else 0)
        start = (start - 1) % 12 + 1
        if m[3]:
            year = int(m[3]) - (1 if start == 12 else 0)
        else:
            # the latest season that has begun (this), or the one before it (last)
            year = today.year if (today.month, 0) >= (start, 0) else today.year - 1
            if start == 12 and today.month < 12:
                year = today.year - 1
            if m[1] == "last":
                year -= 1
        a = date(year, start, 1)
        end_month = (start + 1) % 12 + 1
        b = _month_range(year + (end_month < start), end_month)[1]
        put(a, min(b, today) if b > today and a <= today else b, m, f"{m[2]} {year} ({a}..{b})")
    for m in list(re.finditer(r"\b(?:in|during)\s+(\d{4})\b", st.s)):
        y = int(m[1])
        if 1900 <= y <= 2200:
            put(date(y, 1, 1), date(y, 12, 31), m, f"{y}")


_AMOUNT = r"(\d+(?:\.\d+)?|one|two|three|four|five|six|an|a|half\s+an)"


def _sun(st: _State) -> None:
    def put(spec: str, m: re.Match[str], shown: str | None = None) -> None:
        canonical = str(parse_sun(spec))
        st.set("sun", shown or f"sun {canonical}", sun=canonical)
        st.eat(m)

    anchor = r"(sunrise|sunset|dawn|dusk|first\s+light|daybreak|nightfall)"
    alias = {"first light": "dawn", "daybreak": "dawn", "nightfall": "dusk"}

    def anchor_of(text: str) -> str:
        t = re.sub(r"\s+", " ", text)
        return alias.get(t, t)

    within = rf"\b(?:within|in)\s+(?:the\s+)?(?:first\s+)?{_AMOUNT}\s+(hours?|h)\s+(?:after|of)\s+"
    for m in list(re.finditer(within + rf"{anchor}\b", st.s)):
        n = re.sub(r"\s+", " ", m[1])
        hours = float(NUMBERS.get(n, n) if not n[0].isdigit() else n)
        a = anchor_of(m[3])
        put(f"{a}..{a}+{round(hours * 60)}m", m)
    for m in list(
        re.finditer(rf"\b{_AMOUNT}\s+(hours?|hrs?|h|minutes?|mins?|m)\s+(after|before)\s+{anchor}\b",
                    st.s)
    ):  # fmt: skip
        n = m[1].replace("  ", " ")
        amount = float(NUMBERS.get(re.sub(r"\s+", " ", n), n) if not n[0].isdigit() else n)
        minutes = round(amount * (60 if m[2].startswith("h") else 1))
        sign = 1 if m[3] == "after" else -1
        a = anchor_of(m[4])
        centre = sign * minutes
        lo, hi = centre - AROUND_MINUTES, centre + AROUND_MINUTES

        def off(x: int) -> str:
            return f"{'+' if x >= 0 else '-'}{abs(x)}m" if x else ""

        put(f"{a}{off(lo)}..{a}{off(hi)}", m)
    for m in list(re.finditer(rf"\b(after|before)\s+{anchor}\b", st.s)):
        a = anchor_of(m[2])
        put(f"{a}..{a}+2h" if m[1] == "after" else f"{a}-2h..{a}", m)
    words = {
        r"\b(?:at\s+|around\s+)?(?:dawn|first\s+light|daybreak)(?:\s+chorus)?\b": "dawn",
        r"\b(?:at\s+|around\s+)?(?:dusk|nightfall|twilight)(?:\s+chorus)?\b": "dusk",
        r"\b(?:at\s+|around\s+)?sunrise\b": "sunrise",
        r"\b(?:at\s+|around\s+)?sunset\b": "sunset",
        r"\b(?:at\s+night|during\s+the\s+night|overnight|nocturnal|night-?time|by\s+night|"
        r"at\s+nighttime|nights?)\b": "night",
        r"\b(?:during\s+the\s+day|in\s+daylight|by\s+day|daytime|in\s+the\s+daytime|diurnal)\b": "day",
    }  # fmt: skip
    for pat, word in words.items():
        for m in list(re.finditer(pat, st.s)):
            st.chorus = st.chorus or "chorus" in m.group(0)
            put(word, m, f"{word} ({parse_sun(word)})")


def _places(st: _State, places: Mapping[str, Sequence[str]]) -> list[str]:
    """Places: quadrants, sites and sensors named in the sentence (fuzzy-matched against the
    stored names); returns the phrases after a place word that named none."""
    quadrants = [q for q in places.get("quadrants", ()) if q]
    named: dict[str, list[str]] = {}

    def add(key: str, value: str, m: re.Match[str]) -> None:
        if value not in named.setdefault(key, []):
            named[key].append(value)
        st.eat(m)

    def quadrant(word: str) -> str | None:
        w = word.lower().replace(" ", "")
        want = {w, COMPASS.get(w, w).lower()}
        for q in quadrants:
            ql = q.lower()
            if ql in want or COMPASS.get(ql, ql).lower() in want:
                return q
        best = process.extractOne(w, quadrants, scorer=fuzz.ratio, processor=str.lower)
        return best[0] if best and best[1] >= PLACE_MIN_SCORE else None

    q_word = r"([a-z][a-z-]*|[a-z]{1,2})"
    for pat in (
        rf"\bquadrant\s+{q_word}\b",
        rf"\b(?:(?:in|at|from)\s+)?(?:the\s+)?{q_word}\s+quadrant\b",
        rf"\b(?:in|at|from)\s+the\s+({'|'.join(COMPASS)})\b",
    ):
        for m in list(re.finditer(pat, st.s)):
            q = quadrant(m[1])
            if q is not None:
                add("quadrants", q, m)
            elif "quadrant" in m.group(0):
                st.ignored.append(m.group(0).strip())
                st.eat(m)
    # sites and sensors: "site Forest", "sensor north-1", "at Marsh", or the name alone
    for key, word in (("sites", "site"), ("sensors", "sensor")):
        names = [n for n in places.get(key, ()) if n]
        for n in sorted(names, key=len, reverse=True):
            pat = rf"\b(?:(?:in|at|near|from|by)\s+)?(?:the\s+)?(?:{word}\s+)?{re.escape(n.lower())}(?:\s+{word})?(?![\w-])"  # noqa: E501
            for m in list(re.finditer(pat, st.s)):
                add(key, n, m)
        for m in list(re.finditer(rf"\b{word}\s+([\w-]+)", st.s)):
            best = process.extractOne(m[1], names, scorer=fuzz.ratio, processor=str.lower)
            if best and best[1] >= PLACE_MIN_SCORE:
                add(key, best[0], m)
    # a word after a place preposition that is close to a stored site or sensor name
    unplaced = []
    every = [(k, n) for k in ("sites", "sensors") for n in places.get(k, ()) if n]
    prep = rf"\b(?:{'|'.join(PLACE_WORDS)})\s+(?:the\s+)?"
    for m in list(re.finditer(rf"{prep}([\w-]+)(?:\s+([\w-]+))?", st.s)):
        for phrase, end in (
            ((f"{m[1]} {m[2]}", m.end()), (m[1], m.end(1))) if m[2] else ((m[1], m.end(1)),)
        ):
            best = process.extractOne(
                phrase, [n for _, n in every], scorer=fuzz.ratio, processor=str.lower
            )
            if best and best[1] >= PLACE_MIN_SCORE:
                one = re.match(r".*", st.s[m.start() : end])
                assert one is not None
                st.s = st.s[: m.start()] + "\0" * (end - m.start()) + st.s[end:]
                named.setdefault(every[best[2]][0], [])
                if best[0] not in named[every[best[2]][0]]:
                    named[every[best[2]][0]].append(best[0])
                break
        else:
            if m[1] not in FILLER and not m[1].isdigit():
                unplaced.append(m[1])
    for key, shown in (("quadrants", "quadrant"), ("sites", "site"), ("sensors", "sensor")):
        if named.get(key):
            st.set(f"place:{key}", f"{shown} {', '.join(named[key])}", **{key: named[key]})
    return unplaced


def parse_sentence(
    sentence: str,
    places: Mapping[str, Sequence[str]] | None = None,
    *,
    today: date | None = None,
    south: bool = False,
    names: Sequence[str] = (),
) -> Understanding:
    """The sentence as a search (no database): ``places`` holds the stored names by place
    filter (``{"quadrants": ["N", "S"], "sites": [...], "sensors": [...]}``), ``today`` the
    local date relative dates count from, ``south`` the hemisphere of the seasons, ``names``
    class names that stay sounds whatever words they hold ("Summer Tanager", "Spring
    Peeper")."""
    if not sentence or not sentence.strip():
        raise SoundscapeError("empty sentence: say what to find, e.g. 'owls at night in June'")
    plain = f" {' '.join(sentence.lower().split())} "
    # a class's name is masked (a word of letters only) while times, dates and places are read
    masks: dict[str, str] = {}
    for name in sorted({n.lower() for n in names if n}, key=len, reverse=True):
        mask = "zqname" + "".join(chr(ord("a") + int(d)) for d in str(len(masks))) + "qz"
        plain, n = re.subn(rf"(?<![\w-]){re.escape(name)}(?![\w-])", f" {mask} ", plain)
        if n:
            masks[mask] = name
    st = _State(plain, today or date.today(), south)
    _sun(st)
    _times(st)
    _dates(st)
    unplaced = _places(st, places or {})
    words = [masks.get(w, w) for w in re.findall(r"[\w'-]+", st.s)]
    kept = [w for w in words if w not in FILLER and w not in PLACE_WORDS]
    text = " ".join(kept) or ("bird song" if st.chorus else None)
    parts = st.parts
    if text:
        parts = [("sound", text), *parts]
    order = ["sound", "time", "sun", "date", "place:quadrants", "place:sites", "place:sensors"]
    parts.sort(key=lambda p: order.index(p[0]) if p[0] in order else len(order))
    return Understanding(
        sentence=sentence,
        text=text,
        filters=st.filters,
        parts=parts,
        ignored=st.ignored,
        unplaced=[u for u in unplaced if u in kept],
    )


# ------------------------------------------------------------------------- with a database
def _singular(text: str) -> str:
    return " ".join(
        w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
        for w in text.split()
    )


def stored_places(conn: Connection) -> dict[str, list[str]]:
    """The stored place names by place filter (``ranger._places()``): what sentences match."""
    rows = conn.execute(
        sa.text(
            "SELECT p.key, array_agg(DISTINCT p.value ORDER BY p.value) FROM ranger._places() x, "
            "jsonb_each_text(x.place) p WHERE p.value IS NOT NULL GROUP BY p.key"
        )
    ).all()
    return {k: list(v) for k, v in rows}


def _local_today(conn: Connection) -> tuple[date, bool]:
    """Today in the sensors' timezone (UTC when they have several) and whether they are all
    in the southern hemisphere (its seasons)."""
    zones = conn.execute(sa.text("SELECT DISTINCT timezone FROM sensors")).scalars().all()
    south = conn.execute(
        sa.text("SELECT coalesce(bool_and(latitude < 0), false) FROM sensors")
    ).scalar()
    tz = ZoneInfo(zones[0]) if len(zones) == 1 else ZoneInfo("UTC")
    return datetime.now(tz).date(), bool(south)


def _is_label(conn: Connection, text: str) -> bool:
    """A stored class label's whole name ("Evening Grosbeak"): a text, not a sentence."""
    return bool(
        conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM space_labels WHERE lower(:t) IN "
                "(lower(name), lower(coalesce(common, '')), lower(coalesce(scientific, ''))))"
            ),
            {"t": " ".join(text.split())},
        ).scalar()
    )


def _names_in(conn: Connection, text: str) -> list[str]:
    """The stored class names (common or scientific) the sentence holds, of two words or
    more ("Summer Tanager at dawn"): kept whole as the sound."""
    return list(
        conn.execute(
            sa.text(
                "SELECT DISTINCT n FROM space_labels, LATERAL (VALUES (common), (scientific)) v(n) "
                "WHERE n LIKE '% %' AND strpos(lower(:t), lower(n)) > 0"
            ),
            {"t": " ".join(text.split())},
        ).scalars()
    )


def understand(
    conn: Connection, sentence: str, *, space: str | None = None, today: date | None = None
) -> Understanding | None:
    """The sentence read against the database (its places, its sensors' today), with the
    sound settled: the first of the remaining words, their singular, and both without the
    words after a place preposition that named no place, that the search finds (``search``'s
    text routes: ``match_labels`` or the text encoder). None when the sentence names nothing
    but a sound (no time, date, place or sun): a plain ``search TEXT``."""
    if _is_label(conn, sentence):
        return None
    local, south = _local_today(conn)
    names = _names_in(conn, sentence)
    u = parse_sentence(
        sentence, stored_places(conn), today=today or local, south=south, names=names
    )
    if not any(k != "sound" for k, _ in u.parts) and not u.ignored:
        return None
    u = _clock_without_positions(conn, u)
    if u.text is None:
        return u
    first: SoundscapeError | None = None
    tried: list[str] = []
    # the words after a place preposition that named no place first ("siren in narnia": the
    # sound is "siren", narnia is said to be ignored), then all of them; the singular first
    # ("bird songs" is "bird song")
    for drop in (u.unplaced, []) if u.unplaced else ([],):
        words = [w for w in u.text.split() if w not in drop]
        for text in dict.fromkeys([_singular(" ".join(words)), " ".join(words)]):
            if not text or text in tried:
                continue
            tried.append(text)
            try:
                resolve_query(conn, SearchRequest(text=text, space=space))
            except SoundscapeError as exc:
                first = first or exc
                continue
            parts = [("sound", text) if k == "sound" else (k, s) for k, s in u.parts]
            return replace(u, text=text, parts=parts, ignored=[*u.ignored, *drop])
    assert first is not None
    if isinstance(first, NoLabelMatch):  # its suggestions stay (the page shows them as links)
        raise first
    raise SoundscapeError(f"{first} (the sentence was read as: {u.line()})") from first


#: "at night" / "during the day" as local clock times, for sensors without a position (the sun
#: filter needs one): said in the understood line
CLOCK_SUN = {"night": (time(21, 0), time(5, 0)), "day": (time(7, 0), time(19, 0))}


def _clock_without_positions(conn: Connection, u: Understanding) -> Understanding:
    """A sentence's "night" or "day" when no sensor has a position: local clock times instead
    of the sun (a time the sentence gave itself wins), so that "owls at night" works before
    any sensor is placed. Other sun words need positions: the search says how to give them."""
    if not u.filters.sun or u.filters.time_from is not None:
        return u
    spec = str(parse_sun(u.filters.sun))
    word = next((w for w in CLOCK_SUN if str(parse_sun(w)) == spec), None)
    if word is None:
        return u
    clock = CLOCK_SUN[word]
    placed = conn.execute(
        sa.text("SELECT EXISTS (SELECT 1 FROM sensors WHERE latitude IS NOT NULL)")
    ).scalar()
    if placed:
        return u
    shown = f"{word} as {_hhmm(clock[0])}-{_hhmm(clock[1])} local (no sensor position)"
    filters = replace(u.filters, sun=None, time_from=clock[0], time_to=clock[1])
    parts = [("time", shown) if k == "sun" else (k, s) for k, s in u.parts]
    return replace(u, filters=filters, parts=parts)


def merge(flags: Filters, words: Filters) -> Filters:
    """The filters of the flags over those of the sentence: a flag given wins (a place flag
    replaces the sentence's places of that kind; --time, --from/--to, --sun theirs)."""
    out = words
    for f in fields(Filters):
        value = getattr(flags, f.name)
        if value is not None:
            out = replace(out, **{f.name: value})
    if flags.date_from is not None or flags.date_to is not None or flags.at_from or flags.at_to:
        out = replace(
            out, date_from=flags.date_from, date_to=flags.date_to,
            at_from=flags.at_from, at_to=flags.at_to,
        )  # fmt: skip
    if flags.time_from is not None or flags.time_to is not None:
        out = replace(out, time_from=flags.time_from, time_to=flags.time_to)
    return out


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, np.ndarray):
        return "'[" + ",".join(f"{x:.7g}" for x in value.tolist()) + "]'"
    if isinstance(value, list | tuple):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def explain_sql(conn: Connection, request: SearchRequest) -> str:
    """The statement that ranks the request's windows, with its values written in (psql or a
    BI tool runs it as it is): a call of ``ranger.search_labels``, ``search_vector`` or
    ``search_classifier``."""
    query = resolve_query(conn, request)
    args: dict[str, Any] = {"p_k": int(request.limit)}
    args.update({f"p_{k}": v for k, v in request.filters.params().items()})
    if query.classifier is not None:
        name, version, label = query.classifier
        function, head = "search_classifier", {
            "p_classifier": name, "p_label": label, "p_version": version}  # fmt: skip
    elif query.is_labels:
        function = "search_labels"
        head = {"p_space": query.space.id, "p_labels": query.label_ids,
                "p_all_species": request.all_species}  # fmt: skip
    else:
        function = "search_vector"
        head = {"p_space": query.space.id, "p_query": np.asarray(query.vector, np.float32),
                "p_exclude": query.exclude, "p_strategy": request.strategy}  # fmt: skip
    given = {k: v for k, v in {**head, **args}.items() if v is not None}
    types = ARG_TYPES
    named = ",\n    ".join(f"{k} => {_literal(v)}::{types[k]}" for k, v in given.items())
    return f"SELECT * FROM ranger.{function}(\n    {named}\n);"
