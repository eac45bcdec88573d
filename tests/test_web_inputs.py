"""The web page's inputs (issue 24): an upload bomb, NUL bytes, overlong fields and chunked
bodies over the limit are refused with a clear 4xx, never a traceback; upload errors name the
user's file, not the server's temporary folder.

Real audio ingested with the spectral model in a real PostgreSQL; the app runs with
``raise_server_exceptions=False`` so that a traceback shows as the 500 a browser would get.
"""

from __future__ import annotations

import io
import shutil
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import sqlalchemy as sa
from fastapi.testclient import TestClient

from soundscape.db import make_engine, open_database
from soundscape.roles import create_reviewer
from soundscape.web import WebConfig, create_app

from .conftest import Cli
from .reserve import EXAMPLES

REVIEWER, PASSWORD = "web_inputs_ana", "a long enough password"


@pytest.fixture(scope="module")
def database(module_db_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    for name in ("dog", "owl", "crow"):
        shutil.copy(EXAMPLES / f"{name}.ogg", folder / f"{name}.ogg")
    run = Cli(module_db_url)
    run("sensors", "add", "north-1", "--timezone", "UTC")
    run("ingest", folder, "-s", "north-1", "-m", "spectral", "-q")
    engine = make_engine(module_db_url)
    create_reviewer(engine, REVIEWER, PASSWORD)
    engine.dispose()
    db = open_database(module_db_url)
    yield db
    db.engine.dispose()


def _client(database, **config) -> TestClient:
    app = create_app(WebConfig(allowed_hosts=["testserver"], **config), database)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(database):
    with _client(database) as c:
        yield c


def csrf_of(client: TestClient) -> str:
    page = client.get("/search").text
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def _flac(seconds: float, rate: int = 8000, tone: bool = False) -> bytes:
    """A FLAC of silence (or a quiet 440 Hz tone), written block by block."""
    out = io.BytesIO()
    block = rate * 60
    t = np.arange(block) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) if tone else np.zeros(block)).astype(np.float32)
    with sf.SoundFile(out, "w", rate, 1, subtype="PCM_16", format="FLAC") as f:
        left = round(seconds * rate)
        while left > 0:
            f.write(samples[: min(block, left)])
            left -= block
    return out.getvalue()


def _upload(client, name: str, data: bytes, **fields: str):
    return client.post(
        "/search",
        data={"csrf_token": csrf_of(client), "limit": "3", **fields},
        files={"audio": (name, data, "audio/flac")},
        headers={"Accept": "application/json"},
    )


def test_an_upload_bomb_is_refused_before_it_is_decoded(client):
    """Two hours of silence in a small FLAC (the issue's 100 hours scaled down): refused from
    its header, with the length and the limit, and the web process does not grow."""
    bomb = _flac(2 * 3600)
    assert len(bomb) < 2_000_000
    tracemalloc.start()
    try:
        r = _upload(client, "quiet night.flac", bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 413, r.text
    message = r.json()["error"]
    assert "2:00:00" in message and "at most 0:02:00" in message
    assert peak < 30 * 2**20, f"{peak / 2**20:.0f} MB traced while refusing the upload"


def test_a_long_example_is_searched_by_a_span_of_it(client):
    """Over the limit as a whole, a span within it is decoded (only that span)."""
    tone = _flac(600, tone=True)
    r = _upload(client, "tone.flac", tone, start="10", end="20")
    assert r.status_code == 200, r.text
    assert r.json()["hits"] and "tone.flac 10-20 s" in r.json()["query"]
    r = _upload(client, "tone.flac", tone, start="0", end="400")
    assert r.status_code == 413 and "0:06:40" in r.json()["error"]


def test_upload_errors_name_the_users_file_not_the_servers(client):
    r = _upload(client, "my recording.wav", b"RIFF not really a wav file" * 10)
    assert r.status_code == 400
    message = r.json()["error"]
    assert "my recording.wav" in message
    assert "soundscape-upload" not in message and "/tmp" not in message, message


def test_nul_bytes_are_refused_with_400(client):
    for url in ("/search?q=bird%00song", "/search?q=x&sensor=north%00", "/recordings?sensor=%00"):
        r = client.get(url)
        assert r.status_code == 400 and "NUL" in r.text, (url, r.status_code, r.text[:200])
    r = client.post(
        "/search",
        data={"csrf_token": csrf_of(client), "q": "a\0b"},
        files={"audio": ("x.flac", _flac(1, tone=True), "audio/flac")},
    )
    assert r.status_code == 400 and "NUL" in r.text


def _signed_in(database) -> TestClient:
    c = _client(database)
    r = c.post(
        "/login",
        data={"name": REVIEWER, "password": PASSWORD, "csrf_token": csrf_of(c)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return c


def test_a_huge_or_nul_label_is_a_400_not_a_traceback(database):
    with database.engine.connect() as conn:
        segment_id = conn.execute(sa.text("SELECT min(id) FROM segments")).scalar_one()
    c = _signed_in(database)
    headers = {"X-CSRF-Token": csrf_of(c), "Accept": "application/json"}
    form = {"segment_id": str(segment_id), "verdict": "yes"}
    for label, why in (("x" * 1_000_000, "too long"), ("owl\0", "NUL"), ("x" * 201, "too long")):
        r = c.post("/annotations", data={**form, "label": label}, headers=headers)
        assert r.status_code == 400, (r.status_code, r.text[:200])
        assert why in r.json()["error"] and "label" in r.json()["error"]
    r = c.post("/annotations", data={**form, "label": "owl", "note": "n" * 5000}, headers=headers)
    assert r.status_code == 400 and "note" in r.json()["error"]
    r = c.post("/annotations", data={**form, "label": "owl"}, headers=headers)
    assert r.status_code == 200, r.text
    with database.engine.connect() as conn:
        labels = conn.execute(sa.text("SELECT label FROM annotations")).scalars().all()
    assert labels == ["owl"]


def test_a_chunked_body_over_the_limit_is_413(database):
    c = _client(database, max_upload_bytes=50_000)
    token = csrf_of(c)

    def chunks():
        for _ in range(20):
            yield b"x" * 10_000

    for path in ("/search", "/annotations"):
        r = c.post(
            path,
            content=chunks(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-CSRF-Token": token,
            },
        )
        assert r.status_code == 413, (path, r.status_code, r.text[:200])
        assert "at most" in r.text
