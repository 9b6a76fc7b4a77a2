"""The runner: applies a Load with a Scenario through one client, on one event loop (private).

``drive`` is the engine: the closed model's simulated users, or the open model's arrival
schedule, conversations as tasks, the generator's own lag measured, a tick a second for the
live view. ``run_with_loop`` runs a coroutine on uvloop or asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._client import PolyAIClient
from .._errors import ConfigurationError, PolyAIError
from ._conversation import CLOSE_ON_CANCEL_SECONDS, guarded, run_conversation
from ._metrics import Metrics
from ._retries import count_retries
from ._scenario import Scenario
from ._shape import Load, arrivals

__all__ = ["LOOPS", "choose_loop", "drive", "run_with_loop"]

T = TypeVar("T")
LOOPS = ("auto", "asyncio", "uvloop")
#: How often the closed model's supervisor wakes: to follow the stages, and to measure lag.
_SUPERVISOR_SECONDS = 0.05
#: How often the tick (series, live view) runs.
TICK_SECONDS = 1.0


def choose_loop(loop: str) -> str:
    """``asyncio`` or ``uvloop``: what ``auto`` means here (uvloop when it is installed)."""
    if loop not in LOOPS:
        raise ConfigurationError(f"loop must be one of {', '.join(LOOPS)}, got {loop!r}")
    available = importlib.util.find_spec("uvloop") is not None
    if loop == "uvloop" and not available:
        raise ConfigurationError("loop uvloop: uvloop is not installed (pip install uvloop)")
    if loop == "auto":
        return "uvloop" if available else "asyncio"
    return loop


def run_with_loop(main: Callable[[], Coroutine[Any, Any, T]], loop: str) -> T:
    """Run ``main()`` to the end on a new event loop of kind ``loop`` (auto|asyncio|uvloop)."""
    if choose_loop(loop) == "uvloop":
        import uvloop  # noqa: PLC0415 - optional

        result: T = uvloop.run(main())
        return result
    return asyncio.run(main())


async def drive(
    client: PolyAIClient,
    scenario: Scenario,
    load: Load,
    metrics: Metrics,
    *,
    on_tick: Callable[[Metrics], None] | None = None,
) -> None:
    """Apply ``load`` with ``scenario`` through an open ``client``, recording into ``metrics``.

    Returns when the load is over and every conversation has ended (or was cancelled after
    ``load.graceful_stop``). ``on_tick(metrics)`` is called about once a second; what it
    raises is logged once, and the run goes on.
    """
    if on_tick is not None:
        on_tick = guarded(on_tick, "the on_tick callback")
    rng = random.Random(load.seed)  # noqa: S311 - simulated users, not secrets
    metrics.start = time.perf_counter()
    ticker = asyncio.create_task(_tick(metrics, on_tick))
    try:
        with count_retries(client, metrics.retry):
            if load.closed_model:
                await _closed(client, scenario, load, metrics, rng)
            else:
                await _open(client, scenario, load, metrics, rng)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        metrics.finish()
        if on_tick is not None:
            on_tick(metrics)


async def _tick(metrics: Metrics, on_tick: Callable[[Metrics], None] | None) -> None:
    start = metrics.start
    n = 0
    while True:
        n += 1
        await asyncio.sleep(max(0.0, start + n * TICK_SECONDS - time.perf_counter()))
        metrics.tick()
        if on_tick is not None:
            on_tick(metrics)


async def _conversation(
    client: PolyAIClient,
    scenario: Scenario,
    load: Load,
    metrics: Metrics,
    rng: random.Random,
    scheduled: float | None,
) -> None:
    persona = scenario.pick(rng)
    metrics.started(persona.name)
    try:
        await run_conversation(
            client,
            scenario,
            persona,
            rng,
            metrics,
            think_time=load.think_time,
            scheduled=scheduled,
        )
    except asyncio.CancelledError:
        metrics.interrupted(persona.name)
        raise
    except Exception as exc:  # a bug, not the agent: still counted, with its class and message
        error = PolyAIError(f"{type(exc).__name__}: {exc}")
        metrics.conversation(persona.name, 0.0, error, False, None, 0)
        metrics.request("create", "POST", 0.0, error, None)


async def _finish(tasks: set[asyncio.Task[None]], grace: float | None) -> None:
    """Wait up to ``grace`` seconds (None: for ever) for ``tasks``, then cancel the rest.

    A cancelled conversation still closes itself.
    """
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)


async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` (the run itself was cancelled) and let them close their conversations."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=CLOSE_ON_CANCEL_SECONDS + 1)


async def _closed(
    client: PolyAIClient, scenario: Scenario, load: Load, metrics: Metrics, rng: random.Random
) -> None:
    start = metrics.start
    planned = load.planned_seconds()
    deadline = None if planned is None else start + planned
    remaining = load.conversations
    running: dict[int, asyncio.Task[None]] = {}

    def more() -> bool:
        return (remaining is None or remaining > 0) and (
            deadline is None or time.perf_counter() < deadline
        )

    async def user(index: int) -> None:
        nonlocal remaining
        while more() and index < load.users_at(time.perf_counter() - start):
            if remaining is not None:
                remaining -= 1
            await _conversation(client, scenario, load, metrics, rng, None)

    try:
        await _supervise(load, metrics, running, more, user)
        await _finish(set(running.values()), None if deadline is None else load.graceful_stop)
    except asyncio.CancelledError:
        await _cancel(set(running.values()))
        raise


async def _supervise(
    load: Load,
    metrics: Metrics,
    running: dict[int, asyncio.Task[None]],
    more: Callable[[], bool],
    user: Callable[[int], Coroutine[Any, Any, None]],
) -> None:
    """Keep as many users running as the load's target, until there is no more to do."""
    start = metrics.start
    planned_wake = time.perf_counter()
    while more():
        target = load.users_at(time.perf_counter() - start)
        for index in range(target):
            if index not in running:
                task = asyncio.create_task(user(index))
                running[index] = task
                task.add_done_callback(lambda _, i=index: running.pop(i, None))  # type: ignore[misc]
        planned_wake += _SUPERVISOR_SECONDS
        await asyncio.sleep(max(0.0, planned_wake - time.perf_counter()))
        # How late the loop woke us: the closed model's measure of the generator's lag.
        metrics.lag(time.perf_counter() - planned_wake)
        if time.perf_counter() - planned_wake > 1.0:  # the loop was stalled: start afresh
            planned_wake = time.perf_counter()


async def _open(
    client: PolyAIClient, scenario: Scenario, load: Load, metrics: Metrics, rng: random.Random
) -> None:
    start = metrics.start
    tasks: set[asyncio.Task[None]] = set()
    count = 0
    clock = time.perf_counter
    try:
        for offset in arrivals(load, rng):
            if load.conversations is not None and count >= load.conversations:
                break
            count += 1
            when = start + offset
            delay = when - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            # How late this arrival starts against its plan: the open model's generator lag.
            metrics.lag(clock() - when)
            if metrics.in_flight >= load.max_in_flight:
                metrics.dropped()
                continue
            task = asyncio.create_task(_conversation(client, scenario, load, metrics, rng, when))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        planned = load.planned_seconds()
        if planned is not None:  # the schedule runs to its end even after the last arrival
            await asyncio.sleep(max(0.0, start + planned - clock()))
        await _finish(set(tasks), None if planned is None else load.graceful_stop)
    except asyncio.CancelledError:
        await _cancel(set(tasks))
        raise
