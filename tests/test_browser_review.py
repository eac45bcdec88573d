"""Reviewing in a real browser (issue 23): Debian's Chromium driven by Playwright against
``soundscape serve`` (the fixtures of tests/test_browser.py) on the reserve (real audio,
BirdNET). A reviewer judges 20 clips of the review queue with the keyboard only (each clip's
spectrogram seen, the next one's fetched ahead) of a classifier trained from the page, undoes
the last verdict, retrains the classifier and reads its cross-validated precision and recall; on the search page a verdict
on an event keeps the event's span and class after a reload.

``SOUNDSCAPE_WEB_SCREENSHOTS=docs/img`` saves docs/img/web-review-*.png (docs/web.md).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from soundscape.annotations import annotate_hit
from soundscape.db import make_engine
from soundscape.roles import create_reviewer
from soundscape.search import SearchRequest, search

from .test_browser import PASSWORD, REVIEWER, _sign_in, browser, server

__all__ = ["browser", "server"]  # fixtures used by name

pytestmark = pytest.mark.slow  # a server and a browser on the reserve: ~1 min

N_CLIPS = 20


@pytest.fixture(scope="module")
def world(reserve_url):
    """The reserve (copied from the session's template), a reviewer, and six siren windows
    said yes (label ``siren``)."""
    engine = make_engine(reserve_url)
    create_reviewer(engine, REVIEWER, PASSWORD)
    with engine.begin() as conn:
        hits = search(conn, SearchRequest(text="siren", space="birdnet", limit=6)).hits
        for h in hits:
            annotate_hit(conn, h.segment_id, "siren", "yes", author="fixture")
    engine.dispose()
    return reserve_url


def _shot(page, name: str, width: int = 960) -> None:
    """A full-page screenshot scaled to ``width`` px, 128 colours (about 100 kB), when
    ``SOUNDSCAPE_WEB_SCREENSHOTS`` names a folder."""
    folder = os.environ.get("SOUNDSCAPE_WEB_SCREENSHOTS")
    if folder:
        from PIL import Image

        Path(folder).mkdir(parents=True, exist_ok=True)
        image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        image.quantize(colors=128).save(Path(folder) / f"web-{name}.png", optimize=True)


def _rows(world: str, sql: str, **params) -> list[tuple]:
    engine = make_engine(world)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def _position(page) -> int:
    return int(page.text_content("#queue-position") or 0)


def test_keyboard_review_of_20_clips_undo_and_retrain(server, browser, world):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    _sign_in(page, server)
    # no terminal: the classifier is trained from the verdicts on the review page
    page.goto(f"{server}/review")
    page.fill("#train input[name=name]", "sirens")
    page.select_option("#train select[name=label]", "siren")
    page.select_option("#train select[name=space]", "birdnet")
    page.click("#train button[type=submit]")
    page.wait_for_url("**/review?classifier_label=sirens%7Csiren", timeout=120000)
    assert "sirens v1 · siren: cross-validated precision" in " ".join(
        (page.text_content("#model") or "").split()
    )
    page.goto(f"{server}/review?classifier_label=sirens|siren&strategy=margin&n={N_CLIPS}")
    clips = page.evaluate("JSON.parse(document.getElementById('queue-data').textContent)")
    assert len(clips) == N_CLIPS
    assert page.text_content(".progress").split("·")[0].split() == ["1", "of", str(N_CLIPS)]
    # s skips, the arrows move, space plays (the keyboard only, nothing clicked)
    page.keyboard.press("s")
    assert _position(page) == 2
    page.keyboard.press("ArrowLeft")
    assert _position(page) == 1
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowLeft")
    page.evaluate("document.getElementById('clip-audio').muted = true")
    page.keyboard.press(" ")
    page.wait_for_function("!document.getElementById('clip-audio').paused", timeout=15000)
    page.keyboard.press(" ")
    assert page.evaluate("document.getElementById('clip-audio').paused")
    verdicts = ["yes", "no", "unsure"]
    started = time.perf_counter()
    for i in range(N_CLIPS):
        assert _position(page) == i + 1
        # a person looks at the spectrogram first; the next clip's is already being fetched
        page.wait_for_function(
            "(() => { const i = document.getElementById('clip-image');"
            " return i.complete && i.naturalWidth > 0; })()",
            timeout=30000,
        )
        if i + 1 < N_CLIPS:  # the next clip's spectrogram arrives while this one is shown
            page.wait_for_function(
                "(u) => performance.getEntriesByName(new URL(u, location.href).href).length > 0",
                arg=clips[i + 1]["image"],
                timeout=30000,
            )
            assert _position(page) == i + 1
        if i == 3:
            _shot(page, "review-queue")
        page.keyboard.press(verdicts[i % 3][0])
        page.wait_for_function(f"document.getElementById('queue').dataset.saved == '{i + 1}'")
    per_clip = (time.perf_counter() - started) / N_CLIPS
    print(f"review queue: {per_clip:.2f} s per clip (spectrogram loaded, verdict saved)")
    assert per_clip < 3.0, f"{per_clip:.2f} s per clip: 100 clips would take over 5 minutes"
    assert page.is_visible("#queue-finished") and not page.is_visible("#clip")
    assert page.text_content("#queue-done") == str(N_CLIPS)
    stored = _rows(
        world,
        "SELECT a.segment_id, a.start_s, a.end_s, a.label, a.verdict, r.duration_s "
        "FROM annotations a JOIN recordings r ON r.id = a.recording_id "
        "WHERE a.author = :a ORDER BY a.id",
        a=REVIEWER,
    )
    assert [row[:5] for row in stored] == [
        (c["segment_id"], c["start_s"], min(c["end_s"], row[5]), "siren", verdicts[i % 3])
        for i, (c, row) in enumerate(zip(clips, stored))
    ]
    assert len(stored) == N_CLIPS
    # z undoes the last verdict: gone from the database, back on that clip
    page.keyboard.press("z")
    page.wait_for_function("document.getElementById('queue-done').textContent === '19'")
    assert _position(page) == N_CLIPS
    assert "undone" in (page.text_content("#clip-verdict") or "")
    last = _rows(world, "SELECT count(*) FROM annotations WHERE segment_id = :g AND author = :a",
                 g=clips[-1]["segment_id"], a=REVIEWER)  # fmt: skip
    assert last == [(0,)]
    page.keyboard.press("y")
    page.wait_for_function("document.getElementById('queue-done').textContent === '20'")
    # retrain: the next version, its cross-validated precision and recall on the page
    page.click("#retrain button")
    page.wait_for_selector("table.retrained", timeout=120000)
    text = page.text_content("table.retrained") or ""
    assert "sirens v2, cross-validated" in text and "precision" in text and "recall" in text
    cells = page.locator("table.retrained tr").nth(1).locator("td").all_text_contents()
    assert cells[0] == "siren" and all(0 <= float(x) <= 1 for x in cells[1:3])
    model = page.text_content("#model") or ""
    assert model.startswith("sirens v2 · siren: cross-validated precision " + cells[1])
    _shot(page, "review-retrain")
    version = _rows(world, "SELECT max(version) FROM classifiers WHERE name = 'sirens'")
    assert version == [(2,)]
    context.close()


def test_a_verdict_on_an_event_after_a_reload(server, browser, world):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    _sign_in(page, server)
    page.goto(f"{server}/search?q=siren&events=1&limit=6")
    cards = page.locator("li.hit")
    cards.first.wait_for()
    card = cards.filter(has_text="windows").first
    segment = int(card.get_attribute("data-segment") or 0)
    start = float(card.locator("input[name=start_s]").get_attribute("value") or 0)
    end = float(card.locator("input[name=end_s]").get_attribute("value") or 0)
    assert card.locator(".verdict-for").text_content() == "Siren?"  # the class, not "siren"
    card.locator("button.no").click()
    page.wait_for_function(
        "(g) => document.querySelector(`li.hit[data-segment='${g}'] .saved`).textContent"
        " === 'no saved'",
        arg=segment,
    )
    page.reload()
    card = page.locator(f"li.hit[data-segment='{segment}']")
    assert "judged-no" in (card.get_attribute("class") or "")
    assert card.locator("button.no").get_attribute("aria-pressed") == "true"
    shown = card.locator("ul.verdicts li").first.text_content() or ""
    assert shown.startswith("no Siren · " + REVIEWER)
    # changed after the reload: one verdict, the new one
    card.locator("button.yes").click()
    page.wait_for_function(
        "(g) => document.querySelector(`li.hit[data-segment='${g}'] .saved`).textContent"
        " === 'yes saved'",
        arg=segment,
    )
    rows = _rows(
        world,
        "SELECT a.start_s, a.end_s, a.label, a.verdict, r.duration_s FROM annotations a "
        "JOIN recordings r ON r.id = a.recording_id WHERE a.segment_id = :g AND a.author = :a",
        g=segment,
        a=REVIEWER,
    )
    assert len(rows) == 1
    s, e, label, verdict, duration = rows[0]
    assert (s, e, label, verdict) == (start, min(end, duration), "Siren", "yes")
    assert e - s > 3.0  # the event's span, not its first window's
    page.goto(f"{server}/search?q=siren&events=1&limit=6&unreviewed=1")
    page.locator("li.hit").first.wait_for()
    assert page.locator(f"li.hit[data-segment='{segment}']").count() == 0
    page.goto(f"{server}/search?q=siren&events=1&limit=6")
    page.wait_for_function(
        "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=60000
    )
    _shot(page, "review-verdicts")
    context.close()


def test_the_queue_fits_a_phone(server, browser):
    from .test_browser import PHONE, _fits

    phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    page = phone.new_page()
    page.goto(f"{server}/review?classifier_label=sirens|siren&strategy=top&n=5")
    page.wait_for_function(
        "(() => { const i = document.getElementById('clip-image');"
        " return i.complete && i.naturalWidth > 0; })()",
        timeout=30000,
    )
    assert _fits(page), f"/review overflows a {PHONE['width']} px screen"
    _shot(page, "review-phone")
    phone.close()
