"""A run's result: the merged Metrics, the summary built from them, thresholds, warnings.

The summary (``LoadResult.summary``, written by ``--json``) is one JSON object with schema
``polyai-async-bench/4``; every key is documented in ``docs/load-testing.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .. import _errors
from ._interrupt import EXIT_CODES
from ._metrics import ENDPOINTS, SERIES_HISTOGRAMS, Metrics
from ._scenario import Scenario
from ._shape import Load
from ._thresholds import LATENCY_SOURCES, Threshold, ThresholdResult

__all__ = [
    "CPU_WARNING_SHARE",
    "LAG_WARNING_MS",
    "SCHEMA",
    "LoadResult",
    "figure_names",
    "judge",
    "summarize",
]

SCHEMA = "polyai-async-bench/4"
#: Past this generator lag (p99, ms), the figures describe the generator, not the agent.
LAG_WARNING_MS = 10.0
#: Past this share of a core, the client's CPU is saturated.
CPU_WARNING_SHARE = 0.9
# Always in the summary, so a script can read error_<name> without checking for it.
_ERROR_CLASSES = tuple(name for name in _errors.__all__ if name != "PolyAIError")
_STATISTICS = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _key(histogram: str) -> str:
    """A histogram's name as the summary's keys start: ``create.ok`` -> ``create_ok``."""
    return histogram.replace(".", "_")


def _latencies(metrics: Metrics, source: str) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    key = _key(source)
    for name, percentile in _STATISTICS.items():
        figures[f"{key}_{name}_ms"] = _round(metrics.percentile_ms(source, percentile))
    figures[f"{key}_max_ms"] = _round(metrics.max_ms(source))
    figures[f"{key}_mean_ms"] = _round(metrics.mean_ms(source))
    return figures


def _timeseries(metrics: Metrics, load: Load | None = None) -> list[dict[str, Any]]:
    rows = []
    for t, counters, in_flight, histograms in metrics.seconds():
        row: dict[str, Any] = {
            "t": t,
            # What the load asked for in the middle of that second: the rate (open model) or
            # the concurrency (closed), following the stages.
            "target": None if load is None else round(load.target_at(t + 0.5), 3),
            "conversations_started": counters.get("conversations_started", 0),
            "requests": counters.get("requests", 0),
            "errors": counters.get("errors", 0),
            "in_flight": in_flight,
        }
        for source in SERIES_HISTOGRAMS:
            histogram = histograms.get(source)
            for name, p in (("p50", 50.0), ("p99", 99.0)):
                value = None
                if histogram is not None and histogram.get_total_count() > 0:
                    value = histogram.get_value_at_percentile(p) / 1000
                row[f"{_key(source)}_{name}_ms"] = _round(value)
        rows.append(row)
    return rows


def _stages(metrics: Metrics, load: Load | None) -> list[dict[str, Any]]:
    """Each stage's own figures, from the per-second series of its whole seconds."""
    from ._abort import window_figures  # noqa: PLC0415 - a sibling that imports this module's

    if load is None or not load.stages:
        return []
    rows = []
    start, level = 0.0, load.target_at(0.0)
    for index, stage in enumerate(load.stages):
        end = start + stage.duration
        f = window_figures(metrics, start, end, sources=ENDPOINTS)
        seconds = f["window_seconds"]
        rows.append(
            {
                "stage": index + 1,
                "start_seconds": round(start, 3),
                "end_seconds": round(end, 3),
                "target_from": level,
                "target_to": stage.target,
                "seconds_measured": seconds,
                "conversations_per_second": _round(f.get("conversations_per_second")),
                "turns_per_second": _round(f.get("turns_per_second")),
                "requests_per_second": _round(f.get("requests_per_second")),
                "conversation_error_rate": _round(f.get("conversation_error_rate"), 6),
                "errors": f["errors_total"],
                **{
                    f"{e}_{p}_ms": _round(f.get(f"{e}_{p}_ms"))
                    for e in ENDPOINTS
                    for p in ("p50", "p99")
                },
            }
        )
        start, level = end, stage.target
    return rows


