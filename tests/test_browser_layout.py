"""The web page's layout in a real browser (issue 23, item 6): Debian's Chromium driven by
Playwright against ``soundscape serve`` (as tests/test_browser.py), on the reserve's
recordings and a 15-minute one, ingested with the spectral model; the concept ``siren`` is the
fire truck clip.

- every page fits a phone (390 px) without the body scrolling sideways;
- the recordings list pages and filters by single-click chips; the search form's chips filter
  the hits (each card names its file);
- a heat map cell links to the search for that group, day and hour; hours without audio are
  drawn apart from hours with audio and nothing detected;
- the long recording's page draws its plot from the stored low-resolution spectrogram.

``SOUNDSCAPE_WEB_SCREENSHOTS=docs/img`` saves screenshots (docs/img/web-layout-*.png, shown in
docs/web.md).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import soundfile as sf
import sqlalchemy as sa
from click.testing import CliRunner

from soundscape.cli import cli
from soundscape.db import make_engine

from . import reserve
from .test_browser import CHROMIUM, PHONE, _fits, _shot, browser, server  # noqa: F401

pytestmark = pytest.mark.slow  # an ingest, a server and a browser: ~2 min

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "audio"
LONG = "20240501_040000.WAV"  # 06:00 CEST at north-1 (Marsh), 15 minutes
LONG_S = 900


def _long_file(folder: Path) -> Path:
    """The forest soundscape looped to 15 minutes (32 kHz, 16-bit), written block by block."""
    data, rate = sf.read(EXAMPLES / "xc563936.mp3", dtype="float32", always_2d=True)
    base = data.mean(axis=1) * 0.5
    path = folder / LONG
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        left = LONG_S * rate
        while left > 0:
            f.write(base[:left])
            left -= min(left, len(base))
    return path


@pytest.fixture(scope="module")
def world(module_db_url, reserve_folder, tmp_path_factory):
    runner = CliRunner()
    env = {"SOUNDSCAPE_DATABASE_URL": module_db_url}

    def ok(*args: str) -> None:
        r = runner.invoke(cli, list(args), env=env)
        assert r.exit_code == 0, r.output

    for name, (site, quadrant, tz) in reserve.SENSORS.items():
        ok("sensors", "add", name, "--site", site, "--quadrant", quadrant, "--timezone", tz)
    for sensor in reserve.SENSORS:
        ok("ingest", str(reserve_folder / sensor), "-s", sensor, "-m", "spectral", "-q")
    long = _long_file(tmp_path_factory.mktemp("long"))
    ok("ingest", str(long), "-s", "north-1", "-m", "spectral", "-q")
    ok("concepts", "add", "siren", "--audio", str(EXAMPLES / "firetruck.ogg"), "--threshold", "0.5")
    return module_db_url


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(url).query)


# ------------------------------------------------------------------ without a browser
def test_coverage_tells_no_audio_from_nothing_heard(world):
    """The hours each site has audio in come from the recordings' spans, in local time: the
    recording from 23:59:30 covers 23:00 on 1 May and 00:00 on 2 May; 05:00 has none."""
    from soundscape.web.routes.overview import coverage

    engine = make_engine(world)
    with engine.connect() as conn:
        cells = coverage(conn, "site", date(2024, 5, 1), date(2024, 5, 2))
    engine.dispose()
    marsh = cells["Marsh"]
    may1, may2 = date(2024, 5, 1), date(2024, 5, 2)
    assert {(may1, 2), (may1, 6), (may1, 23), (may2, 0)} <= marsh
    assert (may1, 5) not in marsh and (may1, 7) not in marsh  # 06:00-06:15 only
    assert cells["Forest"] == {(may1, 12)}


def test_recordings_parameters_are_checked(world):
    """Bad paging or dates are a 400 naming the parameter; JSON gives the page's rows."""
    from fastapi.testclient import TestClient

    from soundscape.db import open_database
    from soundscape.web import WebConfig, create_app

    database = open_database(world)
    with TestClient(create_app(WebConfig(allowed_hosts=["testserver"]), database)) as client:
        for query, name in (("page=0", "page"), ("n=5000", "n"), ("from=May", "from")):
            r = client.get(f"/recordings?{query}", headers={"Accept": "application/json"})
            assert r.status_code == 400 and r.json()["error"].startswith(name), (query, r.text)
        rows = client.get("/recordings?n=4&page=2&format=json").json()
        assert [r["id"] for r in rows] == [5, 6]
        rows = client.get("/recordings?sensor=south-1&format=json").json()
        assert [r["sensor"] for r in rows] == ["south-1"]
    database.engine.dispose()


# ------------------------------------------------------------------ in the browser
def test_pages_fit_a_phone(server, browser):  # noqa: F811
    phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    page = phone.new_page()
    for name, url in {
        "recordings": "/recordings?n=3",
        "activity": "/activity?kind=concept&name=siren&by=site&from=2024-05-01&to=2024-05-02",
        "search": "/search?concept=siren&limit=5",
        "recording": "/recordings/1",
        "jobs": "/jobs",
    }.items():
        page.goto(server + url)
        page.wait_for_load_state("networkidle")
        assert _fits(page), f"{url} overflows a {PHONE['width']} px screen"
        if name in ("recordings", "activity"):
            _shot(page, f"layout-{name}-phone")
    # heat map cells stay big enough to tap (at least 20 CSS px) on the phone
    page.goto(server + "/activity?kind=concept&name=siren&by=site&from=2024-05-01&to=2024-05-02")
    box = page.locator("figure.heatmap a.cell rect").first.bounding_box()
    assert box and box["width"] >= 20 and box["height"] >= 20, box
    phone.close()


