"""The HTML report of a load run: self-contained, escaped, redacted, and drawn in real Chromium."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from polyai_async import ConfigurationError
from polyai_async.load import SCHEMA, _html, _page, render_html, write_html
from tests import browser as browser_helper
from tests.browser import canvas_pixels, headless_chromium, open_page

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

FIXTURE = Path(__file__).parent.parent / "data" / "load_summary.json"
EVIL = "</script><img src=x onerror=alert(1)>"
CHART_IDS = ("latency", "throughput", "errors", "in_flight", "spectrum", "conversation_spectrum")


def sample() -> dict[str, Any]:
    """The fixture summary: a real run of benchmarks/report_sample.py, every section filled."""
    summary: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return summary


def chart_data(page_html: str) -> dict[str, Any]:
    """The JSON the page embeds for its charts."""
    match = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', page_html, re.S
    )
    assert match, "the report embeds no chart data"
    data: dict[str, Any] = json.loads(match[1])
    return data


def malicious() -> dict[str, Any]:
    """The fixture with a script-closing, handler-carrying string in every text field."""
    summary = sample()
    summary["settings"] = {**summary["settings"], "scenario": EVIL, EVIL: "key-named-evil"}
    summary["warnings"] = [EVIL]
    summary["thresholds"][0]["expression"] = EVIL
    summary["personas"][EVIL] = summary["personas"].pop("browser")
    summary["personas"][EVIL]["example_failure"] = EVIL
    summary["errors_by_class"][next(iter(summary["errors_by_class"]))]["example"] = EVIL
    summary["handoffs_by_destination"][EVIL] = 2
    summary["load_model"] = EVIL
    summary["schema"] = EVIL
    return summary


# --- the page, without a browser ----------------------------------------------------------------


def test_report_loads_nothing_from_elsewhere() -> None:
    """The page has no src, link, import or url() that could fetch: everything is inline."""
    page = render_html(sample())
    assert page.startswith("<!DOCTYPE html>")
    for pattern in (r"\ssrc\s*=", r"<link\b", r"@import", r"url\(", r"\shref\s*=\s*[\"']?https?:"):
        assert not re.search(pattern, page, re.IGNORECASE), pattern
    assert "default-src 'none'" in page
    assert "uPlot" in page  # the chart library is inlined, not referenced


def test_every_string_is_escaped_in_the_markup() -> None:
    """A string that would close the script and inject a handler appears only escaped."""
    page = render_html(malicious())
    assert "<img" not in page
    assert "onerror=alert(1)>" not in page
    escaped = "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    # settings value and key, warning, threshold, persona, its example, error example,
    # handoff destination, load model, schema
    assert page.count(escaped) >= 10


def test_chart_data_cannot_close_its_script_element() -> None:
    """The embedded JSON holds no '<' at all, and parses back to the chart figures."""
    summary = sample()
    page = render_html(summary)
    data_text = page.split('id="report-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data_text
    charts = {c["id"]: c for c in chart_data(page)["charts"]}
    assert tuple(charts) == CHART_IDS
    in_flight = charts["in_flight"]
    assert in_flight["x"] == [row["t"] for row in summary["timeseries"]]
    assert in_flight["series"][0]["values"] == [row["in_flight"] for row in summary["timeseries"]]


def test_embedded_json_escapes_what_could_end_the_script() -> None:
    """The data script's JSON writes <, > and & as \\u escapes and still parses to the same data."""
    data = {"label": EVIL, "more": ["<!--", "a & b", "</SCRIPT >"]}
    text = _page.script_json(data)
    assert not set("<>&") & set(text)
    assert json.loads(text) == data


