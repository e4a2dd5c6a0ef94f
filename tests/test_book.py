"""The rendered book, opened in a real browser (headless Chromium through Playwright).

Builds the book with `jupyter-book build . -W --keep-going` (zero warnings), serves
`_build/html` on 127.0.0.1, and opens every page of _toc.yml. Saves one screenshot per page
under `_build/screenshots/`. Skips with a reason when Chromium is absent, unless
TINYFORMER_REQUIRE_BROWSER=1 (as in .ci/run), which turns the skip into a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, book_config, toc_files

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
PAGES = toc_files()

pytestmark = pytest.mark.browser


def _need_browser():
    if CHROMIUM.exists():
        return
    reason = f"Chromium not found at {CHROMIUM}: install it (apt-get install -y chromium) to run the browser test"
    if os.environ.get("TINYFORMER_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test log readable
        pass


@pytest.fixture(scope="module")
def site():
    """Build the book, then serve _build/html on a free port of 127.0.0.1."""
    _need_browser()
    jb = Path(sys.executable).with_name("jupyter-book")
    build = subprocess.run(
        [str(jb), "build", str(ROOT), "-W", "--keep-going"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert build.returncode == 0, (
        f"`make book` fails:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    )
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        yield chromium
        chromium.close()


@pytest.mark.parametrize("page_file", PAGES)
def test_page_renders(site, browser, page_file):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    # The machine that runs CI has no internet: answer every outside request at once
    # (fonts, MathJax's CDN) instead of waiting for a timeout. Local assets load as usual.
    page.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(site) else route.abort(),
    )
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    response = page.goto(f"{site}/{page_file}.html", wait_until="load")
    assert response is not None and response.ok, (
        f"{page_file}.html did not load: {response and response.status}"
    )
    page.wait_for_load_state("networkidle")

    title = page.title()
    assert book_config()["title"] in title, (
        f"{page_file}: page title {title!r} lacks the book's title"
    )
    headings = page.locator("main h1").all_inner_texts()
    assert headings and headings[0].strip(), f"{page_file}: no <h1> heading in the page"

    is_chapter = (ROOT / page_file).with_suffix(".ipynb").exists()
    if is_chapter:
        images = page.locator("main img")
        n = images.count()
        broken = [
            images.nth(i).get_attribute("src")
            for i in range(n)
            if not images.nth(i).evaluate("i => i.complete && i.naturalWidth > 0")
        ]
        assert not broken, f"{page_file}: images that did not load: {broken}"
        assert n > 0, f"{page_file}: a chapter should show at least one figure"
        tracebacks = page.locator("main .output.traceback, main .output_error").count()
        assert tracebacks == 0, (
            f"{page_file}: {tracebacks} error output cell(s) in the rendered page"
        )
        repo = book_config()["repository"]
        owner_repo = repo["url"].removeprefix("https://github.com/")
        colab = f"https://colab.research.google.com/github/{owner_repo}/blob/{repo['branch']}/{page_file}.ipynb"
        hrefs = page.eval_on_selector_all(
            "a[href*='colab.research.google.com']", "as => as.map(a => a.href)"
        )
        assert colab in hrefs, f"{page_file}: expected a Colab link to {colab}, found {hrefs}"

    assert not errors, f"{page_file}: JavaScript errors: {errors}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / (page_file.replace("/", "__") + ".png")), full_page=True)
    page.close()
