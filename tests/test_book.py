"""The rendered book, read in a real browser (headless Chromium through Playwright).

Builds the book with `jupyter-book build . -W --keep-going` (zero warnings), serves
`_build/html` on 127.0.0.1 and opens every page of _toc.yml as a reader would, on a desktop
(1366 px) and on a phone (390 px), with every request that would leave 127.0.0.1 blocked and
recorded. Each check below is its own test, parametrised by page, and its message lists every
offender on that page:

- the page renders (title, heading, images load, no error output, Colab link, no JS error);
- no request leaves 127.0.0.1 (fonts, scripts, MathJax: the book serves all it needs);
- MathJax loads from the book's own _static/ and typesets the math;
- at 390 px the menu button opens the navigation and shows every chapter;
- at 390 px nothing scrolls sideways; at 1366 px no code block scrolls sideways;
- every figure in a notebook output has alt text (not a file name) and a caption;
- no page shows test machinery (the text "NBVAL");
- axe-core finds no serious or critical accessibility violation (lesser ones are printed).

Screenshots of a few chapters at both widths go to `_build/screenshots/` (CI keeps them when
it fails). Skips with a reason when Chromium is absent, unless TINYFORMER_REQUIRE_BROWSER=1
(as in .ci/run), which turns the skip into a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, book_config, toc_files

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
PAGES = toc_files()
DESKTOP, PHONE = 1366, 390
HEIGHT = 900
# Chapters photographed at both widths, as <name>-<width>.png.
SCREENSHOTS = {
    "book/part1_decoder/03_self_attention": "ch03",
    "book/part1_decoder/05_training_and_generation": "ch05",
    "book/part3_cross_attention/11_translation": "ch11",
}
SERIOUS = {"serious", "critical"}
# An alt text that is only a file: a path, a file name, or Sphinx's default (the image's URL).
FILE_LIKE_ALT = re.compile(r"[/\\]|\.(png|jpe?g|gif|svg|webp)$|^[0-9a-f]{16,}$", re.I)
TIMEOUT_MS = 60_000  # generous: a loaded CI machine, not the network (nothing leaves 127.0.0.1)

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


# ---- Reading a page ------------------------------------------------------------------------

# Waits until MathJax (if the page loads it) has typeset the page, and the fonts are in.
_SETTLE_JS = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        await MathJax.startup.promise;
    }
    await document.fonts.ready;
    // Opening a <details> starts a fade-in (myst-nb's hidden cells, sphinx-design's dropdowns);
    // axe measured half-faded code as low contrast on a slow machine. Force the style
    // recalculation that starts them, then jump every finite animation to its end.
    document.body.getBoundingClientRect();
    for (const a of document.getAnimations()) {
        if (a.effect && a.effect.getComputedTiming().endTime !== Infinity) a.finish();
    }
}"""

# Every <details> open (exercise solutions, cells hidden behind "Show code"): what they hide
# must fit too.
_OPEN_DETAILS_JS = "() => document.querySelectorAll('details').forEach(d => { d.open = true; })"

# The element farthest past the right edge of the viewport, named so a person can find it.
_WIDEST_JS = """() => {
    const vw = document.documentElement.clientWidth;
    let worst = null, right = vw + 1;
    for (const el of document.body.querySelectorAll('*')) {
        const r = el.getBoundingClientRect();
        if (r.width > 0 && r.right > right) { worst = el; right = r.right; }
    }
    if (!worst) return null;
    // Name the outermost element that sticks out as far as the worst one does.
    let el = worst;
    while (el.parentElement && el.parentElement !== document.body
           && el.parentElement.getBoundingClientRect().right >= right - 1) {
        el = el.parentElement;
    }
    const name = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
        + (el.className && typeof el.className === 'string'
           ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
    return `${name} reaches ${Math.round(right)} px: `
        + JSON.stringify((el.textContent || el.outerHTML).trim().slice(0, 100));
}"""

# Each code block wider than its box: where it is and its first line that does not fit.
_CODE_OVERFLOW_JS = """() => {
    const canvas = document.createElement('canvas').getContext('2d');
    const out = [];
    document.querySelectorAll('div.highlight pre').forEach(pre => {
        if (pre.clientWidth === 0 || pre.scrollWidth <= pre.clientWidth) return;
        const style = getComputedStyle(pre);
        canvas.font = style.font;
        const room = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        const lines = pre.textContent.split('\\n');
        let line = lines.find(l => canvas.measureText(l).width > room + 1);
        if (line === undefined) line = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
        const where = pre.closest('.cell_output') ? 'output'
            : pre.closest('.cell_input') ? 'code cell' : 'code block';
        out.push(`${where}, ${pre.scrollWidth} px in ${pre.clientWidth} px, `
                 + `${line.length} columns: ${JSON.stringify(line)}`);
    });
    return out;
}"""