def test_recordings_pages_and_chips(server, browser):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{server}/recordings?n=2")
    rows = page.locator("table.recordings tbody tr")
    assert rows.count() == 2
    assert "6 recordings · page 1 of 3" in page.inner_text("#recordings-count")
    first = rows.first.inner_text()
    page.click("nav.pager a[rel=next]")
    page.wait_for_url(re.compile(r"page=2"))
    assert rows.count() == 2 and rows.first.inner_text() != first
    assert _query(page.url)["n"] == ["2"]  # the pager keeps the other parameters
    # one click on a chip filters (app.js submits the form)
    page.click("fieldset[data-filter=sensor] label.chip:has-text('south-1')")
    page.wait_for_url(re.compile(r"sensor=south-1"))
    assert rows.count() == 1 and "south-1" in rows.first.inner_text()
    assert "page=" not in page.url  # a new filter starts at page 1
    # two chips: one site or the other
    page.click("fieldset[data-filter=site] label.chip:has-text('Marsh')")
    page.wait_for_url(re.compile(r"site=Marsh"))
    assert page.locator("table.recordings tbody tr").count() == 0  # south-1 is not in Marsh
    page.goto(f"{server}/recordings?site=Marsh&from=2024-05-01&to=2024-05-01")
    files = page.locator("table.recordings td.path").all_inner_texts()
    assert sorted(files) == ["20240501_003000.WAV", LONG, "20240501_215930.WAV"]
    _shot(page, "layout-recordings")
    context.close()


def test_search_chips_and_file_names(server, browser):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{server}/search")
    assert page.locator("select[multiple]").count() == 0
    page.select_option("select[name=concept]", "siren")
    page.click("#search-form fieldset[data-filter=site] label.chip:has-text('Forest')")
    assert page.is_checked("#search-form input[name=site][value=Forest]")
    page.click("#search-form button[type=submit]")
    page.wait_for_url(re.compile(r"site=Forest"))
    cards = page.locator("li.hit")
    cards.first.wait_for()
    assert cards.count() >= 1
    for card in cards.all():
        meta = card.locator(".meta").inner_text()
        assert "Forest" in meta and "Marsh" not in meta
        assert card.locator(".meta .file").inner_text() == "20240501_100000.WAV"
    # the chip stays on after the search
    assert page.is_checked("#search-form input[name=site][value=Forest]")
    context.close()


def test_heatmap_cell_leads_to_its_search(server, browser, world):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{server}/activity?kind=concept&name=siren&by=site&from=2024-05-01&to=2024-05-02")
    marsh = page.locator("figure.heatmap", has_text="site Marsh")
    # hours without audio are hatched, hours with audio and nothing heard are grey
    assert marsh.locator("rect.no-audio").count() > 0
    assert marsh.locator("rect.quiet").count() > 0
    assert page.locator("ul.legend li", has_text="no audio recorded").count() == 1
    heard = marsh.locator("a.cell:not([data-n='0'])").first
    n = int(heard.get_attribute("data-n") or 0)
    assert n > 0
    title = heard.locator("title").text_content() or ""  # "2024-05-01 02:00 · 3 detections"
    day, hour = title.split()[0], int(title.split()[1][:2])
    _shot(page, "layout-activity")
    heard.click()
    page.wait_for_url(re.compile(r"/search\?"))
    q = _query(page.url)
    assert q["concept"] == ["siren"] and q["site"] == ["Marsh"]
    assert q["from"] == [day] and q["to"] == [day]
    assert q["time"] == [f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"]
    cards = page.locator("li.hit")
    cards.first.wait_for()
    assert cards.count() == n
    for t in page.locator("li.hit .meta time").all_inner_texts():
        assert t.startswith(f"{day} {hour:02d}:"), t
    context.close()


def test_long_recording_plot_is_the_stored_spectrogram(server, browser, world):  # noqa: F811
    engine = make_engine(world)
    with engine.connect() as conn:
        rid, columns = conn.execute(
            sa.text(
                "SELECT r.id, o.columns FROM recordings r "
                "JOIN recording_overviews o ON o.recording_id = r.id WHERE r.path LIKE :p"
            ),
            {"p": f"%/{LONG}"},
        ).one()
    engine.dispose()
    assert columns > 1000  # stored at ingest, fine enough for the whole 15 minutes
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    with page.expect_response(lambda r: r.url.endswith(f"/recordings/{rid}/plot.png")) as got:
        page.goto(f"{server}/recordings/{rid}")
    response = got.value
    assert response.status == 200
    assert response.headers["x-spectrogram"] == "stored"
    size = page.locator("img.wide").evaluate(
        "async (i) => { await i.decode(); return [i.naturalWidth, i.naturalHeight]; }"
    )
    assert size == [1200, 520]
    pixels = np.frombuffer(response.body(), np.uint8)
    assert len(pixels) > 20_000  # a drawn spectrogram, not an empty figure
    _shot(page, "layout-recording")
    context.close()
