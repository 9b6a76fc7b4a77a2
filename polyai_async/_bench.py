"""The load run behind ``polyai-async bench``: drive conversations, measure them, report (private).

Only ``cli`` imports this module; rich is imported inside ``render`` alone, so the engine runs
without it.

A conversation is create, up to ``turns`` responds, then close (always, even after a failure).
The user messages are chosen by the conversation's index, so a run is repeatable:

- one conversation in 20 (index % 20 == 7) asks for a human at turn ``turns // 2``: the demo
  agent hands off, which ends the conversation, and nothing more is sent;
- one in 20 (index % 20 == 13) says goodbye on its last turn: it runs every turn, then the
  agent ends it;
- the rest make small talk the demo agent answers without ending anything.

Retries are counted by a handler on the ``polyai_async`` logger, which logs one record per retry
(before its backoff sleep): a call that succeeds after retries raises nothing, so only the log
sees those. HTTP requests sent = API calls made + retries.

The summary (``summarize``, written by ``--json``) is one flat JSON object:

======================================  ===========================================================
key                                     meaning
======================================  ===========================================================
schema                                  ``"polyai-async-bench/1"``
target                                  ``"embedded"``, ``"base_url"`` or ``"real"``
base_url                                the API origin (never credentials)
conversations                           conversations asked for
turns_per_conversation                  user messages per conversation, at most
concurrency                             conversations in flight at once, at most
max_connections                         the client's PoolLimits.max_connections
retry_attempts                          RetryPolicy.max_attempts
conversations_completed                 conversations whose every call succeeded
conversations_failed                    conversations with at least one failed call
conversation_error_rate                 conversations_failed / conversations
max_error_rate                          the ``--max-error-rate`` threshold
passed                                  conversation_error_rate <= max_error_rate
turns_planned                           turns a run without failures completes
turns_completed                         respond calls that succeeded
handoffs                                conversations the agent handed off
ended_by_agent                          conversations the agent ended (handoffs included)
calls                                   API calls made (create + respond + close)
retries                                 retries, all endpoints (``retries_create`` ... per endpoint)
requests                                HTTP requests sent: calls + retries
errors_total                            failed calls (``error_<ClassName>`` per error class)
wall_seconds                            wall time of the run (server start-up excluded)
client_cpu_seconds                      CPU time of the client process during the run
turns_per_second                        turns_completed / wall_seconds
requests_per_second                     requests / wall_seconds
<endpoint>_count                        successful calls, for create, respond and close
<endpoint>_p50_ms ... _p90/_p99/_max    latency of the successful calls, in ms (null if none)
server_cpu_seconds                      the embedded server's CPU time, start-up included (or null)
server_requests                         requests the embedded server counted (null otherwise)
server_faults                           faults it injected, latency excluded (null otherwise)
server_max_open_connections             the most connections it had open at once (null otherwise)
======================================  ===========================================================
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from . import _errors
from ._client import PolyAIClient

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["BenchPlan", "BenchResult", "RetryCounter", "render", "run_bench", "summarize"]

SCHEMA = "polyai-async-bench/1"
ENDPOINTS = ("create", "respond", "close")
# The client's names for its calls (the retry log's first argument), by endpoint.
_CALL_NAMES = {"create_chat": "create", "respond": "respond", "close_chat": "close"}
# Always in the JSON, so a script can read error_<name> without checking for it.
_ERROR_CLASSES = tuple(name for name in _errors.__all__ if name != "PolyAIError")
_PERCENTILES = (50, 90, 99)
# The latency figures per endpoint, as summarize names them (``{endpoint}_{key}_ms``).
_LATENCY_KEYS = (*(f"p{p}" for p in _PERCENTILES), "max")

_SMALL_TALK = (
    "Hello there",
    "What are your opening hours?",
    "Can you check the status of my order?",
    "Do you deliver on weekends?",
    "Thanks, that helps",
)
_HANDOFF = "I'd like to speak to a human, please"
_GOODBYE = "That's all, goodbye"


@attrs.frozen(kw_only=True)
class BenchPlan:
    """How much load to apply.

    Args:
        conversations: conversations to run in all.
        turns: user messages per conversation, at most (fewer when the agent ends it).
        concurrency: conversations in flight at once, at most.
    """

    conversations: int
    turns: int
    concurrency: int

    def handoff_turn(self, index: int) -> int | None:
        """The turn at which conversation ``index`` asks for a human, if it does."""
        return self.turns // 2 if self.turns and index % 20 == 7 else None

    def message(self, index: int, turn: int) -> str:
        """The user's message at ``turn`` of conversation ``index``."""
        if turn == self.handoff_turn(index):
            return _HANDOFF
        if index % 20 == 13 and turn == self.turns - 1:
            return _GOODBYE
        return _SMALL_TALK[(index + turn) % len(_SMALL_TALK)]

    def turns_planned(self) -> int:
        """Turns a run completes when nothing fails: handoffs cut their conversations short."""
        total = 0
        for index in range(self.conversations):
            handoff = self.handoff_turn(index)
            total += self.turns if handoff is None else handoff + 1
        return total


