"""The load tester's front door: run a Load with a Scenario, get a LoadResult.

``run_load`` (blocking: scripts, the command line, worker processes) and ``run_load_async``
(inside a running event loop: pytest-asyncio, notebooks) do the same: apply the load, merge
the metrics, summarize, judge the thresholds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pickle
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .._client import PolyAIClient
from .._errors import ConfigurationError
from ._abort import AbortOnFail, WindowJudge
from ._conversation import guarded
from ._interrupt import Interrupt, on_loop_signals
from ._live import live_figures
from ._metrics import Metrics
from ._result import LoadResult, figure_names, make_result, summarize
from ._runner import choose_loop, drive, run_with_loop
from ._scenario import Scenario, demo_scenario
from ._shape import Load
from ._thresholds import Threshold
from ._workers import run_processes

__all__ = ["check_processes", "parse_thresholds", "run_load", "run_load_async"]

#: ``processes`` at most this many per CPU: more workers than cores only share them.
MAX_PROCESSES_PER_CPU = 4
#: Conversations a second one process may be asked to start (open model, stages included).
MAX_RATE_PER_PROCESS = 25_000

#: Called about once a second with the figures of the moment (see ``live_figures``).
OnTick = Callable[[Mapping[str, Any]], None]


def parse_thresholds(expressions: Iterable[str | Threshold]) -> tuple[Threshold, ...]:
    """Thresholds from expressions such as ``respond.p99<1500ms`` (Threshold objects pass).

    Raises:
        ConfigurationError: naming the expression that is wrong.
    """
    figures = figure_names()
    return tuple(
        t if isinstance(t, Threshold) else Threshold.parse(t, figures) for t in expressions
    )


def _check(scenario: Scenario | None, load: Load) -> Scenario:
    if not isinstance(load, Load):
        raise ConfigurationError(f"load must be a Load, not {type(load).__name__}")
    if scenario is None:
        return demo_scenario()
    if not isinstance(scenario, Scenario):
        raise ConfigurationError(f"scenario must be a Scenario, not {type(scenario).__name__}")
    return scenario


async def run_load_async(
    client: PolyAIClient,
    load: Load,
    scenario: Scenario | None = None,
    *,
    thresholds: Iterable[str | Threshold] = (),
    max_error_rate: float | None = None,
    on_tick: OnTick | None = None,
    settings: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    stop: asyncio.Event | None = None,
    abort_on_fail: AbortOnFail | None = None,
) -> LoadResult:
    """Apply ``load`` through an open ``client`` on the running event loop (one process).

    It handles no signal: the caller owns the loop. Setting ``stop`` interrupts the run as
    ``run_load``'s Ctrl-C does: no conversation starts, those in flight are cancelled and
    closed, and the result holds what was measured, with ``interrupted`` true. Cancelling
    the call instead closes the conversations too, then raises CancelledError (no result).

    Args:
        client: an open PolyAIClient (the caller closes it).
        load: what to apply: ``Load.closed(...)`` or ``Load.open(...)``.
        scenario: what the users say (default: ``demo_scenario()``).
        thresholds: expressions such as ``respond.p99<1500ms`` (see Threshold).
        max_error_rate: the run fails above this share of failed conversations.
        on_tick: called about once a second with the live figures.
        settings: the run's options, for the report (never a secret).
        context: keys added to the summary (target, base_url...).
        stop: once set, the run ends early with what was measured (see above).
        abort_on_fail: judge the thresholds as the run goes and stop it at the first that
            fails over the sliding window (see AbortOnFail): ``result.aborted`` says when and
            why, and the run fails (exit code 99).
    """
    return await _run_async(
        client,
        load,
        scenario,
        thresholds=thresholds,
        max_error_rate=max_error_rate,
        on_tick=on_tick,
        settings=settings,
        context=context,
        stop=stop,
        interrupt=None,
        abort_on_fail=abort_on_fail,
    )


async def _run_async(
    client: PolyAIClient,
    load: Load,
    scenario: Scenario | None,
    *,
    thresholds: Iterable[str | Threshold],
    max_error_rate: float | None,
    on_tick: OnTick | None,
    settings: Mapping[str, Any] | None,
    context: Mapping[str, Any] | None,
    stop: asyncio.Event | None,
    interrupt: Interrupt | None,
    abort_on_fail: AbortOnFail | None = None,
) -> LoadResult:
    scenario = _check(scenario, load)
    check_rate(load)
    parsed = parse_thresholds(thresholds)
    metrics = Metrics()
    ticker = None if on_tick is None else Ticker(on_tick, load)
    tick: Callable[[Metrics], None] | None = ticker
    judge = None
    if abort_on_fail is not None:
        stop = stop if stop is not None else asyncio.Event()
        tick, judge = _aborting(tick, abort_on_fail, parsed, stop)
    cpu = time.process_time()
    try:
        interrupted = await drive(client, scenario, load, metrics, on_tick=tick, stop=stop)
    finally:
        if ticker is not None:
            await ticker.aclose()
    by = None
    if interrupted and (judge is None or judge.reason is None):
        by = "stop" if interrupt is None or interrupt.signal is None else interrupt.signal
    result = make_result(
        metrics,
        thresholds=parsed,
        load=load,
        scenario=scenario,
        wall_seconds=time.perf_counter() - metrics.start,
        client_cpu_seconds=time.process_time() - cpu,
        max_error_rate=max_error_rate,
        settings=settings,
        context=context,
        interrupted_by=by,
    )
    return result if judge is None else result.with_abort(judge.as_dict())


def _aborting(
    tick: Callable[[Metrics], None] | None,
    abort: AbortOnFail,
    thresholds: Sequence[Threshold],
    stop: asyncio.Event,
) -> tuple[Callable[[Metrics], None], WindowJudge]:
    """``tick``, then the thresholds judged over the window: ``stop`` set once one failed."""
    if not isinstance(abort, AbortOnFail):
        raise ConfigurationError(
            f"abort_on_fail must be an AbortOnFail, not {type(abort).__name__}"
        )
    if not thresholds:
        raise ConfigurationError("abort_on_fail needs thresholds to judge")
    judge = WindowJudge(thresholds, grace=abort.grace, window=abort.window, failures=abort.failures)

    def aborting(metrics: Metrics) -> None:
        if tick is not None:
            tick(metrics)
        if judge.check(metrics):
            stop.set()

    return aborting, judge


class Ticker:
    """Calls ``on_tick`` with the live figures, computed off the event loop.

    Turning a second's histograms into percentiles walks their buckets in Python: 5-10 ms
    a second, which held the loop and showed as the generator's own lag (a lag warning on
    every run with a live view). The snapshot is taken on the loop (a copy of counters and
    encoded histograms, about 0.1 ms); the figures are computed in one worker thread, which
    the interpreter interrupts every few milliseconds for the loop; ``on_tick`` is then
    called back on the loop, as before. A tick that finds the previous one still computing
    is skipped: the view shows the next.
    """

    def __init__(self, on_tick: OnTick, load: Load) -> None:
        self._on_tick = guarded(on_tick, "the on_tick callback")
        self._load = load
        self._cpu = time.process_time()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "polyai-load-ticker")
        self._pending: concurrent.futures.Future[None] | None = None
        self._missed: Metrics | None = None  # a tick skipped while the last one computed

    def __call__(self, metrics: Metrics) -> None:
        if self._pending is not None and not self._pending.done():
            self._missed = metrics
            return
        self._missed = None
        snapshot = metrics.snapshot()
        snapshot["cpu_seconds"] = time.process_time() - self._cpu
        snapshot["elapsed"] = time.perf_counter() - metrics.start
        loop = asyncio.get_running_loop()
        self._pending = self._pool.submit(self._figures, snapshot, loop)

    def _figures(self, snapshot: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        figures = with_target(
            live_figures([snapshot], planned=self._load.planned_seconds()), self._load
        )
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody to show them to
            loop.call_soon_threadsafe(self._on_tick, figures)

    async def aclose(self) -> None:
        """Wait for the last figures and hand them to ``on_tick``; stop the thread."""
        for _ in range(2):  # the last tick, then the final one if it was skipped
            if self._pending is not None:
                await asyncio.wrap_future(self._pending)
                await asyncio.sleep(0)  # the call_soon_threadsafe callback runs
            if self._missed is None:
                break
            self(self._missed)
        self._pool.shutdown(wait=True)


def with_target(figures: dict[str, Any], load: Load) -> dict[str, Any]:
    """The live ``figures`` with the load's ``target`` now and its ``stage`` (``2/3``, or None)."""
    elapsed = figures.get("elapsed") or 0.0
    figures["target"] = load.target_at(elapsed)
    figures["target_unit"] = "/s" if not load.closed_model else " at once"
    stage = None
    left = elapsed
    for index, step in enumerate(load.stages):
        if left < step.duration:
            stage = f"{index + 1}/{len(load.stages)}"
            break
        left -= step.duration
    figures["stage"] = stage
    return figures


