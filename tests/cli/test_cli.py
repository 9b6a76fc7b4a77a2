"""The polyai-async command: bench, serve and chat; usage errors and --help.

Most runs call ``main()`` in this process (tests/cli_runner.py); the console script, serve's
SIGINT, the import check and one whole bench run (the README's first command) are real
processes.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyai_async import REGIONS, PolyAIClient
from polyai_async.cli import build_parser, main
from polyai_async.cli._common import configure_logging, set_command
from polyai_async.testing import Faults
from tests.cli_runner import CliRunner, ThreadedFake

SMALL = ["--conversations", "20", "--turns", "2", "--concurrency", "10"]
FAKE_CREDS = {
    "POLYAI_API_KEY": "test-api-key",
    "POLYAI_TOKEN": "test-token",
    "POLYAI_ACCOUNT_ID": "ACCOUNT-test",
    "POLYAI_PROJECT_ID": "PROJECT-test",
}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m polyai_async.cli`` as a process, without the POLYAI_* environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYAI_")}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "polyai_async.cli", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


# Whatever a run of main() here changes for the whole process is put back (conftest.py).
pytestmark = pytest.mark.usefixtures("cli_state")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """Run the command in this process: ``cli("bench", ...)`` returns code, stdout, stderr."""
    return CliRunner(monkeypatch, capsys)


def bench_json(
    cli: CliRunner, tmp_path: Path, *args: str, **kwargs: Any
) -> tuple[int, dict[str, Any], str]:
    """Run bench with --json; return its exit status, the JSON and stderr."""
    path = tmp_path / "bench.json"
    done = cli("bench", *args, "--json", str(path), **kwargs)
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(path.read_text()), done.stderr


@pytest.fixture
def fake_server() -> Iterator[tuple[str, dict[str, str]]]:
    """A fake server with known, secret-looking credentials; yields its URL and env."""
    creds = {
        "POLYAI_API_KEY": "sk-SECRET-key-0123456789",
        "POLYAI_TOKEN": "tok-SECRET-token-9876543210",
        "POLYAI_ACCOUNT_ID": "ACCOUNT-x",
        "POLYAI_PROJECT_ID": "PROJECT-x",
    }
    with ThreadedFake(
        api_key=creds["POLYAI_API_KEY"],
        token=creds["POLYAI_TOKEN"],
        account_id="ACCOUNT-x",
        project_id="PROJECT-x",
    ) as fake:
        yield fake.url, creds


def test_bench_reports_every_figure(tmp_path: Path) -> None:
    """A small bench against the embedded server completes every conversation and turn.

    The one whole bench as a process, as the README runs it: its embedded fake is a child."""
    path = tmp_path / "bench.json"
    done = run_cli("bench", *SMALL, "--quiet", "--json", str(path))
    assert "Traceback" not in done.stderr
    code, report = done.returncode, json.loads(path.read_text())
    assert code == 0
    assert report["schema"] == "polyai-async-bench/4"
    assert report["load_model"] == "closed"
    assert report["target"] == "embedded"
    assert report["conversations"] == report["conversations_started"] == 20
    assert report["conversations_completed"] == 20
    assert report["conversations_failed"] == report["errors_total"] == 0
    # The demo's personas all have 2 turns at --turns 2; the agent ends some of them.
    assert report["turns_completed"] == 40
    personas = report["personas"]
    assert sum(p["started"] for p in personas.values()) == 20
    handoffs = personas.get("wants-human", {}).get("completed", 0)
    goodbyes = personas.get("says-goodbye", {}).get("completed", 0)
    assert (report["handoffs"], report["ended_by_agent"]) == (handoffs, handoffs + goodbyes)
    assert report["handoffs_by_destination"] == ({"live_agent_queue": handoffs} if handoffs else {})
    assert report["expectations_failed"] == 0
    assert report["expectations_checked"] >= 40
    assert report["calls"] == report["requests"] == 80
    assert report["server_requests"] == report["requests"]
    assert report["retries"] == 0
    assert report["passed"] is True
    assert report["turns_per_second"] > 0
    assert report["requests_per_second"] > 0
    assert report["client_cpu_seconds"] > 0
    for endpoint, calls in (("create", 20), ("respond", 40), ("close", 20)):
        assert report[f"{endpoint}_count"] == calls
        p50, p90, p99, top = (report[f"{endpoint}_{k}_ms"] for k in ("p50", "p90", "p99", "max"))
        assert 0 < p50 <= p90 <= p99 <= top


def test_bench_prints_only_the_report_when_not_a_tty(cli: CliRunner) -> None:
    """Without a terminal there is no live view: stdout is the report and stderr is empty."""
    # stdout and stderr are capsys's, not terminals; the target is a fake of the test's own.
    with ThreadedFake() as fake:
        done = cli("bench", *SMALL, "--base-url", fake.url, env=fake.env)
    assert done.returncode == 0
    assert done.stderr == ""
    assert "conversations completed" in done.stdout
    assert "latency (ms)" in done.stdout


def test_bench_fails_above_the_max_error_rate(cli: CliRunner, tmp_path: Path) -> None:
    """Faults with retries off fail conversations, and the error rate over the limit exits 1."""
    # A fake of the test's own (its faults as --error-rate 0.2 gives the embedded one): what is
    # judged is the client's error rate, not the embedded fake.
    with ThreadedFake(faults=Faults(error_rate=0.2), seed=0) as fake:
        code, report, stderr = bench_json(
            cli, tmp_path, *SMALL, "--base-url", fake.url, "--retry-attempts", "1",
            "--max-error-rate", "0", env=fake.env,
        )  # fmt: skip
    assert code == 1
    assert report["passed"] is False
    assert report["conversations_failed"] > 0
    assert report["error_InternalServerError"] == report["errors_total"] > 0
    assert report["retries"] == 0
    assert stderr.count("\n") == 1
    assert "--max-error-rate" in stderr


def test_bench_retries_through_faults(cli: CliRunner, tmp_path: Path) -> None:
    """With retries on, errors, rate limits and resets are retried, counted, and the run passes."""
    # Every conversation at once, so the client's backoff (0.5 s doubling, jittered) is slept
    # in parallel, and a seed whose faults are spread out (all three kinds in the first 30
    # requests), so few calls meet two in a row: 20 at 10 a time with seed 7 took 2 to 7 s.
    code, report, _ = bench_json(
        cli,
        tmp_path,
        "--conversations",
        "10",
        "--turns",
        "2",
        "--concurrency",
        "10",
        "--error-rate",
        "0.1",
        "--rate-limit-rate",
        "0.05",
        "--retry-after",
        "0",
        "--reset-rate",
        "0.05",
        "--retry-attempts",
        "10",
        "--seed",
        "36",
    )
    assert code == 0
    assert report["conversations_completed"] == 10
    assert report["retries"] > 0
    assert report["retries"] == sum(report[f"retries_{e}"] for e in ("create", "respond", "close"))
    assert report["requests"] == report["calls"] + report["retries"]
    assert report["server_faults"] > 0
    # Every request sent counted with its outcome, as many as the fake received (resets too).
    assert report["requests"] == report["server_requests"]
    assert report["requests_failed"] == report["server_faults"]
    assert report["requests"] == report["requests_ok"] + report["requests_failed"]


def test_bench_never_shows_the_credentials(
    cli: CliRunner, tmp_path: Path, fake_server: tuple[str, dict[str, str]]
) -> None:
    """Credentials from the environment appear in no report, JSON or error line, right or wrong."""
    url, creds = fake_server
    secrets = (creds["POLYAI_API_KEY"], creds["POLYAI_TOKEN"])
    path = tmp_path / "ok.json"
    done = cli("bench", *SMALL, "--base-url", url, "--json", str(path), env=creds)
    assert done.returncode == 0, done.stderr
    report = json.loads(path.read_text())
    assert report["target"] == "base_url"
    assert report["conversations_completed"] == 20
    wrong = {**creds, "POLYAI_TOKEN": "tok-SECRET-wrong-5555555555"}
    bad_path = tmp_path / "bad.json"
    failed = cli("bench", *SMALL, "--base-url", url, "--json", str(bad_path), env=wrong)
    assert failed.returncode == 1
    assert json.loads(bad_path.read_text())["error_AuthenticationError"] == 20
    everything = done.stdout + done.stderr + path.read_text()
    everything += failed.stdout + failed.stderr + bad_path.read_text()
    for secret in (*secrets, wrong["POLYAI_TOKEN"]):
        assert secret not in everything


def test_bench_needs_credentials_for_a_real_target(cli: CliRunner) -> None:
    """--base-url without credentials in the environment is a usage error naming the variables."""
    done = cli("bench", "--base-url", "http://127.0.0.1:9", "--quiet")
    assert done.returncode == 2
    assert "POLYAI_API_KEY" in done.stderr
    assert done.stderr.count("\n") == 1


async def one_turn(url: str) -> str:
    """Hold one conversation of one turn with the server at ``url``; return the reply."""
    async with PolyAIClient(
        base_url=url,
        api_key=FAKE_CREDS["POLYAI_API_KEY"],
        token=FAKE_CREDS["POLYAI_TOKEN"],
        account_id=FAKE_CREDS["POLYAI_ACCOUNT_ID"],
        project_id=FAKE_CREDS["POLYAI_PROJECT_ID"],
    ) as client:
        async with client.conversation() as chat:
            reply = await chat.send("hello")
    return reply.response


def test_serve_answers_a_client_and_stops_on_sigint() -> None:
    """serve prints its URL and fake credentials, serves a client, and exits 0 on SIGINT."""
    process = subprocess.Popen(
        [sys.executable, "-m", "polyai_async.cli", "serve", "--port", "0", "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        banner = [process.stdout.readline() for _ in range(7)]
        assert url.startswith("http://127.0.0.1:")
        assert f"  POLYAI_API_KEY={FAKE_CREDS['POLYAI_API_KEY']}\n" in banner
        assert asyncio.run(one_turn(url)) == "Hello! What can I do for you?"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "Traceback" not in err
    assert "Stopped after 3 requests." in out


def test_chat_shows_the_greeting_replies_and_handoff(cli: CliRunner) -> None:
    """chat with piped input prints the greeting, each reply and the handoff, then exits 0."""
    done = cli("chat", stdin="hello\nI want a human\nnever sent\n")
    assert done.returncode == 0, done.stderr
    assert "agent: Hello! How can I help you today?" in done.stdout
    assert "agent: Hello! What can I do for you?" in done.stdout
    assert "handed off to live_agent_queue (user_requested_human)" in done.stdout
    assert "never sent" not in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize("stdin", ["hello\n", "hello\n/quit\nnot sent\n"])
def test_chat_ends_on_eof_or_quit(cli: CliRunner, stdin: str) -> None:
    """Ctrl-D (end of input) or /quit closes the conversation and exits 0."""
    done = cli("chat", "--agent", "echo", stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert "agent: hello" in done.stdout
    assert "not sent" not in done.stdout
    assert "closed." in done.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--conversations", "-1"],
        ["bench", "--turns", "abc"],
        ["bench", "--concurrency", "0"],
        ["bench", "--error-rate", "1.5"],
        ["bench", "--error-rate", "0.6", "--reset-rate", "0.6"],
        ["bench", "--base-url", "ftp://x"],
        ["bench", "--base-url", "http://127.0.0.1:9", "--real"],
        ["bench", "--real", "--error-rate", "0.1"],
        ["bench", "--json", "/nonexistent-directory/bench.json"],
        ["chat", "--base-url", "ftp://x"],
        ["chat", "--real", "--seed", "1"],
        ["serve", "--port", "http"],
        ["serve", "--port", "99999"],
        ["serve", "--port", "-1"],
        ["chat", "--base-url", "http://example.com"],
        ["chat", "--real"],
        ["launch"],
        [],
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad option, value or subcommand gives one error line on stderr and exit 2."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    # One prefix for every error: the command that failed, as argparse names it.
    command = argv[0] if argv and argv[0] in {"bench", "serve", "chat"} else None
    prefix = "polyai-async " + command if command else "polyai-async"
    assert captured.err.startswith(f"{prefix}: error: ")


def test_the_console_script_reports_an_unknown_subcommand() -> None:
    """The installed polyai-async script exits 2 with one line for an unknown subcommand."""
    script = Path(sys.executable).with_name("polyai-async")
    done = subprocess.run(  # noqa: S603
        [str(script), "launch"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert "invalid choice: 'launch'" in done.stderr
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [[], ["bench"], ["serve"], ["chat"]])
def test_help_exits_0(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--help of the command and of each subcommand prints usage and exits 0."""
    assert main([*command, "--help"]) == 0
    assert "usage: polyai-async" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["bench", "chat"])
