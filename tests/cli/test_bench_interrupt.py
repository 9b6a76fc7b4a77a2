"""A run is never lost: Ctrl-C and SIGTERM keep it, a stalled worker cannot hang it, a bad
output path or an impossible load is refused before anything is sent.

The signals are real: sent to a real ``polyai-async bench`` process (or to this one, for the
handlers alone), against a fake server this test starts on 127.0.0.1, which then says whether
every conversation was closed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from polyai_async import ConfigurationError
from polyai_async.cli import _bench
from polyai_async.load import (
    SCHEMA,
    Load,
    Persona,
    Scenario,
    TurnSpec,
    _output,
    _workers,
    run_load,
    run_load_async,
)
from polyai_async.load._api import check_processes
from polyai_async.load._html import render_html
from polyai_async.load._interrupt import Interrupt, on_signals
from polyai_async.load._metrics import Metrics
from polyai_async.load._report import output_path_problem, render
from polyai_async.load._result import make_result
from polyai_async.testing import FakePolyAI, FakeServerProcess, Faults
from tests.cli_runner import CliRunner
from tests.threaded_fake import ThreadedFake

TWO_TURNS = Scenario(
    name="two-turns",
    personas=(Persona(name="p", turns=(TurnSpec(say=("a",)), TurnSpec(say=("b",)))),),
)


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """``bench(*args)`` runs ``polyai-async bench ARGS`` in this process (tests/cli_runner.py)."""
    return CliRunner(monkeypatch, capsys, command="bench")


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The embedded fake servers bench started (none, when it refuses its options)."""
    started: list[object] = []

    def start(server: object) -> str:
        started.append(server)
        return "http://127.0.0.1:9"

    monkeypatch.setattr(FakeServerProcess, "start", start)
    return started


