"""The sun filter (issue 29): NOAA's calculator in Python (soundscape.sun) and SQL
(ranger.sun_times, ranger._sun_spec) against published tables and each other, and the filter
``--sun`` / ``p_place {"sun": ...}`` on the stored reserve (tests/reserve.py) through SQL,
``Filters.where()`` and the CLI."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from soundscape.db import make_engine
from soundscape.errors import SoundscapeError
from soundscape.queries import Filters
from soundscape.sun import ANCHORS, in_sun, parse_sun, sun_time

from .conftest import Cli

# Published times (local clock, HH:MM; None: no such event that day). Sources:
# USNO "Sun and Moon Data for One Day", Tromso (E19.0, N69.5), UT+1h, 2014 (quoted at
# answers.com: "How many hours of daylight in north Norway in April"); Almanakk for Norge 2020
# (University of Oslo, mn.uio.no "Soloppgang og solnedgang i Nord-/Midt-Norge"), Tromso and
# Trondheim on 6 May 2020; whattime.city/{sydney,london}/sun, the 1st of the month (2025).
PUBLISHED = [
    # place, lat, lon, tz, date, {anchor: HH:MM or None}
    ("Tromso", 69.5, 19.0, "Etc/GMT-1", date(2014, 4, 1),
     {"dawn": "03:46", "sunrise": "04:50", "sunset": "18:49", "dusk": "19:53"}),
    ("Tromso white night", 69.5, 19.0, "Etc/GMT-1", date(2014, 4, 30),
     {"dawn": None, "sunrise": "02:29", "sunset": "20:58", "dusk": None}),
    ("Tromso", 69.65, 18.96, "Europe/Oslo", date(2020, 5, 6),
     {"sunrise": "02:50", "sunset": "22:37"}),
    ("Trondheim", 63.43, 10.39, "Europe/Oslo", date(2020, 5, 6),
     {"sunrise": "04:39", "sunset": "21:53"}),
    ("Sydney summer", -33.87, 151.21, "Australia/Sydney", date(2025, 1, 1),
     {"sunrise": "05:48", "sunset": "20:10"}),
    ("Sydney winter", -33.87, 151.21, "Australia/Sydney", date(2025, 6, 1),
     {"sunrise": "06:52", "sunset": "16:55"}),
    ("Sydney", -33.87, 151.21, "Australia/Sydney", date(2025, 12, 1),
     {"sunrise": "05:38", "sunset": "19:51"}),
    ("London", 51.51, -0.13, "Europe/London", date(2025, 1, 1),
     {"sunrise": "08:07", "sunset": "16:01"}),
    ("London", 51.51, -0.13, "Europe/London", date(2025, 12, 1),
     {"sunrise": "07:43", "sunset": "15:57"}),
    # the polar night (no sunrise 28 Nov - 15 Jan) and the midnight sun (18 May - 25 July)
    ("Tromso polar night", 69.65, 18.96, "Europe/Oslo", date(2024, 12, 21),
     {"sunrise": None, "sunset": None}),
    ("Tromso midnight sun", 69.65, 18.96, "Europe/Oslo", date(2024, 6, 21),
     {"dawn": None, "sunrise": None, "sunset": None, "dusk": None}),
]  # fmt: skip


def _minutes(t: datetime, tz: str) -> int:
    local = t.astimezone(ZoneInfo(tz))
    return local.hour * 60 + local.minute + round(local.second / 60)


@pytest.mark.parametrize("place, lat, lon, tz, day, times", PUBLISHED, ids=lambda v: str(v))
def test_python_is_within_two_minutes_of_published_times(place, lat, lon, tz, day, times):
    for anchor, published in times.items():
        got = sun_time(lat, lon, day, anchor)
        if published is None:
            assert got is None, (place, day, anchor, got)
            continue
        assert got is not None, (place, day, anchor)
        h, m = map(int, published.split(":"))
        assert abs(_minutes(got, tz) - (h * 60 + m)) <= 2, (place, day, anchor, got)


SPECS = [
    "dawn", "dusk", "night", "day", "sunrise", "sunset", "Sunrise - 30m .. sunrise + 2h",
    "sunset-1h30m..dusk", "dusk+10min..dawn-5m", "sunrise..sunrise", "sunset+2h..sunset",
]  # fmt: skip
BAD_SPECS = ["noon", "sunrise+..sunset", "sunrise-30m", "dawn..", "sunrise+2x..sunset", ""]


def test_the_sun_language_is_parsed_alike_in_python_and_sql(engine):
    with engine.connect() as conn:
        for spec in SPECS:
            p = parse_sun(spec)
            row = conn.execute(sa.text("SELECT * FROM ranger._sun_spec(:s)"), {"s": spec}).one()
            assert tuple(row) == (p.a, p.a_min, p.b, p.b_min, p.next_day), spec
            # the canonical text means the same
            assert parse_sun(str(p)) == p
        for spec in BAD_SPECS:
            with pytest.raises(SoundscapeError, match="bad sun filter"):
                parse_sun(spec)
            with pytest.raises(sa.exc.DBAPIError, match="bad sun filter"), engine.connect() as c:
                c.execute(sa.text("SELECT * FROM ranger._sun_spec(:s)"), {"s": spec})
    assert parse_sun("night").next_day and not parse_sun("dawn").next_day
    assert str(parse_sun("dawn")) == "dawn-30m..sunrise+1h"


PLACES = [(69.65, 18.96), (52.52, 13.40), (0.0, -78.5), (-33.87, 151.21), (78.22, 15.65),
          (-77.85, 166.67), (64.15, -21.94), (40.0, -175.0), (-45.0, 170.0)]  # fmt: skip


def test_sql_and_python_agree(engine):
    """The same crossings (to the second) on a grid of places and days, polar ones included."""
    days = [date(2024, 1, 1) + timedelta(days=d) for d in range(0, 366, 23)]
    n_polar = 0
    with engine.connect() as conn:
        for lat, lon in PLACES:
            for day in days:
                row = conn.execute(
                    sa.text("SELECT * FROM ranger.sun_times(:lat, :lon, 'UTC', :d)"),
                    {"lat": lat, "lon": lon, "d": day},
                ).one()
                for anchor, got in zip(ANCHORS, row, strict=True):
                    want = sun_time(lat, lon, day, anchor)
                    n_polar += want is None
                    assert (got is None) == (want is None), (lat, lon, day, anchor)
                    if want is not None:
                        assert abs((got - want).total_seconds()) < 1, (lat, lon, day, anchor)
    assert n_polar > 20  # the grid does reach polar days and nights


# --------------------------------------------------------------------------- the filter
BERLIN = ("52.52", "13.40")


def _set_coords(url: str, coords: dict[str, tuple[str, str] | None]) -> None:
    eng = make_engine(url)
    with eng.begin() as conn:
        for name, c in coords.items():
            conn.execute(
                sa.text("UPDATE sensors SET latitude = :lat, longitude = :lon WHERE name = :n"),
                {"lat": c and float(c[0]), "lon": c and float(c[1]), "n": name},
            )
    eng.dispose()


@pytest.fixture(scope="module")
def reserve(reserve_url):
    yield reserve_url


def _windows(url: str) -> list[dict]:
    eng = make_engine(url)
    with eng.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT g.id, g.space_id, g.starts_at, s.name, s.latitude, s.longitude, "
                "s.timezone FROM segments g JOIN sensors s ON s.id = g.sensor_id"
            )
        ).mappings()
        out = [dict(r) for r in rows]
    eng.dispose()
    return out


def _expected(url: str, spec: str) -> set[int]:
    sun = parse_sun(spec)
    return {
        w["id"]
        for w in _windows(url)
        if in_sun(w["latitude"], w["longitude"], w["timezone"], w["starts_at"], sun)
    }


def _filtered(url: str, place: str) -> set[int]:
    eng = make_engine(url)
    with eng.connect() as conn:
        ids = set(
            conn.execute(
                sa.text(
                    "SELECT f.segment_id FROM spaces sp, LATERAL ranger.filtered_windows("
                    "sp.id, p_place => CAST(:p AS jsonb)) f"
                ),
                {"p": place},
            ).scalars()
        )
    eng.dispose()
    return ids


def _where(url: str, f: Filters) -> set[int]:
    eng = make_engine(url)
    where, params = f.where("g", place="s", sensor="name")
    with eng.connect() as conn:
        ids = set(
            conn.execute(
                sa.text(
                    "SELECT g.id FROM segments g JOIN sensors s ON s.id = g.sensor_id WHERE "
                    + " AND ".join(where)
                ),
                params,
            ).scalars()
        )
    eng.dispose()
    return ids


@pytest.mark.parametrize("spec", ["night", "day", "dawn", "sunset-1h..sunrise+1h", "dusk"])
def test_the_sun_filter_keeps_the_windows_python_expects(reserve, spec):
    """Both sensors near Berlin: the night windows (02:30, midnight, both DST nights) and the
    noon one separate; SQL (filtered_windows, p_place) and Filters.where() give the windows
    soundscape.sun.in_sun finds."""
    _set_coords(reserve, {"north-1": BERLIN, "south-1": BERLIN})
    want = _expected(reserve, spec)
    canonical = str(parse_sun(spec))
    assert _filtered(reserve, f'{{"sun": "{canonical}"}}') == want
    assert _where(reserve, Filters(sun=canonical)) == want
    if spec == "night":
        sensors = {w["name"] for w in _windows(reserve) if w["id"] in want}
        assert sensors == {"north-1"} and want
    if spec == "day":
        sensors = {w["name"] for w in _windows(reserve) if w["id"] in want}
        assert sensors == {"south-1"} and want


def test_dawn_moves_with_longitude(reserve):
    """The dawn chorus at two sensors far apart in longitude (both on Berlin's clock): dawn at
    60 E is in the small hours, at 80 W near noon: one filter, windows at different clock
    times, the ones soundscape.sun expects."""
    _set_coords(reserve, {"north-1": ("50", "60"), "south-1": ("40", "-80")})
    cli = Cli(reserve)
    hits = cli.json("search", "siren", "--sun", "dawn", "-n", "50")
    assert hits
    by_sensor: dict[str, set[int]] = {}
    for h in hits:
        by_sensor.setdefault(h["sensor"], set()).add(int(h["local"][11:13]))
    # at 60 E dawn is in the small hours (02:30 on 1 May, 01:59-03:00 on the DST nights)
    assert by_sensor["south-1"] == {12} and max(by_sensor["north-1"]) <= 3, hits
    want = _expected(reserve, "dawn")
    assert {h["segment_id"] for h in hits} <= want
    # and the same at the same longitude keeps only one of them
    _set_coords(reserve, {"north-1": ("50", "60"), "south-1": ("50", "60")})
    hits = cli.json("search", "siren", "--sun", "dawn", "-n", "50")
    assert {h["sensor"] for h in hits} == {"north-1"}


def test_a_sensor_without_coordinates_is_an_error_saying_what_to_do(reserve):
    _set_coords(reserve, {"north-1": BERLIN, "south-1": None})
    r = Cli(reserve)("search", "siren", "--sun", "dawn", code=1)
    assert "south-1" in r.stderr and "--lat" in r.stderr
    # leaving it out with a place filter works
    Cli(reserve)("search", "siren", "--sun", "night", "-s", "north-1")
    r = Cli(reserve)("search", "siren", "--sun", "noon", code=2)
    assert "--sun" in r.stderr and "sunrise-30m..sunrise+2h" in r.stderr


def test_the_periods_are_computed_once_per_query(reserve):
    """The sun rule is an InitPlan (ranger.sun_periods once), then one multirange lookup per
    window: the plan of the other filters is kept (no per-window sun computation)."""
    _set_coords(reserve, {"north-1": BERLIN, "south-1": BERLIN})
    where, params = Filters(sun="dusk..dawn", date_from=date(2024, 5, 1)).where(
        "g", place="s", sensor="name"
    )
    eng = make_engine(reserve)
    with eng.connect() as conn:
        plan = "\n".join(
            conn.execute(
                sa.text(
                    "EXPLAIN (ANALYZE, COSTS OFF) SELECT g.id FROM segments g "
                    "JOIN sensors s ON s.id = g.sensor_id WHERE " + " AND ".join(where)
                ),
                params,
            ).scalars()
        )
    eng.dispose()
    assert "InitPlan" in plan and "(never executed)" not in plan.split("InitPlan")[1][:80]
    assert not math.isnan(len(plan))


def test_windows_have_minutes_from_sunrise_and_sunset(reserve):
    _set_coords(reserve, {"north-1": BERLIN, "south-1": BERLIN})
    eng = make_engine(reserve)
    with eng.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT starts_at, local_date, minutes_from_sunrise, minutes_from_sunset "
                "FROM ranger.windows ORDER BY segment_id LIMIT 200"
            )
        ).all()
    eng.dispose()
    assert rows
    lat, lon = map(float, BERLIN)
    for at, day, from_rise, from_set in rows:
        rise, set_ = sun_time(lat, lon, day, "sunrise"), sun_time(lat, lon, day, "sunset")
        assert rise is not None and set_ is not None
        assert abs(from_rise - (at - rise).total_seconds() / 60) < 0.1
        assert abs(from_set - (at - set_).total_seconds() / 60) < 0.1
