"""Text from outside (agent replies, error texts, scenario and persona names) is never markup."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from polyai_async.load._live import LiveView
from polyai_async.load._report import render
from polyai_async.testing import AgentReply, ConversationState
from tests.cli.test_cli_bench import figures
from tests.cli_runner import CliRunner, ThreadedFake

pytestmark = pytest.mark.usefixtures("cli_state")

# rich would read each of these as markup: `[/]` closes nothing (MarkupError), `[bold]` styles.
SCENARIO = """\
name: "[bold]mix[/]"
personas:
  - name: "talker [/]"
    turns:
      - say: hello
        expect: {response_contains: "never [/]"}
  - name: "breaker [red]"
    turns:
      - say: fail
  - name: "handed [/]"
    turns:
      - say: human
"""


def _agent(message: str | None, state: ConversationState) -> AgentReply:
    if message == "fail":
        raise RuntimeError("boom [/] [bold]")
    if message == "human":
        return AgentReply("ok", handoff=("desk [/]", "asked"))
    return AgentReply("reply [/] [bold]x")


@pytest.mark.parametrize("terminal", [True, False], ids=["live-view", "plain"])
def test_markup_in_replies_errors_and_names_is_printed_literally(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    terminal: bool,
) -> None:
    """bench prints `[/]` from a reply, an error, a handoff and the names as is, and writes JSON."""
    scenario = tmp_path / "mix.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "run.json"
    env = {"COLUMNS": "220"}
    if terminal:
        env["FORCE_COLOR"] = "1"  # rich then takes stdout for a terminal: the live view runs
    # The fake runs in this process: its own log line of the agent's failure is not the report.
    monkeypatch.setattr(logging.getLogger("polyai_async.testing"), "disabled", True)
    bench = CliRunner(monkeypatch, capsys, command="bench")
    with ThreadedFake(agent=_agent) as fake:
        done = bench(
            "--base-url", fake.url, "--scenario", str(scenario), "--conversations", "30",
            "--concurrency", "3", "--retry-attempts", "1", "--max-error-rate", "1",
            "--json", str(out),
            env={**fake.env, **env},
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["scenario"] == "[bold]mix[/]"
    for literal in (
        "'[bold]mix[/]'",
        "talker [/]",
        "breaker [red]",
        "handed [/]",
        "reply [/] [bold]x",
        "boom [/] [bold]",
        "desk [/]",
    ):
        assert literal in done.stdout, literal


def test_the_live_view_title_is_literal() -> None:
    """A title holding `[/]` is drawn as written (it used to raise MarkupError)."""
    console = Console(record=True, width=100, force_terminal=True)
    view = LiveView(console, title="scenario '[/]' [bold]x")
    console.print(view.render(figures()))
    assert "scenario '[/]' [bold]x" in console.export_text()


def _summary(**overrides: Any) -> dict[str, Any]:
    from polyai_async.load import Load, Metrics, summarize

    summary = summarize(
        Metrics(), load=Load.closed(concurrency=1, conversations=1), wall_seconds=1.0,
        client_cpu_seconds=0.1,
    )  # fmt: skip
    summary.update(overrides)
    return summary


def test_warnings_thresholds_and_description_are_literal() -> None:
    """A warning, a threshold's reason and the description print their brackets as written."""
    console = Console(record=True, width=200, force_terminal=True)
    summary = _summary(
        warnings=["persona [/] misbehaved"],
        thresholds=[
            {"expression": "respond.p99<1s", "value": None, "reason": "none [/]", "passed": False}
        ],
        errors_by_class={"Boom": {"count": 1, "example": "first [bold]"}},
    )
    render(summary, console, description="bench: scenario '[/]'")
    text = console.export_text()
    for literal in (
        "bench: scenario '[/]'",
        "warning: persona [/] misbehaved",
        "none [/]",
        "first [bold]",
    ):
        assert literal in text, literal
