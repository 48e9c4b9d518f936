"""Every page in a real headless Chromium: it loads with no console error and every figure shows.

Needs ``/usr/bin/chromium`` (Debian: ``apt-get install chromium``) and the ``playwright``
package, used only as a driver (no ``playwright install``). Run: ``pytest -m slow tests/report``.
Set ``EXITWISE_SCREENSHOTS=DIR`` to keep a full-page PNG of each page there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright driver is needed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.mark.parametrize(
    "page", ["report", "calibrated", "robustness", "comparison", "risk", "offload"]
)
def test_page_loads_and_shows_every_figure(browser, pages: dict[str, Path], page: str) -> None:  # noqa: ANN001
    tab = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    tab.on("pageerror", lambda err: errors.append(str(err)))
    tab.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
    tab.goto(pages[page].as_uri(), wait_until="load")
    images = tab.evaluate(
        "Array.from(document.images, i => [i.alt, i.complete && i.naturalWidth > 0])"
    )
    assert images and all(shown for _, shown in images), images
    assert len(images) == len(list(pages[page].parent.glob("*.png")))
    # every figure is laid out at the column's width, and the page has no horizontal scroll
    widths = tab.evaluate("Array.from(document.images, i => i.getBoundingClientRect().width)")
    assert min(widths) > 900
    assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # and every table fits the column: none needs its own horizontal scroll bar
    wide = "Array.from(document.querySelectorAll('.scroll'), s => s.scrollWidth - s.clientWidth)"
    assert max(tab.evaluate(wide), default=0) <= 0
    if os.environ.get("EXITWISE_SCREENSHOTS"):
        tab.screenshot(
            path=str(Path(os.environ["EXITWISE_SCREENSHOTS"]) / f"{page}.png"), full_page=True
        )
    tab.close()
    assert errors == []