@attrs.define(eq=False)
class BenchResult:
    """What a run measured; ``run_bench`` fills it in place, so a progress bar can read it.

    Latencies are seconds, one float per successful call, kept in plain lists: a list append
    is the cheapest bookkeeping there is on the hot path; percentiles are computed at the end.
    """

    latencies: dict[str, list[float]] = attrs.Factory(lambda: {e: [] for e in ENDPOINTS})
    completed: int = 0
    failed: int = 0
    turns_completed: int = 0
    handoffs: int = 0
    ended_by_agent: int = 0
    errors: Counter[str] = attrs.Factory(Counter)
    error_examples: dict[str, str] = attrs.Factory(dict)
    retries: Counter[str] = attrs.Factory(Counter)
    wall_seconds: float = 0.0
    client_cpu_seconds: float = 0.0

    @property
    def finished(self) -> int:
        """Conversations run to their end, completed or failed."""
        return self.completed + self.failed

    def failure(self, error: BaseException) -> None:
        """Count a failed call under its error class, keeping the first message as an example."""
        name = type(error).__name__
        self.errors[name] += 1
        if name not in self.error_examples:
            self.error_examples[name] = str(error)


class RetryCounter(logging.Handler):
    """Counts the retry records of the ``polyai_async`` logger, per endpoint.

    The retrier logs exactly one WARNING per retry, before its backoff sleep, with the call's
    name (``create_chat``, ``respond``, ``close_chat``) as the first argument. Other records
    are left alone.
    """

    def __init__(self, retries: Counter[str]) -> None:
        super().__init__(logging.WARNING)
        self.retries = retries

    def emit(self, record: logging.LogRecord) -> None:
        """Count ``record`` if it announces a retry."""
        if not isinstance(record.msg, str) or "retrying in" not in record.msg:
            return
        args = record.args
        what = args[0] if isinstance(args, tuple) and args else None
        self.retries[_CALL_NAMES.get(what, "other") if isinstance(what, str) else "other"] += 1

    def handle(self, record: logging.LogRecord) -> bool:
        # No lock: the event loop's thread is the only one that logs during a run.
        self.emit(record)
        return True


async def run_bench(client: PolyAIClient, plan: BenchPlan, result: BenchResult) -> None:
    """Run ``plan`` against ``client``, filling ``result``.

    ``plan.concurrency`` workers take the next conversation as they finish one: the same
    bound as a semaphore, with one task per worker instead of one per conversation.
    """
    logger = logging.getLogger("polyai_async")
    counter = RetryCounter(result.retries)
    saved = logger.level, logger.propagate
    logger.addHandler(counter)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    # Retries are counted and reported; printed one by one they would bury the progress bar.
    logger.propagate = False
    indexes = iter(range(plan.conversations))
    workers = min(plan.concurrency, plan.conversations)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        await asyncio.gather(*(_worker(client, plan, result, indexes) for _ in range(workers)))
    finally:
        result.wall_seconds = time.perf_counter() - started
        result.client_cpu_seconds = time.process_time() - cpu_started
        logger.removeHandler(counter)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