def test_spectrum_uses_a_log_percentile_axis() -> None:
    """Percentiles map to -log10(1 - p/100): 90 % at 1, 99 % at 2, 99.9 % at 3."""
    summary = {
        "latency_spectrum": {
            "create": [
                {"percentile": 0.0, "ms": 1.0},
                {"percentile": 90.0, "ms": 2.0},
                {"percentile": 99.0, "ms": 3.0},
            ],
            "respond": [{"percentile": 99.9, "ms": 9.0}, {"percentile": 100.0, "ms": 12.0}],
        }
    }
    chart = next(c for c in chart_data(render_html(summary))["charts"] if c["id"] == "spectrum")
    assert chart["x"] == pytest.approx([0.0, 1.0, 2.0, 3.0, 6.0])
    create, respond = chart["series"]
    assert create["values"] == [1.0, 2.0, 3.0, None, None]
    assert respond["values"] == [None, None, None, 9.0, 12.0]
    assert respond["spanGaps"] is True


def test_timeseries_is_drawn_in_time_order_with_gaps_for_nulls() -> None:
    """Rows are sorted by t; a null or NaN figure is a gap (null), never NaN in the JSON."""
    rows = [
        {"t": 2, "requests": 5, "respond_p50_ms": float("nan")},
        {"t": 0, "requests": 3, "respond_p50_ms": 10.0},
        {"t": 1, "requests": None, "respond_p50_ms": None},
    ]
    page = render_html({"timeseries": rows})
    assert "NaN" not in chart_data(page).__repr__()
    charts = {c["id"]: c for c in chart_data(page)["charts"]}
    assert charts["throughput"]["x"] == [0, 1, 2]
    assert charts["throughput"]["series"][0]["values"] == [3, None, 5]
    assert [s["label"] for s in charts["latency"]["series"]] == ["respond p50"]
    assert charts["latency"]["series"][0]["values"] == [10.0, None, None]
    # nothing to draw: no series, and the page says so instead of an empty chart
    assert charts["errors"]["series"] == []
    assert page.count("No data points were recorded.") == 4  # errors, in flight, two spectra


def test_credentials_in_settings_are_redacted() -> None:
    """Credential-like names, URL passwords and bearer tokens never reach the page."""
    summary = sample()
    summary["settings"] = {
        "api_key": "sk-live-abc123",
        "POLYAI_TOKEN": "tok-zzz999",
        "proxy_password": "hunter2",
        "client": {"auth": {"user": "u", "pass": "nested-secret"}, "region": "eu-west-1"},
        "proxy": "http://alice:s3cr3t-pw@proxy.internal:3128",
        "header": "Authorization: Bearer eyJhbGciOi.payload.sig",
        "rate": 20,
        "region_hint": "us-1",
    }
    summary["base_url"] = "https://bob:pa55word@api.example.invalid"
    page = render_html(summary)
    for secret in (
        "sk-live-abc123",
        "tok-zzz999",
        "hunter2",
        "nested-secret",
        "s3cr3t-pw",
        "eyJhbGciOi",
        "pa55word",
    ):
        assert secret not in page, secret
    assert page.count("***") >= 7
    assert "eu-west-1" in page
    assert "us-1" in page
    assert "http://***@proxy.internal:3128" in page


@pytest.mark.parametrize(
    ("summary", "message"),
    [
        ([1, 2], "summary must be a mapping"),
        ({"timeseries": "soon"}, "summary['timeseries'] must be a list, got str"),
        ({"timeseries": [{"t": 0}, 7]}, "summary['timeseries'][1] must be an object"),
        ({"timeseries": [{"t": None}]}, "summary['timeseries'][0]['t'] must be the second"),
        ({"timeseries": [{"t": 0, "errors": "3"}]}, "summary['timeseries'][0]['errors'] must be"),
        (
            {"latency_spectrum": {"create": [{"percentile": 120, "ms": 1}]}},
            "summary['latency_spectrum']['create'][0]['percentile'] must be a number from 0 to 100",
        ),
        ({"thresholds": {"a": 1}}, "summary['thresholds'] must be a list, got dict"),
        ({"settings": ["rate=1"]}, "summary['settings'] must be an object"),
    ],
)
def test_a_summary_of_the_wrong_shape_names_the_field(summary: Any, message: str) -> None:
    """A section of the wrong type raises ConfigurationError naming where it is."""
    with pytest.raises(ConfigurationError) as caught:
        render_html(summary)
    assert message in str(caught.value)