def _bench_process(fake: ThreadedFake, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYAI_")}
    env.update(fake.env)
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "polyai_async.cli", "bench", "--base-url", fake.url, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.e2e
@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_keeps_the_run_writes_every_report_and_closes_every_conversation(
    tmp_path: Path, sig: signal.Signals, code: int, processes: int
) -> None:
    """A signal to bench alone (with --processes, to the parent alone) stops the load: every
    conversation in flight is closed on the server, the JSON, CSV and HTML are written from
    what was measured and say "interrupted", and bench exits 130 (SIGINT) or 143 (SIGTERM)."""
    paths = {ext: tmp_path / f"r.{ext}" for ext in ("json", "csv", "html")}
    with ThreadedFake() as fake:
        process = _bench_process(
            fake,
            "--rate", "20", "--arrival", "constant", "--duration", "2m", "--think-time", "1s",
            "--processes", str(processes), "-q",
            "--json", str(paths["json"]), "--csv", str(paths["csv"]), "--html", str(paths["html"]),
        )  # fmt: skip
        try:
            # Conversations that think for 1 s between turns: many are in flight at any time.
            _wait_for(lambda: fake.server.requests["create"] >= 20, 60)
            process.send_signal(sig)
            signalled = time.monotonic()
            out, err = process.communicate(timeout=30)
            took = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        conversations = dict(fake.server.conversations)
        created = fake.server.requests["create"]
    assert process.returncode == code, err
    assert f"interrupted ({sig.name})" in err
    assert "Traceback" not in err
    assert f"INTERRUPTED ({sig.name})" in out
    assert took < 10
    report = json.loads(paths["json"].read_text())
    assert report["interrupted"] is True
    assert report["interrupted_by"] == sig.name
    assert report["partial"] is False
    assert report["processes"] == processes
    assert report["conversations_started"] >= 20
    assert report["conversations_interrupted"] > 0  # some were in flight, and were closed
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert sum(int(r["conversations_started"]) for r in rows) == report["conversations_started"]
    assert 'data-stopped="interrupted"' in paths["html"].read_text()
    # The server saw every conversation it created closed: none left open.
    assert created == report["conversations_started"]
    assert [cid for cid, state in conversations.items() if not state.closed] == []


async def test_stop_ends_run_load_async_with_what_was_measured() -> None:
    """run_load_async's ``stop`` interrupts the run as Ctrl-C does: the conversations in flight
    are closed, and the result holds the figures, marked interrupted (exit code 130)."""
    async with FakePolyAI(faults=Faults(latency=0.1)) as fake, fake.client() as client:
        stop = asyncio.Event()
        load = Load.open(rate=50, duration=60, arrival="constant")
        run = asyncio.create_task(run_load_async(client, load, TWO_TURNS, stop=stop))
        await asyncio.sleep(0.5)
        stop.set()
        result = await asyncio.wait_for(run, 5)
        assert all(state.closed for state in fake.conversations.values())
        assert fake.requests["create"] == result.figure("conversations_started")
    assert result.interrupted
    assert result.interrupted_by == "stop"
    assert result.summary["interrupted"] is True
    assert result.exit_code == 130
    assert 10 <= result.figure("conversations_started") < 3000  # 60 s planned at 50/s
    assert result.figure("conversations_interrupted") > 0


async def test_a_run_that_is_not_stopped_is_not_marked() -> None:
    """A run that ends by itself says interrupted false and partial false."""
    async with FakePolyAI() as fake, fake.client() as client:
        result = await run_load_async(
            client, Load.closed(concurrency=2, conversations=4), TWO_TURNS, stop=asyncio.Event()
        )
    assert not result.interrupted
    assert result.interrupted_by is None
    assert (result.summary["interrupted"], result.summary["partial"]) == (False, False)
    assert result.summary["workers_missing"] == []
    assert result.exit_code == 0


def test_the_first_signal_stops_and_a_second_one_quits() -> None:
    """A real SIGINT calls the stop once; a second raises KeyboardInterrupt (force quit) unless
    it is a worker's handler, which leaves quitting to the parent."""
    stops: list[str] = []
    interrupt = Interrupt(lambda: stops.append("stop"), say=False)
    with on_signals(interrupt):
        signal.raise_signal(signal.SIGINT)  # its handler has run when this returns
        assert (stops, interrupt.signal) == (["stop"], "SIGINT")
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    worker = Interrupt(lambda: stops.append("worker"), force_quit=False, say=False)
    with on_signals(worker):
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
    assert (stops, worker.signal) == (["stop", "worker"], "SIGTERM")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize(
    ("options", "marker", "line"),
    [
        ({"interrupted_by": "SIGTERM"}, 'data-stopped="interrupted"', "INTERRUPTED (SIGTERM)"),
        (
            {"workers_missing": [{"worker": 1, "name": "w-1", "reason": "sent nothing"}]},
            'data-stopped="partial"',
            "PARTIAL: worker 1 (w-1) sent nothing",
        ),
    ],
)
def test_the_terminal_and_html_reports_say_interrupted_or_partial(
    options: dict[str, object], marker: str, line: str
) -> None:
    """The terminal summary starts with the marker line, the HTML report shows it first."""
    summary = make_result(Metrics(), **options).summary  # type: ignore[arg-type]
    console = Console(record=True, width=200)
    render(summary, console, description="a run")
    assert console.export_text().splitlines()[1].startswith(line)
    assert marker in render_html(summary)
    locust = {**make_result(Metrics()).summary, "workers_missing": ["host_abc"]}
    assert "PARTIAL: worker host_abc sent no figures" in render_html(locust)
    plain = make_result(Metrics()).summary
    assert "INTERRUPTED" not in render_html(plain)
    assert "data-stopped" not in render_html(plain)


# procfs lets nobody, root included, create a file: a path that cannot be written, anywhere.
UNWRITABLE = "/proc/polyai-report.json"


@pytest.mark.usefixtures("cli_state")
@pytest.mark.parametrize(
    ("option", "path", "message"),
    [
        ("--json", UNWRITABLE, "argument --json: '/proc/polyai-report.json' cannot be written"),
        ("--csv", ".", "argument --csv: '.' is a directory"),
        ("--html", "no/such/folder/r.html", "argument --html: 'no/such/folder/r.html' its folder"),
    ],
)
def test_an_output_path_that_cannot_be_written_is_refused_before_the_run(
    bench: CliRunner, no_server: list[object], option: str, path: str, message: str
) -> None:
    """--json, --csv or --html that could not be written: exit 2, one line naming the option,
    before the embedded fake starts (so before any load)."""
    done = bench("--conversations", "1", option, path)
    assert done.returncode == 2, done.stdout
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert no_server == []


def test_checking_a_path_writes_nothing(tmp_path: Path) -> None:
    """The check opens an existing report unchanged, and leaves no new file behind."""
    existing = tmp_path / "old.json"
    existing.write_text("kept")
    assert output_path_problem(existing) is None
    assert existing.read_text() == "kept"
    assert output_path_problem(tmp_path / "new.json") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]


