"""The page of ``sapiens2 serve`` in a real browser: the distribution's headless Chromium driven by Playwright's
Python API against a real uvicorn on 127.0.0.1 (tiny random-weight checkpoints, as in test_serve).

Skipped, saying why, only where Playwright or a Chromium cannot be had (scripts/setup.sh installs Debian's
``chromium`` when it can). ``SAPIENS2_SCREENSHOT=path.png`` also saves the screenshot there (docs/serve.png).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'sapiens2[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from test_serve import ASTRONAUT, checkpoints, running, serve_args  # noqa: E402,F401  (fixture re-used)

CHROMIUM = next((p for p in (os.environ.get("SAPIENS2_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), "/usr/bin/chromium") if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (apt-get install chromium, or set "
                                                         "SAPIENS2_CHROMIUM); scripts/setup.sh installs it as root")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        except Exception as exc:  # e.g. a Chromium too old for this Playwright
            pytest.skip(f"Chromium at {CHROMIUM} does not start under Playwright: {exc}")
        yield browser
        browser.close()


def test_page_draws_pose_and_parts_over_the_photo(checkpoints, browser, tmp_path):  # noqa: F811
    from sapiens2.cli.serve import build_service

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    app, _ = build_service(serve_args(checkpoints))
    try:
        with running(app) as (url, _server):
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            outside = []
            page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith(("data:", "blob:"))
                    else outside.append(r.url))
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.wait_for_function("document.querySelectorAll('input[name=task]').length === 4", timeout=20_000)
            page.set_input_files("#file", str(ASTRONAUT))
            page.wait_for_selector("#view[data-state=done]", timeout=30_000)

            shown = json.loads(page.text_content("#json"))
            people = shown["pose"]["people"]
            assert people and all(len(p["keypoints"]) == 308 for p in people)
            assert shown["image_size"] == {"height": 512, "width": 512}
            # not blank: the canvas holds the photo with the overlay, many distinct colours
            distinct = page.evaluate("""() => {
                const c = document.getElementById('view'), d = c.getContext('2d').getImageData(0, 0, c.width,
                    c.height).data, seen = new Set();
                for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
                return seen.size; }""")
            assert distinct > 100
            assert page.locator("#legend span").count() > 0  # the body-part legend
            assert page.locator("#downloads a").count() >= 8  # answer.json + every file
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("SAPIENS2_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["SAPIENS2_SCREENSHOT"])

            # a phone-sized screen: nothing wider than the screen
            page.set_viewport_size({"width": 390, "height": 844})
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            page.screenshot(path=str(tmp_path / "serve_phone.png"), full_page=True)
            assert not errors, errors
            assert not outside, f"the page fetched from elsewhere: {outside}"
            page.close()
    finally:
        torch.set_num_threads(old)