def test_a_load_result_is_refused_with_a_hint() -> None:
    """Passing the LoadResult instead of its summary says to pass .summary."""
    result = SimpleNamespace(summary=sample())
    with pytest.raises(ConfigurationError, match=r"got SimpleNamespace: pass its \.summary"):
        render_html(result)  # type: ignore[arg-type]


def test_write_html_writes_the_rendered_page(tmp_path: Path) -> None:
    """write_html writes exactly render_html's page, in UTF-8."""
    summary = sample()
    summary["settings"]["scenario"] = "café, ünïcode, 東京"
    path = tmp_path / "report.html"
    write_html(summary, path)
    assert path.read_text(encoding="utf-8") == render_html(summary)
    assert "café, ünïcode, 東京" in path.read_text(encoding="utf-8")


# --- the page in headless Chromium --------------------------------------------------------------


def test_missing_chromium_skips_or_fails_as_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without Chromium the browser tests skip, unless POLYAI_REQUIRE_BROWSER=1 makes it fail."""
    monkeypatch.setattr(browser_helper, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("POLYAI_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        browser_helper.require_chromium()
    monkeypatch.setenv("POLYAI_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="POLYAI_REQUIRE_BROWSER=1 requires it"):
        browser_helper.require_chromium()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for the module's browser tests."""
    with headless_chromium() as launched:
        yield launched


def open_report(
    chromium: Browser, tmp_path: Path, summary: dict[str, Any], width: int = 1280
) -> Any:
    """Write the summary's report and open it from file://."""
    path = tmp_path / "report.html"
    write_html(summary, path)
    return open_page(chromium, path.as_uri(), width=width)


def assert_charts_drawn(page: Page, charts: list[dict[str, Any]]) -> None:
    """Each chart has a canvas of non-zero size showing the colour of each of its series."""
    for chart in charts:
        figure = f'[data-chart="{chart["id"]}"]'
        assert page.get_attribute(figure, "data-rendered") == "true", chart["id"]
        colours = [s["color"] for s in chart["series"]]
        canvases = canvas_pixels(page, f"{figure} canvas", colours)
        assert len(canvases) == 1, chart["id"]
        (canvas,) = canvases
        assert canvas["width"] > 200, chart["id"]
        assert canvas["height"] > 100, chart["id"]
        assert canvas["painted"] > 1000, chart["id"]
        for series, matched in zip(chart["series"], canvas["matches"], strict=True):
            assert matched > 20, f"{chart['id']}: no pixel of {series['label']} drawn"


def test_every_chart_renders_in_chromium(chromium: Browser, tmp_path: Path) -> None:
    """The fixture's report opens offline with no error and draws all six charts."""
    summary = sample()
    with open_report(chromium, tmp_path, summary) as visit:
        assert visit.problems() == []
        charts = chart_data(visit.page.content())["charts"]
        assert [c["id"] for c in charts] == list(CHART_IDS)
        assert all(c["series"] for c in charts)
        assert_charts_drawn(visit.page, charts)
        # fits a 1280 px window: nothing scrolls sideways
        assert visit.page.evaluate("document.documentElement.scrollWidth") <= 1280


def test_the_page_reflows_for_a_narrow_window(chromium: Browser, tmp_path: Path) -> None:
    """Narrowed from 1280 to 800 px, the charts resize into one column and nothing overflows."""
    canvas_width = (
        "document.querySelector('[data-chart=latency] canvas').getBoundingClientRect().width"
    )
    with open_report(chromium, tmp_path, sample()) as visit:
        page = visit.page
        wide = page.evaluate(canvas_width)
        assert wide < 640  # two columns
        page.set_viewport_size({"width": 800, "height": 900})
        # Polled from here: wait_for_function evaluates strings in the page, which its CSP
        # forbids. 30 s for a busy machine; the page redraws 0.1 s after a resize.
        deadline = time.monotonic() + 30
        while page.evaluate(canvas_width) <= 640 and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert 640 < page.evaluate(canvas_width) <= 800
        assert page.evaluate("document.documentElement.scrollWidth") <= 800
        assert visit.problems() == []


