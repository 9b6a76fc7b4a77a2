"""The comparison's HTML report: self-contained, escaped, and drawn in real Chromium."""

from __future__ import annotations

import asyncio
import copy
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from polyai_async import RetryPolicy
from polyai_async.load import (
    Comparison,
    Load,
    compare,
    demo_scenario,
    render_comparison_html,
    run_load_async,
    write_comparison_html,
)
from polyai_async.testing import FakePolyAI, Faults
from tests.browser import canvas_pixels, headless_chromium, open_page

if TYPE_CHECKING:
    from playwright.sync_api import Browser

EVIL = "</script><img src=x onerror=alert(1)>"


async def _run(latency: float) -> dict[str, Any]:
    async with FakePolyAI(faults=Faults(latency=latency)) as fake:
        async with fake.client(retry=RetryPolicy(max_attempts=1)) as client:
            result = await run_load_async(
                client, Load.closed(concurrency=8, conversations=16), demo_scenario(turns=2)
            )
    summary: dict[str, Any] = json.loads(json.dumps(result.summary))
    return summary


@pytest.fixture(scope="module")
def runs() -> tuple[dict[str, Any], dict[str, Any]]:
    """A base run against a 5 ms fake and a new one against a 20 ms fake."""
    return asyncio.run(_run(0.005)), asyncio.run(_run(0.02))


def _comparison(runs: tuple[dict[str, Any], dict[str, Any]]) -> Comparison:
    return compare(*runs, rules=["respond.p50>+10%", "respond.p99>+1000%"])


def _data(page: str) -> dict[str, Any]:
    match = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S
    )
    assert match
    data: dict[str, Any] = json.loads(match[1])
    return data


def test_the_page_loads_nothing_and_escapes_every_string(
    runs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """No fetchable reference, a strict CSP, and a hostile setting shows only as text."""
    base, new = runs
    new = copy.deepcopy(new)
    new["settings"] = {**new["settings"], "scenario": EVIL}
    new["scenario"] = EVIL
    clean = render_comparison_html(compare(base, runs[1]))
    assert "default-src 'none'" in html.unescape(clean)
    for pattern in (r"\ssrc\s*=", r"<link\b", r"@import", r"url\(", r"\shref\s*=\s*[\"']?https?:"):
        assert not re.search(pattern, clean, re.IGNORECASE), pattern
    page = render_comparison_html(compare(base, new, rules=["respond.p50>+10%"]))
    assert "<img" not in page
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count("</script>") == 3  # the data, uPlot and report.js: nothing closed early


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the module's browser tests."""
    with headless_chromium() as launched:
        yield launched


def test_the_comparison_renders_in_chromium(
    chromium: Browser, tmp_path: Path, runs: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """Spectra overlaid, series side by side, the failed rule and the real changes marked."""
    path = tmp_path / "compare.html"
    write_comparison_html(_comparison(runs), path)
    with open_page(chromium, path.as_uri()) as visit:
        page = visit.page
        assert visit.problems() == []
        charts = _data(page.content())["charts"]
        ids = [c["id"] for c in charts]
        assert ids[:4] == ["spectrum_create", "spectrum_respond", "spectrum_close",
                           "spectrum_conversation"]  # fmt: skip
        assert {"latency_base", "latency_new", "throughput_base", "throughput_new"} <= set(ids)
        for chart in charts:
            selector = f'[data-chart="{chart["id"]}"]'
            assert page.get_attribute(selector, "data-rendered") == "true", chart["id"]
        # base (grey) and new (red) both drawn on a spectrum
        (canvas,) = canvas_pixels(page, '[data-chart="spectrum_respond"] canvas',
                                  ["#64748b", "#dc2626"])  # fmt: skip
        assert min(canvas["matches"]) > 20
        assert page.get_attribute("[data-verdict]", "data-verdict") == "fail"
        assert page.get_attribute('tr[data-rule="respond.p50>+10%"]', "class") == "fail"
        assert page.get_attribute('tr[data-rule="respond.p99>+1000%"]', "class") == "pass"
        assert page.get_attribute('tr[data-figure="respond_p50_ms"]', "class") == "real"
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
