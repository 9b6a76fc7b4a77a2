"""``polyai-async bench``: a load benchmark of the client.

Its options, the embedded server process and the call into the load engine
(``polyai_async._bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson

from .._bench import BenchPlan, BenchResult, render, run_bench, summarize
from .._client import PolyAIClient
from .._config import PoolLimits
from .._errors import ConfigurationError
from .._retry import RetryPolicy
from ._common import (
    _FAKE_CREDENTIALS,
    _FAULT_OPTIONS,
    UsageError,
    _add_fault_options,
    _add_target_options,
    _budget,
    _client_settings,
    _display_url,
    _fail,
    _faults_from,
    _json_path,
    _positive_seconds,
    _rate,
    _whole,
    redact,
)

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no getrusage
    resource = None  # type: ignore[assignment]

# Starting Python and aiohttp takes about a second; a loaded CI machine may take several.
_SERVER_START_TIMEOUT = 30.0
_SERVER_STOP_TIMEOUT = 10.0
_PROGRESS_INTERVAL = 0.1


def add_parser(commands: Any) -> None:
    """Add the ``bench`` command to the subparsers ``commands``."""
    bench = commands.add_parser(
        "bench",
        help="drive many concurrent conversations and report latency and throughput",
        description="Drive conversations (create, turns, close) concurrently and report "
        "throughput, latency percentiles per endpoint, retries and errors. By default against "
        "a fake server started in its own process.",
    )
    load = bench.add_argument_group("load")
    load.add_argument(
        "--conversations",
        type=_whole(1),
        default=1000,
        metavar="N",
        help="conversations to run (default 1000)",
    )
    load.add_argument(
        "--turns",
        type=_whole(0),
        default=5,
        metavar="N",
        help="user messages per conversation; fewer when the agent ends it (default 5)",
    )
    load.add_argument(
        "--concurrency",
        type=_whole(1),
        default=1000,
        metavar="N",
        help="conversations in flight at once (default 1000)",
    )
    client = bench.add_argument_group("client")
    client.add_argument(
        "--max-connections",
        type=_whole(1),
        default=PoolLimits().max_connections,
        metavar="N",
        help=f"connections to the host at most (PoolLimits; default "
        f"{PoolLimits().max_connections})",
    )
    client.add_argument(
        "--retry-attempts",
        type=_whole(1),
        default=RetryPolicy().max_attempts,
        metavar="N",
        help=f"HTTP attempts per call, the first included; 1 turns retries off (default "
        f"{RetryPolicy().max_attempts})",
    )
    client.add_argument(
        "--no-retry-ambiguous",
        action="store_true",
        help="do not retry create and respond when the server may have processed them",
    )
    client.add_argument(
        "--deadline",
        type=_positive_seconds,
        default=RetryPolicy().deadline,
        metavar="SECONDS",
        help=f"time a call may take, retries included (default {RetryPolicy().deadline:g})",
    )
    client.add_argument(
        "--retry-budget",
        type=_budget,
        default=RetryPolicy().retry_budget,
        metavar="N|off",
        help=f"tokens in the client's retry budget, or off (default {RetryPolicy().retry_budget})",
    )
    _add_target_options(bench, "benchmark")
    _add_fault_options(bench)
    output = bench.add_argument_group("output")
    output.add_argument(
        "--json", type=_json_path, metavar="PATH", help="also write the figures as JSON to PATH"
    )
    output.add_argument(
        "--max-error-rate",
        type=_rate,
        default=0.01,
        metavar="F",
        help="exit 1 when the share of failed conversations is above this (default 0.01)",
    )
    output.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar; print only the report"
    )
    bench.set_defaults(run=run)


class _EmbeddedServer:
    """``python -m polyai_async.testing`` in a child process, so it has a core of its own."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.argv = [sys.executable, "-m", "polyai_async.testing", "--host", "127.0.0.1"]
        self.argv += ["--port", "0", "--agent", "demo"]
        for option, value in (
            ("--api-key", _FAKE_CREDENTIALS["api_key"]),
            ("--token", _FAKE_CREDENTIALS["token"]),
            ("--account-id", _FAKE_CREDENTIALS["account_id"]),
            ("--project-id", _FAKE_CREDENTIALS["project_id"]),
        ):
            self.argv += [option, value]
        for name in _FAULT_OPTIONS:
            value = getattr(args, name)
            if value is not None:
                self.argv += ["--" + name.replace("_", "-"), str(value)]
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.stats: dict[str, Any] = {}
        self.cpu_seconds: float | None = None
        # Its stderr goes to a file: a pipe nobody reads could fill up and stall the server.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()

    def start(self) -> str:
        """Start the server and return its URL, read from its first line of output."""
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr
        )
        lines: queue.Queue[bytes] = queue.Queue()
        stdout = self.process.stdout
        assert stdout is not None  # noqa: S101 - stdout=PIPE above
        # A daemon thread reads the line, so a server that never prints cannot hang us.
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=_SERVER_START_TIMEOUT)
        except queue.Empty:
            raise RuntimeError(
                f"the embedded fake server printed no URL within {_SERVER_START_TIMEOUT:g}s"
            ) from None
        self.url = line.decode(errors="replace").strip()
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError(f"the embedded fake server failed to start: {self._last_error()}")
        return self.url

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period) and read its counters."""
        process, self.process = self.process, None
        if process is None:
            return
        before = _children_cpu()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        after = _children_cpu()
        if before is not None and after is not None:
            self.cpu_seconds = after - before
        if process.stdout is not None:
            process.stdout.close()
        for line in reversed(self._stderr_lines()):
            if line.startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    self.stats = orjson.loads(line)
                break
        self._stderr.close()

    def _stderr_lines(self) -> list[str]:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip().splitlines()

    def _last_error(self) -> str:
        lines = self._stderr_lines()
        return lines[-1] if lines else "it exited without a word"


def _children_cpu() -> float | None:
    """CPU seconds of the children that have exited and been waited for (POSIX only)."""
    if resource is None:  # pragma: no cover - Windows
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """Treat SIGTERM as Ctrl-C in the block, so cleanups run (the server is stopped)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _import_rich() -> None:
    try:
        import rich  # noqa: F401, PLC0415 - only bench needs rich: the cli extra
    except ImportError:
        raise UsageError(
            "bench needs rich for its progress bar and report: install polyai-async[cli]"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Run ``polyai-async bench`` with the parsed ``args``; returns the exit status."""
    _import_rich()
    from rich.console import Console  # noqa: PLC0415 - rich is optional

    plan = BenchPlan(
        conversations=args.conversations, turns=args.turns, concurrency=args.concurrency
    )
    policy = RetryPolicy(
        max_attempts=args.retry_attempts,
        retry_ambiguous=not args.no_retry_ambiguous,
        deadline=args.deadline,
        retry_budget=args.retry_budget,
    )
    limits = PoolLimits(max_connections=args.max_connections)
    embedded = not (args.base_url or args.real)
    server: _EmbeddedServer | None = None
    if embedded:
        _faults_from(args)  # refuse rates that add up to more than 1 before starting anything
        target, settings = "embedded", {}
    else:
        target, settings = ("real" if args.real else "base_url"), _client_settings(args)
    result = BenchResult()
    console = Console(highlight=False)
    with _interrupt_on_sigterm(), contextlib.ExitStack() as cleanup:
        if embedded:
            server = _EmbeddedServer(args)
            # Stopped however the run ends: failure, Ctrl-C or SIGTERM.
            cleanup.callback(server.stop)
            settings = {"base_url": server.start(), **_FAKE_CREDENTIALS}
        try:
            client = PolyAIClient(**settings, retry=policy, limits=limits)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
        show_progress = not args.quiet and sys.stdout.isatty()
        asyncio.run(_drive(client, plan, result, console if show_progress else None))
    context: dict[str, Any] = {
        "target": target,
        "base_url": _display_url(client.base_url),
        "max_connections": args.max_connections,
        "retry_attempts": args.retry_attempts,
    }
    if server is not None:
        faults = server.stats.get("faults", {})
        context.update(
            server_cpu_seconds=None if server.cpu_seconds is None else round(server.cpu_seconds, 4),
            server_requests=sum(server.stats.get("requests", {}).values()),
            server_faults=sum(n for name, n in faults.items() if name != "latency"),
            server_max_open_connections=server.stats.get("max_open_connections"),
        )
    summary = summarize(plan, result, max_error_rate=args.max_error_rate, **context)
    examples = {name: redact(message) for name, message in result.error_examples.items()}
    where = summary["base_url"] + (
        (" (embedded fake" + (f", seed {args.seed})" if args.seed is not None else ")"))
        if embedded
        else ""
    )
    description = (
        f"polyai-async bench: {plan.conversations:,} conversations x up to {plan.turns} turns, "
        f"concurrency {plan.concurrency:,}\n"
        f"target {where}; client: {args.max_connections:,} connections, "
        f"{args.retry_attempts} attempts per call"
    )
    render(summary, examples, console, description=description)
    if args.json is not None:
        try:
            args.json.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        except OSError as exc:
            _fail(f"could not write {args.json}: {exc.strerror or exc}")
            return 1
    if not summary["passed"]:
        _fail(
            f"{summary['conversation_error_rate']:.2%} of conversations failed, above "
            f"--max-error-rate {args.max_error_rate:g}"
        )
        return 1
    return 0


async def _drive(
    client: PolyAIClient, plan: BenchPlan, result: BenchResult, console: Any | None
) -> None:
    async with client:
        if console is None:
            await run_bench(client, plan, result)
            return
        with _progress(console, plan) as update:
            ticker = asyncio.create_task(_tick(update, result))
            try:
                await run_bench(client, plan, result)
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                update(result)


@contextlib.contextmanager
def _progress(console: Any, plan: BenchPlan) -> Iterator[Callable[[BenchResult], None]]:
    from rich.progress import (  # noqa: PLC0415 - rich is optional
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    # Refreshed by our ticker on the event loop, not by rich's own thread.
    progress = Progress(
        TextColumn("conversations"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        auto_refresh=False,
        transient=True,
    )
    task = progress.add_task("bench", total=plan.conversations, rate="")
    started = time.perf_counter()

    def update(result: BenchResult) -> None:
        elapsed = time.perf_counter() - started
        rate = f"{result.turns_completed / elapsed:,.0f} turns/s" if elapsed > 0 else ""
        failed = f", [red]{result.failed:,} failed[/]" if result.failed else ""
        progress.update(task, completed=result.finished, rate=rate + failed)
        progress.refresh()

    with progress:
        yield update


async def _tick(update: Callable[[BenchResult], None], result: BenchResult) -> None:
    while True:
        update(result)
        await asyncio.sleep(_PROGRESS_INTERVAL)