def test_thresholds_table_shows_pass_and_fail(chromium: Browser, tmp_path: Path) -> None:
    """Each threshold row shows its expression, measured value and a coloured pass or fail."""
    summary = sample()
    with open_report(chromium, tmp_path, summary) as visit:
        rows = visit.page.eval_on_selector_all(
            "table.thresholds tbody tr",
            """rows => rows.map(r => ({
                cells: Array.from(r.cells).map(c => c.innerText.trim()),
                background: getComputedStyle(r.querySelector('.badge')).backgroundColor,
            }))""",
        )
    assert len(rows) == len(summary["thresholds"])
    colours = {"PASS": "rgb(220, 252, 231)", "FAIL": "rgb(254, 226, 226)"}
    for row, threshold in zip(rows, summary["thresholds"], strict=True):
        expression, _measured, result = row["cells"]
        assert expression == threshold["expression"]
        assert result == ("PASS" if threshold["passed"] else "FAIL")
        assert row["background"] == colours[result]
    measured = {
        t["expression"]: row["cells"][1] for t, row in zip(summary["thresholds"], rows, strict=True)
    }
    values = {t["expression"]: t["value"] for t in summary["thresholds"]}
    # respond.p99 is a latency, and so is a figure in ms: shown in ms, rounded.
    for expression in ("respond.p99<1500ms", "generator_lag_p99_ms<50"):
        number, unit = measured[expression].split(" ")
        assert unit == "ms"
        assert float(number) == pytest.approx(values[expression], rel=0.01, abs=0.01)
    # expectations_failed is a count
    assert measured["expectations_failed==0"] == f"{int(values['expectations_failed==0']):,}"
    assert {r["cells"][2] for r in rows} == {"PASS", "FAIL"}


def test_malicious_strings_show_as_text_in_chromium(chromium: Browser, tmp_path: Path) -> None:
    """A '</script><img onerror>' string is shown as text: no image, no alert, charts intact."""
    summary = malicious()
    with open_report(chromium, tmp_path, summary) as visit:
        page = visit.page
        assert visit.problems() == []
        assert page.evaluate("document.images.length") == 0
        settings = dict(
            page.eval_on_selector_all(
                "table.settings tr",
                "rows => rows.map(r => [r.cells[0] ? r.querySelector('th').innerText : '', "
                "r.cells[1].innerText])",
            )
        )
        assert settings["scenario"] == EVIL
        assert settings[EVIL] == "key-named-evil"
        assert page.inner_text(".warnings li") == EVIL
        assert_charts_drawn(page, chart_data(page.content())["charts"])


@pytest.mark.parametrize(
    "summary",
    [
        pytest.param({}, id="empty"),
        pytest.param(
            {
                "timeseries": [],
                "latency_spectrum": {"create": []},
                "thresholds": [],
                "settings": {},
                "personas": {},
            },
            id="empty-sections",
        ),
        pytest.param(
            {"timeseries": [{"t": 0, "requests": None, "create_p50_ms": None}]},
            id="all-null",
        ),
    ],
)
def test_a_summary_without_data_renders_without_errors(
    chromium: Browser, tmp_path: Path, summary: dict[str, Any]
) -> None:
    """With nothing to draw, every chart says so and the page has no error."""
    with open_report(chromium, tmp_path, summary) as visit:
        assert visit.problems() == []
        assert visit.page.locator("canvas").count() == 0
        assert visit.page.locator("p.empty", has_text="No data points").count() == len(CHART_IDS)
        assert visit.page.inner_text("[data-verdict]") == "NO VERDICT"


def test_a_single_second_and_sparse_series_render(chromium: Browser, tmp_path: Path) -> None:
    """One second of data, with an endpoint missing, still draws without error."""
    summary = copy.deepcopy(sample())
    summary["timeseries"] = [
        {
            "t": 0,
            "requests": 4,
            "conversations_started": 2,
            "errors": 0,
            "in_flight": 2,
            "create_p50_ms": 40.0,
            "create_p99_ms": 80.0,
        }
    ]
    with open_report(chromium, tmp_path, summary) as visit:
        assert visit.problems() == []
        charts = chart_data(visit.page.content())["charts"]
        latency = next(c for c in charts if c["id"] == "latency")
        assert [s["label"] for s in latency["series"]] == ["create p50", "create p99"]
        for chart in charts:
            assert visit.page.get_attribute(f'[data-chart="{chart["id"]}"]', "data-rendered") == (
                "true"
            )


