"""One way to write each kind of number, whichever report shows it."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from polyai_async.load import _format
from polyai_async.load._live import LiveView
from polyai_async.load._report import render
from polyai_async.load._thresholds import measured_text
from tests.cli.test_cli_bench import figures
from tests.cli.test_cli_bench_reports import sample


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0.00"),
        (0.000456, "0.000456"),
        (0.0123, "0.0123"),
        (5.123, "5.12"),
        (53.44, "53.4"),
        (536.6, "537"),
        (1234.5, "1,234"),
        (-2.5, "-2.50"),
    ],
)
def test_a_figure_has_three_significant_digits(value: float, text: str) -> None:
    """Fixed decimals to three significant digits, separators, never an exponent."""
    assert _format.figure(value) == text


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0.5, "0.500 ms"), (5.123, "5.12 ms"), (536.6, "537 ms"), (1234.5, "1.23 s")],
)
def test_a_latency_reads_in_ms_then_seconds(ms: float, text: str) -> None:
    """Milliseconds up to a second, seconds past it, as the charts' axes say."""
    assert _format.milliseconds(ms) == text


def test_numbers_counts_percentages_and_durations() -> None:
    """Whole numbers as counts; shares as percentages; durations in prose."""
    assert _format.number(3.0) == "3"
    assert _format.number(1200) == "1,200"
    assert _format.number(0.0123) == "0.0123"
    assert _format.count(1234567) == "1,234,567"
    assert _format.percent(0.0123) == "1.23 %"
    assert _format.percent(0.5, digits=0) == "50 %"
    assert [_format.duration(s) for s in (12.54, 125, 3725)] == [
        "12.5 s",
        "2 min 05 s",
        "1 h 02 min",
    ]


def test_the_terminal_the_live_view_and_thresholds_write_a_latency_alike() -> None:
    """5.123 ms is 5.12 in the terminal's table, the live view and a threshold's value."""
    summary = sample()
    summary["create_p50_ms"] = 5.123
    console = Console(file=io.StringIO(), width=120)
    render(summary, console, description="run")
    table = console.file.getvalue()  # type: ignore[attr-defined]
    create = next(line for line in table.splitlines() if line.strip().startswith("create "))
    assert " 5.12 " in create
    live = Console(record=True, width=100, force_terminal=True)
    live.print(LiveView(live, title="bench").render(figures(create_p50_ms=5.123)))
    row = next(line for line in live.export_text().splitlines() if "create" in line)
    assert " 5.12 " in row
    assert measured_text("create.p50<10ms", 5.123) == "5.12 ms"