def _per(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds else 0.0


def summarize(
    metrics: Metrics,
    *,
    load: Load | None = None,
    scenario: Scenario | None = None,
    wall_seconds: float = 0.0,
    client_cpu_seconds: float = 0.0,
    max_error_rate: float | None = None,
    processes: int = 1,
    settings: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    detail: bool = True,
) -> dict[str, Any]:
    """The flat JSON summary of ``metrics`` (schema ``polyai-async-bench/4``).

    Args:
        metrics: what was measured.
        load: the load applied (its model and size).
        scenario: the scenario run.
        wall_seconds: how long the run took (the rates divide by the load window,
            ``metrics.load_seconds``, when the runner set it; else by this).
        client_cpu_seconds: CPU time of the client process(es) in that time.
        max_error_rate: the ``conversation_error_rate`` above which the run failed.
        processes: worker processes.
        settings: the run's options, for the report (never a secret).
        context: keys added or overridden (target, base_url, server_* figures...).
        detail: include the lists and mappings (time series, spectrum...); False gives
            only the flat figures (the per-worker summaries).
    """
    c = metrics.counters
    completed, failed = c["conversations_completed"], c["conversations_failed"]
    # A conversation cut off by the graceful stop did not succeed: it counts against the run.
    unfinished = c["conversations_interrupted"]
    counted = completed + failed + unfinished
    error_rate = (failed + unfinished) / counted if counted else 0.0
    wall = wall_seconds
    window = metrics.load_seconds if metrics.load_seconds else wall
    requests = c["requests"]
    lag_p99 = metrics.percentile_ms("generator_lag", 99)
    closed = load is None or load.closed_model
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "target": None,
        "base_url": None,
        "scenario": None if scenario is None else scenario.name,
        "load_model": "closed" if closed else "open",
        "processes": processes,
        "conversations": None if load is None else load.conversations,
        "duration_seconds": None if load is None else load.planned_seconds(),
        "turns_per_conversation": None,
        "concurrency": None if load is None or not closed else load.concurrency,
        "rate": None if load is None or closed else load.rate,
        "max_connections": None,
        "retry_attempts": None,
        "conversations_started": c["conversations_started"],
        "conversations_completed": completed,
        "conversations_failed": failed,
        "conversations_dropped": c["conversations_dropped"],
        "conversations_interrupted": c["conversations_interrupted"],
        "in_flight_max": metrics.in_flight_peak,
        "conversation_error_rate": round(error_rate, 6),
        "max_error_rate": max_error_rate,
        "passed": completed > 0,
        "turns_completed": c["turns_completed"],
        "handoffs": c["handoffs"],
        "ended_by_agent": c["ended_by_agent"],
        "expectations_checked": c["expectations_checked"],
        "expectations_failed": c["expectations_failed"],
        "calls": c["calls"],
        "calls_cancelled": c["calls_cancelled"],
        "retries": sum(metrics.retries.values()),
        **{f"retries_{e}": metrics.retries[e] for e in ENDPOINTS},
        "requests": requests,
        "requests_ok": c["requests_ok"],
        "requests_failed": c["requests_failed"],
        "requests_cancelled": c["requests_cancelled"],
        "errors_total": c["errors_total"],
        **{f"error_{name}": 0 for name in _ERROR_CLASSES},
        **{f"error_{name}": entry[0] for name, entry in sorted(metrics.errors.items())},
        "wall_seconds": round(wall, 4),
        "load_window_seconds": round(window, 4),
        "client_cpu_seconds": round(client_cpu_seconds, 4),
        "client_cpu_share": round(client_cpu_seconds / wall / processes, 4) if wall else 0.0,
        "conversations_per_second": _per(c["conversations_started"], window),
        "turns_per_second": _per(c["turns_completed"], window),
        "requests_per_second": _per(requests, window),
        "generator_lag_p50_ms": _round(metrics.percentile_ms("generator_lag", 50)),
        "generator_lag_p99_ms": _round(lag_p99),
        "generator_lag_max_ms": _round(metrics.max_ms("generator_lag")),
        "server_cpu_seconds": None,
        "server_requests": None,
        "server_faults": None,
        "server_max_open_connections": None,
    }
    for endpoint in ENDPOINTS:
        summary[f"{endpoint}_count"] = c[f"{endpoint}_count"]
        summary[f"{endpoint}_ok_count"] = c[f"{endpoint}_ok_count"]
    for source in LATENCY_SOURCES:
        summary.update(_latencies(metrics, source))
        summary.update(_latencies(metrics, f"{source}.ok"))
    summary.update(context or {})
    if max_error_rate is not None:
        summary["passed"] = completed > 0 and error_rate <= max_error_rate
    if not detail:
        return summary
    warnings = []
    if lag_p99 is not None and lag_p99 > LAG_WARNING_MS:
        warnings.append(
            f"generator lag p99 {lag_p99:.1f} ms is above {LAG_WARNING_MS:g} ms: the load "
            "started late, so the figures describe the generator, not the agent (use "
            "--processes, or less load per process)"
        )
    if summary["client_cpu_share"] > CPU_WARNING_SHARE:
        warnings.append(
            f"the client used {summary['client_cpu_share']:.0%} of a core per process: the "
            "generator is saturated, so the figures describe it, not the agent"
        )
    turns = sorted(
        int(name[len("respond[") : -1])
        for name in metrics.histograms
        if name.startswith("respond[")
    )
    summary.update(
        thresholds=[],
        warnings=warnings,
        settings=dict(settings or {}),
        handoffs_by_destination=dict(sorted(metrics.handoff_destinations.items())),
        handoffs_by_reason=dict(sorted(metrics.handoff_reasons.items())),
        turns_by_count={str(k): v for k, v in sorted(metrics.turns_per_conversation.items())},
        errors_by_class={
            name: {"count": count, "example": example}
            for name, (count, example) in sorted(metrics.errors.items())
        },
        personas={name: attrs.asdict(counts) for name, counts in sorted(metrics.personas.items())},
        respond_by_turn=[
            {
                "turn": turn,
                "count": metrics.histograms[f"respond[{turn}]"].get_total_count(),
                "p50_ms": _round(metrics.percentile_ms(f"respond[{turn}]", 50)),
                "p99_ms": _round(metrics.percentile_ms(f"respond[{turn}]", 99)),
            }
            for turn in turns
        ],
        latency_spectrum={source: metrics.spectrum(source) for source in LATENCY_SOURCES},
        timeseries=_timeseries(metrics, load),
        stages=_stages(metrics, load),
        workers=[],
    )
    # Lossless: every histogram as HdrHistogram.encode() writes it, and the rest of the raw
    # measurements, so runs merge exactly (``merge_summaries``) and compare from distributions.
    raw = metrics.to_dict()
    summary.update(
        histogram_encoding=raw.pop("histogram_encoding"),
        histograms=dict(sorted(raw.pop("histograms").items())),
        metrics=raw,
    )
    return summary