def test_the_harness_catches_network_requests_and_console_errors(
    chromium: Browser, tmp_path: Path
) -> None:
    """open_page records (and aborts) a request off file:, and records console errors."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><img src="http://127.0.0.1:9/pixel.png">'
        '<script>console.error("boom")</script>',
        encoding="utf-8",
    )
    with open_page(chromium, page.as_uri()) as visit:
        pass
    assert "http://127.0.0.1:9/pixel.png" in visit.foreign_requests
    assert "boom" in visit.console_errors
    assert visit.problems()


def test_turn_and_handoff_reason_tables() -> None:
    """Respond latency by turn (numbered from 1), turns per conversation, handoffs by reason."""
    summary = sample()
    page = render_html(summary)
    by_turn = page.split('<table class="by-turn">', 1)[1].split("</table>", 1)[0]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", by_turn)
    rows = summary["respond_by_turn"]
    assert len(cells) == 4 * len(rows) >= 8
    for row, shown in zip(rows, (cells[i : i + 4] for i in range(0, len(cells), 4)), strict=True):
        assert shown[:2] == [str(row["turn"] + 1), f"{row['count']:,}"]  # numbered from 1
        assert [float(c.split(" ")[0]) for c in shown[2:]] == [
            pytest.approx(row["p50_ms"], rel=0.01),
            pytest.approx(row["p99_ms"], rel=0.01),
        ]
    (reason,) = summary["handoffs_by_reason"]
    assert reason in page
    turns = page.split("<h3>Turns per conversation</h3>", 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<tr><td>(\d+)</td>", turns) == sorted(summary["turns_by_count"], key=int)


def run_bench(tmp_path: Path, *args: str) -> tuple[int, Path, Path]:
    """A short real run of ``polyai-async bench`` on the embedded fake, with --json and --html."""
    json_path, html_path = tmp_path / "run.json", tmp_path / "run.html"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYAI_")}
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable, "-m", "polyai_async.cli", "bench", "--quiet",
            "--json", str(json_path), "--html", str(html_path), *args,
        ],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert json_path.exists(), done.stdout + done.stderr
    return done.returncode, json_path, html_path


@pytest.mark.e2e
def test_a_real_bench_run_renders_in_chromium(chromium: Browser, tmp_path: Path) -> None:
    """20 conversations on the embedded fake: the CLI's report is the JSON's, and draws fully."""
    status, json_path, html_path = run_bench(
        tmp_path,
        "--conversations", "20", "--concurrency", "4", "--turns", "3",
        "--latency", "0.05", "--latency-jitter", "0.05", "--error-rate", "0.05", "--seed", "3",
        "--max-error-rate", "1",
        "--threshold", "respond.p99<10s", "--threshold", "create.p50<0.001ms",
    )  # fmt: skip
    assert status == 99  # the second threshold cannot hold
    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert summary["schema"] == SCHEMA
    assert summary["conversations_started"] == 20
    assert html_path.read_text(encoding="utf-8") == render_html(summary)
    with open_page(chromium, html_path.as_uri()) as visit:
        assert visit.problems() == []
        charts = chart_data(visit.page.content())["charts"]
        assert [c["id"] for c in charts] == list(CHART_IDS)
        assert all(c["series"] for c in charts), [c["id"] for c in charts if not c["series"]]
        assert_charts_drawn(visit.page, charts)
        results = visit.page.eval_on_selector_all(
            "table.thresholds .badge", "badges => badges.map(b => b.innerText)"
        )
        assert results == ["PASS", "FAIL"]
        assert visit.page.inner_text("[data-verdict]") == "FAILED"


def test_a_threshold_not_measured_shows_why() -> None:
    """A threshold that failed on a null figure shows its reason in the Measured column."""
    summary = sample()
    summary["thresholds"] = [
        {"expression": "server_requests>0", "value": None, "passed": False,
         "reason": "not measured in this run"},
    ]  # fmt: skip
    page = render_html(summary)
    row = re.search(r'<table class="thresholds">.*?</table>', page, re.S)
    assert row, "no thresholds table"
    assert '<span class="reason">not measured in this run</span>' in row[0]
    assert "fail" in row[0]


def test_the_error_rate_tile_shows_the_summarys_figure() -> None:
    """The tile prints conversation_error_rate as is, and its tooltip says what it divides."""
    summary = sample()
    # Not failed / started nor failed / (completed + failed): only the summary's own figure.
    summary.update(
        conversations_started=1000, conversations_completed=900, conversations_failed=50,
        conversation_error_rate=0.0123,
    )  # fmt: skip
    page = render_html(summary)
    tile = re.search(r'<div class="tile"([^>]*)><div class="tile-value">([^<]*)</div>'
                     r'<div class="tile-label">Error rate</div>', page)  # fmt: skip
    assert tile, "no error rate tile"
    assert tile[2] == "1.23 %"
    tip = "conversation_error_rate: (failed + interrupted) / (completed + failed + interrupted)"
    assert f'title="{tip}' in tile[1]


def test_legends_are_a_plain_key_away_from_the_cursor(chromium: Browser, tmp_path: Path) -> None:
    """Off hover a legend shows only series names: no 'time' entry, no '--' values, no colons."""
    with open_report(chromium, tmp_path, sample()) as visit:
        legends = visit.page.eval_on_selector_all(
            ".u-legend", "legends => legends.map(l => l.innerText.replace(/\\s+/g, ' ').trim())"
        )
        assert visit.problems() == []
    assert len(legends) == len(CHART_IDS)
    for text in legends:
        assert text
        assert "--" not in text
        assert ":" not in text
        assert not text.startswith(("time", "percentile"))
    assert legends[0].startswith("create p50")


def scripted(value: Any, counter: list[int], *, rename_keys: bool = False) -> Any:
    """``value`` with every string (and, in tables by name, every key) a unique <script> tag."""

    def tag() -> str:
        counter[0] += 1
        return f"<script>s{counter[0]}</script>"

    if isinstance(value, str):
        return tag()
    if isinstance(value, list):
        return [scripted(v, counter) for v in value]
    if isinstance(value, dict):
        return {
            (tag() if rename_keys else k): scripted(v, counter, rename_keys=k in NAMED)
            for k, v in value.items()
        }
    return value


# The tables keyed by names taken from the run (settings, personas, errors, handoffs).
NAMED = {"settings", "personas", "errors_by_class", "handoffs_by_destination", "handoffs_by_reason"}


def test_every_string_of_the_summary_is_escaped_by_the_template() -> None:
    """Every string value and every name-key of a summary, each a different <script> tag, shows
    escaped: the only <script> elements are the page's own three, and no module calls an
    escape function (a new field would be escaped all the same)."""
    counter = [0]
    summary = scripted(sample(), counter)
    summary.update(interrupted=True, interrupted_by="<script>stop</script>")
    summary["workers_missing"] = [{"worker": 1, "name": "<script>w</script>", "reason": "<b>"}]
    page = render_html(summary)
    assert counter[0] > 50
    assert len(re.findall(r"<script\b", page, re.IGNORECASE)) == 3  # data, uPlot, report.js
    assert "<b>" not in page
    shown = re.findall(r"&lt;script&gt;(s\d+|stop|w)&lt;/script&gt;", page)
    # Every settings key and value, persona, error example, warning, threshold... is shown.
    assert len(set(shown)) > 40
    source = Path(_html.__file__).read_text(encoding="utf-8")
    assert "escape(" not in source
    assert "Markup(" not in source


def test_without_jinja2_the_report_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Jinja2 is an optional dependency: without it, one clear error names the extras."""
    monkeypatch.setitem(sys.modules, "jinja2", None)
    _page.environment.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match=r"jinja2: install polyai-async\[load\]"):
            render_html(sample())
    finally:
        _page.environment.cache_clear()
