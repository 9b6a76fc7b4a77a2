"""polyai-async capacity: options, the refusal of a real target without --max, runs, --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyai_async.load import SCHEMA
from tests.cli_runner import CliRunner, ThreadedFake

pytestmark = pytest.mark.usefixtures("cli_state")

CREDS = {
    "POLYAI_API_KEY": "k",
    "POLYAI_TOKEN": "t",
    "POLYAI_ACCOUNT_ID": "ACCOUNT-x",
    "POLYAI_PROJECT_ID": "PROJECT-x",
}


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """Run ``polyai-async capacity ...`` in this process."""
    return CliRunner(monkeypatch, capsys, command="capacity")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--base-url", "http://127.0.0.1:9", "--slo", "respond.p99<2s"], "--base-url needs --max"),
        (["--real", "--slo", "respond.p99<2s"], "--real needs --max"),
        (["--base-url", "http://127.0.0.1:9", "--max", "10"], "give at least one --slo"),
        (["--slo", "respond.p99<<2s"], "threshold 'respond.p99<<2s'"),
        (["--precision", "0"], "argument --precision: '0' is not a finite number above 0"),
        (["--precision", "150%"], "not a precision between 0 and 1"),
        (["--min", "20", "--max", "10"], "--min (20) must not be above --max (10)"),
        (["--model", "closed", "--max", "7.5"], "--max must be a whole number"),
        (["--step-duration", "0"], "argument --step-duration"),
        (["--agent-latency", "0.2"], "--agent-latency: give --agent-capacity too"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli: CliRunner, argv: list[str], message: str) -> None:
    """A bad option, or a real target without --max, is refused before anything runs."""
    done = cli(*argv, env=CREDS)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert done.stdout == ""


def test_a_search_against_a_target_writes_its_answer(cli: CliRunner, tmp_path: Path) -> None:
    """--base-url with --max: a passing minimum, its confirmation, exit 0, the JSON answer."""
    path = tmp_path / "capacity.json"
    with ThreadedFake(
        api_key="k", token="t", account_id="ACCOUNT-x", project_id="PROJECT-x"
    ) as fake:
        done = cli(
            *("--base-url", fake.url, "--min", "5", "--max", "5", "--turns", "1"),
            *("--slo", "respond.p99<1s", "--step-duration", "0.4", "--warmup", "0"),
            *("--json", str(path), "--html", str(tmp_path / "capacity.html"), "--quiet"),
            env=CREDS,
        )
    assert done.returncode == 0, done.stderr
    answer = json.loads(path.read_text())
    assert answer["schema"] == "polyai-async-capacity/1"
    assert answer["max_rate"] == 5
    assert answer["confirmed"] is True
    assert answer["limited_by"] is None
    assert [(s["phase"], s["passed"]) for s in answer["steps"]] == [
        ("minimum", True),
        ("confirm", True),
    ]
    assert answer["steps"][0]["summary"]["schema"] == SCHEMA
    assert answer["steps"][0]["stopped_early"] is False
    assert "max_rate: 5 conversations/s (confirmed)" in done.stdout
    assert "the maximum passed" in done.stdout
    page = (tmp_path / "capacity.html").read_text()
    assert "max_rate: 5 conversations/s" in page
    assert 'data-chart="knee"' in page


@pytest.mark.e2e
def test_the_embedded_agent_capacity_is_found(cli: CliRunner, tmp_path: Path) -> None:
    """The embedded fake of 4 slots of 50 ms (80 turns a second), one-turn conversations."""
    path = tmp_path / "capacity.json"
    done = cli(
        *("--agent-capacity", "4", "--agent-latency", "0.05", "--arrival", "constant"),
        *("--slo", "respond.p99<250ms", "--min", "10", "--max", "200"),
        *("--step-duration", "2", "--warmup", "0.5", "--window", "1", "--json", str(path)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(path.read_text())
    # Within 5% above 80 (a short step may pass just above it), 15% below (the p99 climbs).
    assert 68 <= answer["max_rate"] <= 84, done.stdout
    assert answer["confirmed"] is True
    assert "step 1 (minimum): 10 conversations/s" in done.stdout


@pytest.mark.e2e
def test_nothing_passing_at_the_minimum_exits_99(cli: CliRunner) -> None:
    """At --min twice the agent's capacity the SLO fails: the answer is none, exit 99."""
    done = cli(
        *("--agent-capacity", "1", "--agent-latency", "0.05", "--arrival", "constant"),
        *("--slo", "respond.p99<200ms", "--min", "40", "--max", "80"),
        *("--step-duration", "10", "--warmup", "0.5", "--window", "1", "--quiet"),
    )
    assert done.returncode == 99
    assert "max_rate: none: the SLOs fail even at --min 40" in done.stdout
    assert "fail*" in done.stdout
    assert "* stopped early" in done.stdout
