"""The web page while its database is stopped or restarting: a 503 that says so (found by the
soak under faults, docs/soak.md), not a 500 with a traceback."""

from __future__ import annotations

import tempfile

from fastapi.testclient import TestClient

from soundscape.db import Database, make_engine
from soundscape.web.app import WebConfig, create_app


def test_searches_answer_503_while_the_database_is_down():
    # a database whose server is not running: libpq finds no socket in an empty folder
    gone = tempfile.mkdtemp(prefix="soundscape-no-server-")
    url = f"postgresql+psycopg://postgres@/soundscape?host={gone}"
    db = Database(url, make_engine(url), embedded=False)
    client = TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), db))
    r = client.get("/search?like=1", headers={"Accept": "application/json"})
    assert r.status_code == 503, r.text
    assert "cannot be reached" in r.json()["error"]
    page = client.get("/search?like=1")
    assert page.status_code == 503 and "try again" in page.text
    db.engine.dispose()