# Each notebook-output image without real alt text or without a figure caption.
_FIGURES_JS = """() => [...document.querySelectorAll('.cell_output img')].map((img, i) => {
    const alt = (img.getAttribute('alt') || '').trim();
    const figure = img.closest('figure');
    const caption = figure && figure.querySelector('figcaption');
    return {n: i + 1, src: img.getAttribute('src').split('/').pop().slice(0, 16), alt: alt,
            caption: caption ? caption.textContent.trim() : null};
})"""

# Visible links of the primary sidebar (the chapter list), wherever the theme puts it.
_NAV_LINKS_JS = """() => [...document.querySelectorAll(
        '.bd-sidebar-primary a.reference, #pst-primary-sidebar-modal a.reference, nav.bd-docs-nav a.reference')]
    .filter(a => {
        const r = a.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && r.left >= 0 && r.left < window.innerWidth
            && r.top < window.innerHeight * 3 && a.checkVisibility({checkVisibilityCSS: true, checkOpacity: true});
    })
    .map(a => new URL(a.href, location.href).pathname)"""


@dataclass
class Visit:
    """What one page showed at one width."""

    width: int
    status: int | None = None
    outside_requests: list[str] = field(default_factory=list)
    js_errors: list[str] = field(default_factory=list)
    title: str = ""
    headings: list[str] = field(default_factory=list)
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    tracebacks: int = 0
    colab_links: list[str] = field(default_factory=list)
    math_elements: int = 0
    mathjax_containers: int = 0
    mathjax_scripts: list[str] = field(default_factory=list)
    raw_tex: list[str] = field(default_factory=list)
    scroll_width: int = 0
    widest: str | None = None
    code_overflow: list[str] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)
    nbval_text: list[str] = field(default_factory=list)
    axe_violations: list[dict] = field(default_factory=list)
    nav_links_before: list[str] = field(default_factory=list)
    nav_links_after: list[str] = field(default_factory=list)
    nav_error: str | None = None


