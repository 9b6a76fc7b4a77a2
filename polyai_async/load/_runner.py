"""The runner: applies a Load with a Scenario through one client, on one event loop.

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
from ._conversation import (
    CLOSE_ON_CANCEL_SECONDS,
    Cancellations,
    Observer,
    guard,
    guarded,
    run_conversation,
)
from ._metrics import Metrics
from ._retries import count_retries, quiet_retry_warnings
from ._scenario import Scenario
from ._sent import count_requests
from ._shape import Load, arrivals

__all__ = ["LOOPS", "choose_loop", "drive", "run_with_loop"]

T = TypeVar("T")
LOOPS = ("auto", "asyncio", "uvloop")
#: How often the closed model's supervisor wakes: to follow the stages, and to measure lag.
_SUPERVISOR_SECONDS = 0.05
#: The longest the schedulers keep the event loop to themselves when they are behind.
_YIELD_SECONDS = 0.005
#: An arrival that would start later than this behind its schedule is dropped, not started:
#: a generator that has fallen this far behind cannot catch up by starting its backlog back to
#: back (above the lag warning's 10 ms, so an honest run drops nothing).
DROP_LATE_SECONDS = 0.1
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
    stop: asyncio.Event | None = None,
) -> bool:
    """Apply ``load`` with ``scenario`` through an open ``client``, recording into ``metrics``.

    Returns when the load is over and every conversation has ended (or was cancelled after
    ``load.graceful_stop``). ``on_tick(metrics)`` is called about once a second; what it
    raises is logged once, and the run goes on. Every request the client sends is counted
    with its outcome; retries are counted, not logged. Once ``stop`` is set, no conversation
    starts and those in flight are cancelled (each still closes); True then: the run was
    interrupted.
    """
    if on_tick is not None:
        on_tick = guarded(on_tick, "the on_tick callback")
    rng = random.Random(load.seed)  # noqa: S311 - simulated users, not secrets
    metrics.start = time.perf_counter()
    ticker = asyncio.create_task(_tick(metrics, on_tick))
    try:
        with (
            quiet_retry_warnings(),
            count_retries(client, metrics.retry),
            count_requests(
                client, metrics.request_sent, metrics.request_ended, metrics.call_cancelled
            ),
        ):
            model = _closed if load.closed_model else _open
            return await _unless_stopped(model(client, scenario, load, metrics, rng), stop)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        if metrics.load_seconds is None:  # stopped before the arrivals ended
            _end_of_arrivals(metrics, None)
        metrics.finish()
        if on_tick is not None:
            on_tick(metrics)


def _end_of_arrivals(metrics: Metrics, window: float | None, *, clamp: bool = True) -> None:
    """The arrivals are over: the load window is ``window`` seconds, or the time elapsed.

    ``clamp``: never more than the time elapsed (a planned duration cut short).
    """
    elapsed = time.perf_counter() - metrics.start
    if window is None:
        metrics.load_seconds = elapsed
    else:
        metrics.load_seconds = min(window, elapsed) if clamp else window


async def _unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event | None) -> bool:
    """Run ``work`` to its end, or cancel it once ``stop`` is set; True if stopped."""
    if stop is None:
        await work
        return False
    task = asyncio.create_task(work)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the run itself was cancelled: its conversations close
        task.cancel()
        await asyncio.wait({task}, timeout=CLOSE_ON_CANCEL_SECONDS + 1)
        raise
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()  # the models cancel their conversations, and each closes itself
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        task.result()  # the model's own failure, raised as it was
    return stop.is_set()


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
    observer: Observer,
    cancellations: Cancellations,
    rng: random.Random,
    scheduled: float | None,
) -> None:
    """One conversation; ``observer`` is ``metrics``, guarded once for the whole run."""
    persona = scenario.pick(rng)
    metrics.started(persona.name)
    try:
        await run_conversation(
            client,
            scenario,
            persona,
            rng,
            observer,
            think_time=load.think_time,
            scheduled=scheduled,
            cancellations=cancellations,
        )
    except asyncio.CancelledError:
        metrics.interrupted(persona.name)
        raise
    except Exception as exc:  # a bug, not the agent: still counted, with its class and message
        error = PolyAIError(f"{type(exc).__name__}: {exc}")
        metrics.conversation(persona.name, 0.0, error, False, None, 0)
        metrics.request("create", "POST", 0.0, error, None)


async def _finish(
    tasks: set[asyncio.Task[None]], grace: float | None, cancellations: Cancellations
) -> None:
    """Wait up to ``grace`` seconds (None: for ever) for ``tasks``, then cancel the rest.

    A cancelled conversation still closes itself.
    """
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        cancellations.cancel(task)
    if pending:
        await asyncio.wait(pending)


async def _cancel(tasks: set[asyncio.Task[None]], cancellations: Cancellations) -> None:
    """Cancel ``tasks`` (the run itself was cancelled) and let them close their conversations."""
    for task in tasks:
        cancellations.cancel(task)
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
    observer = guard(metrics)
    cancellations = Cancellations()

    def more() -> bool:
        return (remaining is None or remaining > 0) and (
            deadline is None or time.perf_counter() < deadline
        )

    async def user(index: int) -> None:
        nonlocal remaining
        while more() and index < load.users_at(time.perf_counter() - start):
            if remaining is not None:
                remaining -= 1
            await _conversation(client, scenario, load, metrics, observer, cancellations, rng, None)

    try:
        await _supervise(load, metrics, running, more, user, lambda: remaining)
        timed_out = deadline is not None and time.perf_counter() >= deadline
        if timed_out:  # the window is the planned duration; then the graceful stop
            _end_of_arrivals(metrics, planned)
        await _finish(
            set(running.values()),
            None if deadline is None else load.graceful_stop,
            cancellations,
        )
        if not timed_out:  # bound by a count: the load lasts until its last conversation ends
            _end_of_arrivals(metrics, None)
    except asyncio.CancelledError:
        await _cancel(set(running.values()), cancellations)
        raise


async def _supervise(
    load: Load,
    metrics: Metrics,
    running: dict[int, asyncio.Task[None]],
    more: Callable[[], bool],
    user: Callable[[int], Coroutine[Any, Any, None]],
    left: Callable[[], int | None],
) -> None:
    """Keep as many users running as the load's target, until there is no more to do.

    Never more new users than ``left()`` (the conversations not yet started; None: no
    bound): ``conversations=5`` with ``concurrency=500_000`` starts 5 users, not 500,000.
    """
    start = metrics.start
    planned_wake = time.perf_counter()
    first = True
    while more():
        target = load.users_at(time.perf_counter() - start)
        room = left()
        for index in range(target):
            if room is not None and room <= 0:
                break
            if index not in running:
                task = asyncio.create_task(user(index))
                running[index] = task
                task.add_done_callback(lambda _, i=index: running.pop(i, None))  # type: ignore[misc]
                if room is not None:
                    room -= 1
                if len(running) % 1000 == 0:  # a huge concurrency: let the loop breathe
                    await asyncio.sleep(0)
        planned_wake += _SUPERVISOR_SECONDS
        await asyncio.sleep(max(0.0, planned_wake - time.perf_counter()))
        # How late the loop woke us: the closed model's measure of the generator's lag. Not
        # the first wake: it measures every user starting at once, as the plan asks (100
        # users' first requests took 8-16 ms here), which would be the p99 of a short run.
        if not first:
            metrics.lag(time.perf_counter() - planned_wake)
        first = False
        if time.perf_counter() - planned_wake > 1.0:  # the loop was stalled: start afresh
            planned_wake = time.perf_counter()


async def _open(
    client: PolyAIClient, scenario: Scenario, load: Load, metrics: Metrics, rng: random.Random
) -> None:
    """The open model: conversations start on their schedule, whatever the answers do.

    Asked for more than it can start, the generator drops arrivals (counted, as k6 counts
    dropped iterations) instead of queueing them: one that comes more than
    ``DROP_LATE_SECONDS`` late, or that finds a pool's worth of calls already waiting for a
    connection, or ``max_in_flight`` conversations running. Without that, a generator past its
    ceiling started every arrival, the calls queued by the thousand for the connections, each
    connection sat idle while the loop worked through the queue, and about two thirds of the
    peak completed, every latency the generator's own queue's (issue 20).
    """
    start = metrics.start
    tasks: set[asyncio.Task[None]] = set()
    observer = guard(metrics)
    cancellations = Cancellations()
    count = 0
    clock = time.perf_counter
    first: float | None = None
    window: float | None = None
    awake = clock()  # when this loop last gave the event loop a turn
    try:
        for offset in arrivals(load, rng):
            if load.conversations is not None and count >= load.conversations:
                # Bound by a count: the arrivals end where the next one would have come.
                window = offset - (first or 0.0)
                break
            count += 1
            if first is None:
                first = offset
            when = start + offset
            delay = when - clock()
            if delay > 0:
                await asyncio.sleep(delay)
                awake = clock()
            elif clock() - awake > _YIELD_SECONDS:  # behind: arrivals come back to back
                await asyncio.sleep(0)  # the loop still serves I/O, ticks and signals
                awake = clock()
            # How late this arrival starts against its plan: the open model's generator lag.
            late = clock() - when
            metrics.lag(late)
            if late > DROP_LATE_SECONDS or client._connections_short():
                metrics.dropped()  # the generator is past its ceiling: see the docstring
                continue
            # A conversation is in flight from its scheduled start (its task exists), not from
            # when its task first runs: a generator behind its schedule creates tasks back to
            # back, and the limit must hold for them too.
            if len(tasks) >= load.max_in_flight:
                metrics.dropped()
                continue
            task = asyncio.create_task(
                _conversation(client, scenario, load, metrics, observer, cancellations, rng, when)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        planned = load.planned_seconds()
        if planned is not None:  # the schedule runs to its end even after the last arrival
            await asyncio.sleep(max(0.0, start + planned - clock()))
            if window is None:
                window = planned
        # Bound by a count, the window ends where the next arrival would have come: later
        # than now, the last arrival's start.
        _end_of_arrivals(metrics, window, clamp=planned is not None)
        await _finish(set(tasks), None if planned is None else load.graceful_stop, cancellations)
    except asyncio.CancelledError:
        await _cancel(set(tasks), cancellations)
        raise
