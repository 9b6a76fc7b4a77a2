"""The ``polyai-async`` command: ``bench`` (load), ``serve`` (a fake API) and ``chat``.

Nothing in the library imports this module. rich (the ``cli`` extra) is imported only by
``bench``, which needs it for its progress bar and report; ``serve`` and ``chat`` print plain
text. Every failure ends in one line on stderr: usage errors exit 2, anything else 1, an
interrupt 130. No line this command prints ever holds the API key or the connector token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import orjson
from yarl import URL

from ._bench import BenchPlan, BenchResult, render, run_bench, summarize
from ._client import PolyAIClient
from ._config import PoolLimits
from ._errors import ConfigurationError, PolyAIError
from ._retry import RetryPolicy
from .testing import FakePolyAI, Faults, run_server
from .testing._agents import _AGENTS

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no getrusage
    resource = None  # type: ignore[assignment]

__all__ = ["main"]

PROG = "polyai-async"
_CREDENTIAL_VARIABLES = ("POLYAI_API_KEY", "POLYAI_TOKEN", "POLYAI_ACCOUNT_ID", "POLYAI_PROJECT_ID")
_SECRET_VARIABLES = ("POLYAI_API_KEY", "POLYAI_TOKEN")
# The embedded server's credentials: made up, accepted only by the fake this command starts.
_FAKE_CREDENTIALS: dict[str, str] = {
    "api_key": "fake-api-key",
    "token": "fake-token",
    "account_id": "ACCOUNT-fake",
    "project_id": "PROJECT-fake",
}
# Starting Python and aiohttp takes about a second; a loaded CI machine may take several.
_SERVER_START_TIMEOUT = 30.0
_SERVER_STOP_TIMEOUT = 10.0
_PROGRESS_INTERVAL = 0.1


class UsageError(Exception):
    """A bad option or combination of options, found after parsing: exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# -- argument types: each raises ArgumentTypeError with a message that names the problem -----


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    parse.__name__ = "whole number"
    return parse


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _rate(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a rate between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds > 0")
    return value


def _base_url(text: str) -> str:
    url = URL(text) if "://" in text else None
    if url is None or url.scheme not in {"http", "https"} or not url.host:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL such as https://api.example.com"
        )
    return text


def _budget(text: str) -> int | None:
    if text.lower() in {"off", "none"}:
        return None
    return _whole(0)(text)


