"""The web page (``soundscape serve``) through its test client, on the reserve (real audio with
sirens at known places and local times, ingested with BirdNET) in a real PostgreSQL: JSON hits
equal the CLI's and the library's, clips and range requests on the stored files, CSRF refusal,
reviewer-only writes enforced by the database role, no path traversal, the upload limit, and
every page rendering what the library returns."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import psycopg
import pytest
import soundfile as sf
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from soundscape.audio import decode_span
from soundscape.cli import cli
from soundscape.db import make_engine, open_database
from soundscape.output import plain_row
from soundscape.results import hit_rows
from soundscape.roles import create_reviewer
from soundscape.search import Filters, SearchRequest, parse_time_range, search
from soundscape.web import WebConfig, create_app

from . import reserve
from .reserve import EXAMPLES

pytestmark = pytest.mark.slow  # the reserve is ingested with BirdNET (~1.5 min on 2 loaded cores)

REVIEWER, PASSWORD = "web_ana", "correct horse battery"
COORDS = {"north-1": ("52.52", "13.40"), "south-1": ("52.45", "13.30")}


@pytest.fixture(scope="module")
def world(reserve_url, tmp_path_factory):
    """The reserve ingested once with BirdNET (this module's copy of conftest's
    ``reserve_template``, made birdnet-only with the sensors at COORDS), a concept, a reviewer,
    a failed file."""
    module_db_url = reserve_url
    reserve.birdnet_only_with_coordinates(module_db_url, COORDS)
    folder = tmp_path_factory.mktemp("web")
    runner = CliRunner()
    env = {"SOUNDSCAPE_DATABASE_URL": module_db_url}
    bad = folder / "bad" / "20240501_120000.wav"
    bad.parent.mkdir()
    bad.write_text("not audio")
    r = runner.invoke(cli, ["ingest", str(bad), "-s", "north-1", "-m", "birdnet", "-q"], env=env)
    assert r.exit_code == 1
    r = runner.invoke(cli, ["concepts", "add", "siren", "--text", "siren"], env=env)
    assert r.exit_code == 0, r.output
    engine = make_engine(module_db_url)
    create_reviewer(engine, REVIEWER, PASSWORD)
    engine.dispose()
    return module_db_url


@pytest.fixture(scope="module")
def database(world):
    db = open_database(world)
    yield db
    db.engine.dispose()


@pytest.fixture(scope="module")
def client(database):
    app = create_app(WebConfig(allowed_hosts=["testserver"]), database)
    with TestClient(app) as c:
        yield c


def csrf_of(client: TestClient) -> str:
    page = client.get("/search").text
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def signed_in(database, password: str = PASSWORD) -> TestClient:
    c = TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), database))
    r = c.post(
        "/login",
        data={"name": REVIEWER, "password": password, "csrf_token": csrf_of(c)},
        follow_redirects=False,
    )
    assert r.status_code == (303 if password == PASSWORD else 401), r.text
    return c


def cli_json(world, *args: str) -> list[dict]:
    r = CliRunner().invoke(cli, ["search", *args, "--json"], env={"SOUNDSCAPE_DATABASE_URL": world})
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


@pytest.mark.parametrize(
    "query, cli_args",
    [
        ("q=siren&quadrant=N&time=02:00-04:00&to=2024-05-31",
         ["siren", "--quadrant", "N", "--time", "02:00-04:00", "--to", "2024-05-31", "-n", "20"]),
        ("q=siren&events=1&limit=10", ["siren", "--events"]),
        ("q=siren&time=23:00-01:00&events=1&to=2024-05-31",
         ["siren", "--time", "23:00-01:00", "--events", "--to", "2024-05-31", "-n", "20"]),
        ("concept=siren&site=Forest&limit=5", ["--concept", "siren", "--site", "Forest", "-n", "5"]),
    ],
)  # fmt: skip
def test_json_hits_equal_the_cli(client, world, query, cli_args):
    r = client.get(f"/search?{query}", headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["space"] == "birdnet" and body["hits"], body
    assert body["hits"] == cli_json(world, *cli_args)


def test_json_hits_equal_the_library(client, database):
    r = client.get(
        "/search?q=siren&time=22:00-04:00&sensor=north-1&limit=15",
        headers={"Accept": "application/json"},
    )
    t_from, t_to = parse_time_range("22:00-04:00")
    with database.engine.connect() as conn:
        result = search(
            conn,
            SearchRequest(
                text="siren",
                limit=15,
                filters=Filters(sensors=["north-1"], time_from=t_from, time_to=t_to),
            ),
        )
    rows, columns = hit_rows(result.hits, labels=True, events=False)
    expected = [plain_row(r, columns) for r in rows]
    assert r.json()["hits"] == expected
    # across midnight: every hit is at or after 22:00 or before 04:00 local
    assert all(h["local"][11:] >= "22:00" or h["local"][11:] < "04:00" for h in expected)


def test_search_page_shows_hit_cards(client):
    r = client.get("/search?q=siren&events=1&time=23:00-01:00&to=2024-05-31")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert html.count('class="hit"') == 1  # the siren ten seconds after local midnight
    assert "2024-05-02 00:00" in html and "north-1" in html and "Marsh" in html
    assert "/clip.wav?" in html and "more like this" in html and "Sign in" in html
    assert "script-src 'self'" in r.headers["content-security-policy"]
    # an event (4 windows: 3 s every 2 s) plays its whole span with 1 s of padding each side
    clip = html.split('<audio controls preload="none" src="', 1)[1].split('"', 1)[0]
    assert "/clip.wav?start=" in clip
    audio, rate = sf.read(io.BytesIO(client.get(clip.replace("&amp;", "&")).content))
    assert abs(len(audio) / rate - (4 * 2 + 1 + 2)) < 0.01
    # "more like this" runs a window query in the same space, excluding the window itself
    like = html.split('href="/search?like=', 1)[1].split("&", 1)[0].split('"', 1)[0]
    r = client.get(f"/search?like={like}&limit=5", headers={"Accept": "application/json"})
    hits = r.json()["hits"]
    assert len(hits) == 5 and int(like) not in [h["segment_id"] for h in hits]


def test_bad_input_is_a_message(client):
    r = client.get("/search?q=siren&time=25:00-01:00", headers={"Accept": "application/json"})
    assert r.status_code == 400 and "time" in r.json()["error"]
    r = client.get("/search?q=siren&from=2024-05-02&to=2024-05-01")
    assert r.status_code == 400 and "later than" in r.text  # the CLI's check, the same code
    r = client.get("/search?q=siren&sensor=nobody")
    assert r.status_code == 400 and "unknown sensor" in r.text
    r = client.get("/search?q=siren&concept=siren", headers={"Accept": "application/json"})
    assert r.status_code == 400 and "exactly one query" in r.json()["error"]


def _a_siren_window(client) -> dict:
    r = client.get("/search?q=siren&limit=1", headers={"Accept": "application/json"})
    return r.json()["hits"][0]


def test_clip_is_the_padded_window(client):
    hit = _a_siren_window(client)
    r = client.get(f"/clips/{hit['segment_id']}.wav")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    audio, rate = sf.read(io.BytesIO(r.content), dtype="float32")
    start = max(0.0, hit["start_s"] - 1)
    expected = decode_span(hit["path"], 48000, start, hit["end_s"] + 1)
    assert rate == 48000 and len(audio) == len(expected)
    assert np.abs(audio - expected).max() < 1e-3  # 16-bit quantisation
    png = client.get(f"/clips/{hit['segment_id']}.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/clips/999999999.wav").status_code == 404


def test_recording_audio_range_requests(client):
    hit = _a_siren_window(client)
    data = Path(hit["path"]).read_bytes()
    url = f"/recordings/{hit['recording_id']}/audio"
    full = client.get(url)
    assert full.status_code == 200 and full.content == data
    assert full.headers["accept-ranges"] == "bytes" and full.headers["content-type"] == "audio/wav"
    part = client.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    tail = client.get(url, headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == data[-500:]
    rest = client.get(url, headers={"Range": f"bytes={len(data) - 10}-"})
    assert rest.status_code == 206 and rest.content == data[-10:]
    bad = client.get(url, headers={"Range": f"bytes={len(data) + 5}-"})
    assert bad.status_code == 416
    assert client.get("/recordings/999999/audio").status_code == 404


def test_no_request_path_reaches_the_file_system(client):
    secret = Path("/etc/passwd").read_bytes()[:20]
    for url in (
        "/clips/..%2F..%2F..%2Fetc%2Fpasswd.wav",
        "/clips/../../etc/passwd",
        "/recordings/..%2F..%2Fetc%2Fpasswd/audio",
        "/recordings/1%2F..%2F..%2Fetc%2Fpasswd/audio",
        "/static/../../../../etc/passwd",
        "/static/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/recordings/1/clip.wav?start=0&end=1&path=/etc/passwd",
    ):
        r = client.get(url)
        assert secret not in r.content, url
        assert r.status_code in (404, 422) or r.headers["content-type"] == "audio/wav", url
    assert client.get("/static/style.css").status_code == 200


def test_every_post_needs_the_csrf_token(client, database):
    posts = [r.path for r in client.app.routes if "POST" in getattr(r, "methods", set())]
    assert sorted(posts) == [
        "/annotations", "/annotations/undo", "/density", "/login", "/logout", "/review/retrain",
        "/review/train", "/search",
    ]  # fmt: skip
    token = csrf_of(client)
    for path in posts:
        assert client.post(path, data={"x": "1"}).status_code == 403, path
        assert client.post(path, data={"csrf_token": "forged"}).status_code == 403, path
    # a signed-in reviewer's session token does not work cross-site either
    c = signed_in(database)
    hit = _a_siren_window(c)
    form = {"segment_id": hit["segment_id"], "label": "siren", "verdict": "yes"}
    assert c.post("/annotations", data=form).status_code == 403
    assert c.post("/annotations", data={**form, "csrf_token": token}).status_code == 403
    r = c.post(
        "/annotations",
        data={**form, "csrf_token": csrf_of(c)},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403


def _annotations(database, segment_id: int) -> list[tuple]:
    with database.engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT label, verdict, author, source FROM annotations WHERE segment_id = :g "
                "ORDER BY id"
            ),
            {"g": segment_id},
        ).all()


def test_only_a_signed_in_reviewer_writes(client, database, world):
    hit = _a_siren_window(client)
    form = {"segment_id": hit["segment_id"], "label": "siren", "verdict": "yes"}
    # anonymous, with a valid token: refused
    r = client.post("/annotations", data={**form, "csrf_token": csrf_of(client)})
    assert r.status_code == 401 and _annotations(database, hit["segment_id"]) == []
    # a wrong password is refused
    signed_in(database, password="wrong")
    c = signed_in(database)
    token = csrf_of(c)
    headers = {"X-CSRF-Token": token, "Accept": "application/json"}
    r = c.post("/annotations", data=form, headers=headers)
    assert r.status_code == 200, r.text
    assert _annotations(database, hit["segment_id"]) == [("siren", "yes", REVIEWER, "web")]
    # a corrected verdict replaces the reviewer's earlier one
    r = c.post("/annotations", data={**form, "verdict": "no"}, headers=headers)
    assert r.status_code == 200
    assert _annotations(database, hit["segment_id"]) == [("siren", "no", REVIEWER, "web")]
    # bad input is a message, nothing stored
    r = c.post("/annotations", data={**form, "verdict": "maybe"}, headers=headers)
    assert r.status_code == 400 and "verdict" in r.json()["error"]
    r = c.post("/annotations", data={**form, "label": " "}, headers=headers)
    assert r.status_code == 400
    # signing out ends the right to write
    c.post("/logout", data={"csrf_token": token})
    r = c.post("/annotations", data={**form, "csrf_token": csrf_of(c)})
    assert r.status_code == 401
    assert len(_annotations(database, hit["segment_id"])) == 1


def test_the_reviewer_role_may_only_insert_annotations(world, database):
    url = make_url(world)
    params = {"dbname": url.database, "host": url.query.get("host") or url.host}
    if url.port:
        params["port"] = str(url.port)
    with psycopg.connect(user=REVIEWER, password=PASSWORD, autocommit=True, **params) as conn:
        row = conn.execute(
            "INSERT INTO annotations (recording_id, start_s, end_s, label, verdict, author, "
            "source) VALUES (1, 0, 1, 'x', 'yes', 'somebody else', 'cli') RETURNING id"
        ).fetchone()
        assert row is not None
        for sql in (
            "SELECT label FROM annotations",
            "SELECT * FROM segments LIMIT 1",
            "SELECT * FROM recordings LIMIT 1",
            "SELECT * FROM ranger.annotations LIMIT 1",
            f"UPDATE annotations SET verdict = 'no' WHERE id = {row[0]}",
            f"DELETE FROM annotations WHERE id = {row[0]}",
            "INSERT INTO concepts (name) VALUES ('x')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
    with database.engine.connect() as conn:
        author, source = conn.execute(
            sa.text("SELECT author, source FROM annotations WHERE id = :i"), {"i": row[0]}
        ).one()
    assert (author, source) == (REVIEWER, "web")  # the database wrote the real name


def test_create_reviewer_refuses_other_roles(world):
    from soundscape.errors import DatabaseError

    engine = make_engine(world)
    try:
        owner = make_url(world).username
        with pytest.raises(DatabaseError, match="not a reviewer"):
            create_reviewer(engine, owner, "pw")
        with pytest.raises(DatabaseError):
            create_reviewer(engine, "x; DROP TABLE segments", "pw")
    finally:
        engine.dispose()
    r = CliRunner().invoke(
        cli,
        ["db", "create-reviewer", "web_ben", "--password", "pw2"],
        env={"SOUNDSCAPE_DATABASE_URL": world},
    )
    assert r.exit_code == 0 and "web_ben" in r.stderr


def test_upload_search_and_its_limit(database, client):
    example = EXAMPLES / "firetruck.ogg"
    r = client.post(
        "/search",
        data={"csrf_token": csrf_of(client), "limit": "5"},
        files={"audio": ("firetruck.ogg", example.read_bytes(), "audio/ogg")},
        headers={"Accept": "application/json"},
    )
    assert r.status_code == 200, r.text
    with database.engine.connect() as conn:
        result = search(conn, SearchRequest(audio=example, limit=5))
    assert [h["segment_id"] for h in r.json()["hits"]] == [h.segment_id for h in result.hits]
    small = TestClient(
        create_app(WebConfig(allowed_hosts=["testserver"], max_upload_bytes=50_000), database)
    )
    r = small.post(
        "/search",
        data={"csrf_token": csrf_of(small)},
        files={"audio": ("big.ogg", example.read_bytes() + b"\0" * 60_000, "audio/ogg")},
    )
    assert r.status_code == 413
    r = client.post(
        "/search",
        data={"csrf_token": csrf_of(client)},
        files={"audio": ("notes.txt", b"hello", "text/plain")},
    )
    assert r.status_code == 400


def test_pages(client, database, world):
    sensors = client.get("/sensors").text
    assert sensors.count("<circle") == 2 and "north-1" in sensors and "km</text>" in sensors
    activity = client.get("/activity?kind=concept&name=siren&by=site")
    assert activity.status_code == 200 and "<rect" in activity.text
    assert "site Marsh" in activity.text and "site Forest" in activity.text
    species = client.get("/activity?kind=species&name=siren&by=quadrant")
    assert species.status_code == 200 and "quadrant N" in species.text
    jobs = client.get("/jobs").text
    assert "20240501_120000.wav" in jobs  # the file that failed, with its reason
    recs = client.get("/recordings").text
    assert recs.count('href="/recordings/') >= len(reserve.RECORDINGS)
    hit = _a_siren_window(client)
    page = client.get(f"/recordings/{hit['recording_id']}")
    assert page.status_code == 200 and "siren" in page.text and "Transcript" not in page.text
    plot = client.get(f"/recordings/{hit['recording_id']}/plot.png")
    assert plot.status_code == 200 and plot.content[:4] == b"\x89PNG"
    bad = client.get(f"/recordings/{hit['recording_id']}/plot.png?start=nan")
    assert bad.status_code == 400


def test_transcript_shows_when_utterances_exist(client, database):
    hit = _a_siren_window(client)
    with database.engine.begin() as conn:
        # the speech family's tables (migration 0012): a transcript and one utterance
        transcript = conn.execute(
            sa.text(
                "INSERT INTO transcripts (recording_id, model, model_version) "
                "VALUES (:r, 'whisper', 'test') RETURNING id"
            ),
            {"r": hit["recording_id"]},
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO utterances (transcript_id, recording_id, sensor_id, start_s, end_s, "
                "text) SELECT :t, id, sensor_id, 1.5, 3.0, 'the truck is coming' "
                "FROM recordings WHERE id = :r"
            ),
            {"t": transcript, "r": hit["recording_id"]},
        )
    page = client.get(f"/recordings/{hit['recording_id']}").text
    assert "Transcript" in page and "the truck is coming" in page


def test_recording_page_shows_the_newest_transcript_only(client, database):
    """The page shows what ``soundscape transcript`` prints (``speech.get_transcript``: the
    newest transcript), not the utterances of every transcript of the recording mixed."""
    siren = _a_siren_window(client)["recording_id"]
    with database.engine.begin() as conn:
        rec = conn.execute(
            sa.text(
                "SELECT id FROM recordings r WHERE id <> :s AND NOT EXISTS "
                "(SELECT 1 FROM transcripts t WHERE t.recording_id = r.id) ORDER BY id LIMIT 1"
            ),
            {"s": siren},
        ).scalar_one()
        for version, age, text in (
            ("old", "1 day", "an older wording"),
            ("new", "1 hour", "the newest wording"),
        ):
            transcript = conn.execute(
                sa.text(
                    "INSERT INTO transcripts (recording_id, model, model_version, transcribed_at) "
                    "VALUES (:r, 'whisper', :v, now() - CAST(:age AS interval)) RETURNING id"
                ),
                {"r": rec, "v": version, "age": age},
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO utterances (transcript_id, recording_id, sensor_id, start_s, "
                    "end_s, text) SELECT :t, id, sensor_id, 1.0, 2.0, :text "
                    "FROM recordings WHERE id = :r"
                ),
                {"t": transcript, "r": rec, "text": text},
            )
    page = client.get(f"/recordings/{rec}").text
    assert "the newest wording" in page and "an older wording" not in page


def test_viewing_login_and_host_checks(database):
    closed = TestClient(
        create_app(WebConfig(view_login=True, allowed_hosts=["testserver"]), database)
    )
    assert closed.get("/search").status_code == 401
    assert closed.get("/clips/1.wav").status_code == 401
    assert closed.get("/healthz").status_code == 200
    assert WebConfig(host="0.0.0.0").login_to_view and not WebConfig().login_to_view
    local = TestClient(create_app(WebConfig(), database), base_url="http://127.0.0.1:8765")
    assert local.get("/healthz").status_code == 200
    rebound = TestClient(create_app(WebConfig(), database), base_url="http://evil.example")
    assert rebound.get("/healthz").status_code == 400


def test_a_flood_of_visitors_does_not_sign_reviewers_out():
    from soundscape.web.security import Sessions

    sessions = Sessions(max_sessions=3)
    reviewer = sessions.new()
    reviewer.user = "ana"
    for _ in range(10):
        sessions.new()
        sessions.ephemeral()  # not kept: a client that never loads a page
    assert len(sessions) == 3 and sessions.get(reviewer.id) is reviewer


def test_redirects_after_a_form_stay_on_the_site():
    from soundscape.web.app import local_path

    assert local_path("/search?q=owl") == "/search?q=owl"
    for target in ("//evil.example/x", "/\\evil.example", "https://evil.example", "", None):
        assert local_path(target) == "/search"


def test_classifier_label_search_and_activity(client, database, world):
    """A few-shot classifier trained on annotated reserve windows: its label search on the page
    equals the CLI's, and its detections make an activity heat map."""
    from soundscape.annotations import annotate_hit
    from soundscape.classifiers import train

    sirens = client.get("/search?q=siren&limit=8", headers={"Accept": "application/json"})
    others = client.get("/search?q=bird&limit=40", headers={"Accept": "application/json"})
    siren_ids = {h["segment_id"] for h in sirens.json()["hits"]}
    with database.engine.begin() as conn:
        for h in sirens.json()["hits"]:
            annotate_hit(conn, h["segment_id"], "siren", "yes", author="trainer")
        for h in [h for h in others.json()["hits"] if h["segment_id"] not in siren_ids][:8]:
            annotate_hit(conn, h["segment_id"], "siren", "no", author="trainer")
        train(conn, "sirens", "birdnet", weak_negatives=50)
    page = client.get("/search").text
    assert 'value="sirens|siren"' in page  # offered in the form
    r = client.get(
        "/search?classifier_label=sirens|siren&limit=5", headers={"Accept": "application/json"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["hits"] == cli_json(
        world, "--classifier", "sirens", "--label", "siren", "-n", "5"
    )
    result = CliRunner().invoke(
        cli, ["classify", "--classifier", "sirens"], env={"SOUNDSCAPE_DATABASE_URL": world}
    )
    assert result.exit_code == 0, result.output
    activity = client.get("/activity?kind=classifier&name=sirens&label=siren&by=quadrant")
    assert activity.status_code == 200 and "quadrant N" in activity.text
    assert "classifier sirens / siren" in activity.text
