"""What every ``polyai-async`` command shares.

Option types, target and fault options, the error line, redaction, logging and the fake
credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yarl import URL

from .. import _logging
from .._commandline import OneLineParser, option_names
from .._config import DEFAULT_REGION, REGIONS, PoolLimits, is_loopback
from .._errors import ConfigurationError
from .._redact import safe_text
from .._retry import RetryPolicy
from ..testing import AGENTS, DEFAULT_CREDENTIALS, FakePolyAI, Faults

PROG = "polyai-async"
_CREDENTIAL_VARIABLES = ("POLYAI_API_KEY", "POLYAI_TOKEN", "POLYAI_ACCOUNT_ID", "POLYAI_PROJECT_ID")
# The embedded server's credentials: made up, the fake's defaults (the same as FakePolyAI's and
# ``python -m polyai_async.testing``'s), accepted only by the fake this command starts.
FAKE_CREDENTIALS: dict[str, str] = dict(DEFAULT_CREDENTIALS)


class UsageError(Exception):
    """A bad option or combination of options, found after parsing: exit 2."""


class Parser(OneLineParser):
    """argparse, but an error is one line (no usage block) and exit 2."""


# -- argument types: each raises ArgumentTypeError with a message that names the problem -----


def whole(minimum: int) -> Callable[[str], int]:
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


def _bounded(text: str, *, above_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (above_zero and value == 0):
        bound = "above 0" if above_zero else ">= 0"
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number {bound}")
    return value


def positive_number(text: str) -> float:
    """A finite number above 0."""
    return _bounded(text, above_zero=True)


def non_negative_number(text: str) -> float:
    """A finite number of 0 or more."""
    return _bounded(text, above_zero=False)


def rate(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a rate between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds >= 0")
    return value


def positive_seconds(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds > 0")
    return value


def duration(text: str) -> float:
    """A duration above 0 (``500ms``, ``6s``, ``2m``), as the load's parser reads it."""
    seconds = duration_or_zero(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration above 0")
    return seconds


def duration_or_zero(text: str) -> float:
    """A duration of 0 or more (``0s`` allowed), as the load's parser reads it."""
    from ..load import parse_duration  # noqa: PLC0415 - the load extra is checked in run()

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _base_url(text: str) -> str:
    try:
        url = URL(text) if "://" in text else None
    except ValueError:
        url = None
    if url is None or url.scheme not in {"http", "https"} or not url.host:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL such as https://api.example.com"
        )
    if url.scheme == "http" and not is_loopback(url.host):
        raise argparse.ArgumentTypeError(
            f"{display_url(url)} is plain http to a host other than this machine, which would "
            "send the API key unencrypted: use https"
        )
    return text


def budget(text: str) -> int | None:
    if text.lower() in {"off", "none"}:
        return None
    return whole(0)(text)


def json_path(text: str) -> Path:
    """A report's path, checked (by trying) before anything runs: argparse names the option."""
    from ..load import output_path_problem  # noqa: PLC0415 - the load extra

    problem = output_path_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return Path(text)


# -- options shared by commands -----------------------------------------------------------


def add_fault_options(parser: argparse.ArgumentParser) -> None:
    # Every default is None, so bench can tell a fault option given for a real target.
    faults = parser.add_argument_group("faults injected by the fake server")
    faults.add_argument(
        "--error-rate", type=rate, metavar="F", help="share of requests answered 500 (0 to 1)"
    )
    faults.add_argument(
        "--rate-limit-rate",
        type=rate,
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
        type=rate,
        metavar="F",
        help="share of requests whose connection is reset before any answer (0 to 1)",
    )
    faults.add_argument(
        "--malformed-rate",
        type=rate,
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


def add_scenario_options(parser: argparse.ArgumentParser) -> None:
    """The scenario group (bench's and capacity's)."""
    scenario = parser.add_argument_group("scenario")
    scenario.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="what the users say: a YAML or JSON scenario, or JSON Lines of recorded "
        "conversations (default: the demo scenario)",
    )
    scenario.add_argument(
        "--turns",
        type=whole(0),
        default=None,
        metavar="N",
        help="the demo scenario's user messages per conversation; fewer when the agent ends "
        "it (default 5)",
    )
    scenario.add_argument(
        "--think-time",
        metavar="TIME",
        help="pause before each user message, overriding the scenario's: 2s, "
        "exponential:3s or uniform:1s..5s",
    )


