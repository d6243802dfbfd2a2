"""The built site as a reader sees it, in a real browser (system Chromium + Playwright).

The book is built once (notebooks not executed), served on 127.0.0.1, and every
page of the table of contents is opened in headless Chromium:

- no request leaves 127.0.0.1 (the site must read offline: MathJax and every script
  are served by the site itself);
- no console error, every ``<img>`` loaded;
- every formula rendered by MathJax: no raw ``\\(`` or ``\\[`` left outside code;
- chapter pages: the launch button opens that notebook on Colab; the sidebar
  lists every chapter;
- no serious or critical violation of axe-core's accessibility rules (WCAG 2 A/AA and
  best practices: text alternatives, names, contrast, structure).

A screenshot of each page is saved in ``<site>/_screenshots`` for a person to look
at. ``test_the_checks_catch_what_they_look_for`` breaks a copy of a page in each of
these ways and asserts that the checks say so. Skipped, with the reason, when
Chromium (``apt-get install chromium``) or Playwright is missing.
"""

import functools
import http.server
import re
import shutil
import threading
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
Axe = pytest.importorskip(
    "axe_playwright_python.sync_playwright", reason="pip install axe-playwright-python"
).Axe
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no system Chromium: apt-get install chromium (make test tries)"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            pages += [chapter["file"]] + [s["file"] for s in chapter.get("sections", [])]
    return pages


@pytest.fixture(scope="module")
def site(built_book):
    """The built site on http://127.0.0.1:PORT (a thread of this process)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(built_book))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield built_book, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


RAW_TEX = """() => {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const raw = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        if (node.parentElement.closest('pre, code, script, style, mjx-container')) continue;
        const match = node.textContent.match(/\\\\[\\(\\[][^]{0,40}/);
        if (match) raw.push(match[0]);
    }
    return raw;
}"""


def accessibility_problems(page) -> list[str]:
    """axe-core's serious and critical violations on ``page`` (WCAG 2.x A and AA rules
    and axe's best practices), one line each with the elements concerned."""
    results = Axe().run(page).response
    return [
        f"axe {v['impact']}: {v['id']} ({v['help']}) at "
        + ", ".join(" ".join(node["target"]) for node in v["nodes"][:3])
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def check_page(
    browser, url: str, screenshot: Path | None = None
) -> tuple[list[str], list[str], list[str]]:
    """Open ``url``; return the problems a reader would meet (empty when none), the
    page's links and the sidebar's links."""
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    def route(request_route):
        request_url = request_route.request.url
        if re.match(r"https?://127\.0\.0\.1[:/]", request_url) or request_url.startswith("data:"):
            request_route.continue_()
        else:
            problems.append(f"request to another host: {request_url}")
            request_route.abort()

    page.route("**/*", route)

    def console(message) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(url, wait_until="load")
    has_math = page.evaluate("() => !!document.querySelector('.math')")
    if has_math:
        rendered = page.evaluate(
            "async () => { if (!window.MathJax || !MathJax.startup) return false;"
            " await MathJax.startup.promise; return true; }"
        )
        if not rendered:
            problems.append("MathJax did not load")
        raw = page.evaluate(RAW_TEX)
        if raw:
            problems.append(f"formulas left as raw TeX: {raw[:3]}")
    broken = page.evaluate(
        "() => Array.from(document.images)"
        ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
    )
    problems += [f"image not loaded: {src}" for src in broken]
    # axe fetches the style sheets again, with the site's root as base URL: its 404s are
    # not the reader's
    page.remove_listener("console", console)
    problems += accessibility_problems(page)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=False)
    links = page.eval_on_selector_all("a", "links => links.map(a => a.href)")
    sidebar = page.eval_on_selector_all("nav.bd-links a", "links => links.map(a => a.href)")
    page.close()
    return problems, links, sidebar


@pytest.mark.parametrize("name", _pages())
def test_page_reads_offline_with_math_images_and_links(site, browser, name):
    html, base = site
    shot = html / "_screenshots" / f"{name.replace('/', '_')}.png"
    problems, links, sidebar = check_page(browser, f"{base}/{name}.html", shot)
    assert not problems, f"{name}: " + "; ".join(problems)
    for chapter in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert any(f"notebooks/{chapter.stem}.html" in href for href in sidebar), chapter.stem
    if name.startswith("notebooks/"):
        repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
        colab = "https://colab.research.google.com/github/" + repo.split("github.com/")[1]
        assert f"{colab}/blob/main/{name}.ipynb" in links, f"{name}: no Colab launch link"


def test_the_checks_catch_what_they_look_for(site, browser):
    """A copy of a chapter page broken five ways: a script from a CDN, an image that
    is not there, MathJax removed (formulas stay raw TeX), an image without a text
    alternative and a nameless disclosure toggle (axe-core)."""
    html, base = site
    original = (html / "notebooks" / "02_residual_gradients.html").read_text()
    assert 'class="math' in original  # the chapter has formulas
    broken = re.sub(r"<script[^>]*mathjax[^>]*></script>", "", original)
    broken = broken.replace(
        "</head>", '<script src="https://cdn.jsdelivr.net/npm/x.js"></script></head>', 1
    ).replace(
        "</article>",
        '<img src="missing.png" alt="missing"><img src="../_static/logo.svg">'
        "<details><summary></summary>x</details></article>",
        1,
    )
    (html / "notebooks" / "_broken.html").write_text(broken)
    problems = " ".join(check_page(browser, f"{base}/notebooks/_broken.html")[0])
    assert "request to another host: https://cdn.jsdelivr.net" in problems
    assert "image not loaded" in problems and "missing.png" in problems
    assert "MathJax did not load" in problems
    assert "axe critical: image-alt" in problems  # an image without a text alternative
    assert "axe serious: summary-name" in problems