def test_a_report_that_fails_at_the_end_is_named_and_the_others_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If --csv fails to be written after the run, --json and --html still are, and one error
    line names --csv."""
    result = make_result(Metrics())
    paths = {ext: tmp_path / f"r.{ext}" for ext in ("json", "csv", "html")}
    args = argparse.Namespace(**paths)

    def full_disk(summary: object, path: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_output, "write_csv", full_disk)
    written = _bench.write_outputs(args, result)
    assert written is False
    assert json.loads(paths["json"].read_text())["schema"] == SCHEMA
    assert "<html" in paths["html"].read_text()
    assert not paths["csv"].exists()
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"polyai-async: error: --csv: could not write {paths['csv']}: No space left on device"
    ]


# -- a stalled worker -------------------------------------------------------------------------

STALL_MARKER = "POLYAI_ASYNC_TEST_STALL_MARKER"


def stall_one_worker(event: object) -> None:
    """An answer_received hook: the first worker process to see an answer blocks its event
    loop for good (it wins the marker file); the others carry on."""
    try:
        os.close(os.open(os.environ[STALL_MARKER], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    time.sleep(60)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("load", "bound"),
    [
        (Load.open(rate=20, duration=1, graceful_stop=0.5, arrival="constant"), "by the end"),
        (Load.closed(concurrency=2, conversations=400, think_time=None), "sent nothing for"),
    ],
    ids=["duration + graceful stop + margin", "silence"],
)
def test_a_stalled_worker_is_named_and_the_others_figures_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load: Load, bound: str
) -> None:
    """A worker whose loop stalls cannot hang run_load: after the load's duration, its
    graceful stop and a margin (or, with no set length, a silence), the result has the
    other worker's figures, names the missing one, is partial, and does not pass."""
    monkeypatch.setattr(_workers, "RESULT_MARGIN_SECONDS", 1.0)
    monkeypatch.setattr(_workers, "SILENCE_SECONDS", 3.0)
    monkeypatch.setenv(STALL_MARKER, str(tmp_path / "stalled"))
    with ThreadedFake() as fake:
        settings = {**fake.settings, "event_hooks": {"answer_received": stall_one_worker}}
        started = time.monotonic()
        result = run_load(load, TWO_TURNS, client_settings=settings, processes=2)
        took = time.monotonic() - started
    assert took < 20
    assert result.partial
    [missing] = result.summary["workers_missing"]
    assert missing["name"] == f"polyai-async-load-{missing['worker']}"
    assert bound in missing["reason"]
    [kept] = result.summary["workers"]
    assert kept["worker"] != missing["worker"]
    assert kept["conversations_completed"] > 0
    assert result.figure("conversations_completed") == kept["conversations_completed"]
    assert result.passed is False
    assert result.exit_code == 1


# -- limits that keep one process honest ------------------------------------------------------


def test_processes_are_bounded_by_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """processes may be 4 per CPU, not one more: the error names processes and the bound."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    load = Load.closed(concurrency=100, conversations=100)
    check_processes(load, 8)
    with pytest.raises(ConfigurationError, match=r"^processes=9 is above 8: at most 4 per CPU"):
        check_processes(load, 9)


def test_a_setting_that_cannot_be_pickled_is_refused_before_any_worker_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """run_load(processes=2) with a lambda hook: one ConfigurationError naming the setting,
    not a pickling AttributeError from a worker's start."""

    def no_workers(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker was started")

    monkeypatch.setattr("polyai_async.load._api.run_processes", no_workers)
    settings = {
        "base_url": "http://127.0.0.1:9",
        "api_key": "k",
        "token": "t",
        "account_id": "a",
        "project_id": "p",
        "event_hooks": {"request_sent": lambda event: None},
    }
    load = Load.closed(concurrency=2, conversations=2)
    with pytest.raises(ConfigurationError) as caught:
        run_load(load, TWO_TURNS, client_settings=settings, processes=2)
    message = str(caught.value)
    assert message.startswith("client_settings['event_hooks'] cannot be sent to the worker")
    assert "lambda" in message
    assert "\n" not in message


@pytest.mark.usefixtures("cli_state")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--processes", "100000"], "--processes=100000 is above"),
        (["--rate", "1e12", "--duration", "1s"], "--rate=1e+12 a second is more than"),
        (["--rate", "0", "--stages", "1s:60000", "--processes", "2"], "(the stages' peak)"),
    ],
)
def test_an_impossible_load_exits_2_before_the_run(
    bench: CliRunner, no_server: list[object], args: list[str], message: str
) -> None:
    """Too many processes, or a rate no process can start: one line naming the option and
    what to do instead, exit 2, nothing started."""
    done = bench("--conversations", "10", *args)
    assert done.returncode == 2, done.stdout
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert no_server == []


