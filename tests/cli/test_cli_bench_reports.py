"""What a person reads of a bench run: retries counted not logged, thresholds in their unit,
and the terminal, the HTML and the JSON telling the same story."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from polyai_async.load import Load, render_html, run_load
from polyai_async.load._report import render
from polyai_async.testing import Faults
from tests.cli_runner import CliRunner, ThreadedFake

FIXTURE = Path(__file__).parent.parent / "data" / "load_summary.json"
SMALL = ["--turns", "1", "--conversations", "8", "--concurrency", "4"]

# Whatever a run of main() here changes for the whole process is put back (conftest.py).
pytestmark = pytest.mark.usefixtures("cli_state")


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """``bench(*args)`` runs ``polyai-async bench ARGS`` in this process (tests/cli_runner.py)."""
    return CliRunner(monkeypatch, capsys, command="bench")


@pytest.fixture
def flaky() -> Iterator[ThreadedFake]:
    """A fake answering a third of its requests 429 with ``Retry-After: 0``: retries, no wait."""
    with ThreadedFake(faults=Faults(rate_limit_rate=0.3, retry_after=0), seed=2) as fake:
        yield fake


def sample() -> dict[str, Any]:
    """The fixture summary (a real run of benchmarks/report_sample.py)."""
    summary: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return summary


def test_quiet_bench_counts_retries_and_prints_no_line_per_retry(
    bench: CliRunner, flaky: ThreadedFake, tmp_path: Path
) -> None:
    """With -q, the client's warning per retry is not printed; the report counts the retries."""
    out = tmp_path / "out.json"
    done = bench(
        *SMALL, "-q", "--max-error-rate", "1", "--json", str(out),
        "--base-url", flaky.url, env=flaky.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["retries"] > 0
    assert "retrying" not in done.stderr
    assert "warning" not in done.stderr
    assert re.search(rf"retries\s+{report['retries']}\b", done.stdout)


def test_threshold_lines_show_the_unit_of_the_expression(
    bench: CliRunner, flaky: ThreadedFake
) -> None:
    """A latency threshold written in seconds is measured in seconds, in the table and in the
    error line: ``respond.p99<0.000001s ... measured 0.00123 s``, not ``(measured 1.23)``."""
    done = bench(
        *SMALL, "-q", "--max-error-rate", "1", "--threshold", "respond.p99<0.000001s",
        "--threshold", "create.ok.p99<1000000", "--base-url", flaky.url, env=flaky.env,
    )  # fmt: skip
    assert done.returncode == 99, done.stderr
    assert re.search(r"respond\.p99<0\.000001s \(measured [0-9.]+ s\)", done.stderr), done.stderr
    assert re.search(r"respond\.p99<0\.000001s\s+[0-9.]+ s\s+FAILED", done.stdout), done.stdout
    assert re.search(r"create\.ok\.p99<1000000\s+[0-9.,]+ ms\s+passed", done.stdout)


def test_the_reports_name_the_scenario_and_its_think_time_as_the_terminal_does(
    bench: CliRunner, tmp_path: Path
) -> None:
    """The HTML header names the scenario (not its file), and the settings show the think time
    the scenario sets when --think-time is not given."""
    scenario = tmp_path / "support.yaml"
    scenario.write_text(
        "name: checks\nthink_time: {uniform: [1ms, 2ms]}\npersonas:\n  - turns: [Hello]\n"
    )
    out, html = tmp_path / "out.json", tmp_path / "out.html"
    done = bench(
        "--scenario", str(scenario), "--conversations", "4", "--concurrency", "2", "-q",
        "--json", str(out), "--html", str(html),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "scenario 'checks'" in done.stdout
    report = json.loads(out.read_text())
    assert report["settings"]["think_time"] == "uniform:1ms..2ms"
    page = html.read_text()
    assert "scenario <strong>checks</strong>" in page
    assert "support.yaml</strong>" not in page
    assert "uniform:1ms..2ms" in page


def note_of(summary: dict[str, Any], peaks: tuple[int, int]) -> str:
    """The terminal report of ``summary`` as two processes with these peaks in flight."""
    summary = dict(summary, processes=2, max_connections=100, in_flight_max=sum(peaks))
    summary["workers"] = [
        dict(w, in_flight_max=n) for w, n in zip(summary["workers"], peaks, strict=True)
    ]
    console = Console(file=io.StringIO(), width=100)
    render(summary, console, description="run")
    return " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]


def test_the_connection_note_is_per_process() -> None:
    """With processes, each has its own pool: the note compares each one's peak with it."""
    text = note_of(sample(), (103, 102))
    assert "each of the 2 processes had 100 connections" in text
    assert "up to 103 conversations in flight in one process" in text
    assert "205 conversations shared" not in text
    quiet = note_of(sample(), (90, 95))  # 185 in all, but neither process above its 100
    assert "connections, and up to" not in quiet
    assert "shared" not in quiet


def test_persona_names_are_never_cut_without_a_terminal() -> None:
    """Rich's 80 columns without a terminal cut a long persona name to 'opening-hou…'; no more."""
    summary = sample()
    name = "opening-hours-on-bank-holidays"
    summary["personas"] = {name: next(iter(summary["personas"].values()))}
    summary["expectations_checked"] = max(1, summary["expectations_checked"])
    console = Console(file=io.StringIO(), width=80, force_terminal=False)
    render(summary, console, description="run")
    assert name in console.file.getvalue()  # type: ignore[attr-defined]


def test_the_html_header_names_the_summarys_scenario() -> None:
    """The header reads the summary's scenario name, as the terminal does, not a file path."""
    summary = sample()
    summary["scenario"] = "support-mix"
    summary["settings"] = {**summary["settings"], "scenario": "docs/examples/support-mix.yaml"}
    assert "scenario <strong>support-mix</strong>" in render_html(summary)


def test_a_run_in_which_nothing_completed_exits_1_saying_so(bench: CliRunner) -> None:
    """Against an agent that never answers, every conversation is cut off by the graceful stop:
    not a 0 % error rate and exit 0, but exit 1 and a line that says nothing completed."""
    never = Faults(latency=30, endpoints={"respond"})
    with ThreadedFake(faults=never) as fake:
        done = bench(
            "--turns", "1", "--rate", "10", "--arrival", "constant", "--duration", "0.3s",
            "--graceful-stop", "0.1s",
            "--max-error-rate", "1", "-q", "--base-url", fake.url, env=fake.env,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "no conversation completed (3 started, 0 failed, 3 interrupted)" in done.stderr
    assert re.search(r"conversations completed\s+0\s+none: the run cannot pass", done.stdout)


@pytest.mark.e2e
def test_worker_processes_count_retries_and_print_no_line_per_retry(
    flaky: ThreadedFake, capfd: pytest.CaptureFixture[str]
) -> None:
    """With --processes, each worker counts its retries and logs no line per retry either."""
    result = run_load(
        Load.closed(concurrency=2, conversations=8),
        client_settings=flaky.settings,
        processes=2,
    )
    assert result.summary["retries"] > 0
    assert "retrying" not in capfd.readouterr().err


def test_the_html_outcomes_count_requests_by_outcome() -> None:
    """Every request sent is in the HTML report with its outcome, as the JSON counts it."""
    summary = sample()
    summary.update(requests_ok=3101, requests_failed=172, requests_cancelled=47)
    page = render_html(summary)
    for label, count in (
        ("requests answered ok", "3,101"),
        ("requests failed", "172"),
        ("requests cancelled (cut off by the graceful stop)", "47"),
    ):
        assert re.search(rf"{re.escape(label)}</\w+>\s*<\w+[^>]*>{count}<", page), label
