"""The page in a real browser: Debian's chromium driven headless by Playwright (never a downloaded browser).

Skips when the browser or Playwright cannot be had. Set CHARRNN_SCREENSHOTS=DIR to save a screenshot of each view.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from .serve_helpers import LiveServer  # noqa: E402
from .test_serve_live import big  # noqa: E402,F401  (the slow model fixture)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("no chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        except Exception as exc:  # a browser that cannot start here is a skip, not a failure
            pytest.skip(f"chromium does not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(big, trained):  # noqa: F811
    s = LiveServer("--checkpoint", trained, "--checkpoint", big)
    yield s
    s.stop()


def shoot(page, name: str) -> None:
    folder = os.environ.get("CHARRNN_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=False)


def test_generate_stream_stop_and_training_view(browser, site, trained):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length === 2")
    page.evaluate("localStorage.clear()")

    # a seeded generation streams exactly what the API gives for the same request
    page.select_option("#model", trained.stem)
    page.fill("#prompt", "The ")
    page.fill("#seed", "7")
    page.fill("#length", "300")
    page.fill("#samples", "2")
    page.click("#go")
    page.wait_for_function("document.body.dataset.state === 'done'", timeout=30_000)
    shown = page.eval_on_selector_all(".sample pre", "els => els.map(e => e.textContent)")
    reply = httpx.post(site.url + "/v1/completions", json={"model": trained.stem, "prompt": "The ", "max_tokens": 300,
                                                           "seed": 7, "n": 2, "temperature": 0.8}, timeout=30).json()
    assert shown == ["The " + c["text"] for c in sorted(reply["choices"], key=lambda c: c["index"])]
    assert "done: 600 characters" in page.text_content("#status")

    # probability colouring marks each character
    page.check("#colour")
    page.fill("#samples", "1")
    page.click("#go")
    page.wait_for_function("document.body.dataset.state === 'done'", timeout=30_000)
    assert page.eval_on_selector_all(".sample pre span[title]", "els => els.length") == 300
    page.uncheck("#colour")

    # Stop cancels on the server: the row is freed
    rows = lambda: site.metric("charrnn_active_rows", 'model="checkpoint_1"')  # noqa: E731
    page.select_option("#model", "checkpoint_1")
    page.fill("#length", "10000")
    page.fill("#seed", "")
    page.click("#go")
    page.wait_for_function("document.querySelector('.sample pre').textContent.length > 30", timeout=30_000)
    assert rows() == 1
    page.click("#stop")
    page.wait_for_function("document.body.dataset.state === 'stopped'", timeout=10_000)
    assert site.wait_for(lambda: rows() == 0, timeout=5), "Stop freed the row on the server"
    assert len(page.text_content(".sample pre")) < 10_000
    page.evaluate("document.documentElement.dataset.theme = 'dark'")
    page.select_option("#model", trained.stem)
    page.fill("#prompt", "The ")
    page.fill("#seed", "3")
    page.fill("#length", "1500")
    page.fill("#samples", "3")
    page.check("#colour")
    page.click("#go")
    page.wait_for_function("document.body.dataset.state === 'done'", timeout=30_000)
    shoot(page, "serve-generate.png")

    # the training view draws the real run beside the served checkpoint
    page.evaluate("document.documentElement.dataset.theme = 'light'")
    page.click("#tab-training")
    run = f"{trained.parent.name}/{trained.stem.rsplit('_', 1)[0]}"
    page.wait_for_function("+(document.querySelector('#chart-loss svg') || {dataset: {}}).dataset.points > 0",
                           timeout=15_000)
    assert run in page.text_content("#run-list")
    for chart in ("loss", "ratio", "lr", "grad", "speed"):
        assert int(page.get_attribute(f"#chart-{chart} svg", "data-points")) > 0, chart
    shoot(page, "serve-training.png")
    assert not errors, errors


@pytest.fixture(scope="module")
def small_site(trained):
    s = LiveServer("--checkpoint", trained)
    yield s
    s.stop()


PHONE = {"width": 390, "height": 844}
OVERFLOW = "document.documentElement.scrollWidth - innerWidth"


def fully_visible(page, selector: str) -> bool:
    """Inside the viewport's width, its text not clipped, and on top at its edges and centre."""
    box = page.locator(selector).bounding_box()
    if box is None or box["width"] == 0 or box["x"] < 0 or box["x"] + box["width"] > PHONE["width"]:
        return False
    return page.eval_on_selector(selector, """el => {
        if (el.scrollWidth > el.clientWidth + 1) return false;
        const r = el.getBoundingClientRect(), x = (r.left + r.right) / 2, y = (r.top + r.bottom) / 2;
        const points = [[r.left + 3, y], [r.right - 3, y], [x, r.top + 3], [x, r.bottom - 3], [x, y]];  // (not the
        // rounded corners: hit testing follows border-radius)
        return points.every(([x, y]) => { const top = document.elementFromPoint(x, y); return top && el.contains(top); });
    }""")


def test_the_page_fits_a_phone(browser, small_site):
    """At 390 px wide nothing is cut off and nothing scrolls sideways, in either view and either theme."""
    page = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(small_site.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length === 1")
    for theme in ("light", "dark"):
        page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
        assert page.evaluate(OVERFLOW) <= 0, theme
        for selector in ("#tab-generate", "#tab-training", "#theme", "#go", "#stop", "#model", "#prompt"):
            assert fully_visible(page, selector), (theme, selector, page.locator(selector).bounding_box())
    page.fill("#prompt", "The ")
    page.fill("#seed", "5")
    page.fill("#length", "400")
    page.fill("#samples", "2")
    page.check("#colour")
    page.click("#go")
    page.wait_for_function("document.body.dataset.state === 'done'", timeout=30_000)
    assert page.evaluate(OVERFLOW) <= 0, "two samples side by side"
    shoot(page, "serve-phone.png")
    page.click("#tab-training")
    page.wait_for_function("+(document.querySelector('#chart-loss svg') || {dataset: {}}).dataset.points > 0",
                           timeout=15_000)
    assert page.evaluate(OVERFLOW) <= 0, "the training view"
    assert all(fully_visible(page, s) for s in ("#tab-generate", "#tab-training", "#theme"))
    assert page.locator("#chart-loss > svg").bounding_box()["width"] <= PHONE["width"]
    shoot(page, "serve-phone-training.png")
    assert not errors, errors
    page.close()
