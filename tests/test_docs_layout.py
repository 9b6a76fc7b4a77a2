"""The built docs site fits a 1280 px wide window in headless Chromium: nothing overflows.

Every page of the site is loaded at 1280 px. No element may stick out of the page; no code
block may need a horizontal scrollbar or run under its copy button; no table may be wider
than the text column. The API reference reads like httpx's: formatted signatures, no empty
attribute headings, values where they matter. The site is ``$POLYAI_DOCS_SITE`` when CI has
built it (``.ci/run``), else built here with ``mkdocs build --strict``.

This test is slow (a site build and a browser), so ``pytest`` leaves it out unless asked:
``pytest -m docs_layout`` (CI runs it after its docs build). It skips, saying why, when the
browser (``$POLYAI_CHROMIUM``, default ``/usr/bin/chromium``) or playwright is missing.
"""

from __future__ import annotations

import functools
import html
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docs_layout

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 1280
CHROMIUM = os.environ.get("POLYAI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# A pixel of slack: browsers round fractional widths.
SLACK = 1

# Runs in the page: every way something can stick out, as one list of problems.
FIND_OVERFLOWS = """
(slack) => {
  const problems = [];
  const name = (el) => {
    const text = (el.innerText || "").trim().split("\\n")[0].slice(0, 60);
    return `${el.tagName.toLowerCase()}${el.className ? "." + el.className : ""} "${text}"`;
  };
  const root = document.documentElement;
  if (root.scrollWidth > window.innerWidth + slack) {
    problems.push(`the page is ${root.scrollWidth} px wide`);
  }
  const content = document.querySelector(".md-content__inner") || document.body;
  const right = content.getBoundingClientRect().right;
  for (const el of content.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    // Material draws code blocks and table wrappers a little into the margin, by design.
    const drawnWide = el.closest("pre, .md-typeset__scrollwrap, .highlight");
    if (box.width > 0 && box.right > right + slack && !drawnWide) {
      problems.push(`${name(el)} reaches ${Math.round(box.right)} px, past the text column`);
    }
  }
  for (const code of content.querySelectorAll("pre > code")) {
    if (code.scrollWidth > code.clientWidth + slack) {
      const widths = `${code.scrollWidth} > ${code.clientWidth} px`;
      problems.push(`code block ${name(code)} needs a scrollbar (${widths})`);
    }
    const button = code.parentElement.querySelector(".md-code__button, .md-clipboard");
    if (button) {
      const b = button.getBoundingClientRect();
      const range = document.createRange();
      range.selectNodeContents(code);
      for (const line of range.getClientRects()) {
        const overlaps = line.right > b.left + slack && line.left < b.right &&
          line.bottom > b.top + slack && line.top < b.bottom - slack;
        if (line.width > 0 && overlaps) {
          problems.push(`the copy button covers the text of ${name(code)}`);
          break;
        }
      }
    }
  }
  for (const wrapper of content.querySelectorAll(".md-typeset__table")) {
    const table = wrapper.querySelector("table");
    const inner = wrapper.closest(".md-typeset__scrollwrap") || wrapper;
    const width = table ? Math.round(table.getBoundingClientRect().width) : 0;
    if (width > inner.clientWidth + slack) {
      problems.push(`table ${name(table)} is ${width} px wide in ${inner.clientWidth} px`);
    }
  }
  return problems;
}
"""


def _site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("POLYAI_DOCS_SITE")
    if given:
        return Path(given)
    if shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists():
        pytest.skip("mkdocs is not installed: install polyai-async[docs]")
    site = tmp_path_factory.mktemp("site")
    subprocess.run(  # noqa: S603 - our interpreter running mkdocs
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=True,
        timeout=600,
    )
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built site's directory."""
    return _site(tmp_path_factory)


@pytest.fixture(scope="module")
def site_url(site: Path) -> Iterator[tuple[str, list[str]]]:
    """The built site served on 127.0.0.1, and the paths of its pages."""
    pages = sorted(
        str(page.relative_to(site).parent).replace(".", "").strip("/") + "/"
        for page in site.rglob("index.html")
    )
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", pages
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def browser_page() -> Iterator[Any]:
    """A headless Chromium tab, 1280 px wide."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="install polyai-async[test]")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (set POLYAI_CHROMIUM, or apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": WIDTH, "height": 900})
        finally:
            browser.close()


def test_every_page_fits_1280_px(
    site_url: tuple[str, list[str]], browser_page: Any, tmp_path: Path
) -> None:
    """No page of the site overflows at 1280 px: not the page, a code block, nor a table."""
    base, pages = site_url
    assert "" in [p.strip("/") for p in pages]  # the home page is among them
    assert len(pages) >= 10
    found: dict[str, list[str]] = {}
    for path in pages:
        browser_page.goto(f"{base}/{path}", wait_until="load")
        problems = browser_page.evaluate(FIND_OVERFLOWS, SLACK)
        if problems:
            found[path or "/"] = problems
            shot = tmp_path / ((path.strip("/").replace("/", "_") or "home") + ".png")
            browser_page.screenshot(path=str(shot), full_page=True)
    report = "\n".join(f"{page}: {p}" for page, problems in found.items() for p in problems)
    assert not found, f"overflows at {WIDTH} px (screenshots in {tmp_path}):\n{report}"


def test_the_check_finds_an_overflow(browser_page: Any) -> None:
    """The check itself sees a code line too long, a table too wide and a covered copy button."""
    browser_page.set_content(
        """<html><body style="margin:0"><div class="md-content__inner" style="width:600px">
        <pre style="position:relative"><code style="display:block;overflow:auto">"""
        + "x" * 400
        + """</code><button class="md-code__button"
            style="position:absolute;top:0;right:0;width:40px;height:20px"></button></pre>
        <div class="md-typeset__table" style="overflow:auto"><table style="width:900px">
        <tr><td>wide</td></tr></table></div></div></body></html>"""
    )
    problems = browser_page.evaluate(FIND_OVERFLOWS, SLACK)
    assert any("needs a scrollbar" in p for p in problems), problems
    assert any("copy button covers" in p for p in problems), problems
    assert any("px wide in" in p for p in problems), problems


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def _reference(site: Path, page: str) -> str:
    return (site / "reference" / page / "index.html").read_text()


def test_reference_has_no_empty_attribute_headings(site: Path) -> None:
    """An attribute gets a heading of its own only with something to say: a docstring, or
    (an enum member) its value; fields are listed in their class's Attributes section."""
    for page in ("client", "settings", "models", "errors", "testing"):
        blocks = re.findall(
            r'<div class="doc doc-object doc-attribute">(.*?)</h\d>(.*?)<div class="doc doc-',
            _reference(site, page) + '<div class="doc doc-',
            re.S,
        )
        for heading, body in blocks:
            assert _text(body), f"{page}: empty attribute heading {_text(heading)!r}"
        assert "instance-attribute" not in _reference(site, page)


def test_reference_shows_enum_values_and_constant_defaults(site: Path) -> None:
    """Channel.WEBCHAT is shown with its value, and max_response_bytes's default as a number."""
    models = _text(_reference(site, "models"))
    assert "WEBCHAT = 'webchat'" in models
    client = _text(_reference(site, "client"))
    assert "max_response_bytes: int = 1048576" in client
    assert "DEFAULT_MAX_RESPONSE_BYTES" not in client


def test_reference_signatures_are_formatted_one_parameter_a_line(site: Path) -> None:
    """A long signature is laid out by a formatter (ruff, in the docs extra), not one line."""
    page = _reference(site, "client")
    signature = re.search(r'<div class="doc-signature highlight"><pre.*?</pre>', page, re.S)
    assert signature is not None
    lines = [line for line in _text_lines(signature.group(0)) if line.strip()]
    assert lines[0].startswith("PolyAIClient(")
    assert any(line.strip().startswith("api_key:") for line in lines[1:])
    assert len(lines) > 10


def _text_lines(fragment: str) -> list[str]:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).splitlines()