async def test_the_open_scheduler_yields_when_behind_so_a_stop_is_heard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """10,000,000 arrivals all overdue at once (the generator far behind): the scheduler still
    gives the event loop a turn every few milliseconds, so other tasks run and a stop ends
    the run at once instead of after the whole backlog."""
    monkeypatch.setattr(
        "polyai_async.load._runner.arrivals", lambda load, rng: itertools.repeat(0.0, 10**7)
    )
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    load = Load.open(rate=1, conversations=10**7, max_in_flight=1)
    async with FakePolyAI() as fake, fake.client() as client:
        stop = asyncio.Event()
        beating = asyncio.create_task(heartbeat())
        asyncio.get_running_loop().call_later(0.3, stop.set)
        result = await run_load_async(client, load, TWO_TURNS, stop=stop)
        beating.cancel()
    assert result.interrupted
    # The stop was heard long before the backlog ran out (it takes seconds without yields)...
    assert result.figure("conversations_dropped") < 10**7 - 1
    # ...and the loop was never held for long: 5 ms at a time, plus what a busy machine adds.
    assert max(gaps) < 0.5


async def test_the_closed_model_starts_only_the_users_it_can_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--conversations 5 --concurrency 500000 starts 5 simulated users, not 500,000."""
    users: list[str] = []
    create_task = asyncio.create_task

    def counting(coro: Any, **options: Any) -> asyncio.Task[Any]:
        if coro.__qualname__.endswith(".user"):
            users.append(coro.__qualname__)
        return create_task(coro, **options)

    monkeypatch.setattr(asyncio, "create_task", counting)
    async with FakePolyAI() as fake, fake.client() as client:
        load = Load.closed(concurrency=500_000, conversations=5)
        result = await run_load_async(client, load, TWO_TURNS)
    assert result.figure("conversations_completed") == 5
    assert len(users) == 5


@pytest.mark.e2e
def test_ctrl_c_is_heard_within_a_second_at_the_highest_rate(tmp_path: Path) -> None:
    """At 10,000 conversations a second (most dropped: the generator is behind), a real SIGINT
    still ends bench within a second or so, with its report, exit 130."""
    report = tmp_path / "r.json"
    with ThreadedFake() as fake:
        process = _bench_process(
            fake,
            "--rate", "10000", "--max-in-flight", "20", "--duration", "1m", "--turns", "1",
            "-q", "--json", str(report),
        )  # fmt: skip
        try:
            _wait_for(lambda: fake.server.requests["create"] >= 200, 60)
            process.send_signal(signal.SIGINT)
            signalled = time.monotonic()
            _, err = process.communicate(timeout=30)
            took = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 130, err
    assert took < 5  # 0.3 s on a quiet machine: the closes of those in flight, the report
    summary = json.loads(report.read_text())
    assert summary["interrupted_by"] == "SIGINT"
    assert summary["conversations_dropped"] > 0


def test_bench_exits_1_on_a_partial_run_naming_the_worker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A partial run fails (exit 1) with one line naming the worker that sent nothing, even
    when its figures would pass."""
    missing = [{"worker": 1, "name": "polyai-async-load-1", "reason": "sent nothing for 30 s"}]
    result = make_result(Metrics(), workers_missing=missing)
    args = argparse.Namespace(max_error_rate=0.01)
    assert _bench.conclude(args, result, True) == 1
    assert capsys.readouterr().err == (
        "polyai-async: error: partial run: no result from worker 1; the report has the other "
        "workers' figures\n"
    )
