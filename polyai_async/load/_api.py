"""The load tester's front door: run a Load with a Scenario, get a LoadResult (private).

``run_load`` (blocking: scripts, the command line, worker processes) and ``run_load_async``
(inside a running event loop: pytest-asyncio, notebooks) do the same: apply the load, merge
the metrics, summarize, judge the thresholds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .._client import PolyAIClient
from .._errors import ConfigurationError
from ._conversation import guarded
from ._live import live_figures
from ._metrics import Metrics
from ._result import LoadResult, figure_names, make_result, summarize
from ._runner import choose_loop, drive, run_with_loop
from ._scenario import Scenario, demo_scenario
from ._shape import Load
from ._thresholds import Threshold
from ._workers import run_processes

__all__ = ["parse_thresholds", "run_load", "run_load_async"]

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
) -> LoadResult:
    """Apply ``load`` through an open ``client`` on the running event loop (one process).

    Args:
        client: an open PolyAIClient (the caller closes it).
        load: what to apply: ``Load.closed(...)`` or ``Load.open(...)``.
        scenario: what the users say (default: ``demo_scenario()``).
        thresholds: expressions such as ``respond.p99<1500ms`` (see Threshold).
        max_error_rate: the run fails above this share of failed conversations.
        on_tick: called about once a second with the live figures.
        settings: the run's options, for the report (never a secret).
        context: keys added to the summary (target, base_url...).
    """
    scenario = _check(scenario, load)
    parsed = parse_thresholds(thresholds)
    metrics = Metrics()
    tick = None if on_tick is None else _ticker(on_tick, load)
    cpu = time.process_time()
    await drive(client, scenario, load, metrics, on_tick=tick)
    return make_result(
        metrics,
        thresholds=parsed,
        load=load,
        scenario=scenario,
        wall_seconds=time.perf_counter() - metrics.start,
        client_cpu_seconds=time.process_time() - cpu,
        max_error_rate=max_error_rate,
        settings=settings,
        context=context,
    )


def _ticker(on_tick: OnTick, load: Load) -> Callable[[Metrics], None]:
    cpu = time.process_time()

    def tick(metrics: Metrics) -> None:
        snapshot = metrics.snapshot()
        snapshot["cpu_seconds"] = time.process_time() - cpu
        snapshot["elapsed"] = time.perf_counter() - metrics.start
        on_tick(live_figures([snapshot], planned=load.planned_seconds()))

    return tick


def check_processes(load: Load, processes: int) -> None:
    """Refuse ``processes`` unless it is a whole number >= 1 that ``load`` splits into.

    ``run_load`` checks this itself; a caller with something to start first (a server) can
    check before it starts anything.

    Raises:
        ConfigurationError: naming ``processes`` and why.
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ConfigurationError(f"processes must be a whole number >= 1, got {processes!r}")
    for index in range(processes):
        try:
            load.split(processes, index)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"processes={processes}: the load does not split that many ways ({exc})"
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
) -> LoadResult:
    """Apply ``load`` and wait for the result (blocking; starts its own event loop).

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

    Raises:
        ConfigurationError: a bad argument, before anything runs.
        WorkerError: a worker process failed.
    """
    scenario = _check(scenario, load)
    parsed = parse_thresholds(thresholds)
    check_processes(load, processes)
    chosen = choose_loop(loop)
    client_options = dict(client_settings or {})
    PolyAIClient(**client_options)  # refuse bad settings here, not in a worker process
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
            async with PolyAIClient(**client_options) as client:
                return await run_load_async(
                    client,
                    load,
                    scenario,
                    thresholds=parsed,
                    max_error_rate=max_error_rate,
                    on_tick=on_tick,
                    settings=common["settings"],
                    context=context,
                )

        return run_with_loop(main, chosen)

    shown = None if on_tick is None else guarded(on_tick, "the on_tick callback")

    def tick(snapshots: Sequence[Mapping[str, Any]]) -> None:
        if shown is not None:
            shown(live_figures(snapshots, planned=load.planned_seconds()))

    runs, wall = run_processes(
        scenario, load, client_options, processes=processes, loop=chosen, on_tick=tick
    )
    merged = Metrics()
    for run in runs:
        merged.merge(run.metrics)
    worker_summaries = [
        {
            "worker": index,
            **summarize(
                run.metrics,
                load=run.load,
                scenario=scenario,
                wall_seconds=run.wall_seconds,
                client_cpu_seconds=run.cpu_seconds,
                detail=False,
            ),
        }
        for index, run in enumerate(runs)
    ]
    return make_result(
        merged,
        thresholds=parsed,
        workers=[run.metrics for run in runs],
        worker_summaries=worker_summaries,
        wall_seconds=wall,
        client_cpu_seconds=sum(run.cpu_seconds for run in runs),
        **common,
    )
