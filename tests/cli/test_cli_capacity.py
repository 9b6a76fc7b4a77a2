"""polyai-async capacity: options, the refusal of a real target without --max, runs, --json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_keeps_the_search_and_writes_its_reports(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """A real signal to a real ``polyai-async capacity`` during its second step: that step's
    conversations are closed on the server, the search ends, the JSON and HTML are written
    with the steps measured, marked interrupted, with the passing minimum as the answer so
    far (not confirmed), and the command exits 130 (SIGINT) or 143 (SIGTERM)."""
    paths = {ext: tmp_path / f"c.{ext}" for ext in ("json", "html")}
    with ThreadedFake(
        api_key="k", token="t", account_id="ACCOUNT-x", project_id="PROJECT-x"
    ) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLYAI_")}
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                *(sys.executable, "-m", "polyai_async.cli", "capacity", "--base-url", fake.url),
                *("--min", "5", "--max", "40", "--slo", "respond.p99<2s", "--arrival", "constant"),
                *("--turns", "3", "--think-time", "1s", "--step-duration", "1", "--warmup", "0"),
                *("--json", str(paths["json"]), "--html", str(paths["html"])),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, **CREDS},
        )
        try:
            assert process.stdout is not None
            # Not a terminal: each step is named on a line as it starts.
            while not (line := process.stdout.readline()).startswith("step 2 (maximum)"):
                assert line, process.communicate()[1]
            created = fake.server.requests["create"]
            deadline = time.monotonic() + 10
            while fake.server.requests["create"] < created + 10:  # conversations in flight
                assert time.monotonic() < deadline, "the second step sent nothing"
                time.sleep(0.02)
            process.send_signal(sig)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        open_conversations = [
            c for c, state in fake.server.conversations.items() if not state.closed
        ]
    assert process.returncode == code, err
    assert f"interrupted ({sig.name}): the search was stopped after 2 steps" in err
    assert "Traceback" not in err
    assert f"INTERRUPTED ({sig.name})" in out
    assert f"max_rate: 5 conversations/s (NOT confirmed: interrupted ({sig.name})" in out
    answer = json.loads(paths["json"].read_text())
    assert answer["interrupted"] is True
    assert answer["interrupted_by"] == sig.name
    assert answer["max_rate"] == 5
    assert answer["confirmed"] is False
    first, second = answer["steps"]
    assert (first["phase"], first["passed"], first["interrupted"]) == ("minimum", True, False)
    assert (second["phase"], second["passed"], second["interrupted"]) == ("maximum", None, True)
    assert second["summary"]["interrupted_by"] == sig.name
    assert second["summary"]["conversations_interrupted"] > 0  # in flight, and closed
    assert open_conversations == []
    page = paths["html"].read_text()
    assert 'data-stopped="interrupted"' in page
    assert f"INTERRUPTED ({sig.name})" in page
