"""One sentence, one search (issue 29): a table of sentences and the requests they become
(soundscape.sentence.parse_sentence, no database), then the sentences on the stored reserve
(tests/reserve.py) through the CLI: the seed's sentence, flags over words, --explain's SQL
giving the CLI's hits, activity without a sound, the dawn chorus at two longitudes, DST nights."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timezone

import pytest
import sqlalchemy as sa

from soundscape.db import make_engine
from soundscape.queries import Filters
from soundscape.sentence import merge, parse_sentence

from .conftest import Cli

TODAY = date(2024, 6, 15)  # a Saturday
PLACES = {"quadrants": ["N", "S"], "sites": ["Marsh", "Forest"], "sensors": ["north-1", "south-1"]}
T, D = time, date

# sentence -> (sound, filters given); "sun" is the canonical range
TABLE: list[tuple[str, str | None, dict]] = [
    ("bird songs at 3:00 AM in the North Quadrant", "bird songs",
     {"quadrants": ["N"], "time_from": T(2, 30), "time_to": T(3, 30)}),
    ("owls at night", "owls", {"sun": "dusk..dawn"}),
    ("dawn chorus in the Forest", "bird song",
     {"sites": ["Forest"], "sun": "dawn-30m..sunrise+1h"}),
    ("chainsaw between 2 and 4 am", "chainsaw", {"time_from": T(2), "time_to": T(4)}),
    ("gunshots after midnight last week", "gunshots",
     {"time_from": T(0), "time_to": T(4), "date_from": D(2024, 6, 8), "date_to": D(2024, 6, 14)}),
    ("dogs barking yesterday at Marsh", "dogs barking",
     {"sites": ["Marsh"], "date_from": D(2024, 6, 14), "date_to": D(2024, 6, 14)}),
    ("frogs in June", "frogs", {"date_from": D(2024, 6, 1), "date_to": D(2024, 6, 30)}),
    ("frogs in June 2023", "frogs", {"date_from": D(2023, 6, 1), "date_to": D(2023, 6, 30)}),
    ("owls in August", "owls", {"date_from": D(2023, 8, 1), "date_to": D(2023, 8, 31)}),
    ("siren since 1 May", "siren", {"date_from": D(2024, 5, 1)}),
    ("siren since May 1st until May 3", "siren",
     {"date_from": D(2024, 5, 1), "date_to": D(2024, 5, 3)}),
    ("engine 22:00-04:00 quadrant S", "engine",
     {"quadrants": ["S"], "time_from": T(22), "time_to": T(4)}),
    ("rain this spring", "rain", {"date_from": D(2024, 3, 1), "date_to": D(2024, 5, 31)}),
    ("wind last summer", "wind", {"date_from": D(2023, 6, 1), "date_to": D(2023, 8, 31)}),
    ("owls this winter", "owls", {"date_from": D(2023, 12, 1), "date_to": D(2024, 2, 29)}),
    ("owls 2 hours after sunset", "owls", {"sun": "sunset+1h30m..sunset+2h30m"}),
    ("woodpecker 1 hour after sunrise", "woodpecker", {"sun": "sunrise+30m..sunrise+1h30m"}),
    ("thrush within 2 hours after sunrise", "thrush", {"sun": "sunrise..sunrise+2h"}),
    ("robin before sunrise", "robin", {"sun": "sunrise-2h..sunrise"}),
    ("bats after dusk", "bats", {"sun": "dusk..dusk+2h"}),
    ("voices during the day", "voices", {"sun": "sunrise..sunset"}),
    ("nightingale at dusk", "nightingale", {"sun": "sunset-1h..dusk+30m"}),
    ("bird song in the south at sunrise", "bird song",
     {"quadrants": ["S"], "sun": "sunrise-30m..sunrise+30m"}),
    ("cars on 2024-05-01", "cars", {"date_from": D(2024, 5, 1), "date_to": D(2024, 5, 1)}),
    ("cars 2024-05-01..2024-05-03", "cars", {"date_from": D(2024, 5, 1), "date_to": D(2024, 5, 3)}),
    ("siren from 2024-05-01 to 2024-05-03", "siren",
     {"date_from": D(2024, 5, 1), "date_to": D(2024, 5, 3)}),
    ("at 10 pm owls", "owls", {"time_from": T(21, 30), "time_to": T(22, 30)}),
    ("owls around 23:30", "owls", {"time_from": T(23), "time_to": T(0)}),
    ("owls at midnight", "owls", {"time_from": T(23, 30), "time_to": T(0, 30)}),
    ("gunshot at noon", "gunshot", {"time_from": T(11, 30), "time_to": T(12, 30)}),
    ("crickets in the evening", "crickets", {"time_from": T(18), "time_to": T(22)}),
    ("birds in the morning at south-1", "birds",
     {"sensors": ["south-1"], "time_from": T(6), "time_to": T(12)}),
    ("sensor north-1 at night", None, {"sensors": ["north-1"], "sun": "dusk..dawn"}),
    ("in the north quadrant", None, {"quadrants": ["N"]}),
    ("at Marsh yesterday", None,
     {"sites": ["Marsh"], "date_from": D(2024, 6, 14), "date_to": D(2024, 6, 14)}),
    ("siren at 2:30 am on 2024-10-27", "siren",
     {"time_from": T(2), "time_to": T(3), "date_from": D(2024, 10, 27), "date_to": D(2024, 10, 27)}),
    ("siren at 3 am on 31 March 2024", "siren",
     {"time_from": T(2, 30), "time_to": T(3, 30), "date_from": D(2024, 3, 31),
      "date_to": D(2024, 3, 31)}),
    ("dogs between 10 pm and 2 am in june 2024", "dogs",
     {"time_from": T(22), "time_to": T(2), "date_from": D(2024, 6, 1), "date_to": D(2024, 6, 30)}),
    ("thunder this week", "thunder", {"date_from": D(2024, 6, 10), "date_to": D(2024, 6, 15)}),
    ("rain in 2024", "rain", {"date_from": D(2024, 1, 1), "date_to": D(2024, 12, 31)}),
    ("chainsaws last 3 days", "chainsaws", {"date_from": D(2024, 6, 13), "date_to": D(2024, 6, 15)}),
    ("sensor nort-1 at dawn", None, {"sensors": ["north-1"], "sun": "dawn-30m..sunrise+1h"}),
    ("the marsh at dawn", None, {"sites": ["Marsh"], "sun": "dawn-30m..sunrise+1h"}),
    ("show me owls heard in the north at night", "owls", {"quadrants": ["N"], "sun": "dusk..dawn"}),
    ("find recordings of wolves around 4:15 am at the Forest site", "wolves",
     {"sites": ["Forest"], "time_from": T(3, 45), "time_to": T(4, 45)}),
    ("owls at 25:00", "owls", {}),
    ("dark-eyed junco", "dark-eyed junco", {}),
    ("2 owls", "2 owls", {}),
]  # fmt: skip


@pytest.mark.parametrize("sentence, sound, given", TABLE, ids=[t[0] for t in TABLE])
def test_a_sentence_becomes_a_request(sentence, sound, given):
    u = parse_sentence(sentence, PLACES, today=TODAY)
    assert u.text == sound
    assert u.filters.given() == given
    line = u.line()
    if sound:
        assert line.startswith(sound)
    for key in ("quadrants", "sites", "sensors"):
        for name in given.get(key, []):
            assert name in line


def test_the_table_is_big_enough():
    assert len(TABLE) >= 40


def test_words_it_could_not_read_are_said():
    u = parse_sentence("owls at 25:00", PLACES, today=TODAY)
    assert u.ignored == ["at 25:00"] and "ignored: at 25:00" in u.line()
    assert parse_sentence("frogs in Narnia at night", PLACES, today=TODAY).unplaced == ["narnia"]
    assert parse_sentence("in the south", PLACES, today=TODAY).filters.quadrants == ["S"]
    # the southern hemisphere's spring
    south = parse_sentence("rain this spring", PLACES, today=TODAY, south=True)
    assert (south.filters.date_from, south.filters.date_to) == (D(2023, 9, 1), D(2023, 11, 30))


def test_class_names_stay_sounds():
    names = ["Summer Tanager", "Spring Peeper", "Evening Grosbeak"]
    u = parse_sentence("Summer Tanager at dawn in June", PLACES, today=TODAY, names=names)
    assert u.text == "summer tanager" and u.filters.sun == "dawn-30m..sunrise+1h"
    assert (u.filters.date_from, u.filters.date_to) == (D(2024, 6, 1), D(2024, 6, 30))
    u = parse_sentence("Evening Grosbeak in the evening", PLACES, today=TODAY, names=names)
    assert u.text == "evening grosbeak" and (u.filters.time_from, u.filters.time_to) == (
        T(18),
        T(22),
    )


def test_flags_win_over_words():
    words = parse_sentence("siren at 3 am in the north quadrant in June", PLACES, today=TODAY)
    flags = Filters(time_from=T(12), time_to=T(13), quadrants=["S"])
    f = merge(flags, words.filters)
    assert (f.time_from, f.time_to, f.quadrants) == (T(12), T(13), ["S"])
    assert (f.date_from, f.date_to) == (D(2024, 6, 1), D(2024, 6, 30))  # not overridden


# ------------------------------------------------------------------ on the stored reserve
BERLIN = (52.52, 13.40)


def _coords(url: str, coords: dict[str, tuple[float, float]]) -> None:
    eng = make_engine(url)
    with eng.begin() as conn:
        for name, (lat, lon) in coords.items():
            conn.execute(
                sa.text("UPDATE sensors SET latitude = :lat, longitude = :lon WHERE name = :n"),
                {"lat": lat, "lon": lon, "n": name},
            )
    eng.dispose()


@pytest.fixture(scope="module")
def cli(reserve_url):
    _coords(reserve_url, {"north-1": BERLIN, "south-1": BERLIN})
    return Cli(reserve_url)


def _local(hit: dict) -> time:
    return time.fromisoformat(hit["local"][11:19])


def test_the_seed_sentence(cli):
    """The issue's sentence: only North windows within 02:30-03:30 local, the understanding
    on stderr and in the JSON."""
    sentence = "bird songs at 3:00 AM in the North Quadrant"
    r = cli("search", sentence, "-n", "50", "--json")
    assert "understood: bird song · 02:30-03:30 local · quadrant N" in r.stderr
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert hits
    for h in hits:
        assert h["quadrant"] == "N" and T(2, 30) <= _local(h) < T(3, 30), h
        assert h["understood"] == "bird song · 02:30-03:30 local · quadrant N"
    # the same request written with flags gives the same windows
    same = cli.json("search", "bird song", "--time", "02:30-03:30", "--quadrant", "N", "-n", "50")
    assert [h["segment_id"] for h in same] == [h["segment_id"] for h in hits]


def test_explain_prints_the_sql_that_gives_the_clis_hits(cli, reserve_url):
    sentence = "siren at 2:30 am in the north quadrant"
    sql = cli("search", sentence, "--explain").stdout
    assert "ranger.search_labels(" in sql and '"quadrants": ["N"]' in sql
    hits = cli.json("search", sentence)
    eng = make_engine(reserve_url)
    with eng.connect() as conn:
        rows = conn.exec_driver_sql(sql).mappings().all()
    eng.dispose()
    assert [r["segment_id"] for r in rows] == [h["segment_id"] for h in hits] != []


def test_flags_win_over_the_sentence(cli):
    hits = cli.json("search", "siren at 2:30 am", "--time", "11:00-13:00", "-n", "50")
    assert hits and all(T(11) <= _local(h) < T(13) for h in hits)
    assert {h["sensor"] for h in hits} == {"south-1"}


def test_a_label_named_like_a_sentence_stays_a_label(cli, reserve_url):
    eng = make_engine(reserve_url)
    with eng.connect() as conn:
        named = conn.execute(
            sa.text("SELECT count(*) FROM space_labels WHERE common = 'Evening Grosbeak'")
        ).scalar()
    eng.dispose()
    if not named:
        pytest.skip("no Evening Grosbeak class in this space")
    r = cli("search", "Evening Grosbeak")
    assert "understood:" not in r.stderr and "by labels Evening Grosbeak" in r.stderr
    r = cli("search", "Evening Grosbeak in the evening")
    assert "understood: evening grosbeak · 18:00-22:00 local" in r.stderr
    assert "by labels Evening Grosbeak" in r.stderr


def test_a_place_and_time_without_a_sound_lists_activity(cli):
    r = cli("search", "in the north quadrant on 2024-05-01", "--json")
    assert "understood: 2024-05-01 · quadrant N" in r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows and all(row["windows"] >= 1 for row in rows)
    assert {"common", "windows", "recordings", "understood"} <= rows[0].keys()


def test_ignored_words_are_said(cli):
    r = cli("search", "siren in Narnia at night", "-n", "5")
    assert "ignored: narnia" in r.stderr and "night" in r.stderr


def test_dst_nights(cli):
    """On the fall-back night 02:00-03:00 happens twice: both hours' windows (any bird class
    scores in every window); on the spring-forward night it does not happen at all; "at night" keeps the
    windows of both nights (the sun of Berlin)."""
    fall = cli.json("search", "birds at 2:30 am on 2024-10-27", "-n", "500")
    assert fall and all(T(2) <= _local(h) < T(3) for h in fall)
    instants = sorted(datetime.fromisoformat(h["starts_at"]) for h in fall)
    one_utc = datetime(2024, 10, 27, 1, tzinfo=timezone.utc)  # 03:00 CEST -> 02:00 CET
    assert instants[0] < one_utc <= instants[-1]  # both passes of 02:00-03:00
    r = cli("search", "siren at 2:30 am on 31 March 2024", "-n", "200", "--json")
    assert r.stdout.strip() == "" and "no windows match" in r.stderr
    night = cli.json("search", "siren at night", "-n", "500")
    dates = {h["local"][:10] for h in night}
    assert {"2024-03-31", "2024-10-27"} <= dates


def test_the_dawn_chorus_moves_with_longitude(cli, reserve_url):
    """The same sentence at two sensors far apart in longitude (both on Berlin's clock):
    windows at different clock times."""
    _coords(reserve_url, {"north-1": (50.0, 60.0), "south-1": (40.0, -80.0)})
    try:
        hits = cli.json("search", "dawn chorus", "-n", "200")
        by_sensor: dict[str, set[int]] = {}
        for h in hits:
            by_sensor.setdefault(h["sensor"], set()).add(_local(h).hour)
        assert by_sensor.get("south-1") == {12}
        assert by_sensor.get("north-1") and max(by_sensor["north-1"]) <= 3
    finally:
        _coords(reserve_url, {"north-1": BERLIN, "south-1": BERLIN})


# ------------------------------------------------------------------------------ the page
@pytest.fixture(scope="module")
def page(reserve_url, cli):
    from fastapi.testclient import TestClient

    from soundscape.db import open_database
    from soundscape.web import WebConfig, create_app

    db = open_database(reserve_url)
    with TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), db)) as c:
        yield c
    db.engine.dispose()


def test_the_page_reads_the_sentence_like_the_cli(page, cli):
    sentence = "bird songs at 3:00 AM in the North Quadrant"
    r = page.get("/search", params={"q": sentence, "format": "json", "limit": 50})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["understood"]["understood"] == "bird song · 02:30-03:30 local · quadrant N"
    cli_hits = cli.json("search", sentence, "-n", "50")
    assert [h["segment_id"] for h in body["hits"]] == [h["segment_id"] for h in cli_hits] != []
    html = page.get("/search", params={"q": sentence}).text
    assert 'id="understood"' in html and "quadrant N" in html
    # each part but the sound can be removed: the link searches the rest
    assert "/search?q=bird+song&amp;quadrant=N" in html  # without the time
    assert "/search?q=bird+song&amp;time=02%3A30-03%3A30" in html  # without the quadrant
    without_time = page.get("/search?q=bird+song&quadrant=N&format=json&limit=50").json()
    assert {h["quadrant"] for h in without_time["hits"]} == {"N"}


def test_the_page_lists_activity_for_a_place_and_time(page):
    r = page.get("/search", params={"q": "in the north quadrant on 2024-05-01", "format": "json"})
    assert r.status_code == 200, r.text
    assert r.json()["activity"] and r.json()["understood"]["filters"]["quadrants"] == "['N']"
    html = page.get("/search", params={"q": "in the north quadrant on 2024-05-01"}).text
    assert 'class="activity"' in html


def test_the_page_has_the_sun_filter(page):
    html = page.get("/search").text
    assert 'name="sun"' in html
    night = page.get("/search", params={"q": "siren", "sun": "night", "format": "json"}).json()
    assert night["hits"] and {h["sensor"] for h in night["hits"]} == {"north-1"}
    bad = page.get("/search", params={"q": "siren", "sun": "noon", "format": "json"})
    assert bad.status_code == 400 and "sun" in bad.json()["error"]
