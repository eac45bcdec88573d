"""The web page in a real browser: Debian's Chromium (``/usr/bin/chromium``, or
``SOUNDSCAPE_CHROMIUM``) driven by Playwright against ``soundscape serve`` running in uvicorn on
a free port, on real audio ingested with BirdNET. A reviewer signs in, searches, plays a clip
(the audio element loads and reports its duration), says "yes", and the annotation row is in
the database; every page fits a phone's width (390 px) without horizontal scrolling.

``SOUNDSCAPE_WEB_SCREENSHOTS=docs/img`` also saves a screenshot of each page there
(docs/img/web-*.png, shown in docs/web.md and the README).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from soundscape.cli import cli
from soundscape.db import make_engine
from soundscape.roles import create_reviewer

from . import reserve

pytestmark = pytest.mark.slow  # BirdNET ingest, a server and a browser: ~1 min

CHROMIUM = os.environ.get("SOUNDSCAPE_CHROMIUM", "/usr/bin/chromium")
REVIEWER, PASSWORD = "web_browser", "a long test password"
COORDS = {"north-1": ("52.52", "13.40"), "south-1": ("52.45", "13.30")}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def world(module_db_url, reserve_folder, tmp_path_factory):
    """Three reserve recordings (sirens, a dog) ingested with BirdNET, the concept siren, a
    reviewer and one file that failed to ingest. Its own ingest, not a copy of conftest's
    ``reserve_template``: three of the five files, one by one (the page at /recordings/1)."""
    folder = tmp_path_factory.mktemp("browser")
    paths = [reserve_folder / rec.sensor / rec.name for rec in reserve.RECORDINGS]
    runner = CliRunner()
    env = {"SOUNDSCAPE_DATABASE_URL": module_db_url}
    for name, (site, quadrant, tz) in reserve.SENSORS.items():
        lat, lon = COORDS[name]
        args = ["sensors", "add", name, "--site", site, "--quadrant", quadrant, "--timezone", tz]
        assert runner.invoke(cli, [*args, "--lat", lat, "--lon", lon], env=env).exit_code == 0
    for path, rec in list(zip(paths, reserve.RECORDINGS))[:3]:
        r = runner.invoke(
            cli, ["ingest", str(path), "-s", rec.sensor, "-m", "birdnet", "-q"], env=env
        )
        assert r.exit_code == 0, r.output
    bad = folder / "card" / "20240502_010000.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"RIFF\0\0\0\0WAVE")
    assert runner.invoke(cli, ["ingest", str(bad), "-s", "north-1", "-q"], env=env).exit_code == 1
    assert (
        runner.invoke(cli, ["concepts", "add", "siren", "--text", "siren"], env=env).exit_code == 0
    )
    engine = make_engine(module_db_url)
    create_reviewer(engine, REVIEWER, PASSWORD)
    engine.dispose()
    return module_db_url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(world):
    """``soundscape serve`` (uvicorn) in its own process on a free port."""
    port = _free_port()
    env = {**os.environ, "SOUNDSCAPE_DATABASE_URL": world}
    proc = subprocess.Popen(
        [sys.executable, "-m", "soundscape", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"soundscape serve did not start: {err}") from None
            time.sleep(0.3)
    yield base
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        yield b
        b.close()


def _shot(page, name: str) -> None:
    """A full-page screenshot as a 256-colour PNG (a few times smaller) when asked for."""
    folder = os.environ.get("SOUNDSCAPE_WEB_SCREENSHOTS")
    if folder:
        from PIL import Image

        Path(folder).mkdir(parents=True, exist_ok=True)
        image = Image.open(io.BytesIO(page.screenshot(full_page=True)))
        image.convert("RGB").quantize(colors=256).save(
            Path(folder) / f"web-{name}.png", optimize=True
        )


def _sign_in(page, base: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=name]", REVIEWER)
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{base}/search")


def test_search_listen_and_say_yes(server, browser, world):
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the page's CSP forbids
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    _sign_in(page, server)
    page.fill("input[name=q]", "siren")
    page.fill("input[name=time]", "00:00-12:30")
    page.fill("input[name=limit]", "6")
    page.click("#search-form button[type=submit]")
    cards = page.locator("li.hit")
    cards.first.wait_for()
    assert cards.count() == 6
    card = cards.first
    segment_id = int(card.get_attribute("data-segment") or 0)
    # the audio element loads the padded clip and reports its duration (3 s window + 2 x 1 s)
    duration = card.locator("audio").evaluate(
        """async (a) => { a.muted = true; await a.play(); a.pause(); return a.duration; }"""
    )
    assert 4.5 < duration < 5.5, duration
    card.locator("img.spectrogram").scroll_into_view_if_needed()
    page.wait_for_function(
        "document.querySelector('li.hit img.spectrogram').naturalWidth > 0", timeout=30000
    )
    assert card.locator(".verdict-for").text_content() == "Siren?"  # the class the hit came from
    card.locator("button.yes").click()
    page.wait_for_function(
        "document.querySelector('li.hit .saved').textContent === 'yes saved'", timeout=15000
    )
    assert "judged-yes" in (card.get_attribute("class") or "")
    page.wait_for_function(
        "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=60000
    )
    _shot(page, "search")
    engine = make_engine(world)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT label, verdict, author, source FROM annotations WHERE segment_id = :g"),
            {"g": segment_id},
        ).all()
    engine.dispose()
    assert rows == [("Siren", "yes", REVIEWER, "web")]
    context.close()


def _fits(page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def test_pages_fit_a_phone_and_screenshots(server, browser):
    pages = {
        "search": "/search?q=siren&events=1",
        "recording": "/recordings/1",
        "activity": "/activity?kind=concept&name=siren&by=site",
        "sensors": "/sensors",
        "jobs": "/jobs",
    }
    phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    page = phone.new_page()
    for name, url in pages.items():
        page.goto(server + url)
        page.wait_for_load_state("networkidle")
        assert _fits(page), f"{url} overflows a {PHONE['width']} px screen"
        if name == "search":
            assert page.locator("li.hit").count() >= 3
            _shot(page, "search-phone")
    phone.close()
    desktop = browser.new_context(viewport={"width": 1280, "height": 900})
    page = desktop.new_page()
    for name, url in pages.items():
        if name == "search":
            continue  # the signed-in search page with a verdict is shot above
        page.goto(server + url)
        page.wait_for_load_state("networkidle")
        assert page.locator("main h1").count() == 1
        _shot(page, name)
    desktop.close()
