"""Searching like a person (issue 23, items 4 and 5): phrases map to labels, a search that
cannot run stays on the search page with its query and clickable suggestions, no page tells a
ranger to run a command, and signing in returns to where one was. On the reserve (real audio,
BirdNET labels) in a real PostgreSQL."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from soundscape.db import make_engine, open_database
from soundscape.errors import NoLabelMatch
from soundscape.roles import create_reviewer
from soundscape.search import match_labels
from soundscape.spaces import list_spaces
from soundscape.web import WebConfig, create_app

REVIEWER, PASSWORD = "person_ana", "a long enough password"


@pytest.fixture(scope="module")
def database(reserve_url):
    engine = make_engine(reserve_url)
    create_reviewer(engine, REVIEWER, PASSWORD)
    engine.dispose()
    db = open_database(reserve_url)
    yield db
    db.engine.dispose()


@pytest.fixture(scope="module")
def client(database):
    with TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), database)) as c:
        yield c


def _names(database, text: str) -> list[str]:
    with database.engine.connect() as conn:
        space = next(s for s in list_spaces(conn) if s.model == "birdnet")
        return match_labels(conn, space, text)[1]


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("a dog barking", {"Dog"}),
        ("dogs barking at night", {"Dog"}),
        ("people talking", {"Human vocal"}),
        ("the sound of a siren", {"Siren"}),
        ("a car passing by", {"Engine"}),
        ("a chainsaw in the forest", {"Power tools"}),
        ("a little owl hooting", {"Little Owl"}),
        ("a dark-eyed junco singing", {"Dark-eyed Junco"}),
    ],
)
def test_phrases_map_to_labels(database, phrase, expected):
    assert set(_names(database, phrase)) == expected


def test_phrase_word_overlap_and_what_stays(database):
    owls = _names(database, "owls hooting")
    assert "Little Owl" in owls and len(owls) > 5 and all("Owl" in n for n in owls)
    assert "Dark-eyed Junco" in _names(database, "a junco singing")
    # plain words and names behave as before
    assert _names(database, "dog") == ["Dog"]
    assert set(_names(database, "dark-eyed")) >= {"Dark-eyed Junco"}
    # words that name nothing: an error with suggestions (the CLI prints it as before)
    with pytest.raises(NoLabelMatch) as info:
        _names(database, "a barkign dgo")
    assert "labels top" in str(info.value)  # the CLI's message
    with pytest.raises(NoLabelMatch) as info:
        _names(database, "junko")
    assert "Dark-eyed Junco" in info.value.suggestions


def test_a_phrase_searches_on_the_page(client):
    r = client.get("/search", params={"q": "a dog barking", "format": "json"})
    assert r.status_code == 200, r.text
    assert "Dog" in r.json()["query"]
    page = client.get("/search", params={"q": "the sound of a siren at night"})
    assert page.status_code == 200 and 'class="hit"' in page.text


def test_no_match_stays_on_the_search_page_with_links(client):
    r = client.get("/search", params={"q": "junko", "site": "Marsh"})
    assert r.status_code == 400
    # the search box keeps the query, the filters stay chosen
    assert 'name="q" type="search"' in r.text and 'value="junko"' in r.text
    assert 'name="site" value="Marsh" checked' in r.text  # a chip, one click, no Ctrl
    links = re.findall(r'<a href="(/search\?q=[^"]+)">([^<]+)</a>', r.text)
    assert "Dark-eyed Junco" in [name for _, name in links], links
    href = next(h for h, name in links if name == "Dark-eyed Junco").replace("&amp;", "&")
    assert parse_qs(urlsplit(href).query) == {"q": ["Dark-eyed Junco"], "site": ["Marsh"]}
    assert client.get(href).status_code == 200  # the suggestion works
    assert "soundscape " not in r.text.replace("soundscape 0", "").replace("· soundscape", "")
    j = client.get("/search", params={"q": "junko", "format": "json"})
    assert j.status_code == 400 and "Dark-eyed Junco" in j.json()["suggestions"]


@pytest.mark.parametrize(
    "path", ["/recordings/987654", "/density?sample=nope", "/search?concept=nope"]
)
def test_no_page_tells_a_ranger_to_run_a_command(client, path):
    r = client.get(path)
    assert r.status_code in (400, 404)
    assert '<input name="q" type="search"' in r.text  # the search box on every error page
    assert "`" not in r.text and "soundscape concepts" not in r.text
    assert "soundscape density" not in r.text


@pytest.mark.parametrize("page", ["/", "/search", "/activity", "/sensors", "/recordings", "/jobs",
                                  "/density", "/login"])  # fmt: skip
def test_pages_name_no_commands(client, page):
    text = client.get(page).text
    assert "<code>soundscape" not in text and "create-reviewer" not in text


def test_sign_in_returns_to_where_one_was(database):
    c = TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), database))
    page = c.get("/search", params={"q": "siren", "site": "Marsh"})
    link = re.search(r'<a href="(/login\?next=[^"]+)">Sign in</a>', page.text)
    assert link, page.text[:2000]
    login = c.get(link.group(1).replace("&amp;", "&"))
    back = re.search(r'name="next" value="([^"]+)"', login.text).group(1).replace("&amp;", "&")
    assert back == "/search?q=siren&site=Marsh"
    token = login.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    r = c.post(
        "/login",
        data={"name": REVIEWER, "password": PASSWORD, "csrf_token": token, "next": back},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/search?q=siren&site=Marsh"
    with database.engine.connect() as conn:  # nothing else changed
        assert conn.execute(sa.text("SELECT count(*) FROM annotations")).scalar() == 0


def test_a_search_by_example_gets_a_url_that_keeps_the_file_and_span(client, database):
    from pathlib import Path

    clip = Path(__file__).resolve().parents[1] / "examples" / "audio" / "firetruck.ogg"
    page = client.get("/search", params={"site": "Marsh"})
    assert page.text.count("<legend>Where and when</legend>") == 1  # one block, not two
    token = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    r = client.post(
        "/search",
        data={"csrf_token": token, "start": "1", "end": "4", "site": "Marsh"},
        files={"audio": ("firetruck.ogg", clip.read_bytes(), "audio/ogg")},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    query = parse_qs(urlsplit(url).query)
    assert re.fullmatch(r"[0-9a-f]{32}", query.pop("example")[0])
    assert query == {"start": ["1"], "end": ["4"], "site": ["Marsh"]}
    shown = client.get(url)
    assert shown.status_code == 200, shown.text
    assert "firetruck.ogg" in shown.text and "soundscape-upload" not in shown.text
    assert "1–4 s" in shown.text and 'class="share"' in shown.text
    assert shown.text.count("<legend>Where and when</legend>") == 1
    assert 'name="start" type="number" step="any" min="0" value="1"' in shown.text
    # shared: another browser (no session) gets the same search from the URL alone
    other = TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), database))
    mine = client.get(url + "&format=json").json()["hits"]
    theirs = other.get(url + "&format=json").json()["hits"]
    assert mine and [h["segment_id"] for h in theirs] == [h["segment_id"] for h in mine]
    assert {h["site"] for h in mine} == {"Marsh"}
    # the same file and span through the library: the same hits
    from soundscape.search import Filters, SearchRequest, search

    with database.engine.connect() as conn:
        want = search(
            conn,
            SearchRequest(
                audio=clip,
                start_s=1.0,
                end_s=4.0,
                filters=Filters(sites=["Marsh"]),
                limit=len(mine),
            ),
        )
    assert [h["segment_id"] for h in mine] == [h.segment_id for h in want.hits]
    assert client.get("/search", params={"example": "../../etc"}).status_code == 400
    assert client.get("/search", params={"example": "0" * 32}).status_code == 404


def test_pages_have_a_favicon(client):
    page = client.get("/search").text
    assert 'rel="icon"' in page and "/static/favicon.svg" in page
    assert client.get("/static/favicon.svg").status_code == 200


def test_night_without_sensor_positions_is_clock_night(client):
    """No sensor has a position here, so the sun cannot say when night is: "at night" is
    21:00-05:00 local, and the page says so."""
    r = client.get("/search", params={"q": "a siren at night", "format": "json"})
    assert r.status_code == 200, r.text
    line = r.json()["understood"]["understood"]
    assert "21:00-05:00 local (no sensor position)" in line, line
    hours = [h["local"][11:16] for h in r.json()["hits"]]
    assert hours and all(t >= "21:00" or t < "05:00" for t in hours), hours


def test_uploaded_examples_are_kept_30_days(database):
    """search_examples stays bounded: storing an example removes those older than 30 days
    (their links then say to upload again)."""
    from datetime import datetime, timedelta, timezone

    from soundscape.web.routes.search import store_example

    old = datetime.now(timezone.utc) - timedelta(days=31)
    with database.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO search_examples (id, name, data, created_at) "
                "VALUES (:i, 'old.wav', '\\x00', :t)"
            ),
            {"i": "a" * 32, "t": old},
        )
    key = store_example(database.engine, "new.wav", b"RIFF")
    with database.engine.connect() as conn:
        ids = set(conn.execute(sa.text("SELECT id FROM search_examples")).scalars())
    assert key in ids and "a" * 32 not in ids