def figure_names() -> frozenset[str]:
    """The summary's numeric keys: what a threshold may name."""
    summary = summarize(Metrics(), detail=False)
    names = {k for k, v in summary.items() if isinstance(v, int | float) or v is None}
    return frozenset(names - {"schema", "target", "base_url", "scenario", "load_model"})


@attrs.frozen(kw_only=True)
class LoadResult:
    """What a load run measured and how it judged it.

    Attributes:
        metrics: every measurement, merged over the worker processes.
        summary: the JSON summary (schema ``polyai-async-bench/4``), thresholds included.
        thresholds: each threshold's verdict.
        workers: each worker process's own Metrics (empty for a single process).
        rules: the thresholds judged, kept so ``with_figures`` can judge them again.
    """

    metrics: Metrics
    summary: dict[str, Any]
    thresholds: tuple[ThresholdResult, ...] = ()
    workers: tuple[Metrics, ...] = ()
    rules: tuple[Threshold, ...] = ()

    def with_figures(self, figures: Mapping[str, Any]) -> LoadResult:
        """This result with ``figures`` added to the summary, and everything judged again.

        The figures known only after the run (the embedded fake's ``server_*``) go in here,
        so the thresholds, ``passed`` and the exit code are judged on the final summary.
        """
        summary = {**self.summary, **figures}
        verdicts = judge(summary, self.rules)
        if summary.get("aborted"):
            summary["passed"] = False
        return attrs.evolve(self, summary=summary, thresholds=verdicts)

    def with_server(self, counters: Mapping[str, Any], cpu_seconds: float | None) -> LoadResult:
        """This result with the server's ``server_*`` figures, and everything judged again.

        ``counters`` are the fake server's (``Stats.as_dict()``, as
        ``FakeServerProcess.counters`` reads them once it has stopped); ``cpu_seconds`` the
        CPU time it used (``FakeServerProcess.cpu_seconds``).
        """
        faults = counters.get("faults", {})
        return self.with_figures(
            {
                "server_cpu_seconds": None if cpu_seconds is None else round(cpu_seconds, 4),
                "server_requests": sum(counters.get("requests", {}).values()),
                "server_faults": sum(n for name, n in faults.items() if name != "latency"),
                "server_max_open_connections": counters.get("max_open_connections"),
            }
        )

    @property
    def passed(self) -> bool:
        """True when a conversation completed, and the error rate and every threshold held."""
        return bool(self.summary["passed"])

    @property
    def interrupted(self) -> bool:
        """True when a signal (or ``run_load_async``'s ``stop``) ended the run early."""
        return bool(self.summary.get("interrupted", False))

    @property
    def interrupted_by(self) -> str | None:
        """``SIGINT``, ``SIGTERM`` or ``stop`` when the run was interrupted, else None."""
        value = self.summary.get("interrupted_by")
        return None if value is None else str(value)

    @property
    def partial(self) -> bool:
        """True when a worker process sent no result: the figures are the others' only."""
        return bool(self.summary.get("partial", False))

    @property
    def error_rate_passed(self) -> bool:
        """True unless ``max_error_rate`` was exceeded."""
        limit = self.summary["max_error_rate"]
        return limit is None or self.summary["conversation_error_rate"] <= limit

    @property
    def completed_any(self) -> bool:
        """True when at least one conversation completed: a run without one cannot pass."""
        return bool(self.summary["conversations_completed"])

    @property
    def warnings(self) -> list[str]:
        """Why the figures may describe the generator rather than the agent."""
        return list(self.summary["warnings"])

    @property
    def aborted(self) -> dict[str, Any] | None:
        """When and why ``abort_on_fail`` stopped the run, else None.

        Keys: ``at_seconds`` (since the start), ``threshold``, ``value`` (over the window),
        ``window_seconds``.
        """
        aborted = self.summary.get("aborted")
        return dict(aborted) if aborted else None

    def with_abort(self, aborted: Mapping[str, Any] | None) -> LoadResult:
        """This result marked as stopped by abort-on-fail (``aborted``), failed; None: as is."""
        if aborted is None:
            return self
        summary = {**self.summary, "aborted": dict(aborted), "passed": False}
        return attrs.evolve(self, summary=summary)

    @property
    def exit_code(self) -> int:
        """As the command exits: 0 all good, 1 the error rate failed, 99 a threshold failed.

        A run in which no conversation completed exits 1 too. An interrupted run exits 130
        (SIGINT, or ``stop``) or 143 (SIGTERM), whatever its figures; a partial one (a worker
        lost) exits 1.
        """
        if self.interrupted:
            return EXIT_CODES.get(self.interrupted_by or "", 130)
        if self.summary.get("aborted"):
            return 99  # a threshold failed over the window: the run stopped there
        if self.partial:
            return 1
        if not self.error_rate_passed or not self.completed_any:
            return 1
        if not all(t.passed for t in self.thresholds):
            return 99
        return 0

    def figure(self, name: str) -> Any:
        """One figure of the summary, such as ``respond_p99_ms``.

        Raises:
            KeyError: naming the figure that does not exist.
        """
        if name not in self.summary:
            raise KeyError(f"no figure {name!r} in the summary")
        return self.summary[name]