def _json_path(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")
    if not path.absolute().parent.is_dir():
        raise argparse.ArgumentTypeError(f"the directory of {text!r} does not exist")
    return path


# -- the parser ----------------------------------------------------------------------------


def _add_fault_options(parser: argparse.ArgumentParser) -> None:
    # Every default is None, so bench can tell a fault option given for a real target.
    faults = parser.add_argument_group("faults injected by the fake server")
    faults.add_argument(
        "--error-rate", type=_rate, metavar="F", help="share of requests answered 500 (0 to 1)"
    )
    faults.add_argument(
        "--rate-limit-rate",
        type=_rate,
        metavar="F",
        help="share of requests answered 429 with Retry-After (0 to 1)",
    )
    faults.add_argument(
        "--retry-after",
        type=_seconds,
        metavar="SECONDS",
        help="the Retry-After of those 429s (default 1)",
    )
    faults.add_argument(
        "--reset-rate",
        type=_rate,
        metavar="F",
        help="share of requests whose connection is reset before any answer (0 to 1)",
    )
    faults.add_argument(
        "--malformed-rate",
        type=_rate,
        metavar="F",
        help="share of requests answered 200 with a body that is not JSON (0 to 1)",
    )
    faults.add_argument(
        "--latency", type=_seconds, metavar="SECONDS", help="delay added to every request"
    )
    faults.add_argument(
        "--latency-jitter",
        type=_seconds,
        metavar="SECONDS",
        help="up to this much more delay, uniformly random",
    )
    faults.add_argument(
        "--seed", type=int, metavar="N", help="seed the fake's faults and ids (repeatable runs)"
    )


_FAULT_OPTIONS = (
    "error_rate",
    "rate_limit_rate",
    "retry_after",
    "reset_rate",
    "malformed_rate",
    "latency",
    "latency_jitter",
    "seed",
)


def _add_target_options(parser: argparse.ArgumentParser, what: str) -> None:
    target = parser.add_argument_group("target (default: an embedded fake server)")
    choice = target.add_mutually_exclusive_group()
    choice.add_argument(
        "--base-url",
        type=_base_url,
        metavar="URL",
        help=f"{what} this API origin; credentials come from POLYAI_API_KEY, POLYAI_TOKEN, "
        "POLYAI_ACCOUNT_ID and POLYAI_PROJECT_ID",
    )
    choice.add_argument(
        "--real",
        action="store_true",
        help=f"{what} the real API: region (POLYAI_REGION) and credentials from the POLYAI_* "
        "variables",
    )


def build_parser() -> argparse.ArgumentParser:
    """Make the parser of the whole command, subcommands included."""
    parser = _Parser(
        prog=PROG,
        description="Tools around the PolyAI Chat API client: load benchmark, fake server, chat.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    bench.set_defaults(run=_bench)

    serve = commands.add_parser(
        "serve",
        help="run a fake PolyAI Chat API server until Ctrl-C",
        description="Run a fake PolyAI Chat API server (the demo agent) with optional faults, "
        "until Ctrl-C. Prints its URL on the first line, then the (fake) settings to use.",
    )
    where = serve.add_argument_group("server")
    where.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    where.add_argument(
        "--port", type=_whole(0), default=8000, help="port to listen on; 0 picks one (8000)"
    )
    where.add_argument(
        "--agent", choices=("demo", "echo"), default="demo", help="who answers (default demo)"
    )
    _add_fault_options(serve)
    serve.set_defaults(run=_serve)

    chat = commands.add_parser(
        "chat",
        help="chat with an agent in the terminal",
        description="Chat with an agent, one line per message, from the terminal or piped "
        "input. End with Ctrl-D or /quit. By default the agent is the fake server's demo "
        'agent: ask for "a human" to see a handoff, say "bye" to end.',
    )
    _add_target_options(chat, "chat with")
    chat.add_argument(
        "--agent",
        choices=("demo", "echo"),
        default="demo",
        help="the embedded fake's agent (default demo)",
    )
    chat.add_argument("--seed", type=int, metavar="N", help="seed the embedded fake's ids")
    chat.set_defaults(run=_chat)
    return parser


# -- shared helpers ------------------------------------------------------------------------


def _secrets() -> list[str]:
    secrets = [os.environ.get(name, "") for name in _SECRET_VARIABLES]
    secrets += [_FAKE_CREDENTIALS["api_key"], _FAKE_CREDENTIALS["token"]]
    # Longest first, so a secret that contains another is hidden whole.
    return sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)


def redact(text: str) -> str:
    """Hide any credential from the environment in ``text`` (a last line of defence)."""
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


def _fail(message: str) -> None:
    print(f"{PROG}: error: {redact(' '.join(message.split()))}", file=sys.stderr, flush=True)


def _display_url(url: str | URL) -> str:
    """An origin fit to print: any user and password in it are dropped."""
    return str(URL(str(url)).with_user(None))


def _faults_from(args: argparse.Namespace) -> Faults:
    """The Faults the fault options describe; UsageError if they do not fit together."""
    options = {
        name: getattr(args, name)
        for name in _FAULT_OPTIONS
        if name != "seed" and getattr(args, name) is not None
    }
    try:
        return Faults(**options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _client_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Settings for a client of the real target that ``--base-url`` or ``--real`` names."""
    given = [name for name in _FAULT_OPTIONS if getattr(args, name, None) is not None]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"{flags}: only the embedded fake server takes these options")
    missing = [name for name in _CREDENTIAL_VARIABLES if not os.environ.get(name)]
    if missing:
        flag = "--real" if args.real else "--base-url"
        raise UsageError(
            f"{flag} needs credentials: set {', '.join(missing)} (only the embedded fake "
            "server runs without them)"
        )
    return {"base_url": args.base_url} if args.base_url else {}


# -- bench ---------------------------------------------------------------------------------


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


def _bench(args: argparse.Namespace) -> int:
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


# -- serve ---------------------------------------------------------------------------------


def _fake(
    *,
    agent: str,
    seed: int | None,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Faults | None = None,
) -> FakePolyAI:
    return FakePolyAI(
        host=host,
        port=port,
        api_key=_FAKE_CREDENTIALS["api_key"],
        token=_FAKE_CREDENTIALS["token"],
        account_id=_FAKE_CREDENTIALS["account_id"],
        project_id=_FAKE_CREDENTIALS["project_id"],
        agent=_AGENTS[agent](),
        faults=faults,
        seed=seed,
    )


def _serve(args: argparse.Namespace) -> int:
    fake = _fake(
        host=args.host,
        port=args.port,
        agent=args.agent,
        faults=_faults_from(args),
        seed=args.seed,
    )

    def ready(running: FakePolyAI) -> None:
        print(running.url)
        print("Fake credentials, for this server only (export them, or pass them to the client):")
        print(f"  POLYAI_BASE_URL={running.url}")
        print(f"  POLYAI_API_KEY={running.api_key}")
        print(f"  POLYAI_TOKEN={running.token}")
        print(f"  POLYAI_ACCOUNT_ID={running.account_id}")
        print(f"  POLYAI_PROJECT_ID={running.project_id}")
        print("Press Ctrl-C to stop.", flush=True)

    try:
        stats = asyncio.run(run_server(fake, on_ready=ready))
    except OSError as exc:
        _fail(f"could not listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return 1
    requests = sum(stats.requests.values())
    print(f"Stopped after {requests:,} requests.", flush=True)
    return 0


# -- chat ----------------------------------------------------------------------------------


def _chat(args: argparse.Namespace) -> int:
    settings = None if not (args.base_url or args.real) else _client_settings(args)
    return asyncio.run(_chat_session(args, settings))


async def _chat_session(args: argparse.Namespace, settings: dict[str, Any] | None) -> int:
    async with contextlib.AsyncExitStack() as stack:
        if settings is None:
            fake = await stack.enter_async_context(_fake(agent=args.agent, seed=args.seed))
            client = fake.client()
            where = f"the fake {args.agent} agent at {fake.url}"
        else:
            try:
                client = PolyAIClient(**settings)
            except ConfigurationError as exc:
                raise UsageError(str(exc)) from None
            where = _display_url(client.base_url)
        await stack.enter_async_context(client)
        lines = _stdin_lines()
        interactive = sys.stdin.isatty()
        print(f"Chatting with {where}. Type /quit or press Ctrl-D to leave.", flush=True)
        async with client.conversation() as conversation:
            print(f"agent: {conversation.greeting}", flush=True)
            while not conversation.ended:
                if interactive:
                    print("you> ", end="", flush=True)
                line = await lines.get()
                if line is None or line.strip() == "/quit":
                    if line is None and interactive:
                        print()
                    break
                message = line.strip()
                if not message:
                    continue
                if not interactive:
                    print(f"you: {message}")
                reply = await conversation.send(message)
                print(f"agent: {reply.response}", flush=True)
                if reply.handoff is not None:
                    reason = f" ({reply.handoff.reason})" if reply.handoff.reason else ""
                    print(f"-- handed off to {reply.handoff.destination}{reason}")
                if reply.end_conversation:
                    print("-- the agent ended the conversation", flush=True)
        print(f"Conversation {conversation.conversation_id} closed.", flush=True)
    return 0


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Stdin's lines, read by a daemon thread (it cannot keep the process alive); None at EOF."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
        except (OSError, ValueError, RuntimeError):  # stdin closed, or the loop is gone
            pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, daemon=True, name="polyai-async-stdin").start()
    return lines


# -- main ----------------------------------------------------------------------------------


class _OneLineHandler(logging.Handler):
    """Log records to stderr (whatever it is now), one line each, never a traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        message = " ".join(record.getMessage().split())
        print(redact(f"{PROG}: {record.levelname.lower()}: {message}"), file=sys.stderr)


def _configure_logging() -> None:
    # On the root logger, so bench can silence the client's retry warnings while it counts
    # them (it stops their propagation for the run).
    root = logging.getLogger()
    if not any(isinstance(h, _OneLineHandler) for h in root.handlers):
        root.addHandler(_OneLineHandler(logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    parser = build_parser()
    _configure_logging()
    try:
        args = parser.parse_args(argv)
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    except UsageError as exc:
        _fail(str(exc))
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    except PolyAIError as exc:
        _fail(str(exc))
        return 1
    except Exception as exc:  # anything unforeseen: still one line, never a traceback
        _fail(f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
