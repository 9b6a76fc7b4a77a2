"""Abort-on-fail: thresholds judged over a sliding window as the run goes; the run stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from polyai_async import ConfigurationError, RetryPolicy
from polyai_async.load import (
    AbortOnFail,
    Load,
    demo_scenario,
    render_html,
    run_load,
    run_load_async,
)
from polyai_async.load._abort import window_figures
from polyai_async.load._metrics import Metrics
from polyai_async.testing import FakePolyAI
from tests.cli_runner import CliRunner, ThreadedFake

CREDS = {
    "POLYAI_API_KEY": "k",
    "POLYAI_TOKEN": "t",
    "POLYAI_ACCOUNT_ID": "ACCOUNT-x",
    "POLYAI_PROJECT_ID": "PROJECT-x",
}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"grace": -1}, "grace must be a number of seconds >= 0"),
        ({"window": 0.5}, "window must be a number of seconds >= 1"),
        ({"failures": 0}, "failures must be a whole number >= 1"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], match: str) -> None:
    """AbortOnFail checks each field, naming it."""
    with pytest.raises(ConfigurationError, match=match):
        AbortOnFail(**options)


def test_a_window_with_no_second_in_the_series_has_no_figures_yet() -> None:
    """Seconds the series does not hold (workers' seconds still on their way) give no mean
    in flight, and no ZeroDivisionError."""
    figures = window_figures(Metrics(), 0, 3)
    assert figures["window_seconds"] == 3
    assert "in_flight_mean" not in figures
    assert figures["conversations_per_second"] == 0


def test_run_load_refuses_it_over_several_processes() -> None:
    """The window is judged on one process's series: processes > 1 is refused up front."""
    with pytest.raises(ConfigurationError, match="abort_on_fail judges one process"):
        run_load(
            Load.open(rate=1, duration=1),
            thresholds=["respond.p99<1s"],
            processes=2,
            abort_on_fail=AbortOnFail(),
            client_settings={
                "base_url": "http://127.0.0.1:9",
                "api_key": "k",
                "token": "t",
                "account_id": "a",
                "project_id": "p",
            },
        )


@pytest.mark.usefixtures("cli_state")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--abort-on-fail"], "--abort-on-fail needs a --threshold"),
        (
            ["--abort-on-fail", "--threshold", "respond.p99<1s", "--processes", "2"],
            "--abort-on-fail judges one process's figures",
        ),
        (["--abort-window", "0"], "argument --abort-window"),
    ],
)
def test_bench_refuses_what_it_cannot_judge(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--abort-on-fail without a threshold, over processes, or a bad window: exit 2."""
    with ThreadedFake(
        api_key="k", token="t", account_id="ACCOUNT-x", project_id="PROJECT-x"
    ) as fake:
        done = CliRunner(monkeypatch, capsys, command="bench")(
            "--base-url", fake.url, "--rate", "1", "--duration", "1", *argv, env=CREDS
        )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert message in done.stderr


def test_the_reports_say_when_and_why_it_was_aborted() -> None:
    """The HTML report opens with an "Aborted run" box naming the threshold and the time."""
    summary = json.loads((Path(__file__).parent.parent / "data" / "load_summary.json").read_text())
    summary["aborted"] = {
        "at_seconds": 12.4, "threshold": "respond.p99<200ms", "value": 812.0, "window_seconds": 5,
    }  # fmt: skip
    page = render_html(summary)
    assert 'data-stopped="aborted"' in page
    assert (
        "ABORTED at 12 s (--abort-on-fail): respond.p99&lt;200ms failed over the last 5 s" in page
    )
    assert "(measured 812)" in page


@pytest.mark.e2e
async def test_an_overloaded_run_stops_within_its_window() -> None:
    """40 turns a second at an agent of 20: the p99 fails, the 30 s run stops in seconds."""
    async with FakePolyAI(agent_capacity=1, agent_latency=0.05) as fake:
        async with fake.client(retry=RetryPolicy(max_attempts=1)) as client:
            started = time.perf_counter()
            result = await run_load_async(
                client,
                Load.open(rate=40, duration=30, arrival="constant", graceful_stop=1),
                demo_scenario(turns=1),
                thresholds=["respond.p99<200ms"],
                abort_on_fail=AbortOnFail(grace=0.5, window=1),
            )
            elapsed = time.perf_counter() - started
    assert elapsed < 6
    aborted = result.aborted
    assert aborted is not None
    assert aborted["threshold"] == "respond.p99<200ms"
    assert aborted["value"] >= 200
    assert aborted["at_seconds"] < 5
    assert not result.interrupted
    assert result.summary["passed"] is False
    assert result.exit_code == 99


@pytest.mark.e2e
async def test_a_healthy_run_is_not_aborted() -> None:
    """Under its capacity, the agent holds the threshold: the run goes to its end."""
    async with FakePolyAI(agent_capacity=4, agent_latency=0.02) as fake:
        async with fake.client(retry=RetryPolicy(max_attempts=1)) as client:
            result = await run_load_async(
                client,
                Load.open(rate=20, duration=3, arrival="constant"),
                demo_scenario(turns=1),
                thresholds=["respond.p99<200ms"],
                abort_on_fail=AbortOnFail(grace=0.5, window=1),
            )
    assert result.aborted is None
    assert result.exit_code == 0


@pytest.mark.e2e
@pytest.mark.usefixtures("cli_state")
def test_bench_aborts_writes_its_reports_and_exits_99(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench --abort-on-fail: exit 99, one line saying when and why, the JSON marked."""
    path = tmp_path / "bench.json"
    done = CliRunner(monkeypatch, capsys, command="bench")(
        *("--rate", "40", "--duration", "30s", "--turns", "1", "--arrival", "constant"),
        *("--agent-capacity", "1", "--agent-latency", "0.05", "--graceful-stop", "1s"),
        *("--threshold", "respond.p99<200ms", "--abort-on-fail", "--abort-grace", "1s"),
        *("--abort-window", "1s", "--json", str(path), "--quiet"),
    )
    assert done.returncode == 99, done.stderr
    assert "aborted at " in done.stderr
    assert "respond.p99<200ms failed over the last 1s" in done.stderr
    assert "ABORTED at " in done.stdout  # the terminal report says it first
    summary = json.loads(path.read_text())
    assert summary["aborted"]["threshold"] == "respond.p99<200ms"
    assert summary["passed"] is False
    assert summary["wall_seconds"] < 10
