"""Thresholds, as in k6: a run passes only when each holds.

An expression is ``FIGURE OP NUMBER[UNIT]``:

- FIGURE: ``create``, ``respond``, ``close`` or ``conversation`` with ``.p50``, ``.p90``,
  ``.p95``, ``.p99``, ``.p999``, ``.max`` or ``.mean`` (a latency over every call that ended,
  a failed one with the time it took to fail, as k6's ``http_req_duration``), the same with
  ``.ok`` before the statistic (``respond.ok.p99``: successful calls only), or any number of
  the summary (``conversation_error_rate``, ``expectations_failed``, ``conversations_dropped``...);
- OP: ``<``, ``<=``, ``>``, ``>=`` or ``==``;
- UNIT: ``ms`` or ``s`` on latencies only (a bare number is milliseconds).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs

from .._errors import ConfigurationError
from ._format import number as _number

__all__ = [
    "LATENCY_SOURCES",
    "NOT_MEASURED",
    "STATISTICS",
    "Threshold",
    "ThresholdResult",
    "measured_text",
]

#: Why a threshold on a figure that is null in the summary failed.
NOT_MEASURED = "not measured in this run"

LATENCY_SOURCES = ("create", "respond", "close", "conversation")
STATISTICS = ("p50", "p90", "p95", "p99", "p999", "max", "mean")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_EXPRESSION = re.compile(
    r"\s*(?P<figure>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9]+){0,2})\s*(?P<op><=|>=|==|<|>)\s*"
    r"(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>ms|s)?\s*"
)


@attrs.frozen(kw_only=True)
class ThresholdResult:
    """A threshold's verdict.

    Attributes:
        expression: as written.
        value: what was measured (ms for latencies), None when nothing was (a failure).
        passed: whether it held.
        reason: why it failed without a value (``not measured in this run``), else None.
    """

    expression: str
    value: float | None
    passed: bool
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """``{"expression", "value", "passed", "reason"}`` as the JSON summary holds it."""
        return {
            "expression": self.expression,
            "value": self.value,
            "passed": self.passed,
            "reason": self.reason,
        }

    def detail(self) -> str:
        """What was measured, in the expression's unit (``measured 3.43 s``), or why not."""
        if self.value is None:
            return self.reason or NOT_MEASURED
        return f"measured {measured_text(self.expression, self.value)}"


@attrs.frozen(kw_only=True)
class Threshold:
    """A pass/fail rule on one figure of the summary; build it with ``Threshold.parse``.

    Attributes:
        expression: as written.
        key: the summary key it reads (``respond_p99_ms``, ``conversation_error_rate``...).
        op: the comparison.
        limit: the number compared with (ms for latencies).
    """

    expression: str
    key: str
    op: str
    limit: float

    @classmethod
    def parse(cls, text: str, figures: Collection[str] | None = None) -> Threshold:
        """Read ``respond.p99<1500ms``, ``conversation_error_rate<0.01``...

        Args:
            text: the expression.
            figures: the summary's numeric keys; a figure not among them is refused.

        Raises:
            ConfigurationError: saying what is wrong and what is expected.
        """
        match = _EXPRESSION.fullmatch(text)
        if match is None:
            raise ConfigurationError(
                f"threshold {text!r}: write FIGURE OP NUMBER, such as respond.p99<1500ms or "
                "conversation_error_rate<0.01 (OP one of < <= > >= ==)"
            )
        figure, op, unit = match.group("figure"), match.group("op"), match.group("unit")
        limit = float(match.group("number"))
        if not math.isfinite(limit):
            raise ConfigurationError(f"threshold {text!r}: the number must be finite")
        if "." in figure:
            source, *ok, statistic = figure.split(".")
            if (
                source not in LATENCY_SOURCES
                or statistic not in STATISTICS
                or ok not in ([], ["ok"])
            ):
                raise ConfigurationError(
                    f"threshold {text!r}: {figure!r} is not a latency; use "
                    f"{'|'.join(LATENCY_SOURCES)} with .{'|.'.join(STATISTICS)} (every call that "
                    "ended), or with .ok before it (successful calls only: respond.ok.p99)"
                )
            key = "_".join((source, *ok, statistic, "ms"))
            if unit == "s":
                limit *= 1000
        else:
            key = figure
            if unit is not None:
                raise ConfigurationError(
                    f"threshold {text!r}: {unit!r} belongs to latencies (such as respond.p99), "
                    f"not to {figure}"
                )
            if figures is not None and key not in figures:
                raise ConfigurationError(
                    f"threshold {text!r}: {figure!r} is not a figure of the summary (such as "
                    "conversation_error_rate, expectations_failed, conversations_dropped)"
                )
        return cls(expression=text.strip(), key=key, op=op, limit=limit)

    def evaluate(self, summary: Mapping[str, Any]) -> ThresholdResult:
        """Judge the threshold on a summary; a figure with no value fails, saying so."""
        value = summary.get(self.key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return ThresholdResult(
                expression=self.expression, value=None, passed=False, reason=NOT_MEASURED
            )
        passed = _OPERATORS[self.op](float(value), self.limit)
        return ThresholdResult(expression=self.expression, value=float(value), passed=passed)


def measured_text(expression: str, value: float) -> str:
    """What a threshold measured, in the unit its expression uses: ``3.43 s``, ``812 ms``, ``0.02``.

    A latency is shown in seconds when the expression's number has ``s``, else in
    milliseconds (a summary figure in ms, such as ``generator_lag_p99_ms``, too); any other
    figure as the number it is.
    """
    match = _EXPRESSION.fullmatch(expression)
    if match is None:
        return _number(value)
    if "." not in match.group("figure"):
        ms = match.group("figure").endswith("_ms")
        return f"{_number(value)} ms" if ms else _number(value)
    if match.group("unit") == "s":
        return f"{_number(value / 1000)} s"
    return f"{_number(value)} ms"