def make_result(
    metrics: Metrics,
    *,
    thresholds: Iterable[Threshold] = (),
    workers: Sequence[Metrics] = (),
    worker_summaries: Sequence[Mapping[str, Any]] = (),
    interrupted_by: str | None = None,
    workers_missing: Sequence[Mapping[str, Any]] = (),
    **options: Any,
) -> LoadResult:
    """Summarize ``metrics``, judge the thresholds, and wrap it all in a LoadResult.

    ``interrupted_by`` (a signal's name, or ``stop``) marks a run cut short;
    ``workers_missing`` (index, name, reason) marks it partial.
    """
    summary = summarize(metrics, **options)
    summary["workers"] = [dict(w) for w in worker_summaries]
    summary["interrupted"] = interrupted_by is not None
    summary["interrupted_by"] = interrupted_by
    summary["aborted"] = None  # set by LoadResult.with_abort
    summary["partial"] = bool(workers_missing)
    summary["workers_missing"] = [dict(m) for m in workers_missing]
    rules = tuple(thresholds)
    verdicts = judge(summary, rules)
    return LoadResult(
        metrics=metrics,
        summary=summary,
        thresholds=verdicts,
        workers=tuple(workers),
        rules=rules,
    )


def judge(summary: dict[str, Any], thresholds: Iterable[Threshold]) -> tuple[ThresholdResult, ...]:
    """Judge ``thresholds`` and the error rate on ``summary``, writing the verdicts into it.

    The one place the run's pass/fail is decided: ``thresholds`` and ``passed`` of the
    summary are set from its figures as they are now.
    """
    verdicts = tuple(t.evaluate(summary) for t in thresholds)
    limit = summary.get("max_error_rate")
    error_rate_ok = limit is None or summary["conversation_error_rate"] <= limit
    # A run in which no conversation completed measured nothing that could pass.
    completed_any = bool(summary["conversations_completed"])
    summary["thresholds"] = [v.as_dict() for v in verdicts]
    # A partial run (a worker's figures missing) cannot pass: what was lost is unknown.
    complete = not summary.get("partial", False)
    summary["passed"] = (
        complete and completed_any and error_rate_ok and all(v.passed for v in verdicts)
    )
    return verdicts