def test_help_lists_every_region(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--real's help names every region the library knows, the self-serve studio included."""
    assert main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for region in REGIONS:
        assert region in out
    assert "studio" in out


def test_bench_without_rich_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without rich, bench names the extra to install in one line, before starting anything."""
    monkeypatch.setitem(sys.modules, "rich", None)
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert "install polyai-async[cli]" in err
    assert err.count("\n") == 1


def test_the_library_does_not_import_rich() -> None:
    """Importing polyai_async, or even the command's module, loads no rich."""
    code = "import sys, polyai_async, polyai_async.cli; assert 'rich' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0  # noqa: S603


def test_usage_errors_found_after_parsing_have_the_same_prefix_and_name_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An error found after parsing starts like argparse's (polyai-async bench: error:) and
    names the command-line options, not the library's arguments."""
    assert main(["bench", "--error-rate", "0.6", "--reset-rate", "0.6", "--seed", "1"]) == 2
    assert main(["chat", "--base-url", "http://127.0.0.1:9"]) == 2
    bench, chat = capsys.readouterr().err.splitlines()
    assert bench.startswith("polyai-async bench: error: ")
    assert chat == (
        "polyai-async chat: error: --base-url needs credentials: set POLYAI_API_KEY, "
        "POLYAI_TOKEN, POLYAI_ACCOUNT_ID, POLYAI_PROJECT_ID (only the embedded fake server "
        "runs without them)"
    )


def test_serve_port_out_of_range_names_the_range(capsys: pytest.CaptureFixture[str]) -> None:
    """serve --port 99999 says which ports there are, in one line, without a traceback."""
    assert main(["serve", "--port", "99999"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "polyai-async serve: error: argument --port: 99999 is not a port: use 0 to 65535 "
        "(0 picks a free one) (see --help)\n"
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the installed version."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"polyai-async {importlib.metadata.version('polyai-async')}\n"


@pytest.mark.parametrize("command", ["bench", "serve", "chat"])
def test_help_ends_with_examples_of_the_command(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command's --help ends with examples that parse as that command."""
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    examples = out.split("\nexamples:\n")[1].split("\n\n")[0].splitlines()
    assert len(examples) >= 2
    for example in examples:
        argv = example.split()
        assert argv[:2] == ["polyai-async", command], example
        build_parser().parse_args(argv[1:])  # every example is a valid command line


def test_a_warning_from_the_library_is_one_line_with_its_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A library warning logged with an exception prints one line: the command's prefix once,
    the library's message, and the exception's reason."""
    configure_logging()
    set_command("chat")
    try:
        try:
            raise RuntimeError("the server said no")
        except RuntimeError:
            logging.getLogger("polyai_async").warning(
                "polyai_async: closing conversation %s failed", "CONV-1", exc_info=True
            )
    finally:
        set_command(None)
    assert capsys.readouterr().err == (
        "polyai-async chat: warning: closing conversation CONV-1 failed: the server said no\n"
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"POLYAI_ACCOUNT_ID": "a/b"}, "POLYAI_ACCOUNT_ID='a/b' is not a valid id"),
        ({"POLYAI_REGION": "mars"}, "unknown POLYAI_REGION 'mars'"),
    ],
)
def test_a_bad_setting_is_named_as_the_user_set_it(
    env: dict[str, str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A setting the library refuses is named by its variable, not the library's argument."""
    for name, value in {**FAKE_CREDS, **env}.items():
        monkeypatch.setenv(name, value)
    assert main(["chat", "--real"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"polyai-async chat: error: {expected}"), err
    assert "account_id" not in err
    assert "region " not in err


def test_the_command_line_imports_only_public_names_of_load_and_testing() -> None:
    """cli/ parses options and calls polyai_async.load and polyai_async.testing through their
    public names: no private module of theirs, no underscore name."""
    import ast

    import polyai_async.cli

    folder = Path(polyai_async.cli.__file__).parent
    offences = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level != 2 or node.module is None:
                continue
            package, _, rest = node.module.partition(".")
            if package not in ("load", "testing"):
                continue
            names = [alias.name for alias in node.names]
            if rest or any(name.startswith("_") for name in names):
                offences.append(f"{path.name}:{node.lineno}: from ..{node.module} import {names}")
    assert offences == []