def check_rate(load: Load, processes: int = 1) -> None:
    """Refuse an open-model rate that ``processes`` processes cannot start.

    Past ``MAX_RATE_PER_PROCESS`` conversations a second per process, the generator measures
    only its own backlog (and would grow it without bound).

    Raises:
        ConfigurationError: naming ``rate`` and what to do instead.
    """
    if load.closed_model:
        return
    peak = max([load.rate or 0.0] + [stage.target for stage in load.stages])
    if peak > MAX_RATE_PER_PROCESS * processes:
        where = "" if peak == (load.rate or 0.0) else " (the stages' peak)"
        raise ConfigurationError(
            f"rate={peak:g} a second{where} is more than processes={processes} can start "
            f"(at most {MAX_RATE_PER_PROCESS:,} conversations a second each; past that a "
            "process measures only its own backlog): raise processes (up to "
            f"{MAX_PROCESSES_PER_CPU * (os.cpu_count() or 1)} here), or spread the load over "
            "several machines (the Locust bridge)"
        )


def check_processes(load: Load, processes: int) -> None:
    """Refuse ``processes`` unless it is a whole number >= 1 that ``load`` splits into.

    ``run_load`` checks this itself; a caller with something to start first (a server) can
    check before it starts anything.

    Raises:
        ConfigurationError: naming ``processes`` and why.
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ConfigurationError(f"processes must be a whole number >= 1, got {processes!r}")
    cpus = os.cpu_count() or 1
    limit = MAX_PROCESSES_PER_CPU * cpus
    if processes > limit:
        raise ConfigurationError(
            f"processes={processes} is above {limit}: at most {MAX_PROCESSES_PER_CPU} per CPU "
            f"({cpus} here), as more workers than cores only share the same cores; for more "
            "load, use several machines (the Locust bridge)"
        )
    check_rate(load, processes)
    for index in range(processes):
        try:
            load.split(processes, index)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"processes={processes}: the load does not split that many ways ({exc})"
            ) from None


def _check_picklable(
    processes: int, client_options: Mapping[str, Any], scenario: Scenario, load: Load
) -> None:
    """Refuse, naming it, what cannot be sent to a worker process (a lambda hook...)."""
    values: dict[str, Any] = {f"client_settings[{k!r}]": v for k, v in client_options.items()}
    values.update(scenario=scenario, load=load)
    for name, value in values.items():
        try:
            pickle.dumps(value)
        # AttributeError, TypeError, PicklingError...: each means it cannot be sent.
        except Exception as exc:
            raise ConfigurationError(
                f"{name} cannot be sent to the worker processes (processes={processes}), "
                f"which get a pickled copy: {exc}; use functions and classes defined at a "
                "module's top level (no lambda or local function), or processes=1"
            ) from None


def run_load(
    load: Load,
    scenario: Scenario | None = None,
    *,
    client_settings: Mapping[str, Any] | None = None,
    processes: int = 1,
    loop: str = "auto",
    thresholds: Iterable[str | Threshold] = (),
    max_error_rate: float | None = None,
    on_tick: OnTick | None = None,
    settings: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    abort_on_fail: AbortOnFail | None = None,
    stop_when: Callable[[int, Mapping[str, Any]], bool] | None = None,
) -> LoadResult:
    """Apply ``load`` and wait for the result (blocking; starts its own event loop).

    Called from the main thread, it handles SIGINT (Ctrl-C) and SIGTERM while it runs: the
    first stops the load (in every worker process), closes the conversations in flight, and
    returns what was measured with ``LoadResult.interrupted`` true (``interrupted_by`` names
    the signal); a second raises KeyboardInterrupt at once. A worker process that sends no
    result in time is left out: the result is then ``partial`` (see ``run_processes``).

    Args:
        load: what to apply: ``Load.closed(...)`` or ``Load.open(...)``.
        scenario: what the users say (default: ``demo_scenario()``).
        client_settings: PolyAIClient keyword arguments (base_url, credentials, retry,
            limits...); by default the client reads the POLYAI_* variables.
        processes: worker processes sharing the load; their metrics merge exactly.
        loop: ``auto`` (uvloop when installed), ``asyncio`` or ``uvloop``.
        thresholds: expressions such as ``respond.p99<1500ms`` (see Threshold).
        max_error_rate: the run fails above this share of failed conversations.
        on_tick: called about once a second with the live figures; what it raises is
            logged once, and the run goes on.
        settings: the run's options, for the report (never a secret).
        context: keys added to the summary (target, base_url...).
        abort_on_fail: stop the run at the first threshold to fail over a sliding window
            (see AbortOnFail; one process only).
        stop_when: with processes > 1, called with (worker index, its snapshot) as each
            worker reports (about once a second); once it returns True the run stops as on a
            signal (capacity's early stop uses it).

    Raises:
        ConfigurationError: a bad argument, before anything runs.
        WorkerError: a worker process failed.
    """
    scenario = _check(scenario, load)
    parsed = parse_thresholds(thresholds)
    check_processes(load, processes)
    if abort_on_fail is not None and processes > 1:
        raise ConfigurationError(
            "abort_on_fail judges one process's series: it does not go with processes > 1 yet"
        )
    chosen = choose_loop(loop)
    client_options = dict(client_settings or {})
    PolyAIClient(**client_options)  # refuse bad settings here, not in a worker process
    if processes > 1:
        _check_picklable(processes, client_options, scenario, load)
    common: dict[str, Any] = {
        "load": load,
        "scenario": scenario,
        "max_error_rate": max_error_rate,
        "processes": processes,
        "settings": {**(settings or {}), "loop": chosen, "processes": processes},
        "context": context,
    }
    if processes == 1:

        async def main() -> LoadResult:
            stop = asyncio.Event()
            interrupt = Interrupt(stop.set)
            with on_loop_signals(asyncio.get_running_loop(), interrupt):
                async with PolyAIClient(**client_options) as client:
                    return await _run_async(
                        client,
                        load,
                        scenario,
                        thresholds=parsed,
                        max_error_rate=max_error_rate,
                        on_tick=on_tick,
                        settings=common["settings"],
                        context=context,
                        stop=stop,
                        interrupt=interrupt,
                        abort_on_fail=abort_on_fail,
                    )

        return run_with_loop(main, chosen)

    shown = None if on_tick is None else guarded(on_tick, "the on_tick callback")

    def tick(snapshots: Sequence[Mapping[str, Any]]) -> None:
        if shown is not None:
            shown(with_target(live_figures(snapshots, planned=load.planned_seconds()), load))

    outcome = run_processes(
        scenario,
        load,
        client_options,
        processes=processes,
        loop=chosen,
        on_tick=tick,
        stop_when=stop_when,
    )
    runs, wall = outcome.runs, outcome.wall_seconds
    merged = Metrics()
    for run in runs:
        merged.merge(run.metrics)
    worker_summaries = [
        {
            "worker": run.index,
            **summarize(
                run.metrics,
                load=run.load,
                scenario=scenario,
                wall_seconds=run.wall_seconds,
                client_cpu_seconds=run.cpu_seconds,
                detail=False,
            ),
        }
        for run in runs
    ]
    return make_result(
        merged,
        thresholds=parsed,
        workers=[run.metrics for run in runs],
        worker_summaries=worker_summaries,
        wall_seconds=wall,
        client_cpu_seconds=sum(run.cpu_seconds for run in runs),
        interrupted_by=outcome.interrupted_by,
        workers_missing=outcome.missing,
        **common,
    )
