"""polyai-async bench on the load engine: scenarios, models, thresholds, reports, live lines."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from polyai_async.load._live import PLAIN_WIDTH, LiveView, PlainProgress
from polyai_async.testing import FakeServerProcess, Faults
from tests.cli_runner import CliRunner, ThreadedFake

FAST = ["--turns", "2", "--conversations", "20", "--concurrency", "5"]


def bench_process(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``python -m polyai_async.cli bench`` as a process, with a clean environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYAI_")}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "polyai_async.cli", "bench", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


# Whatever a run of main() here changes for the whole process is put back (conftest.py).
pytestmark = pytest.mark.usefixtures("cli_state")


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """``bench(*args)`` runs ``polyai-async bench ARGS`` in this process (tests/cli_runner.py)."""
    return CliRunner(monkeypatch, capsys, command="bench")


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    """A fake server (the demo agent) for runs not about the embedded one: --base-url it."""
    with ThreadedFake() as fake:
        yield fake


SCENARIO = """\
name: checks
personas:
  - name: polite
    turns:
      - say: Hello
        expect: {response_contains: "Hello"}
      - say: "What are your opening hours?"
        expect: {response_matches: "9am", ended: false}
  - name: wrong-guess
    turns:
      - say: I want a human
        expect: {handoff: somewhere_else}
