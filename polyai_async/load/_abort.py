"""Judging thresholds as a run goes, over a sliding window: abort-on-fail (private).

k6's ``abortOnFail`` with ``delayAbortEval``: after a grace period, the thresholds the
per-second series keeps (endpoint latencies, ``conversation_error_rate``, the rates) are
judged every second over the last ``window`` seconds; one that fails at ``failures``
judgements in a row stops the run. Bench's ``--abort-on-fail`` and each step of a capacity
search use it. Thresholds on figures the series does not keep (``conversation.p99``,
``expectations_failed``...) are judged only at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from .._errors import ConfigurationError
from ._metrics import SERIES_HISTOGRAMS, Metrics, _mean
from ._thresholds import Threshold

__all__ = ["AbortOnFail", "WindowJudge", "window_figures"]

_STATISTICS = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def non_negative_seconds(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """An attrs validator: a finite number of seconds, 0 or more (not a bool)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigurationError(
            f"{attribute.name} must be a number of seconds >= 0, got {value!r}"
        )


def _at_least_one_second(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 1
    ):
        raise ConfigurationError(
            f"{attribute.name} must be a number of seconds >= 1, got {value!r}"
        )


def _whole(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be a whole number >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class AbortOnFail:
    """Stop a run once a threshold has clearly failed (k6's abortOnFail with delayAbortEval).

    Args:
        grace: seconds from the start before anything is judged (the warm-up).
        window: the sliding window judged every second, in seconds (at least 1: the series
            keeps whole seconds).
        failures: failing judgements in a row that stop the run (one bad second is noise).
    """

    grace: float = attrs.field(default=10.0, validator=non_negative_seconds)
    window: float = attrs.field(default=5.0, validator=_at_least_one_second)
    failures: int = attrs.field(default=2, validator=_whole)


def window_figures(
    metrics: Metrics, start: float, end: float, *, sources: Iterable[str] | None = None
) -> dict[str, Any]:
    """The figures of the seconds from ``start`` to ``end`` of a run, from its series.

    Endpoint latencies (``respond_p99_ms``, ``respond_ok_p99_ms``...: every call that ended
    in those seconds, as the summary's), ``conversation_error_rate`` (of the conversations
    that ended in them), the rates a second, the mean conversation duration and the mean
    conversations in flight. Only whole seconds count: ``[ceil(start), floor(end))``.
    ``sources`` limits the latencies to those histograms (``respond``, ``respond.ok``...):
    decoding them is the costly part, and a run judged as it goes must not stall.
    """
    first, last = math.ceil(start), math.floor(end)
    wanted = SERIES_HISTOGRAMS if sources is None else tuple(sources)
    histograms: dict[str, Any] = {}
    counters: dict[str, int] = {}
    in_flight: list[int] = []
    held = (metrics.series.get(t) for t in range(first, last))
    for second in (s for s in held if s is not None):
        for name, value in second.counters.items():
            counters[name] = counters.get(name, 0) + value
        in_flight.append(second.in_flight)
        for name in wanted:
            histogram = second.histogram(name)
            if histogram is None:
                continue
            if name in histograms:
                histograms[name].add(histogram)
            else:
                histograms[name] = histogram
    seconds = max(0, last - first)
    figures: dict[str, Any] = {"window_start": first, "window_seconds": seconds}
    for name, histogram in sorted(histograms.items()):
        key = name.replace(".", "_")
        if histogram.get_total_count() == 0:
            continue
        for statistic, percentile in _STATISTICS.items():
            figures[f"{key}_{statistic}_ms"] = histogram.get_value_at_percentile(percentile) / 1000
        figures[f"{key}_max_ms"] = histogram.get_max_value() / 1000
        figures[f"{key}_mean_ms"] = round(_mean(histogram) / 1000, 3)  # hdrh's own: ~0.1 s
    ended = counters.get("conversations_ended", 0)
    if ended:
        figures["conversation_error_rate"] = counters.get("conversations_failed", 0) / ended
        figures["conversation_mean_ms"] = counters.get("conversation_ms", 0) / ended
    if seconds:
        figures["conversations_per_second"] = counters.get("conversations_started", 0) / seconds
        figures["turns_per_second"] = counters.get("turns", 0) / seconds
        figures["requests_per_second"] = counters.get("requests", 0) / seconds
    if in_flight:  # none when the series has none of those seconds (yet)
        figures["in_flight_mean"] = sum(in_flight) / len(in_flight)
    figures["errors_total"] = counters.get("errors", 0)
    return figures


class WindowJudge:
    """Judges thresholds over the last ``window`` seconds of a run, once a second.

    Call ``check(metrics)`` from the run's tick; True once a threshold the series keeps has
    failed at ``failures`` judgements in a row. ``reason``, ``value`` and ``at`` then say
    which, what it measured and when (seconds since the start). It also keeps samples of the
    conversations in flight (``in_flight``), for a caller that samples them.
    """

    def __init__(
        self,
        thresholds: Sequence[Threshold],
        *,
        grace: float,
        window: float,
        failures: int = 2,
        enabled: bool = True,
    ) -> None:
        self.thresholds = tuple(thresholds)
        self.grace = grace
        self.window = window
        self.failures = failures
        self.enabled = enabled
        self.failing: dict[str, int] = {}
        self.reason: str | None = None
        self.value: float | None = None
        self.at: float | None = None
        #: Conversations in flight, sampled by whoever runs the load (see _capacity).
        self.in_flight: list[int] = []
        # The histograms the thresholds read: ``respond_ok_p99_ms`` -> ``respond.ok``.
        self.sources = sorted(
            {
                source
                for t in self.thresholds
                if t.key.endswith("_ms")
                and (source := ".".join(t.key.split("_")[:-2])) in SERIES_HISTOGRAMS
            }
        )

    def check(self, metrics: Metrics) -> bool:
        """True once a threshold has failed at ``failures`` judgements in a row."""
        if self.reason is not None:
            return True
        elapsed = time.perf_counter() - metrics.start
        if not self.enabled or elapsed < self.grace + self.window:
            return False
        figures = window_figures(metrics, elapsed - self.window - 1, elapsed, sources=self.sources)
        for threshold in self.thresholds:
            if threshold.key not in figures:  # not kept per second: judged at the end
                continue
            verdict = threshold.evaluate(figures)
            if verdict.passed:
                self.failing[threshold.expression] = 0
                continue
            count = self.failing.get(threshold.expression, 0) + 1
            self.failing[threshold.expression] = count
            if count >= self.failures:
                self.reason, self.value, self.at = threshold.expression, verdict.value, elapsed
                return True
        return False

    def as_dict(self) -> dict[str, Any] | None:
        """``{"at_seconds", "threshold", "value", "window_seconds"}`` once it fired, else None."""
        if self.reason is None:
            return None
        return {
            "at_seconds": None if self.at is None else round(self.at, 3),
            "threshold": self.reason,
            "value": self.value,
            "window_seconds": self.window,
        }