def _read(browser, site: str, page_file: str, width: int) -> Visit:
    from axe_playwright_python.sync_playwright import Axe

    visit = Visit(width=width)
    page = browser.new_page(viewport={"width": width, "height": HEIGHT})
    page.set_default_timeout(TIMEOUT_MS)

    # Only the book's own server answers; anything else is recorded and refused at once,
    # so a page that needs the internet shows it here instead of waiting for a timeout.
    def route(route):
        url = route.request.url
        if url.startswith(site + "/"):
            route.continue_()
        else:
            visit.outside_requests.append(url)
            route.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda exc: visit.js_errors.append(str(exc)))
    try:
        response = page.goto(f"{site}/{page_file}.html", wait_until="load")
        visit.status = response.status if response else None
        page.evaluate(_SETTLE_JS)

        visit.title = page.title()
        visit.headings = page.locator("main h1").all_inner_texts()
        visit.images = page.locator("main img").count()
        visit.broken_images = page.eval_on_selector_all(
            "main img", "is => is.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        visit.tracebacks = page.locator("main .output.traceback, main .output_error").count()
        visit.colab_links = page.eval_on_selector_all(
            "a[href*='colab.research.google.com']", "as => as.map(a => a.href)"
        )
        visit.math_elements = page.locator("main .math").count()
        visit.mathjax_containers = page.locator("main mjx-container").count()
        visit.mathjax_scripts = page.eval_on_selector_all(
            "script[src*='mathjax' i], script[src*='tex-mml' i]", "ss => ss.map(s => s.src)"
        )
        visit.raw_tex = page.eval_on_selector_all(
            "main .math",
            r"""ms => ms.filter(m => !m.querySelector('mjx-container')
                                   && /\\\(|\\\[|\$/.test(m.textContent))
                       .map(m => m.textContent.trim().slice(0, 60))""",
        )

        name = SCREENSHOTS.get(page_file)
        if name:
            SHOTS.mkdir(parents=True, exist_ok=True)
            try:  # a picture for people, not a check: a slow machine only loses the picture
                page.screenshot(
                    path=str(SHOTS / f"{name}-{width}.png"), full_page=True, timeout=60_000
                )
            except Exception as exc:  # noqa: BLE001
                print(f"screenshot of {page_file} at {width} px failed: {exc}")

        if width == PHONE:
            visit.nav_links_before = page.evaluate(_NAV_LINKS_JS)

        page.evaluate(_OPEN_DETAILS_JS)
        page.evaluate(_SETTLE_JS)
        visit.scroll_width = page.evaluate("document.documentElement.scrollWidth")
        if visit.scroll_width > width + 1:
            visit.widest = page.evaluate(_WIDEST_JS)
        if width == DESKTOP:
            visit.code_overflow = page.evaluate(_CODE_OVERFLOW_JS)
            visit.figures = page.evaluate(_FIGURES_JS)
            text = page.evaluate("document.body.textContent")
            visit.nbval_text = [
                " ".join(text[max(m.start() - 40, 0) : m.end() + 40].split())
                for m in re.finditer("nbval", text, flags=re.I)
            ]

        # Colours do not change with the width, and color-contrast is most of axe's time
        # (every token of every code block): it runs at the desktop width only.
        options = {"resultTypes": ["violations"]}
        if width == PHONE:
            options["rules"] = {"color-contrast": {"enabled": False}}
        visit.axe_violations = Axe().run(page, options=options).response.get("violations", [])

        if width == PHONE:
            # Last, since it opens a modal over the page: the reader's way to the chapters.
            try:
                page.locator("button.primary-toggle:visible").first.click(timeout=5_000)
                page.wait_for_function(f"() => ({_NAV_LINKS_JS})().length > 0", timeout=5_000)
            except Exception as exc:  # noqa: BLE001 - reported by the navigation test
                visit.nav_error = str(exc).splitlines()[0]
            visit.nav_links_after = page.evaluate(_NAV_LINKS_JS)
    finally:
        page.close()
    return visit


@pytest.fixture(scope="module")
def read(site, browser):
    """read(page_file, width) -> Visit, each page read once per width and kept."""
    cache: dict[tuple[str, int], Visit | Exception] = {}

    def get(page_file: str, width: int) -> Visit:
        key = (page_file, width)
        if key not in cache:
            try:
                cache[key] = _read(browser, site, page_file, width)
            except Exception as exc:  # noqa: BLE001 - every check of that page reports it
                cache[key] = exc
        if isinstance(cache[key], Exception):
            raise AssertionError(f"{page_file} at {width} px could not be read: {cache[key]}")
        return cache[key]

    return get


def _is_chapter(page_file: str) -> bool:
    return (ROOT / page_file).with_suffix(".ipynb").exists()


# ---- The checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("page_file", PAGES)
def test_page_renders(read, page_file):
    visit = read(page_file, DESKTOP)
    assert visit.status == 200, f"{page_file}.html did not load: {visit.status}"
    title = book_config()["title"]
    assert title in visit.title, f"{page_file}: page title {visit.title!r} lacks the book's title"
    assert visit.headings and visit.headings[0].strip(), f"{page_file}: no <h1> heading"
    assert not visit.broken_images, f"{page_file}: images that did not load: {visit.broken_images}"
    if _is_chapter(page_file):
        assert visit.images > 0, f"{page_file}: a chapter should show at least one figure"
        assert visit.tracebacks == 0, (
            f"{page_file}: {visit.tracebacks} error output cell(s) in the rendered page"
        )
        repo = book_config()["repository"]
        owner_repo = repo["url"].removeprefix("https://github.com/")
        colab = f"https://colab.research.google.com/github/{owner_repo}/blob/{repo['branch']}/{page_file}.ipynb"
        assert colab in visit.colab_links, (
            f"{page_file}: expected a Colab link to {colab}, found {visit.colab_links}"
        )
    for v in (visit, read(page_file, PHONE)):
        assert not v.js_errors, f"{page_file} at {v.width} px: JavaScript errors: {v.js_errors}"


@pytest.mark.parametrize("page_file", PAGES)
def test_no_request_leaves_localhost(read, page_file):
    outside = sorted({u for w in (DESKTOP, PHONE) for u in read(page_file, w).outside_requests})
    assert not outside, (
        f"{page_file}: the page asked for {len(outside)} URL(s) outside the book "
        f"(a reader offline would miss them): {outside}"
    )


def test_mathjax_is_served_by_the_book_and_typesets(read, site):
    with_math = [p for p in PAGES if read(p, DESKTOP).math_elements]
    assert with_math, "no page has math: the MathJax check would prove nothing"
    problems = []
    for page_file in with_math:
        visit = read(page_file, DESKTOP)
        scripts = visit.mathjax_scripts
        if not scripts or not all(s.startswith(f"{site}/_static/") for s in scripts):
            problems.append(f"{page_file}: MathJax not loaded from the book's _static/: {scripts}")
        cdn = [u for u in visit.outside_requests if "mathjax" in u.lower()]
        if cdn:
            problems.append(f"{page_file}: asked a CDN for MathJax: {cdn}")
        if visit.mathjax_containers == 0:
            problems.append(
                f"{page_file}: {visit.math_elements} math element(s), none typeset (no mjx-container)"
            )
        if visit.raw_tex:
            problems.append(f"{page_file}: math left as raw TeX: {visit.raw_tex[:5]}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page_file", PAGES)
def test_menu_opens_the_navigation_on_a_phone(read, page_file):
    visit = read(page_file, PHONE)
    expected = {f"/{p}.html" for p in PAGES[1:]}  # every chapter and appendix page
    shown = set(visit.nav_links_after)
    missing = sorted(expected - shown)
    assert not missing, (
        f"{page_file} at {PHONE} px: after a click on the menu button the chapter list shows "
        f"{len(shown & expected)} of {len(expected)} pages"
        + (f" ({visit.nav_error})" if visit.nav_error else "")
        + f"; missing: {missing[:5]}{' …' if len(missing) > 5 else ''}"
    )


@pytest.mark.parametrize("page_file", PAGES)
def test_nothing_scrolls_sideways_on_a_phone(read, page_file):
    visit = read(page_file, PHONE)
    assert visit.scroll_width <= PHONE + 1, (
        f"{page_file} at {PHONE} px: the page is {visit.scroll_width} px wide; "
        f"widest: {visit.widest}"
    )


@pytest.mark.parametrize("page_file", PAGES)
def test_code_blocks_fit_the_column_on_a_desktop(read, page_file):
    overflow = read(page_file, DESKTOP).code_overflow
    assert not overflow, (
        f"{page_file} at {DESKTOP} px: {len(overflow)} code block(s) scroll sideways "
        f"(keep code within 88 columns):\n  " + "\n  ".join(overflow)
    )


@pytest.mark.parametrize("page_file", PAGES)
def test_figures_have_alt_text_and_a_caption(read, page_file):
    offenders = []
    for fig in read(page_file, DESKTOP).figures:
        faults = []
        if not fig["alt"]:
            faults.append("no alt text")
        elif FILE_LIKE_ALT.search(fig["alt"]):
            faults.append(f"alt text is a file name ({fig['alt'][:40]!r})")
        if fig["caption"] is None:
            faults.append("not in a <figure> with a <figcaption>")
        elif not fig["caption"]:
            faults.append("empty caption")
        if faults:
            offenders.append(f"output image {fig['n']} ({fig['src']}…): {', '.join(faults)}")
    assert not offenders, (
        f"{page_file}: {len(offenders)} figure(s) lack alt text or a caption (give the cell "
        "myst-nb `figure` metadata with a caption, and an alt text):\n  " + "\n  ".join(offenders)
    )


@pytest.mark.parametrize("page_file", PAGES)
def test_no_test_machinery_shows(read, page_file):
    found = read(page_file, DESKTOP).nbval_text
    assert not found, (
        f"{page_file}: the page shows the text 'NBVAL' {len(found)} time(s) (use the "
        f"nbval-ignore-output cell tag, not a comment): {found[:5]}"
    )


@pytest.mark.parametrize("page_file", PAGES)
def test_no_serious_accessibility_violation(read, page_file):
    serious, minor = [], []
    for width in (DESKTOP, PHONE):
        for v in read(page_file, width).axe_violations:
            targets = [" ".join(map(str, n.get("target", []))) for n in v.get("nodes", [])]
            line = (
                f"[{v.get('impact')}] {v['id']} at {width} px: {v.get('help')} "
                f"({len(targets)} element(s), e.g. {targets[:3]})"
            )
            (serious if v.get("impact") in SERIOUS else minor).append(line)
    if minor:
        print(f"\naxe-core, {page_file} (moderate/minor):\n  " + "\n  ".join(minor))
    assert not serious, (
        f"{page_file}: axe-core finds {len(serious)} serious or critical violation(s):\n  "
        + "\n  ".join(serious)
    )
