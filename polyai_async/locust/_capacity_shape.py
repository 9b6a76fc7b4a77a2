"""CapacityShape: the capacity search on Locust's runner, alone or distributed.

The same search as ``polyai-async capacity --model closed`` (``load/_capacity.py``: the
minimum, the maximum, geometric bisection to the precision, a confirmation step), with users as
the concurrency, judged on the runner's own stats: on a master, the stats its workers merged,
so the answer scales past one machine.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from locust import LoadTestShape
from locust.runners import STATE_MISSING, MasterRunner

from ..load import CapacitySearch, CapacityStep
from ..load._capacity import _Bisection
from ..load._thresholds import Threshold

__all__ = ["CapacityShape"]

logger = logging.getLogger("polyai_async.locust")

_STATISTICS = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999}
_SOURCES = ("create", "respond", "close", "conversation")


def _percentile(times: Mapping[int, int], fraction: float) -> float | None:
    """The response time (ms) at ``fraction`` of a Locust response-times dict."""
    total = sum(times.values())
    if not total:
        return None
    wanted = fraction * total
    seen = 0
    for value in sorted(times):
        seen += times[value]
        if seen >= wanted:
            return float(value)
    return float(max(times))


#: Each source's response-time counts, requests and failures, as the runner has them.
_Snapshot = dict[str, tuple[dict[int, int], int, int]]


class CapacityShape(LoadTestShape):
    """Search the most users at which every SLO holds, a step of steady users at a time.

    Subclass it in the locustfile next to your user class::

        from polyai_async.locust import CapacityShape, PolyAIUser

        class Chat(PolyAIUser):
            pass

        class Search(CapacityShape):
            slos = ("respond.p99<2s", "conversation_error_rate<0.01")
            minimum, maximum = 1, 200

    Each step holds its users for ``warmup`` plus ``step_duration`` seconds; the SLOs are
    judged on the requests that ended after the warm-up (Locust's response-time counts of the
    ``create``, ``respond``, ``close`` and ``conversation`` entries, merged from every worker
    on a master). When the search is over the test stops, and the answer is logged
    (``max_concurrency``) and kept in ``result``.

    Attributes:
        slos: latency SLOs on create, respond, close or conversation (``respond.p99<2s``),
            and ``conversation_error_rate<F``.
        minimum: the fewest users tried.
        maximum: the most users tried.
        step_duration: each step's measured seconds.
        warmup: each step's first seconds, left out.
        precision: stop when passing and failing are within this share (whole users).
        window: after the warm-up, the SLOs are judged every tick over the last ``window``
            seconds; one that fails at two judgements in a row stops the step early (not a
            confirmation step), which then fails.
        early_stop: whether a step may stop early.
    """

    abstract = True
    slos: ClassVar[tuple[str, ...]] = ()
    minimum: ClassVar[int] = 1
    maximum: ClassVar[int] = 100
    step_duration: ClassVar[float] = 20.0
    warmup: ClassVar[float] = 5.0
    precision: ClassVar[float] = 0.05
    window: ClassVar[float] = 5.0
    early_stop: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.search = CapacitySearch(
            slos=self.slos,
            model="closed",
            minimum=self.minimum,
            maximum=self.maximum,
            step_duration=self.step_duration,
            warmup=self.warmup,
            precision=self.precision,
            window=self.window,
            early_stop=self.early_stop,
        )
        for slo in self.search.slos:
            if not _supported(slo):
                raise ValueError(
                    f"{type(self).__name__}.slos: {slo.expression!r} is not judged on Locust's "
                    "stats; use create, respond, close or conversation latencies, or "
                    "conversation_error_rate"
                )
        self.state = _Bisection(self.search)
        self.steps: list[CapacityStep] = []
        #: The answer once the search is over: max_concurrency, confirmed, limited_by, steps.
        self.result: dict[str, Any] | None = None
        self._step: tuple[float, str] | None = None
        self._started = 0.0
        self._baseline: _Snapshot | None = None
        # On a master: when (run time) each worker last sent its stats, and whether we listen.
        self._reports: dict[str, float] = {}
        self._listening = False
        # Early stop: the snapshots of the step's last window, and failed judgements in a row.
        self._recent: deque[tuple[float, _Snapshot]] = deque()
        self._failing = 0

    def tick(self) -> tuple[int, float] | None:
        """Locust asks about once a second: (users, spawn rate), or None to stop."""
        self._listen()
        now = self.get_run_time()
        if self._step is None:
            chosen = self._next()
            if chosen is None:
                return None
            self._step, self._started, self._baseline = chosen, now, None
            self._recent.clear()
            self._failing = 0
        target, phase = self._step
        length = self.warmup + (
            2 * self.step_duration if phase == "confirm" else self.step_duration
        )
        cut = self._started + self.warmup
        if self._baseline is None and now >= cut and self._reported_since(cut):
            self._baseline = self._snapshot()
        end = self._started + length
        stopped_by = None
        if self._baseline is not None and phase != "confirm" and self.search.early_stop:
            stopped_by = self._watch(now)
        if stopped_by is not None or (
            self._baseline is not None and now >= end and self._reported_since(end)
        ):
            self._judge(target, phase, now - self._started, stopped_by)
            self._step = None
            return self.tick()
        users = round(target)
        return users, float(max(1, users))

    # -- a master's view of its workers' stats ---------------------------------------------

    def _listen(self) -> None:
        """On a master, note when each worker's stats arrive (they are merged before we hear)."""
        if self._listening or not isinstance(self.runner, MasterRunner):
            return
        self.runner.environment.events.worker_report.add_listener(self._on_report)
        self._listening = True

    def _on_report(self, client_id: str, data: Mapping[str, Any]) -> None:
        self._reports[client_id] = self.get_run_time()

    def _reported_since(self, moment: float) -> bool:
        """Whether the runner's stats hold every request that ended before ``moment``.

        A worker sends its stats every few seconds (WORKER_REPORT_INTERVAL, 3 s), so a master's
        merged stats lag; a step's figures are cut only once every worker has reported after
        the cut: they then hold only requests of the step's measured part, never of its warm-up
        or of the step before, which a plain snapshot of a master's stats would mix in.
        """
        runner = self.runner
        if not isinstance(runner, MasterRunner):
            return True
        return all(
            self._reports.get(worker.id, -1.0) >= moment
            for worker in runner.clients.values()
            if worker.state != STATE_MISSING
        )

    # -- the search's steps ------------------------------------------------------------------

    def _next(self) -> tuple[float, str] | None:
        if len(self.steps) >= self.search.max_steps:
            self._finish()
            return None
        chosen = self.state.next_target()
        if chosen is not None:
            return chosen
        answer = self.state.low
        confirmed = [s for s in self.steps if s.phase == "confirm" and s.target == answer]
        if answer is None or confirmed:
            self._finish()
            return None
        return answer, "confirm"

    def _watch(self, now: float) -> str | None:
        """The SLO that failed over the last window at two judgements in a row, else None."""
        self._recent.append((now, self._snapshot()))
        while len(self._recent) > 1 and self._recent[1][0] <= now - self.window:
            self._recent.popleft()
        first, _ = self._recent[0]
        if now - first < self.window:
            return None
        figures = self._figures(self._recent[0][1], self._recent[-1][1])
        failed = [
            slo.expression
            for slo in self.search.slos
            if figures.get(slo.key) is not None and not slo.evaluate(figures).passed
        ]
        self._failing = self._failing + 1 if failed else 0
        return failed[0] if failed and self._failing >= 2 else None

    def _snapshot(self) -> _Snapshot:
        """Each source's response-time counts, requests and failures, as the runner has them."""
        runner = self.runner
        assert runner is not None  # noqa: S101 - Locust sets it before ticking
        found: _Snapshot = {}
        for (name, _), entry in runner.stats.entries.items():
            if name in _SOURCES:
                times, requests, failures = found.get(name, ({}, 0, 0))
                merged = dict(times)
                for value, count in entry.response_times.items():
                    merged[value] = merged.get(value, 0) + count
                found[name] = (merged, requests + entry.num_requests, failures + entry.num_failures)
        return found

    def _figures(self, before: _Snapshot, after: _Snapshot) -> dict[str, Any]:
        """The figures of what ended between two snapshots."""
        figures: dict[str, Any] = {}
        for name, (times, requests, failures) in after.items():
            old_times, old_requests, old_failures = before.get(name, ({}, 0, 0))
            window = {v: c - old_times.get(v, 0) for v, c in times.items()}
            window = {v: c for v, c in window.items() if c > 0}
            for statistic, fraction in _STATISTICS.items():
                figures[f"{name}_{statistic}_ms"] = _percentile(window, fraction)
            if window:
                figures[f"{name}_max_ms"] = float(max(window))
                figures[f"{name}_mean_ms"] = sum(v * c for v, c in window.items()) / sum(
                    window.values()
                )
            if name == "conversation" and requests - old_requests:
                figures["conversation_error_rate"] = (failures - old_failures) / (
                    requests - old_requests
                )
        return figures

    def _judge(self, target: float, phase: str, seconds: float, stopped_by: str | None) -> None:
        figures = self._figures(self._baseline or {}, self._snapshot())
        verdicts = tuple(slo.evaluate(figures) for slo in self.search.slos)
        failed = [v.expression for v in verdicts if not v.passed]
        if stopped_by is not None and stopped_by not in failed:  # failed over its last window
            failed.insert(0, stopped_by)
        step = CapacityStep(
            index=len(self.steps) + 1,
            target=target,
            phase=phase,
            passed=not failed,
            stopped_early=stopped_by is not None,
            generator_limited=None,
            first_failed=failed[0] if failed else None,
            verdicts=verdicts,
            figures={k: v for k, v in figures.items() if v is not None},
            summary={},
            seconds=seconds,
        )
        self.steps.append(step)
        self.state.record(step)
        logger.warning(
            "polyai_async: capacity step %d (%s): %d users %s%s%s",
            step.index,
            phase,
            round(target),
            "passed" if step.passed else "failed",
            f" ({step.first_failed})" if step.first_failed else "",
            ", stopped early" if step.stopped_early else "",
        )

    def _finish(self) -> None:
        if self.result is not None:
            return
        answer = self.state.low
        confirmed = any(
            s.phase == "confirm" and s.target == answer and s.passed for s in self.steps
        )
        high = self.state.high
        limited_by = next(
            (s.first_failed for s in self.steps if s.target == high and s.passed is False), None
        )
        self.result = {
            "max_concurrency": None if answer is None else round(answer),
            "confirmed": confirmed,
            "limited_by": limited_by,
            "steps": [
                {
                    "target": s.target,
                    "phase": s.phase,
                    "passed": s.passed,
                    "stopped_early": s.stopped_early,
                    "figures": s.figures,
                }
                for s in self.steps
            ],
            "finished_at": time.time(),
        }
        logger.warning(
            "polyai_async: capacity: max_concurrency %s%s%s",
            "none" if answer is None else round(answer),
            " (confirmed)" if confirmed else "",
            f"; above it {limited_by} failed first" if limited_by else "",
        )


def _supported(slo: Threshold) -> bool:
    if slo.key == "conversation_error_rate":
        return True
    parts = slo.key.split("_")
    return parts[0] in _SOURCES and slo.key.endswith("_ms") and "ok" not in parts