def add_generator_options(load: Any) -> None:
    """The load group's options on how the generator runs (bench's and capacity's)."""
    load.add_argument(
        "--arrival",
        choices=("poisson", "constant"),
        default="poisson",
        help="open model: random (poisson) or evenly spaced (constant) arrivals (default poisson)",
    )
    load.add_argument(
        "--max-in-flight",
        type=whole(1),
        default=10_000,
        metavar="N",
        help="open model: arrivals that find N conversations in flight (counted from their "
        "scheduled start) are dropped and counted as conversations_dropped (default 10000)",
    )
    load.add_argument(
        "--processes",
        type=whole(1),
        default=1,
        metavar="N",
        help="worker processes sharing the load, at most 4 per CPU; their histograms merge "
        "exactly (default 1)",
    )
    load.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the event loop: auto is uvloop when it is installed (default auto)",
    )


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """The client group: pool, retries, deadline, adaptive concurrency (bench's and capacity's)."""
    client = parser.add_argument_group("client")
    client.add_argument(
        "--max-connections",
        type=whole(1),
        default=PoolLimits().max_connections,
        metavar="N",
        help=f"connections to the host at most, per process (PoolLimits; default "
        f"{PoolLimits().max_connections})",
    )
    client.add_argument(
        "--retry-attempts",
        type=whole(1),
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
        type=positive_seconds,
        default=RetryPolicy().deadline,
        metavar="SECONDS",
        help=f"time a call may take, retries included (default {RetryPolicy().deadline:g})",
    )
    client.add_argument(
        "--retry-budget",
        type=budget,
        default=RetryPolicy().retry_budget,
        metavar="N|off",
        help=f"tokens in the client's retry budget, or off: a retry costs 5 tokens (10 after "
        f"a timeout), a success refunds 1, and with the budget spent failures are not retried "
        f"(default {RetryPolicy().retry_budget})",
    )
    client.add_argument(
        "--adaptive-concurrency",
        action="store_true",
        help="cap the client's calls in flight and move the cap as the API answers (slow "
        "start, AIMD on 429/503/timeouts, a client-wide pause for Retry-After), as a bot with "
        "PolyAIClient(adaptive_concurrency=True) would",
    )


FAULT_OPTIONS = (
    "error_rate",
    "rate_limit_rate",
    "retry_after",
    "reset_rate",
    "malformed_rate",
    "latency",
    "latency_jitter",
    "seed",
)


def add_agent_options(parser: argparse.ArgumentParser) -> None:
    # Defaults None, as the fault options: a real target refuses them.
    agent = parser.add_argument_group("the fake agent's capacity")
    agent.add_argument(
        "--agent-capacity",
        type=whole(1),
        metavar="N",
        help="respond turns the fake agent works on at once; more wait their turn, first come "
        "first served: it sustains N / --agent-latency turns a second (default: no limit)",
    )
    agent.add_argument(
        "--agent-latency",
        type=_seconds,
        metavar="SECONDS",
        help="with --agent-capacity, the seconds each turn holds its slot (default 0.1)",
    )
    agent.add_argument(
        "--agent-latency-jitter",
        type=_seconds,
        metavar="SECONDS",
        help="with --agent-capacity, up to this much more per turn, uniformly random",
    )


AGENT_OPTIONS = ("agent_capacity", "agent_latency", "agent_latency_jitter")


def agent_capacity_from(args: argparse.Namespace) -> dict[str, Any]:
    """FakePolyAI's agent_* arguments the agent options give; UsageError if they do not fit."""
    options = {n: getattr(args, n) for n in AGENT_OPTIONS if getattr(args, n, None) is not None}
    if options and "agent_capacity" not in options:
        flags = ", ".join("--" + n.replace("_", "-") for n in options)
        raise UsageError(f"{flags}: give --agent-capacity too (they shape its slots)")
    return options


def add_target_options(parser: argparse.ArgumentParser, what: str) -> None:
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
        help=f"{what} the real API: region from POLYAI_REGION ({', '.join(REGIONS)}; default "
        f"{DEFAULT_REGION}) and credentials from the POLYAI_* variables",
    )


# -- shared helpers ------------------------------------------------------------------------


# The command running, for the prefix of every line this program writes to stderr.
_running: list[str] = []


def set_command(command: str | None) -> None:
    """Name the subcommand that runs, so errors and warnings say ``polyai-async COMMAND:``."""
    _running[:] = [command] if command else []


def prog() -> str:
    """``polyai-async`` followed by the running subcommand, as argparse names it."""
    return " ".join([PROG, *_running])


