"""Worker processes: N processes apply a share of the load each; their Metrics merge exactly.

Each worker is a spawned process running ``drive`` on its own event loop and
client, on ``Load.split`` of the load (rates and sizes divided, whole numbers split so they
add up). The workers say they are ready, start together when told, send a small snapshot a
second for the live view, and send their whole Metrics (``to_dict``) at the end. The parent
merges them: histograms added, counters summed, the series second by second.

A signal to the parent alone stops every worker: the parent sets ``stop``, which each worker
watches; a worker also takes SIGINT or SIGTERM (a terminal's Ctrl-C reaches the whole process
group) as the same stop. Each then closes its conversations and sends what it measured. The
parent waits for the results a bounded time (the load's duration, its graceful stop and
``RESULT_MARGIN_SECONDS``; after a stop, the closes and the margin; and never more than
``SILENCE_SECONDS`` without a word from a worker): a worker that sent nothing by then is
named in ``Outcome.missing`` and the others' results are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue as queues
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from .._client import PolyAIClient
from .._errors import PolyAIError
from ._conversation import CLOSE_ON_CANCEL_SECONDS
from ._interrupt import Interrupt, on_loop_signals, on_signals
from ._metrics import Metrics
from ._runner import drive, run_with_loop
from ._scenario import Scenario
from ._shape import Load

__all__ = [
    "RESULT_MARGIN_SECONDS",
    "SILENCE_SECONDS",
    "Outcome",
    "WorkerError",
    "WorkerRun",
    "run_processes",
]

_START_TIMEOUT = 60.0
_POLL_SECONDS = 0.2
#: How long past the load's end (duration + graceful stop) the parent waits for a result.
RESULT_MARGIN_SECONDS = 15.0
#: A worker silent this long (it sends a tick a second) is stalled.
SILENCE_SECONDS = 30.0
#: How often a worker looks whether the parent said stop.
_WATCH_SECONDS = 0.1


class WorkerError(PolyAIError):
    """A worker process failed; the message says which and why."""


@attrs.frozen(kw_only=True)
class WorkerRun:
    """What one worker process measured, and in how much time and CPU."""

    metrics: Metrics
    load: Load
    wall_seconds: float
    cpu_seconds: float
    index: int = 0
    #: The signal that stopped it early (``stop``: the parent's word), else None.
    interrupted_by: str | None = None


@attrs.frozen(kw_only=True)
class Outcome:
    """What ``run_processes`` got: the runs received, the wall time, what is missing."""

    runs: list[WorkerRun]
    wall_seconds: float
    #: The signal that interrupted the run (the parent's, else a worker's), or None.
    interrupted_by: str | None = None
    #: Each worker that sent no result: its index, name and why.
    missing: tuple[Mapping[str, Any], ...] = ()


def _child(
    index: int,
    scenario: Scenario,
    load: Load,
    settings: Mapping[str, Any],
    loop: str,
    messages: Any,
    go: Any,
    stop: Any,
) -> None:
    """A worker process's main: run its share and send the results."""
    try:
        run = run_with_loop(
            lambda: _child_main(index, scenario, load, settings, messages, go, stop), loop
        )
        messages.put(
            (
                "done",
                index,
                run.metrics.to_dict(),
                run.wall_seconds,
                run.cpu_seconds,
                run.interrupted_by,
            )
        )
    except BaseException as exc:
        messages.put(("error", index, f"{type(exc).__name__}: {exc}"))


async def _child_main(
    index: int,
    scenario: Scenario,
    load: Load,
    settings: Mapping[str, Any],
    messages: Any,
    go: Any,
    stop: Any,
) -> WorkerRun:
    stopping = asyncio.Event()
    # A second signal changes nothing here: the parent decides when a worker must go.
    interrupt = Interrupt(stopping.set, force_quit=False, say=False)
    with on_loop_signals(asyncio.get_running_loop(), interrupt):
        async with PolyAIClient(**settings) as client:
            messages.put(("ready", index))
            # The parent starts every worker at once (a multiprocessing Event: polled).
            while not go.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            watcher = asyncio.create_task(_watch(stop, stopping))
            try:
                run = await _apply(index, scenario, load, client, messages, stopping)
            finally:
                watcher.cancel()
    if run.interrupted_by is not None and interrupt.signal is not None:
        run = attrs.evolve(run, interrupted_by=interrupt.signal)
    return run


async def _watch(stop: Any, stopping: asyncio.Event) -> None:
    """Set ``stopping`` once the parent sets ``stop`` (a multiprocessing Event)."""
    while not stop.is_set():  # noqa: ASYNC110 - a multiprocessing Event: polled
        await asyncio.sleep(_WATCH_SECONDS)
    stopping.set()


async def _apply(
    index: int,
    scenario: Scenario,
    load: Load,
    client: PolyAIClient,
    messages: Any,
    stopping: asyncio.Event,
) -> WorkerRun:
    metrics = Metrics()
    cpu = time.process_time()

    def tick(m: Metrics) -> None:
        snapshot = m.snapshot()
        snapshot["cpu_seconds"] = time.process_time() - cpu
        snapshot["elapsed"] = time.perf_counter() - m.start
        messages.put(("tick", index, snapshot))

    interrupted = await drive(client, scenario, load, metrics, on_tick=tick, stop=stopping)
    return WorkerRun(
        metrics=metrics,
        load=load,
        wall_seconds=time.perf_counter() - metrics.start,
        cpu_seconds=time.process_time() - cpu,
        index=index,
        interrupted_by="stop" if interrupted else None,
    )


