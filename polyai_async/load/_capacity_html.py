"""The HTML report of a capacity search: the knee chart and the steps (private).

Built on the reports' shared page (``_page.render_page``, ``_templates/capacity.html.j2``):
the same look, the same strict Content-Security-Policy, offline, autoescaped. Each step's p50
and p99 (of the SLO's endpoint, respond by default) are drawn against the offered load, with
the latency SLOs as dashed lines and the answer as a marker; a second chart draws the share
of conversations that failed, with the error-rate SLO.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError
from .._redact import redact_value
from ._interrupt import stop_notes
from ._page import chart, render_page, series

__all__ = ["render_capacity_html", "write_capacity_html"]

_P50, _P99, _SLO, _ANSWER, _ERRORS = "#2563eb", "#ea580c", "#dc2626", "#16a34a", "#7c3aed"
_SOURCES = ("respond", "create", "close")


def _number(value: Any, digits: int = 3) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return f"{value:,.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def _ms(value: Any) -> str | None:
    text = _number(value)
    return None if text is None else f"{text} ms"


def _figure(step: Mapping[str, Any], key: str) -> float | None:
    figures = step.get("figures")
    value = figures.get(key) if isinstance(figures, Mapping) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _source(slos: Sequence[str]) -> str:
    """The endpoint the latency SLOs name first (respond when none does)."""
    for slo in slos:
        for source in _SOURCES:
            if slo.strip().startswith(source + "."):
                return source
    return "respond"


def _limit_ms(slo: str, source: str) -> float | None:
    """The limit of a latency SLO on ``source`` (``respond.p99<2s`` -> 2000), else None."""
    from ._thresholds import Threshold  # noqa: PLC0415

    try:
        parsed = Threshold.parse(slo)
    except ConfigurationError:
        return None
    return (
        parsed.limit if parsed.key.startswith(f"{source}_") and parsed.key.endswith("_ms") else None
    )


def _rate_limit(slo: str) -> float | None:
    from ._thresholds import Threshold  # noqa: PLC0415

    try:
        parsed = Threshold.parse(slo)
    except ConfigurationError:
        return None
    return parsed.limit if parsed.key == "conversation_error_rate" else None


def _settings(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    settings = answer.get("settings")
    return settings if isinstance(settings, Mapping) else {}


def _charts(answer: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> list[Any]:
    settings = _settings(answer)
    slos = [s for s in settings.get("slos", []) if isinstance(s, str)]
    source = _source(slos)
    # One point per target (the last step at it: a confirmation over its narrowing step).
    by_target: dict[float, Mapping[str, Any]] = {}
    for step in steps:
        target = step.get("target")
        if isinstance(target, int | float) and not isinstance(target, bool):
            by_target[float(target)] = step
    xs = sorted(by_target)
    closed = answer.get("model") == "closed"
    unit = " at once" if closed else "/s"
    answer_value = answer.get("max_concurrency" if closed else "max_rate")
    lines = [
        series(f"{source} p50", [_figure(by_target[x], f"{source}_p50_ms") for x in xs], _P50),
        series(f"{source} p99", [_figure(by_target[x], f"{source}_p99_ms") for x in xs], _P99),
    ]
    for slo in slos:
        limit = _limit_ms(slo, source)
        if limit is not None:
            lines.append(series(f"SLO {slo}", [limit for _ in xs], _SLO, dash=True))
    if isinstance(answer_value, int | float):
        marker = [
            _figure(by_target[x], f"{source}_p99_ms") if x == answer_value else None for x in xs
        ]
        lines.append(series("the answer", marker, _ANSWER, points=True))
    errors = [
        series(
            "conversations failed",
            [
                None if (r := _figure(by_target[x], "conversation_error_rate")) is None else 100 * r
                for x in xs
            ],
            _ERRORS,
        )
    ]
    for slo in slos:
        limit = _rate_limit(slo)
        if limit is not None:
            errors.append(series(f"SLO {slo}", [100 * limit for _ in xs], _SLO, dash=True))
    what = "conversations at once" if closed else "conversations started a second"
    return [
        chart(
            "knee",
            f"{source} latency against the offered load",
            f"Each step's p50 and p99 over its measured window, against its target ({what}); "
            "the dashed line is the SLO, the green dot the answer.",
            xs,
            lines,
            unit="ms",
            x_kind="load",
            x_unit=unit,
        ),
        chart(
            "errors",
            "Conversations failed",
            "The share of the conversations that ended in each step's window that failed.",
            xs,
            errors,
            unit=" %",
            x_kind="load",
            x_unit=unit,
        ),
    ]


def _step_rows(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for step in steps:
        passed = step.get("passed")
        if step.get("interrupted"):
            state, result = "none", "interrupted"
        elif passed is None:
            state, result = "none", "generator-limited"
        elif passed:
            state, result = "pass", "pass"
        else:
            state = "fail"
            result = "fail, stopped early" if step.get("stopped_early") else "fail"
        rate = _figure(step, "conversation_error_rate")
        rows.append(
            {
                "index": str(step.get("index", "")),
                "phase": str(step.get("phase", "")),
                "target": _number(step.get("target"), 4),
                "state": state,
                "result": result,
                "rate": _number(_figure(step, "conversations_per_second")),
                "p50": _ms(_figure(step, "respond_p50_ms")),
                "p99": _ms(_figure(step, "respond_p99_ms")),
                "errors": None if rate is None else f"{100 * rate:.3g} %",
                "why": step.get("first_failed") or step.get("generator_limited") or None,
                "seconds": _number(step.get("seconds"), 2),
            }
        )
    return rows


def _setting(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return "; ".join(str(v) for v in value)
    return str(value)


def render_capacity_html(answer: Mapping[str, Any]) -> str:
    """The report of a capacity search as one self-contained HTML page.

    Args:
        answer: the search's JSON answer (schema ``polyai-async-capacity/1``:
            ``CapacityResult.as_dict()``).

    Raises:
        ConfigurationError: ``answer`` is not a mapping, or Jinja2 is not installed.
    """
    if not isinstance(answer, Mapping):
        raise ConfigurationError(
            f"answer must be a mapping (CapacityResult.as_dict()), got {type(answer).__name__}"
        )
    answer = redact_value(answer)  # secrets hidden before anything is encoded
    raw_steps = answer.get("steps")
    steps = [s for s in raw_steps if isinstance(s, Mapping)] if isinstance(raw_steps, list) else []
    closed = answer.get("model") == "closed"
    name = "max_concurrency" if closed else "max_rate"
    unit = "conversations at once" if closed else "conversations/s"
    value = answer.get(name)
    confirmed = bool(answer.get("confirmed"))
    interrupted = bool(answer.get("interrupted"))
    if value is None and interrupted:
        verdict = ("none", f"{name}: none known (interrupted)")
    elif value is None:
        verdict = ("fail", f"{name}: none")
    else:
        verdict = ("pass" if confirmed else "none", f"{name}: {_number(value, 4)} {unit}")
    settings = _settings(answer)
    slos = ", ".join(s for s in settings.get("slos", []) if isinstance(s, str))
    report = {
        "title": "Capacity search",
        "subtitle": f"SLOs {slos}; {len(steps)} steps",
        "verdict": verdict,
        # Before any figure, as bench's report: the search was cut short.
        "stopped": {"title": "Interrupted search", "notes": stop_notes(answer)}
        if interrupted
        else None,
        "tiles": [
            (name, _number(value, 4), unit),
            ("confirmed", "yes" if confirmed else "no", None),
            ("limited by", answer.get("limited_by"), "the first SLO to fail above the answer"),
            ("in flight at the answer", _number(answer.get("in_flight_at_max")), None),
            ("by Little's law", _number(answer.get("littles_law_in_flight")), None),
            ("search time", _number(answer.get("seconds")), "seconds"),
        ],
        "charts": _charts(answer, steps),
        "chart_note": "A step stopped early measured only until its SLO failed twice over the "
        "sliding window; its p99 is of that shorter window.",
        "headings": [
            ("#", True),
            ("phase", False),
            ("target", True),
            ("result", False),
            ("conversations/s", True),
            ("respond p50", True),
            ("respond p99", True),
            ("failed", True),
            ("first SLO to fail", False),
            ("seconds", True),
        ],
        "steps": _step_rows(steps),
        "settings": [(str(k), _setting(v)) for k, v in settings.items()],
        "schema": str(answer.get("schema", "")),
    }
    return render_page(
        "capacity.html.j2",
        title="Capacity search",
        data={"charts": report["charts"]},
        r=report,
    )


def write_capacity_html(answer: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``render_capacity_html(answer)`` to ``path`` in UTF-8 (replacing it).

    Raises:
        ConfigurationError: see ``render_capacity_html``.
        OSError: the file cannot be written.
    """
    Path(path).write_text(render_capacity_html(answer), encoding="utf-8")