def fail(message: str) -> None:
    print(f"{prog()}: error: {safe_text(' '.join(message.split()))}", file=sys.stderr, flush=True)


def reason(exc: BaseException) -> str:
    """What went wrong in ``exc`` in a few words, for the end of a message."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "no answer in time"
    return " ".join(str(exc).split()) or type(exc).__name__


# The library's arguments as this command's user sets them: credentials and region through
# the environment, the origin through --base-url.
_ARGUMENT_WORDS = {
    "api_key": "POLYAI_API_KEY",
    "token": "POLYAI_TOKEN",
    "account_id": "POLYAI_ACCOUNT_ID",
    "project_id": "POLYAI_PROJECT_ID",
    "region": "POLYAI_REGION",
    "base_url": "--base-url",
}


def cli_words(message: str) -> str:
    """``message`` from the library in this command's words.

    The library names its arguments (``account_id``); this command's user sets a variable
    (``POLYAI_ACCOUNT_ID``) or an option (``--base-url``).
    """
    for argument, word in _ARGUMENT_WORDS.items():
        message = re.sub(rf"(?<![\w-]){argument}(?![\w])", word, message)
    return message


def display_url(url: str | URL) -> str:
    """An origin fit to print: any user and password in it are dropped."""
    return str(URL(str(url)).with_user(None))


def faults_from(args: argparse.Namespace) -> Faults:
    """The Faults the fault options describe; UsageError if they do not fit together."""
    options = {
        name: getattr(args, name)
        for name in FAULT_OPTIONS
        if name != "seed" and getattr(args, name) is not None
    }
    try:
        return Faults(**options)
    except ValueError as exc:
        # Faults names its arguments (error_rate); the user typed options (--error-rate).
        raise UsageError(option_names(str(exc), FAULT_OPTIONS)) from None


def client_settings(args: argparse.Namespace, *, source: str | None = None) -> dict[str, Any]:
    """Settings for a client of the real target that ``--base-url`` or ``--real`` names.

    ``source`` names what chose the target in messages (default ``--real`` or ``--base-url``).
    """
    given = [
        name for name in (*FAULT_OPTIONS, *AGENT_OPTIONS) if getattr(args, name, None) is not None
    ]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(f"{flags}: only the embedded fake server takes these options")
    missing = [name for name in _CREDENTIAL_VARIABLES if not os.environ.get(name)]
    if missing:
        flag = source or ("--real" if args.real else "--base-url")
        raise UsageError(
            f"{flag} needs credentials: set {', '.join(missing)} (only the embedded fake "
            "server runs without them)"
        )
    return {"base_url": args.base_url} if args.base_url else {}


def make_fake(
    *,
    agent: str,
    seed: int | None,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Faults | None = None,
    **agent_capacity: Any,
) -> FakePolyAI:
    return FakePolyAI(
        host=host,
        port=port,
        api_key=FAKE_CREDENTIALS["api_key"],
        token=FAKE_CREDENTIALS["token"],
        account_id=FAKE_CREDENTIALS["account_id"],
        project_id=FAKE_CREDENTIALS["project_id"],
        agent=AGENTS[agent](),
        faults=faults,
        seed=seed,
        **agent_capacity,
    )


class OneLineHandler(logging.Handler):
    """Log records to stderr (whatever it is now), one line each, never a traceback.

    The command's one log handler: ``POLYAI_LOG`` sets its level (it adds no other), and every
    line is redacted, its control characters shown as escapes (``_redact.safe_text``). The
    library's messages start ``polyai_async:`` for a log without a prefix of its own; here
    the line already starts with the command's name, so that is dropped. A record's exception
    is told as its reason, at the end of the line.
    """

    def emit(self, record: logging.LogRecord) -> None:
        message = " ".join(record.getMessage().split()).removeprefix("polyai_async: ")
        if record.exc_info and record.exc_info[1] is not None:
            message += f": {reason(record.exc_info[1])}"
        print(safe_text(f"{prog()}: {record.levelname.lower()}: {message}"), file=sys.stderr)


def configure_logging() -> None:
    # On the root logger, so bench can silence the client's retry warnings while it counts
    # them (it stops their propagation for the run).
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, OneLineHandler)), None)
    if handler is None:
        handler = OneLineHandler(logging.WARNING)
        root.addHandler(handler)
    # A bad POLYAI_LOG: the first client made says so, as one error line.
    with contextlib.suppress(ConfigurationError):
        _logging.adopt(handler)