"""


def test_a_bad_scenario_exits_2_naming_the_file_and_field(bench: CliRunner, tmp_path: Path) -> None:
    """A scenario with a wrong type is one line on stderr naming file and field, exit 2."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "personas:\n  - turns: [hi]\n  - turns:\n      - {say: x, expect: {handoff: 3}}\n"
    )
    done = bench("--scenario", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert f"{path}: personas[1].turns[0].expect.handoff: must be" in done.stderr
    assert "Traceback" not in done.stderr


def test_expectations_are_counted_not_errors_and_a_threshold_fails_99(
    bench: CliRunner, fake: ThreadedFake, tmp_path: Path
) -> None:
    """Unmet expectations leave the run passing on errors; a threshold on them exits 99."""
    scenario = tmp_path / "checks.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "out.json"
    done = bench(
        "--scenario", str(scenario), "--conversations", "30", "--concurrency", "3",
        "--threshold", "expectations_failed==0", "--threshold", "respond.p99<30s",
        "--json", str(out), "-q", "--base-url", fake.url, env=fake.env,
    )  # fmt: skip
    assert done.returncode == 99, done.stderr
    assert done.stderr.count("\n") == 1
    assert "threshold failed: expectations_failed==0 (measured" in done.stderr
    report = json.loads(out.read_text())
    assert report["conversations_failed"] == 0
    polite, wrong = report["personas"]["polite"], report["personas"]["wrong-guess"]
    assert polite["expectations_failed"] == 0
    assert polite["expectations_checked"] == 3 * polite["completed"]
    assert wrong["expectations_failed"] == wrong["expectations_checked"] == wrong["started"] > 0
    assert "handoff=somewhere_else" in wrong["example_failure"]
    assert report["expectations_failed"] == wrong["expectations_failed"]
    assert report["thresholds"] == [
        {"expression": "expectations_failed==0", "value": float(wrong["expectations_failed"]),
         "passed": False, "reason": None},
        {"expression": "respond.p99<30s", "value": report["respond_p99_ms"], "passed": True,
         "reason": None},
    ]  # fmt: skip
    assert report["passed"] is False
    assert "expectations" in done.stdout
    assert "thresholds" in done.stdout


def test_thresholds_that_hold_exit_0(bench: CliRunner, fake: ThreadedFake, tmp_path: Path) -> None:
    """Every threshold met: exit 0, each reported with its value."""
    out = tmp_path / "out.json"
    done = bench(
        *FAST, "--threshold", "conversation_error_rate<0.01", "--json", str(out), "-q",
        "--base-url", fake.url, env=fake.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (verdict,) = json.loads(out.read_text())["thresholds"]
    assert verdict == {
        "expression": "conversation_error_rate<0.01",
        "value": 0.0,
        "passed": True,
        "reason": None,
    }


def test_thresholds_on_the_fakes_server_figures_are_judged_on_them(
    bench: CliRunner, tmp_path: Path
) -> None:
    """server_* thresholds read the figures the embedded fake reported, not null."""
    out = tmp_path / "out.json"
    done = bench(
        *FAST, "--threshold", "server_requests>0", "--threshold", "server_max_open_connections>=1",
        "--threshold", "server_faults==0", "--json", str(out), "-q",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["server_requests"] > 0
    verdicts = {t["expression"]: (t["value"], t["passed"]) for t in report["thresholds"]}
    assert verdicts == {
        "server_requests>0": (float(report["server_requests"]), True),
        "server_max_open_connections>=1": (float(report["server_max_open_connections"]), True),
        "server_faults==0": (0.0, True),
    }
    assert report["passed"] is True


def test_a_failing_server_threshold_exits_99_with_its_value(
    bench: CliRunner, tmp_path: Path
) -> None:
    """A server_* threshold that does not hold fails the run on the measured figure."""
    out = tmp_path / "out.json"
    done = bench(*FAST, "--threshold", "server_requests<5", "--json", str(out), "-q")
    assert done.returncode == 99, done.stderr
    report = json.loads(out.read_text())
    measured = float(report["server_requests"])
    assert report["thresholds"] == [
        {"expression": "server_requests<5", "value": measured, "passed": False, "reason": None}
    ]
    assert f"server_requests<5 (measured {measured:g})" in done.stderr
    assert report["passed"] is False


def test_a_server_threshold_against_another_target_is_refused_up_front(bench: CliRunner) -> None:
    """--base-url cannot report server_* figures: exit 2 before anything runs."""
    done = bench("--base-url", "http://127.0.0.1:9", "--threshold", "server_faults==0")
    assert done.returncode == 2, done.stdout
    assert done.stderr.count("\n") == 1
    assert "--threshold 'server_faults==0'" in done.stderr
    assert "embedded fake" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "respond.p99<fast"], "threshold 'respond.p99<fast'"),
        (["--rate", "5"], "--rate needs --duration or --conversations"),
        (["--rate", "5", "--concurrency", "3", "--duration", "1"], "do not go together"),
        (["--stages", "10s:x"], "stages: stage 1"),
        (["--think-time", "soon"], "think time"),
        (["--duration", "forever"], "--duration"),
        (["--scenario", "missing.yaml"], "missing.yaml: cannot read it"),
        (["--scenario", "x.yaml", "--turns", "3"], "--turns shapes the demo scenario"),
        (["--loop", "trio"], "--loop"),
        (["--concurrency", "1", "--processes", "2"], "--processes=2: the load does not split"),
    ],
)
def test_bad_load_options_exit_2_in_one_line(
    bench: CliRunner, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each bad load option is one error line naming it, exit 2, nothing run: not even the
    embedded fake is started."""
    started: list[object] = []

    def start(server: object) -> str:
        started.append(server)
        return "http://127.0.0.1:9"

    monkeypatch.setattr(FakeServerProcess, "start", start)
    done = bench(*args)
    assert started == []
    assert done.returncode == 2, done.stdout
    assert done.stderr.count("\n") == 1
    assert message in done.stderr


@pytest.mark.e2e
def test_open_run_over_two_processes_writes_every_report(tmp_path: Path) -> None:
    """An open run on 2 processes without a terminal: plain progress lines within 80 columns,
    the JSON summary, one CSV row a second, and an offline HTML report."""
    json_path, csv_path, html_path = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.html"
    done = bench_process(
        "--rate", "10", "--duration", "6s", "--arrival", "constant", "--turns", "1",
        "--processes", "2", "--json", str(json_path), "--csv", str(csv_path),
        "--html", str(html_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    progress = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert progress, done.stdout
    # (a lag warning and the target of the second may stand between the counts)
    assert re.match(r"\[\ds/6s\] started \d+, .*in flight \d+, done \d+", progress[0])
    assert all(len(line) <= PLAIN_WIDTH and line == line.rstrip() for line in progress)
    report = json.loads(json_path.read_text())
    assert report["processes"] == 2
    assert report["load_model"] == "open"
    assert 50 <= report["conversations_started"] <= 70
    assert len(report["workers"]) == 2
    assert (
        sum(w["conversations_started"] for w in report["workers"])
        == (report["conversations_started"])
    )
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [int(r["t"]) for r in rows] == list(range(len(rows)))
    assert len(rows) >= 6
    assert sum(int(r["conversations_started"]) for r in rows) == report["conversations_started"]
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") or page.lower().startswith("<!doctype html>")
    assert "<script src=" not in page
    assert "http://" not in page.replace(report["base_url"], "")


def figures(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "elapsed": 125.4, "planned": 600.0, "started": 1_234_567, "in_flight": 10_000,
        "completed": 1_200_000, "failed": 34_567, "done": 1_234_567, "dropped": 98_765,
        "turns_per_second": 4_321, "requests_per_second": 54_321,
        "retries": {"respond": 12}, "errors": {"InternalServerError": 3},
        "generator_lag_p99_ms": 4.2, "cpu_share": 0.5,
        "create_p50_ms": 12.0, "create_p99_ms": 1234.5, "respond_p50_ms": 20.0,
        "respond_p99_ms": 99.0, "close_p50_ms": 1.0, "close_p99_ms": None,
    }  # fmt: skip
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    "overrides",
    [{}, {"generator_lag_p99_ms": 45.0, "cpu_share": 0.97}, {"planned": None, "elapsed": 0.4}],
)
def test_plain_lines_fit_80_columns(overrides: dict[str, Any]) -> None:
    """Big numbers and warnings still give one line of at most 80 columns, no trailing space."""
    line = PlainProgress(io.StringIO()).line(figures(**overrides))
    assert len(line) <= PLAIN_WIDTH
    assert line == line.rstrip()
    assert "\n" not in line
    assert "started 1,234,567" in line
    if overrides.get("cpu_share"):
        assert "WARNING lag 45 ms, WARNING CPU 97%" in line


def test_plain_progress_prints_every_few_seconds() -> None:
    """Ticks a second apart print one line per ``every`` seconds, not one a tick."""
    out = io.StringIO()
    plain = PlainProgress(out, every=0.0)
    plain.update(figures())
    plain.update(figures())
    assert out.getvalue().count("\n") == 2
    quiet = PlainProgress(out := io.StringIO(), every=60)
    quiet.update(figures())
    assert out.getvalue() == ""


def test_live_view_shows_the_figures_of_the_moment() -> None:
    """The rich view shows elapsed/planned, counts, rates, rolling p50/p99, errors and lag."""
    console = Console(record=True, width=100, force_terminal=True)
    view = LiveView(console, title="bench")
    console.print(view.render(figures(generator_lag_p99_ms=30.0)))
    text = console.export_text()
    for expected in (
        "2m5s/10m", "1,234,567", "10,000", "98,765", "54,321", "1,234", "99.0",
        "InternalServerError 3", "generator lag 30 ms > 10 ms",
    ):  # fmt: skip
        assert expected in text, expected


def test_adaptive_concurrency_cuts_the_429s_of_a_limited_api(
    bench: CliRunner, tmp_path: Path
) -> None:
    """--adaptive-concurrency: against an API admitting 4 calls, far fewer 429s, all completed."""
    shares: dict[bool, float] = {}
    for adaptive in (False, True):
        faults = Faults(concurrency_limit=4, latency=0.01, retry_after=0)
        with ThreadedFake(faults=faults) as fake:
            out = tmp_path / f"{adaptive}.json"
            done = bench(
                "--turns", "2", "--conversations", "40", "--concurrency", "20",
                "--retry-attempts", "50", "--retry-budget", "off", "--json", str(out), "-q",
                "--base-url", fake.url,
                # Without it, a conversation may lose 50 races in a row for the 4 slots: its
                # failure is not what this test is about.
                *(["--adaptive-concurrency"] if adaptive else ["--max-error-rate", "1"]),
                env=fake.env,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            summary = json.loads(out.read_text())
            assert summary["settings"]["adaptive_concurrency"] is adaptive
            if adaptive:
                assert summary["conversations_completed"] == 40
            stats = fake.server.stats
            shares[adaptive] = stats.faults["429"] / sum(stats.requests.values())
    assert shares[False] > 0.3
    assert shares[True] < shares[False] / 3


@pytest.mark.parametrize(
    ("argv", "latency"),
    [
        ([], ["--latency", "0.1"]),
        (["--latency", "0.02"], []),
        (["--agent-capacity", "4"], []),
        (["--base-url", "http://127.0.0.1:9"], ["--latency", "0.1"]),  # unused: no fake
    ],
)
def test_the_default_run_is_light_enough_to_trust(argv: list[str], latency: list[str]) -> None:
    """``polyai-async bench`` alone: 1,000 conversations, 100 at a time (one connection
    each), against an embedded fake answering each request in 100 ms unless --latency or
    --agent-capacity shapes it: about a fifth of a core, not a saturated generator."""
    from polyai_async.cli import _bench, build_parser

    args = build_parser().parse_args(["bench", *argv])
    _, load, _ = _bench._plan(args)
    assert (load.concurrency, load.conversations) == (100, 1000)
    assert load.concurrency == args.max_connections
    assert _bench._demo_latency(args) == latency
