"""Drive the machine's headless Chromium (Debian's ``chromium``) from tests, through Playwright.

No browser is downloaded: Playwright launches ``/usr/bin/chromium``. Without it the tests that
need it skip, saying why, unless ``POLYAI_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where a
missing browser fails them.

``open_page`` records what a page did: console errors, uncaught exceptions, dialogs (an
``alert`` an injected script would open) and every request that was not for a ``file:`` or
``data:`` URL (those are aborted, so nothing reaches the network).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
REQUIRE_ENV = "POLYAI_REQUIRE_BROWSER"
LOCAL_SCHEMES = ("file:", "data:")


def require_chromium() -> Path:
    """The Chromium to drive; skips the test without one (fails under POLYAI_REQUIRE_BROWSER=1)."""
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"headless Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires it")
    pytest.skip(reason)


@contextlib.contextmanager
def headless_chromium() -> Iterator[Browser]:
    """Launch the machine's Chromium headless, and close it afterwards."""
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageVisit:
    """A page opened by ``open_page`` and what it did while it was open."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Everything that should not have happened, one line each (empty when all is well)."""
        return [
            *(f"console error: {m}" for m in self.console_errors),
            *(f"uncaught exception: {m}" for m in self.page_errors),
            *(f"dialog opened: {m}" for m in self.dialogs),
            *(f"network request: {u}" for u in self.foreign_requests),
        ]


# One tab per browser, reused from visit to visit: a new tab costs a renderer process (some
# 0.15 s), and each visit is a new document anyway (its own DOM, scripts and timers).
_TABS: dict[int, tuple[Browser, Page]] = {}


def _tab(browser: Browser) -> Page:
    """The browser's reusable tab, opened in a context of its own on first use."""
    cached = _TABS.get(id(browser))
    if cached is not None and cached[0] is browser and not cached[1].is_closed():
        return cached[1]
    page = browser.new_context().new_page()
    _TABS[id(browser)] = (browser, page)
    return page


@contextlib.contextmanager
def open_page(
    browser: Browser, url: str, *, width: int = 1280, height: int = 900
) -> Iterator[PageVisit]:
    """Open ``url`` in a ``width`` x ``height`` px tab and wait until it has loaded.

    The visit records only what this document did: the recorders are attached before it
    loads and removed, and the tab sent to ``about:blank``, when the visit ends.
    """
    page = _tab(browser)
    context = page.context
    page.set_viewport_size({"width": width, "height": height})
    visit = PageVisit(page)

    def route(route: Route) -> None:
        request_url = route.request.url
        if request_url.startswith(LOCAL_SCHEMES):
            route.continue_()
        else:
            visit.foreign_requests.append(request_url)
            route.abort()

    def on_request(request: Any) -> None:
        request_url = request.url
        if not request_url.startswith(LOCAL_SCHEMES) and request_url not in (
            visit.foreign_requests
        ):
            visit.foreign_requests.append(request_url)

    def on_console(message: Any) -> None:
        if message.type == "error":
            visit.console_errors.append(message.text)

    def on_page_error(error: Any) -> None:
        visit.page_errors.append(str(error))

    def on_dialog(dialog: Any) -> None:
        visit.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    listeners: list[tuple[str, Any]] = [
        ("request", on_request),
        ("console", on_console),
        ("pageerror", on_page_error),
        ("dialog", on_dialog),
    ]
    context.route("**/*", route)
    for event, listener in listeners:
        page.on(event, listener)  # type: ignore[call-overload]
    try:
        page.goto(url, wait_until="load")
        yield visit
    finally:
        for event, listener in listeners:
            page.remove_listener(event, listener)
        context.unroute("**/*", route)
        try:
            page.goto("about:blank")  # the document's timers and scripts end with it
        except Exception:  # a crashed tab: the next visit opens a new one
            with contextlib.suppress(Exception):
                context.close()
            _TABS.pop(id(browser), None)


# Counts, for every canvas under ``selector``, its size, the pixels painted at all (alpha > 0)
# and the pixels close to each colour asked for (lines are anti-aliased: a tolerance is needed).
_CANVAS_PIXELS = """([selector, colours]) => {
  const parse = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const wanted = colours.map(parse);
  return Array.from(document.querySelectorAll(selector)).map((canvas) => {
    const { width, height } = canvas;
    const result = { width, height, painted: 0, matches: wanted.map(() => 0) };
    if (!width || !height) return result;
    const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    for (let i = 0; i < pixels.length; i += 4) {
      if (pixels[i + 3] === 0) continue;
      result.painted += 1;
      if (pixels[i + 3] < 200) continue;
      wanted.forEach(([r, g, b], k) => {
        const d = Math.abs(pixels[i] - r) + Math.abs(pixels[i + 1] - g)
          + Math.abs(pixels[i + 2] - b);
        if (d <= 60) result.matches[k] += 1;
      });
    }
    return result;
  });
}"""


def canvas_pixels(page: Page, selector: str, colours: list[str]) -> list[dict[str, Any]]:
    """For each canvas matching ``selector``: width, height, painted pixels, pixels per colour.

    ``colours`` are ``#rrggbb``; ``matches[k]`` counts opaque pixels close to ``colours[k]``.
    """
    result: list[dict[str, Any]] = page.evaluate(_CANVAS_PIXELS, [selector, colours])
    return result


def screenshot(url: str, path: str | Path, *, width: int = 1280, height: int = 900) -> list[str]:
    """Save a full-page PNG of ``url`` as headless Chromium draws it; return its problems."""
    with (
        headless_chromium() as browser,
        open_page(browser, url, width=width, height=height) as visit,
    ):
        visit.page.screenshot(path=str(path), full_page=True)
        return visit.problems()


if __name__ == "__main__":
    # python -m tests.browser REPORT.html OUT.png: how docs/assets/load-report.png is made.
    import sys

    report, out = sys.argv[1:3]
    problems = screenshot(Path(report).resolve().as_uri(), out)
    if problems:
        raise SystemExit("\n".join(problems))
