r"""The HTML report of a load run: one self-contained page that opens offline.

``render_html`` turns the JSON summary (schema ``polyai-async-bench/3``) into one HTML file,
through the template ``_templates/bench.html.j2`` (the look every report shares is
``base.html.j2`` and ``macros.html.j2``; ``_page.render_page`` renders them, autoescaped):

- this module checks the summary's shape (naming a wrong key), hides its secrets and turns
  its figures into text (``_format``): what reaches the template is text or None (a dash), and
  the template escapes every bit of it, so a new field is escaped without anyone asking;
- the charts are drawn in the browser by uPlot (vendored in ``_assets/``, MIT), from the chart
  specs this module prepares, embedded with ``|tojson`` (``<``, ``>``, ``&`` as ``\\u003c``...);
- the page inlines uPlot, its CSS and the report's own script and style, and its
  Content-Security-Policy allows no fetch at all and only those two scripts (by hash).

Settings never carry secrets, and the report makes sure: the whole summary goes through
``polyai_async._redact.redact_value`` before anything is rendered, so every secret the process
knows, a setting whose name looks like a credential (key, token, secret, password, auth, ...),
a URL's userinfo (``http://user:pass@host``) and a bearer token show as ``***``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from .._errors import ConfigurationError
from .._redact import redact_value
from . import _format
from ._interrupt import stop_notes
from ._page import chart, render_page, series
from ._thresholds import measured_text

__all__ = ["render_html", "write_html"]

ENDPOINTS = ("create", "respond", "close")
# One colour per endpoint in every chart and table (light page, readable lines).
_COLORS = {
    "create": "#2563eb",
    "respond": "#0d9488",
    "close": "#d97706",
    "conversation": "#7c3aed",
    "requests": "#2563eb",
    "conversations_started": "#0d9488",
    "errors": "#dc2626",
    "in_flight": "#7c3aed",
    "target": "#64748b",
}
# Latency columns of the summary table: the summary's key infix and the column heading.
_LATENCY_COLUMNS = (
    ("p50", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p999", "p99.9"),
    ("max", "max"),
    ("mean", "mean"),
)
# The highest percentile the spectrum's axis shows: 99.9999 % sits at 6 on the log axis.
_MAX_PERCENTILE = 99.9999
_ERROR_RATE_TIP = (
    "conversation_error_rate: (failed + interrupted) / (completed + failed + interrupted): "
    "a conversation cut off by the graceful stop did not succeed (dropped ones excluded)"
)
# A table cell's text, or None for no data (the template shows a dash).
Text = str | None


def render_html(summary: Mapping[str, Any]) -> str:
    """The report of a load run as one self-contained HTML page.

    Args:
        summary: the run's JSON summary (schema ``polyai-async-bench/3``), as ``write_json``
            writes it or ``json.load`` reads it back. Missing sections and null figures are
            shown as such ("no data"); a v1 summary renders too, with fewer sections.

    Returns:
        The page: it loads nothing from the network (scripts and styles are inlined) and shows
        every string of the summary as text.

    Raises:
        ConfigurationError: ``summary`` is not a mapping, or one of its sections has the wrong
            shape (the message names it, for example ``summary['timeseries'][3]['t']``);
            or Jinja2 is not installed.
    """
    if not isinstance(summary, Mapping):
        hint = (
            ": pass its .summary" if isinstance(getattr(summary, "summary", None), Mapping) else ""
        )
        raise ConfigurationError(
            "summary must be a mapping (the run's JSON summary), "
            f"got {type(summary).__name__}{hint}"
        )
    # Secrets hidden in the values, before any of them is encoded as HTML or JSON.
    summary = redact_value(summary)
    charts = _charts(summary)
    title = "Load test report"
    # The scenario's name, as the terminal names it (the settings hold the file's path).
    scenario = summary.get("scenario")
    name = (
        scenario
        if isinstance(scenario, str) and scenario
        else _text_setting(summary, "scenario") or _text_setting(summary, "name")
    )
    report = {
        "title": title,
        "facts": _facts(summary, name),
        "verdict": _verdict(summary.get("passed")),
        "stopped": _stopped(summary),
        "tiles": _tiles(summary),
        "warnings": [_plain(w) for w in _sequence(summary.get("warnings"), "warnings")],
        "thresholds": _thresholds(summary),
        "over_time": [c for c in charts if c["xKind"] == "seconds"],
        "spectra": [c for c in charts if c["xKind"] == "percentile"],
        "latency": _latency_table(summary),
        "stages": _stages_table(summary),
        "outcomes": _outcomes(summary),
        "turns": _turns(summary),
        "personas": _personas(summary),
        "errors": _errors(summary),
        "workers": _workers(summary),
        "settings": [
            (str(key), _text(value))
            for key, value in _mapping(summary.get("settings"), "settings").items()
        ],
        "schema": None if summary.get("schema") is None else _plain(summary.get("schema")),
        "bar_colour": _COLORS["conversation"],
    }
    return render_page(
        "bench.html.j2",
        title=title + (f": {name}" if name else ""),
        data={"charts": charts},
        r=report,
    )


def write_html(summary: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the report of a load run (``render_html``) to ``path``, in UTF-8.

    Args:
        summary: the run's JSON summary (schema ``polyai-async-bench/3``).
        path: the file to write; it is replaced if it exists.

    Raises:
        ConfigurationError: ``summary`` has the wrong shape (see ``render_html``).
        OSError: the file cannot be written.
    """
    page = render_html(summary)
    Path(path).write_text(page, encoding="utf-8")


