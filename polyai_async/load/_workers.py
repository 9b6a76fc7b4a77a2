"""Worker processes: N processes apply a share of the load each; their Metrics merge exactly.

(private) Each worker is a spawned process running ``drive`` on its own event loop and
client, on ``Load.split`` of the load (rates and sizes divided, whole numbers split so they
add up). The workers say they are ready, start together when told, send a small snapshot a
second for the live view, and send their whole Metrics (``to_dict``) at the end. The parent
merges them: histograms added, counters summed, the series second by second.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue as queues
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from .._client import PolyAIClient
from .._errors import PolyAIError
from ._metrics import Metrics
from ._runner import drive, run_with_loop
from ._scenario import Scenario
from ._shape import Load

__all__ = ["WorkerError", "WorkerRun", "run_processes"]

_START_TIMEOUT = 60.0
_POLL_SECONDS = 0.2


class WorkerError(PolyAIError):
    """A worker process failed; the message says which and why."""


@attrs.frozen(kw_only=True)
class WorkerRun:
    """What one worker process measured, and in how much time and CPU."""

    metrics: Metrics
    load: Load
    wall_seconds: float
    cpu_seconds: float


def _child(
    index: int,
    scenario: Scenario,
    load: Load,
    settings: Mapping[str, Any],
    loop: str,
    messages: Any,
    go: Any,
) -> None:
    """A worker process's main: run its share and send the results (private)."""
    try:
        run = run_with_loop(
            lambda: _child_main(index, scenario, load, settings, messages, go), loop
        )
        messages.put(("done", index, run.metrics.to_dict(), run.wall_seconds, run.cpu_seconds))
    except BaseException as exc:
        messages.put(("error", index, f"{type(exc).__name__}: {exc}"))


async def _child_main(
    index: int,
    scenario: Scenario,
    load: Load,
    settings: Mapping[str, Any],
    messages: Any,
    go: Any,
) -> WorkerRun:
    async with PolyAIClient(**settings) as client:
        messages.put(("ready", index))
        while not go.is_set():  # the parent starts every worker at once
            await _sleep(0.002)
        metrics = Metrics()
        cpu = time.process_time()

        def tick(m: Metrics) -> None:
            snapshot = m.snapshot()
            snapshot["cpu_seconds"] = time.process_time() - cpu
            snapshot["elapsed"] = time.perf_counter() - m.start
            messages.put(("tick", index, snapshot))

        await drive(client, scenario, load, metrics, on_tick=tick)
        return WorkerRun(
            metrics=metrics,
            load=load,
            wall_seconds=time.perf_counter() - metrics.start,
            cpu_seconds=time.process_time() - cpu,
        )


async def _sleep(seconds: float) -> None:
    import asyncio  # noqa: PLC0415 - keeps the module's imports about processes

    await asyncio.sleep(seconds)


def run_processes(  # noqa: PLR0912 - one loop reads every kind of message
    scenario: Scenario,
    load: Load,
    settings: Mapping[str, Any],
    *,
    processes: int,
    loop: str,
    on_tick: Callable[[Sequence[Mapping[str, Any]]], None] | None = None,
) -> tuple[list[WorkerRun], float]:
    """Run ``load`` split over ``processes`` worker processes; their runs and the wall time.

    ``on_tick`` gets the latest snapshot of every worker about once a second.

    Raises:
        WorkerError: a worker failed or could not start.
    """
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    go = context.Event()
    workers = [
        context.Process(
            target=_child,
            args=(i, scenario, load.split(processes, i), dict(settings), loop, messages, go),
            name=f"polyai-async-load-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    runs: dict[int, WorkerRun] = {}
    snapshots: dict[int, Mapping[str, Any]] = {}
    try:
        for worker in workers:
            worker.start()
        ready = 0
        deadline = time.monotonic() + _START_TIMEOUT
        while ready < processes:
            message = _next(messages, workers, deadline)
            if message[0] == "ready":
                ready += 1
            elif message[0] == "error":
                raise WorkerError(f"worker {message[1]} failed to start: {message[2]}")
        started = time.perf_counter()
        go.set()
        last_tick = 0.0
        while len(runs) < processes:
            message = _next(messages, workers, None)
            kind, index = message[0], message[1]
            if kind == "tick":
                snapshots[index] = message[2]
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
                )
            elif kind == "error":
                raise WorkerError(f"worker {index} failed: {message[2]}")
        wall = time.perf_counter() - started
        for worker in workers:
            worker.join(10)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(5)
        messages.close()
        with contextlib.suppress(Exception):
            messages.join_thread()
    return [runs[i] for i in range(processes)], wall


def _next(messages: Any, workers: Sequence[Any], deadline: float | None) -> tuple[Any, ...]:
    """The next message from a worker; WorkerError if one died silently or time ran out."""
    while True:
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
