"""The call-density page in a real browser (Chromium via Playwright, as tests/test_browser.py,
whose server and reserve this module reuses): a reviewer draws a sample of the concept
siren, judges its windows with the yes / no buttons, and reads the density per site in the
table and a plot per site; the page fits a phone. ``SOUNDSCAPE_WEB_SCREENSHOTS=docs/img``
saves docs/img/web-density.png."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from soundscape.db import make_engine

from .test_browser import PHONE, _fits, _shot, _sign_in, browser, server, world  # noqa: F401

pytestmark = pytest.mark.slow


def test_draw_judge_and_read_call_density(server, browser, world):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    _sign_in(page, server)
    page.click("header nav a[href='/density']")
    page.wait_for_url(f"{server}/density")
    assert "No sample yet" in page.inner_text("main")
    page.fill("#density-draw input[name=name]", "sirens")
    page.select_option("#density-draw select[name=what]", "concept:siren")
    page.fill("#density-draw input[name=per_bin]", "2")
    page.click("#density-draw button[type=submit]")
    page.wait_for_url(f"{server}/density?sample=sirens")
    rows = page.locator("#density-table tbody tr")
    assert rows.count() == 2  # both sites
    assert page.locator("figure.density-plot").count() == 2
    cards = page.locator("li.hit")
    n = cards.count()
    assert n > 0
    for k in range(n):  # yes on the first, no on the others, without a reload
        card = cards.nth(k)
        card.locator("button.yes" if k == 0 else "button.no").click()
        page.wait_for_function(
            f"document.querySelectorAll('li.hit .saved')[{k}].textContent.endsWith('saved')",
            timeout=15000,
        )
    page.reload()
    text = page.inner_text("#density-table")
    assert "%" in text
    judged = page.evaluate(
        "[...document.querySelectorAll('#density-table tbody tr')]"
        ".map(r => parseInt(r.cells[3].textContent))"
    )
    assert sum(judged) == n
    page.wait_for_load_state("networkidle")
    _shot(page, "density")
    engine = make_engine(world)
    with engine.connect() as conn:
        verdicts = conn.execute(
            sa.text("SELECT verdict, count(*) FROM annotations WHERE label = 'siren' GROUP BY 1")
        ).all()
    engine.dispose()
    assert dict(verdicts)["yes"] >= 1 and dict(verdicts)["no"] >= n - 1
    context.close()

    phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    page = phone.new_page()
    page.goto(f"{server}/density?sample=sirens")
    page.wait_for_load_state("networkidle")
    assert _fits(page), "/density overflows a phone's width"
    phone.close()