async def _worker(
    client: PolyAIClient, plan: BenchPlan, result: BenchResult, indexes: Iterator[int]
) -> None:
    # One iterator shared by every worker: the loop's single thread hands out each index once.
    for index in indexes:
        await _conversation(client, plan, result, index)


async def _conversation(
    client: PolyAIClient, plan: BenchPlan, result: BenchResult, index: int
) -> None:
    clock = time.perf_counter
    create, respond, close = (result.latencies[e] for e in ENDPOINTS)
    started = clock()
    try:
        created = await client.create_chat()
    except Exception as error:  # every failure is counted, none stops the run
        result.failure(error)
        result.failed += 1
        return
    create.append(clock() - started)
    conversation_id = created.conversation_id
    ok = True
    for turn in range(plan.turns):
        started = clock()
        try:
            reply = await client.respond(conversation_id, plan.message(index, turn))
        except Exception as error:
            result.failure(error)
            ok = False
            break
        respond.append(clock() - started)
        result.turns_completed += 1
        if reply.end_conversation:  # an ended conversation takes no more messages
            result.ended_by_agent += 1
            if reply.handoff is not None:
                result.handoffs += 1
            break
    started = clock()
    try:
        await client.close_chat(conversation_id)
    except Exception as error:
        result.failure(error)
        ok = False
    else:
        close.append(clock() - started)
    if ok:
        result.completed += 1
    else:
        result.failed += 1


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(
    plan: BenchPlan, result: BenchResult, *, max_error_rate: float, **context: Any
) -> dict[str, Any]:
    """The run's figures as one flat JSON-ready dict (the schema is in the module docstring).

    ``context`` adds or overrides keys: target, base_url, max_connections, retry_attempts and
    the server_* figures.
    """
    calls = sum(len(v) for v in result.latencies.values()) + sum(result.errors.values())
    retries = sum(result.retries.values())
    requests = calls + retries
    wall = result.wall_seconds
    error_rate = result.failed / plan.conversations if plan.conversations else 0.0
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "target": None,
        "base_url": None,
        "conversations": plan.conversations,
        "turns_per_conversation": plan.turns,
        "concurrency": plan.concurrency,
        "max_connections": None,
        "retry_attempts": None,
        "conversations_completed": result.completed,
        "conversations_failed": result.failed,
        "conversation_error_rate": error_rate,
        "max_error_rate": max_error_rate,
        "passed": error_rate <= max_error_rate,
        "turns_planned": plan.turns_planned(),
        "turns_completed": result.turns_completed,
        "handoffs": result.handoffs,
        "ended_by_agent": result.ended_by_agent,
        "calls": calls,
        "retries": retries,
        **{f"retries_{e}": result.retries[e] for e in ENDPOINTS},
        "requests": requests,
        "errors_total": sum(result.errors.values()),
        **{f"error_{name}": 0 for name in _ERROR_CLASSES},
        **{f"error_{name}": n for name, n in sorted(result.errors.items())},
        "wall_seconds": round(wall, 4),
        "client_cpu_seconds": round(result.client_cpu_seconds, 4),
        "turns_per_second": round(result.turns_completed / wall, 2) if wall else 0.0,
        "requests_per_second": round(requests / wall, 2) if wall else 0.0,
        "server_cpu_seconds": None,
        "server_requests": None,
        "server_faults": None,
        "server_max_open_connections": None,
    }
    for endpoint in ENDPOINTS:
        ordered = sorted(result.latencies[endpoint])
        summary[f"{endpoint}_count"] = len(ordered)
        for p in _PERCENTILES:
            value = percentile(ordered, p) if ordered else None
            summary[f"{endpoint}_p{p}_ms"] = _ms(value)
        summary[f"{endpoint}_max_ms"] = _ms(ordered[-1] if ordered else None)
    summary.update(context)
    return summary


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _millis(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def render(
    summary: dict[str, Any], examples: dict[str, str], console: Console, *, description: str
) -> None:
    """Print the summary as rich tables: totals, latency per endpoint, errors by class.

    Args:
        summary: what ``summarize`` returned.
        examples: one message per error class, shown beside its count.
        console: where to print.
        description: printed first: what was run against what.
    """
    from rich import box  # noqa: PLC0415 - rich is optional: the cli extra
    from rich.table import Table  # noqa: PLC0415

    s = summary
    console.print(description)
    totals = Table(box=box.SIMPLE_HEAD, show_header=False)
    totals.add_column("figure", style="bold")
    totals.add_column("value", justify="right")
    totals.add_column("detail")
    failed_style = "red" if s["conversations_failed"] else ""
    totals.add_row("conversations completed", _count(s["conversations_completed"]), "")
    totals.add_row(
        "conversations failed",
        f"[{failed_style}]{s['conversations_failed']:,}[/]"
        if failed_style
        else _count(s["conversations_failed"]),
        f"{s['conversation_error_rate']:.2%} (max {s['max_error_rate']:.2%}: "
        + ("passed)" if s["passed"] else "[red]FAILED[/])"),
    )
    totals.add_row("turns completed", _count(s["turns_completed"]), f"of {s['turns_planned']:,}")
    totals.add_row("handoffs / ended by agent", f"{s['handoffs']:,} / {s['ended_by_agent']:,}", "")
    totals.add_row(
        "requests", _count(s["requests"]), f"{s['calls']:,} calls + {s['retries']:,} retries"
    )
    totals.add_row(
        "retries",
        _count(s["retries"]),
        ", ".join(f"{e} {s[f'retries_{e}']:,}" for e in ENDPOINTS),
    )
    totals.add_row("throughput", f"{s['turns_per_second']:,.0f}", "turns/s")
    totals.add_row("", f"{s['requests_per_second']:,.0f}", "requests/s")
    totals.add_row("wall time", f"{s['wall_seconds']:.2f}", "s")
    cpu = s["client_cpu_seconds"]
    share = f" ({cpu / s['wall_seconds']:.0%} of one core)" if s["wall_seconds"] else ""
    totals.add_row("client CPU", f"{cpu:.2f}", f"s{share}")
    if s["server_cpu_seconds"] is not None:
        totals.add_row("server CPU", f"{s['server_cpu_seconds']:.2f}", "s (embedded fake)")
    if s["server_faults"] is not None:
        totals.add_row(
            "server faults injected",
            _count(s["server_faults"]),
            f"of {s['server_requests']:,} requests",
        )
        totals.add_row(
            "server connections", _count(s["server_max_open_connections"]), "open at most"
        )
    console.print(totals)

    latency = Table(title="latency (ms)", box=box.SIMPLE_HEAD, title_justify="left")
    latency.add_column("endpoint", style="bold")
    for header in ("ok calls", *_LATENCY_KEYS):
        latency.add_column(header, justify="right")
    for endpoint in ENDPOINTS:
        latency.add_row(
            endpoint,
            _count(s[f"{endpoint}_count"]),
            *(_millis(s[f"{endpoint}_{k}_ms"]) for k in _LATENCY_KEYS),
        )
    console.print(latency)
    in_flight = min(s["concurrency"], s["conversations"])
    if s["max_connections"] is not None and in_flight > s["max_connections"]:
        console.print(
            f"note: {in_flight:,} conversations share {s['max_connections']:,} connections, so "
            "latency includes waiting for a free connection (see --max-connections)\n"
        )

    if s["errors_total"]:
        errors = Table(title="errors by class", box=box.SIMPLE_HEAD, title_justify="left")
        errors.add_column("class", style="bold red")
        errors.add_column("count", justify="right")
        errors.add_column("first message", overflow="fold")
        for key, value in s.items():
            if key.startswith("error_") and value:
                name = key.removeprefix("error_")
                errors.add_row(name, f"{value:,}", examples.get(name, ""))
        console.print(errors)