def run_processes(  # noqa: PLR0912, PLR0915 - one loop reads every kind of message
    scenario: Scenario,
    load: Load,
    settings: Mapping[str, Any],
    *,
    processes: int,
    loop: str,
    on_tick: Callable[[Sequence[Mapping[str, Any]]], None] | None = None,
    stop_when: Callable[[int, Mapping[str, Any]], bool] | None = None,
) -> Outcome:
    """Run ``load`` split over ``processes`` worker processes: their runs and the wall time.

    ``on_tick`` gets the latest snapshot of every worker about once a second. ``stop_when``
    gets each snapshot as it comes, with its worker's index; once it returns True every worker
    stops as on a signal (no new conversation, those in flight closed). In the main
    thread, the first SIGINT or SIGTERM stops every worker (see the module); a second one
    raises KeyboardInterrupt, and the workers are terminated.

    Raises:
        WorkerError: a worker failed or could not start.
    """
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    go = context.Event()
    stop = context.Event()
    workers = [
        context.Process(
            target=_child,
            args=(i, scenario, load.split(processes, i), dict(settings), loop, messages, go, stop),
            name=f"polyai-async-load-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    runs: dict[int, WorkerRun] = {}
    snapshots: dict[int, Mapping[str, Any]] = {}
    missing: list[Mapping[str, Any]] = []
    interrupt = Interrupt(lambda: None)  # the loop below reads interrupt.signal
    try:
        with on_signals(interrupt):
            for worker in workers:
                worker.start()
            ready = 0
            deadline = time.monotonic() + _START_TIMEOUT
            while ready < processes:  # a signal now stops the workers as soon as they start
                message = _next(messages, workers, deadline)
                if message is None:
                    continue
                if message[0] == "ready":
                    ready += 1
                elif message[0] == "error":
                    raise WorkerError(f"worker {message[1]} failed to start: {message[2]}")
            started = time.perf_counter()
            go.set()
            planned = load.planned_seconds()
            # When every result should be in; None: the load has no set length.
            due = (
                None
                if planned is None
                else time.monotonic() + planned + load.graceful_stop + RESULT_MARGIN_SECONDS
            )
            heard = dict.fromkeys(range(processes), time.monotonic())
            last_tick = 0.0
            judged = False  # stop_when said stop
            while len(runs) < processes:
                now = time.monotonic()
                if (interrupt.signal is not None or judged) and not stop.is_set():
                    stop.set()
                    after_stop = now + CLOSE_ON_CANCEL_SECONDS + RESULT_MARGIN_SECONDS
                    due = after_stop if due is None else min(due, after_stop)
                silent = [i for i in heard if i not in runs and now - heard[i] > SILENCE_SECONDS]
                if silent or (due is not None and now > due):
                    for i in range(processes):
                        if i not in runs:
                            why = (
                                f"sent nothing for {SILENCE_SECONDS:g} s"
                                if i in silent
                                else "sent no result by the end of the load, its graceful "
                                f"stop and {RESULT_MARGIN_SECONDS:g} s more"
                            )
                            missing.append({"worker": i, "name": workers[i].name, "reason": why})
                    break
                message = _next(messages, workers, None)
                if message is None:
                    continue
                kind, index = message[0], message[1]
                heard[index] = time.monotonic()
                if kind == "tick":
                    snapshots[index] = message[2]
                    if stop_when is not None and not judged:
                        judged = stop_when(index, message[2])
                    now = time.perf_counter()
                    if on_tick is not None and now - last_tick >= 0.9:
                        last_tick = now
                        on_tick([snapshots[i] for i in sorted(snapshots)])
                elif kind == "done":
                    runs[index] = WorkerRun(
                        metrics=Metrics.from_dict(message[2]),
                        load=load.split(processes, index),
                        wall_seconds=message[3],
                        cpu_seconds=message[4],
                        index=index,
                        interrupted_by=message[5],
                    )
                elif kind == "error":
                    raise WorkerError(f"worker {index} failed: {message[2]}")
            wall = time.perf_counter() - started
            for index, worker in enumerate(workers):
                if index in runs:
                    worker.join(10)
    finally:
        stalled = {m["worker"] for m in missing}
        for index, worker in enumerate(workers):
            if worker.is_alive() and index not in stalled:
                worker.terminate()
                worker.join(5)
            if worker.is_alive():  # a stalled loop would never run its SIGTERM handler
                worker.kill()
                worker.join(5)
        messages.close()
        with contextlib.suppress(Exception):
            messages.join_thread()
    interrupted_by = interrupt.signal
    if interrupted_by is None:
        interrupted_by = next((r.interrupted_by for r in runs.values() if r.interrupted_by), None)
    return Outcome(
        runs=[runs[i] for i in sorted(runs)],
        wall_seconds=wall,
        interrupted_by=interrupted_by,
        missing=tuple(missing),
    )


def _next(messages: Any, workers: Sequence[Any], deadline: float | None) -> tuple[Any, ...] | None:
    """The next message from a worker, or None after a short wait (a signal may have come).

    WorkerError if a worker died silently or the start's deadline passed.
    """
    try:
        message: tuple[Any, ...] = messages.get(timeout=_POLL_SECONDS)
        return message
    except queues.Empty:
        pass
    for i, worker in enumerate(workers):
        if worker.exitcode not in (None, 0):
            raise WorkerError(f"worker {i} exited with status {worker.exitcode}")
    if deadline is not None and time.monotonic() > deadline:
        raise WorkerError(f"the worker processes did not start within {_START_TIMEOUT:g}s")
    return None