# --- the summary's sections, checked -------------------------------------------------------------


def _where(*parts: str | int) -> str:
    return "summary" + "".join(f"[{part!r}]" for part in parts)


def _mapping(value: object, *where: str | int) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{_where(*where)} must be an object (a mapping), got {type(value).__name__}"
        )
    return value


def _sequence(value: object, *where: str | int) -> Sequence[Any]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigurationError(f"{_where(*where)} must be a list, got {type(value).__name__}")
    return value


def _number(value: object, *where: str | int) -> float | None:
    """A figure for a chart: a finite number, or None for null and NaN (no data that second)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"{_where(*where)} must be a number or null, got {type(value).__name__}"
        )
    return float(value) if math.isfinite(value) else None


def _text_setting(summary: Mapping[str, Any], key: str) -> str | None:
    value = _mapping(summary.get("settings"), "settings").get(key)
    if value is None:
        value = summary.get(key)
    return value if isinstance(value, str) and value else None


# --- charts -------------------------------------------------------------------------------------


def _charts(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = [_mapping(row, "timeseries", i) for i, row in enumerate(_timeseries(summary))]
    seconds = [_second(row.get("t"), i) for i, row in enumerate(rows)]
    order = sorted(range(len(rows)), key=seconds.__getitem__)
    xs = [seconds[i] for i in order]

    def column(key: str) -> list[float | None]:
        return [_number(rows[i].get(key), "timeseries", i, key) for i in order]

    latency = [
        series(f"{endpoint} {p}", column(f"{endpoint}_{p}_ms"), _COLORS[endpoint], dash=p == "p99")
        for endpoint in ENDPOINTS
        for p in ("p50", "p99")
    ]
    spectrum = _mapping(summary.get("latency_spectrum"), "latency_spectrum")
    open_model = summary.get("load_model") == "open"
    return [
        chart(
            "latency",
            "Latency over time",
            "p50 (solid) and p99 (dashed) of each endpoint, per second of the run",
            xs,
            latency,
            unit="ms",
        ),
        chart(
            "throughput",
            "Throughput",
            "HTTP requests sent and conversations started, per second",
            xs,
            [
                series("requests/s", column("requests"), _COLORS["requests"]),
                series(
                    "conversations started/s",
                    column("conversations_started"),
                    _COLORS["conversations_started"],
                ),
                *(
                    [series("target rate", column("target"), _COLORS["target"], dash=True)]
                    if open_model
                    else []
                ),
            ],
            unit="/s",
        ),
        chart(
            "errors",
            "Errors over time",
            "failed calls per second (after retries)",
            xs,
            [series("errors/s", column("errors"), _COLORS["errors"], fill=True)],
            unit="/s",
        ),
        chart(
            "in_flight",
            "Conversations in flight",
            "conversations running at the end of each second",
            xs,
            [
                series("in flight", column("in_flight"), _COLORS["in_flight"], fill=True),
                *(
                    []
                    if open_model
                    else [series("target", column("target"), _COLORS["target"], dash=True)]
                ),
            ],
            unit="",
        ),
        _spectrum_chart(
            "spectrum",
            "Request latency by percentile",
            "each endpoint's latency at every percentile of the run (log percentile axis)",
            spectrum,
            ENDPOINTS,
        ),
        _spectrum_chart(
            "conversation_spectrum",
            "Conversation duration by percentile",
            "whole conversations, create to close (log percentile axis)",
            spectrum,
            ("conversation",),
        ),
    ]


def _timeseries(summary: Mapping[str, Any]) -> Sequence[Any]:
    return _sequence(summary.get("timeseries"), "timeseries")


def _second(value: object, index: int) -> float:
    second = _number(value, "timeseries", index, "t")
    if second is None:
        raise ConfigurationError(
            f"{_where('timeseries', index, 't')} must be the second of the run, got null"
        )
    return second


def _spectrum_chart(
    chart_id: str,
    title: str,
    caption: str,
    spectrum: Mapping[str, Any],
    names: Sequence[str],
) -> dict[str, Any]:
    """Percentile curves on one x axis: x = -log10(1 - p/100), so 90 % is 1, 99 % is 2, ...

    The curves have different percentile points, so they share the union of them and each is
    null where it has no point (drawn across the gaps).
    """
    points: dict[float, dict[str, float | None]] = {}
    for name in names:
        for i, item in enumerate(_sequence(spectrum.get(name), "latency_spectrum", name)):
            point = _mapping(item, "latency_spectrum", name, i)
            percentile = _number(point.get("percentile"), "latency_spectrum", name, i, "percentile")
            if percentile is None or not 0 <= percentile <= 100:
                raise ConfigurationError(
                    f"{_where('latency_spectrum', name, i, 'percentile')} must be a number "
                    f"from 0 to 100, got {point.get('percentile')!r}"
                )
            x = round(-math.log10(1 - min(percentile, _MAX_PERCENTILE) / 100), 6)
            points.setdefault(x, {})[name] = _number(
                point.get("ms"), "latency_spectrum", name, i, "ms"
            )
    xs = sorted(points)
    lines = [
        series(name, [points[x].get(name) for x in xs], _COLORS[name], span_gaps=True)
        for name in names
    ]
    return chart(chart_id, title, caption, xs, lines, unit="ms", x_kind="percentile")


# --- the sections, as text for the template --------------------------------------------------


def _facts(summary: Mapping[str, Any], name: str | None) -> list[tuple[str, str]]:
    """The header's subtitle: (kind, text) pairs; the template marks up the scenario and target."""
    facts = []
    if name:
        facts.append(("scenario", name))
    model = summary.get("load_model")
    if model is not None:
        facts.append(("model", f"{_plain(model)} model"))
    processes = summary.get("processes")
    if processes is not None:
        facts.append(("processes", f"{_plain(processes)} process{'' if processes == 1 else 'es'}"))
    window = summary.get("load_window_seconds", summary.get("wall_seconds"))
    if isinstance(window, (int, float)) and not isinstance(window, bool):
        facts.append(("window", f"{_format.duration(float(window))} of load"))
    target = summary.get("base_url") or summary.get("target")
    if target is not None:
        facts.append(("target", _plain(target)))
    return facts


