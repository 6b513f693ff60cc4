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
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
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


def test_webcam_keeps_one_request_in_flight(browser):
    """The page's webcam against a server that holds each answer: while one request is unanswered no second is
    sent (the camera's frames meanwhile are dropped); each answer releases exactly one new request, carrying a
    newer frame. Chromium's fake camera; the server is Playwright's request interception (no model)."""
    from sapiens2.serving.http.app import static_dir

    pending, bodies = [], []

    def handle(route):
        path = route.request.url.split("localhost:9", 1)[1].split("?")[0]
        if path == "/v1/predict":
            bodies.append(route.request.post_data_buffer)
            pending.append(route)  # answered later, by the test
        elif path == "/v1/models":
            route.fulfill(json={"tasks": ["pose"], "device": "cpu", "seg_classes": []})
        else:
            name = "index.html" if path == "/" else path.rsplit("/", 1)[-1]
            route.fulfill(path=str(static_dir() / name))

    def wait_for_requests(page, count):
        for _ in range(400):  # polls until the page has sent them; the bound only stops a hang
            if len(pending) >= count:
                return
            page.wait_for_timeout(25)
        raise AssertionError(f"the page sent {len(pending)} request(s), expected {count}")

    context = browser.new_context(permissions=["camera"])
    try:
        page = context.new_page()
        page.route("http://localhost:9/**", handle)  # localhost: a secure context, where getUserMedia is allowed
        page.goto("http://localhost:9/")
        page.wait_for_function("document.querySelectorAll('input[name=task]').length === 1", timeout=20_000)
        page.click("#camera")
        for answered in range(3):
            wait_for_requests(page, answered + 1)
            page.wait_for_timeout(200)  # the camera goes on meanwhile: the page must not send a second request
            assert len(pending) == answered + 1
            pending[answered].fulfill(json={"image_size": {"height": 480, "width": 640}, "files": {}})
        wait_for_requests(page, 4)
        assert len(set(bodies)) == 4  # every request a new frame (the fake camera's picture moves)
        page.wait_for_function("document.getElementById('rate').textContent.includes('latency')")
        page.click("#camera")  # stop
    finally:
        context.close()