def _verdict(passed: object) -> tuple[str, str]:
    if passed is True:
        return "pass", "Passed"
    if passed is False:
        return "fail", "Failed"
    return "none", "No verdict"


def _stopped(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The interrupted or partial run's marker, before any figure."""
    notes = stop_notes(summary)
    if not notes:
        return None
    state = (
        "interrupted"
        if summary.get("interrupted")
        else "aborted"
        if summary.get("aborted")
        else "partial"
    )
    return {"state": state, "title": f"{state.capitalize()} run", "notes": notes}


def _tiles(summary: Mapping[str, Any]) -> list[tuple[str, Text, str]]:
    # The summary's own figures, never recomputed here.
    return [
        ("Conversations started", _value(summary.get("conversations_started")), ""),
        ("Completed", _value(summary.get("conversations_completed")), ""),
        ("Failed", _value(summary.get("conversations_failed")), ""),
        ("Dropped", _value(summary.get("conversations_dropped")), ""),
        ("Error rate", _percent(summary.get("conversation_error_rate")), _ERROR_RATE_TIP),
        (
            "Requests/s",
            _value(summary.get("requests_per_second")),
            "requests_per_second: HTTP requests sent / the load window (load_window_seconds)",
        ),
        ("respond p99", _ms(summary.get("respond_p99_ms")), ""),
        ("Generator lag p99", _ms(summary.get("generator_lag_p99_ms")), ""),
    ]


def _thresholds(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for i, entry in enumerate(_sequence(summary.get("thresholds"), "thresholds")):
        item = _mapping(entry, "thresholds", i)
        expression = _plain(item.get("expression"))
        value = _number(item.get("value"), "thresholds", i, "value")
        passed = item.get("passed")
        state, _ = _verdict(passed)
        reason = item.get("reason")
        rows.append(
            {
                "state": state,
                "result": {"pass": "pass", "fail": "fail"}.get(state, "no result"),
                "expression": expression,
                # As the terminal says it, in the unit of the expression.
                "measured": None if value is None else measured_text(expression, value),
                "reason": reason if value is None and isinstance(reason, str) else None,
            }
        )
    return rows


def _latency_table(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    names = (*ENDPOINTS, "conversation")
    columns = [
        (key, heading)
        for key, heading in _LATENCY_COLUMNS
        if any(f"{name}_{key}_ms" in summary for name in names)
    ]
    shown = [name for name in names if any(f"{name}_{key}_ms" in summary for key, _ in columns)]
    if not shown:
        return None
    rows = []
    for name in shown:
        if name == "conversation":
            ok_count = summary.get("conversations_completed")
            failed = summary.get("conversations_failed")
            count = (
                ok_count + failed if isinstance(ok_count, int) and isinstance(failed, int) else None
            )
        else:
            count, ok_count = summary.get(f"{name}_count"), summary.get(f"{name}_ok_count")
        # Every call that ended (a failed one with the time it took to fail), then the
        # successful ones alone (<name>_ok_*), when the summary has them.
        for label, prefix, calls in ((name, name, count), (f"{name}.ok", f"{name}_ok", ok_count)):
            if label != name and not any(f"{prefix}_{key}_ms" in summary for key, _ in columns):
                continue
            rows.append(
                {
                    "label": label,
                    "colour": _COLORS[name],
                    "calls": _value(calls),
                    "cells": [_ms(summary.get(f"{prefix}_{key}_ms")) for key, _ in columns],
                }
            )
    headings = [("", False), ("calls", True), *((heading, True) for _, heading in columns)]
    return {"headings": headings, "rows": rows}


def _stages_table(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """Each stage's own figures (``summary['stages']``), None without stages."""
    stages = [
        _mapping(row, "stages", i)
        for i, row in enumerate(_sequence(summary.get("stages"), "stages"))
    ]
    if not stages:
        return None
    headings = [
        ("stage", True), ("from (s)", True), ("to (s)", True), ("target", False),
        ("conversations/s", True), ("failed", True), ("respond p50", True), ("respond p99", True),
    ]  # fmt: skip
    rows = [
        [
            _value(row.get("stage")),
            _value(row.get("start_seconds")),
            _value(row.get("end_seconds")),
            f"{_value(row.get('target_from')) or '-'} -> {_value(row.get('target_to')) or '-'}",
            _value(row.get("conversations_per_second")),
            _percent(row.get("conversation_error_rate")),
            _ms(row.get("respond_p50_ms")),
            _ms(row.get("respond_p99_ms")),
        ]
        for row in stages
    ]
    return {"headings": headings, "rows": rows}


def _outcomes(summary: Mapping[str, Any]) -> dict[str, Any]:
    started = summary.get("conversations_started")
    completed = summary.get("conversations_completed")
    failed = summary.get("conversations_failed")
    dropped = summary.get("conversations_dropped")
    rows: list[tuple[str, Text]] = [
        ("started", _value(started)),
        ("completed", _value(completed)),
        ("failed", _value(failed)),
        ("dropped (arrivals not started: late, pool full or max in flight)", _value(dropped)),
    ]
    optional = (
        (
            "conversations_interrupted",
            "interrupted (cut off by the graceful stop: counted as failed in the error rate)",
        ),
        ("in_flight_max", "in flight at most"),
    )
    rows += [(label, _value(summary[key])) for key, label in optional if key in summary]
    rows += [
        ("ended by the agent", _value(summary.get("ended_by_agent"))),
        ("handed off", _value(summary.get("handoffs"))),
        ("turns completed", _value(summary.get("turns_completed"))),
        ("retries", _value(summary.get("retries"))),
    ]
    requests = (
        ("requests_ok", "requests answered ok"),
        ("requests_failed", "requests failed"),
        ("requests_cancelled", "requests cancelled (cut off by the graceful stop)"),
    )
    rows += [(label, _value(summary[key])) for key, label in requests if key in summary]
    return {
        "bar": _outcome_bar(completed, failed, dropped, started),
        "rows": rows,
        "handoffs": _counts(
            _mapping(summary.get("handoffs_by_destination"), "handoffs_by_destination")
        ),
        "reasons": _counts(_mapping(summary.get("handoffs_by_reason"), "handoffs_by_reason")),
        "expectations": [
            ("checked", _value(summary.get("expectations_checked"))),
            ("failed", _value(summary.get("expectations_failed"))),
        ],
    }


def _counts(
    counts: Mapping[str, Any], *, largest_first: bool = True
) -> list[tuple[str, Text, float]]:
    """Counts by name (largest first, or as given), each with its bar's width (% of the largest)."""
    most = max(map(_as_count, counts.values()), default=0) or 1
    items = list(counts.items())
    if largest_first:
        items.sort(key=lambda kv: -_sort_key(kv[1]))
    return [(str(key), _value(n), 100 * _as_count(n) / most) for key, n in items]


def _outcome_bar(
    completed: object, failed: object, dropped: object, started: object
) -> list[tuple[str, str, str, str]]:
    """The conversations' bar: (label, count, width in %, colour) per segment."""
    parts = [
        ("completed", _as_count(completed), "#16a34a"),
        ("failed", _as_count(failed), "#dc2626"),
        ("dropped", _as_count(dropped), "#94a3b8"),
    ]
    # Dropped arrivals never started, so the bar's whole is started + dropped.
    total = max(_as_count(started) + _as_count(dropped), sum(n for _, n, _ in parts))
    if not total:
        return []
    return [
        (label, _format.count(n), f"{100 * n / total:.2f}", colour)
        for label, n, colour in parts
        if n
    ]


def _turns(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """Respond latency by turn index, and how many turns conversations had."""
    by_turn = [
        _mapping(row, "respond_by_turn", i)
        for i, row in enumerate(_sequence(summary.get("respond_by_turn"), "respond_by_turn"))
    ]
    turns_by_count = _mapping(summary.get("turns_by_count"), "turns_by_count")
    if not by_turn and not turns_by_count:
        return None
    ordered = dict(sorted(turns_by_count.items(), key=lambda kv: _turns_key(kv[0])))
    return {
        "by_turn": [
            (
                _turn_number(row.get("turn")),
                _value(row.get("count")),
                _ms(row.get("p50_ms")),
                _ms(row.get("p99_ms")),
            )
            for row in by_turn
        ],
        "counts": _counts(ordered, largest_first=False),
    }


def _turn_number(turn: object) -> Text:
    if isinstance(turn, int) and not isinstance(turn, bool):
        return _format.count(turn + 1)
    return _value(turn)


def _turns_key(key: object) -> int:
    """Turn counts are JSON object keys ("3"): sort them as numbers."""
    return int(key) if isinstance(key, str) and key.isdigit() else -1


def _personas(summary: Mapping[str, Any]) -> list[tuple[str, list[Text], Text]]:
    rows = []
    for name, entry in _mapping(summary.get("personas"), "personas").items():
        figures = _mapping(entry, "personas", str(name))
        counts = [
            _value(figures.get(key))
            for key in (
                "started",
                "completed",
                "failed",
                "expectations_checked",
                "expectations_failed",
            )
        ]
        rows.append((str(name), counts, _text(figures.get("example_failure"))))
    return rows


def _errors(summary: Mapping[str, Any]) -> list[tuple[str, Text, Text]]:
    rows = []
    for name, entry in _mapping(summary.get("errors_by_class"), "errors_by_class").items():
        detail = _mapping(entry, "errors_by_class", str(name))
        rows.append((str(name), _value(detail.get("count")), _text(detail.get("example"))))
    return rows


def _workers(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    workers = [
        _mapping(w, "workers", i)
        for i, w in enumerate(_sequence(summary.get("workers"), "workers"))
    ]
    if not workers:
        return None
    wanted = {
        "conversations_started": "started",
        "conversations_completed": "completed",
        "conversations_failed": "failed",
        "conversations_dropped": "dropped",
        "requests_per_second": "requests/s",
        "respond_p99_ms": "respond p99",
        "generator_lag_p99_ms": "generator lag p99",
    }
    keys = [k for k in wanted if any(k in w for w in workers)]
    return {
        "headings": [("worker", False), *((wanted[k], True) for k in keys)],
        "rows": [
            [_ms(w.get(k)) if k.endswith("_ms") else _value(w.get(k)) for k in keys]
            for w in workers
        ],
    }


# --- values -------------------------------------------------------------------------------------


def _as_count(value: object) -> int:
    """A count for a bar's width: a non-negative int, or 0 for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _sort_key(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _value(value: object) -> Text:
    """Any figure as text: numbers as ``_format.number``, null as None (a dash), yes/no."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return _format.number(value) if math.isfinite(value) else None
    return _plain(value)


def _ms(value: object) -> Text:
    number = _finite(value)
    return _value(value) if number is None else _format.milliseconds(number)


def _percent(value: object) -> Text:
    number = _finite(value)
    return _value(value) if number is None else _format.percent(number)


def _plain(value: object) -> str:
    """A value as one line of text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return repr(value)


def _text(value: object) -> Text:
    return None if value is None else _plain(value)
