r"""The HTML report of a load run: one self-contained page that opens offline (private).

``render_html`` turns the JSON summary (schema ``polyai-async-bench/3``) into one HTML file:

- the tables (thresholds, outcomes, personas, errors, settings, ...) are rendered here, and every
  string taken from the summary goes through ``html.escape``;
- the charts are drawn in the browser by uPlot (vendored in ``_assets/``, MIT), from numbers this
  module prepares and embeds as JSON in a ``<script type="application/json">`` element, with
  ``<``, ``>`` and ``&`` written as ``\\u003c``... so no string can close the element;
- uPlot, its CSS and the report's own script and style are inlined, and a Content-Security-Policy
  allows no fetch at all (``default-src 'none'``) and only the page's own two scripts (by hash), so
  the page loads nothing from the network and an injected handler could not run.

uPlot was picked for size and look: 51 KB minified with no dependencies (a whole report is about
85 KB; Chart.js alone is 205 KB), made for time series, drawn on canvas (thousands of points stay
fast), with a clean default look.

Settings never carry secrets, and the report makes sure: the whole summary goes through
``polyai_async._redact.redact_value`` before anything is rendered, so every secret the process
knows, a setting whose name looks like a credential (key, token, secret, password, auth, ...),
a URL's userinfo (``http://user:pass@host``) and a bearer token show as ``***``.
"""

from __future__ import annotations

import functools
import hashlib
import html
import math
import os
import re
from base64 import b64encode
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from .._errors import ConfigurationError
from .._redact import redact_value
from ._interrupt import stop_notes
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
# A threshold on a latency (``respond.p99<1500ms``, ``generator_lag_p99_ms<10``): its value is ms.
_LATENCY_EXPRESSION = re.compile(r"\.(?:p\d+|max|mean)\b|_ms\b")


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
            shape (the message names it, for example ``summary['timeseries'][3]['t']``).
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
    data = _script_json({"charts": charts})
    report_js = _inline(_asset("report.js"), "script")
    uplot_js = _inline(_asset("uPlot.iife.min.js"), "script")
    style = _inline(_asset("uPlot.min.css") + "\n" + _asset("report.css"), "style")
    # Made of constants and hashes only (no summary string), so it goes into the page as is.
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_script_hash(uplot_js)} {_script_hash(report_js)}",
            "style-src 'unsafe-inline'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    title = "Load test report"
    # The scenario's name, as the terminal names it (the settings hold the file's path).
    scenario = summary.get("scenario")
    name = (
        scenario
        if isinstance(scenario, str) and scenario
        else _text_setting(summary, "scenario") or _text_setting(summary, "name")
    )
    body = "\n".join(
        (
            _header(summary, title, name),
            _stopped(summary),
            _tiles(summary),
            _warnings(summary),
            _thresholds(summary),
            _chart_sections(charts),
            _latency_table(summary),
            _outcomes(summary),
            _turns(summary),
            _personas(summary),
            _errors(summary),
            _workers(summary),
            _settings(summary),
            _footer(summary),
        )
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="polyai-async">
<title>{_esc(title + (f": {name}" if name else ""))}</title>
<style>
{style}
</style>
</head>
<body>
<main class="page">
{body}
</main>
<script type="application/json" id="report-data">{data}</script>
<script>{uplot_js}</script>
<script>{report_js}</script>
</body>
</html>
"""


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
        _series(f"{endpoint} {p}", column(f"{endpoint}_{p}_ms"), _COLORS[endpoint], dash=p == "p99")
        for endpoint in ENDPOINTS
        for p in ("p50", "p99")
    ]
    spectrum = _mapping(summary.get("latency_spectrum"), "latency_spectrum")
    return [
        _chart(
            "latency",
            "Latency over time",
            "p50 (solid) and p99 (dashed) of each endpoint, per second of the run",
            xs,
            latency,
            unit="ms",
        ),
        _chart(
            "throughput",
            "Throughput",
            "HTTP requests sent and conversations started, per second",
            xs,
            [
                _series("requests/s", column("requests"), _COLORS["requests"]),
                _series(
                    "conversations started/s",
                    column("conversations_started"),
                    _COLORS["conversations_started"],
                ),
            ],
            unit="/s",
        ),
        _chart(
            "errors",
            "Errors over time",
            "failed calls per second (after retries)",
            xs,
            [_series("errors/s", column("errors"), _COLORS["errors"], fill=True)],
            unit="/s",
        ),
        _chart(
            "in_flight",
            "Conversations in flight",
            "conversations running at the end of each second",
            xs,
            [_series("in flight", column("in_flight"), _COLORS["in_flight"], fill=True)],
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


def _series(
    label: str,
    values: list[float | None],
    color: str,
    *,
    dash: bool = False,
    fill: bool = False,
    span_gaps: bool = False,
) -> dict[str, Any]:
    return {
        "label": label,
        "color": color,
        "dash": dash,
        "fill": fill,
        "spanGaps": span_gaps,
        "values": values,
    }


def _chart(
    chart_id: str,
    title: str,
    caption: str,
    xs: Sequence[float],
    series: list[dict[str, Any]],
    *,
    unit: str,
    x_kind: str = "seconds",
) -> dict[str, Any]:
    """A chart's spec for report.js; series with no value at all are left out (nothing to draw)."""
    drawn = [s for s in series if any(v is not None for v in s["values"])]
    return {
        "id": chart_id,
        "title": title,
        "caption": caption,
        "xKind": x_kind,
        "unit": unit,
        "x": list(xs) if drawn else [],
        "series": drawn,
    }


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
    series = [
        _series(name, [points[x].get(name) for x in xs], _COLORS[name], span_gaps=True)
        for name in names
    ]
    return _chart(chart_id, title, caption, xs, series, unit="ms", x_kind="percentile")


def _chart_sections(charts: list[dict[str, Any]]) -> str:
    over_time = [c for c in charts if c["xKind"] == "seconds"]
    spectra = [c for c in charts if c["xKind"] == "percentile"]
    return "\n".join(
        (
            _section("Over time", _chart_grid(over_time), "over-time"),
            _section("Latency spectrum", _chart_grid(spectra), "spectrum"),
        )
    )


def _chart_grid(charts: list[dict[str, Any]]) -> str:
    cards = []
    for chart in charts:
        if chart["series"]:
            plot = '<div class="chart-canvas"></div>'
        else:
            plot = '<p class="empty">No data points were recorded.</p>'
        cards.append(
            f'<figure class="card chart" data-chart="{_esc(chart["id"])}">'
            f"<figcaption><h3>{_esc(chart['title'])}</h3>"
            f'<p class="caption">{_esc(chart["caption"])}</p></figcaption>{plot}</figure>'
        )
    return f'<div class="grid">{"".join(cards)}</div>'


# --- tables and text ----------------------------------------------------------------------------


def _header(summary: Mapping[str, Any], title: str, name: str | None) -> str:
    facts = []
    if name:
        facts.append(f"scenario <strong>{_esc(name)}</strong>")
    model = summary.get("load_model")
    if model is not None:
        facts.append(f"{_esc(_plain(model))} model")
    processes = summary.get("processes")
    if processes is not None:
        facts.append(f"{_esc(_plain(processes))} process{'' if processes == 1 else 'es'}")
    window = summary.get("load_window_seconds", summary.get("wall_seconds"))
    if isinstance(window, (int, float)) and not isinstance(window, bool):
        facts.append(f"{_esc(_duration(float(window)))} of load")
    target = summary.get("base_url") or summary.get("target")
    if target is not None:
        facts.append(f"against <code>{_esc(_plain(target))}</code>")
    passed = summary.get("passed")
    if passed is True:
        verdict = '<div class="verdict pass" data-verdict="pass">Passed</div>'
    elif passed is False:
        verdict = '<div class="verdict fail" data-verdict="fail">Failed</div>'
    else:
        verdict = '<div class="verdict none" data-verdict="none">No verdict</div>'
    subtitle = " · ".join(facts)
    return (
        f'<header class="top"><div><h1>{_esc(title)}</h1>'
        f'<p class="subtitle">{subtitle}</p></div>{verdict}</header>'
    )


_ERROR_RATE_TIP = (
    "conversation_error_rate: (failed + interrupted) / (completed + failed + interrupted): "
    "a conversation cut off by the graceful stop did not succeed (dropped ones excluded)"
)


def _title(tip: str) -> str:
    """A tooltip attribute, or nothing."""
    return f' title="{_esc(tip)}"' if tip else ""


def _tiles(summary: Mapping[str, Any]) -> str:
    # The summary's own figure, never recomputed here.
    rate = summary.get("conversation_error_rate")
    tiles = (
        ("Conversations started", _count(summary.get("conversations_started")), ""),
        ("Completed", _count(summary.get("conversations_completed")), ""),
        ("Failed", _count(summary.get("conversations_failed")), ""),
        ("Dropped", _count(summary.get("conversations_dropped")), ""),
        ("Error rate", _percent(rate), _ERROR_RATE_TIP),
        (
            "Requests/s",
            _value(summary.get("requests_per_second")),
            "requests_per_second: HTTP requests sent / the load window (load_window_seconds)",
        ),
        ("respond p99", _ms(summary.get("respond_p99_ms")), ""),
        ("Generator lag p99", _ms(summary.get("generator_lag_p99_ms")), ""),
    )
    cells = "".join(
        f'<div class="tile"{_title(tip)}><div class="tile-value">{value}</div>'
        f'<div class="tile-label">{_esc(label)}</div></div>'
        for label, value, tip in tiles
    )
    return f'<section class="tiles">{cells}</section>'


def _stopped(summary: Mapping[str, Any]) -> str:
    """The interrupted or partial run's marker, before any figure."""
    notes = stop_notes(summary)
    if not notes:
        return ""
    state = "interrupted" if summary.get("interrupted") else "partial"
    items = "".join(f"<li>{_esc(n)}</li>" for n in notes)
    return (
        f'<section class="warnings" role="alert" data-stopped="{state}">'
        f"<h2>{'Interrupted' if state == 'interrupted' else 'Partial'} run</h2>"
        f"<ul>{items}</ul></section>"
    )


def _warnings(summary: Mapping[str, Any]) -> str:
    warnings = _sequence(summary.get("warnings"), "warnings")
    if not warnings:
        return ""
    items = "".join(f"<li>{_esc(_plain(w))}</li>" for w in warnings)
    return (
        '<section class="warnings" role="alert"><h2>Warnings</h2>'
        "<p>The load generator was itself under strain, so some figures describe it, not the "
        f"agent.</p><ul>{items}</ul></section>"
    )


def _thresholds(summary: Mapping[str, Any]) -> str:
    thresholds = _sequence(summary.get("thresholds"), "thresholds")
    if not thresholds:
        return _section("Thresholds", '<p class="empty">No thresholds were set.</p>', "thresholds")
    rows = []
    for i, entry in enumerate(thresholds):
        item = _mapping(entry, "thresholds", i)
        expression = _plain(item.get("expression"))
        value = _number(item.get("value"), "thresholds", i, "value")
        passed = item.get("passed")
        if passed is True:
            result = '<span class="badge pass">pass</span>'
        elif passed is False:
            result = '<span class="badge fail">fail</span>'
        else:
            result = '<span class="badge none">no result</span>'
        state = "pass" if passed is True else "fail" if passed is False else "none"
        if value is not None:
            measured = _esc(measured_text(expression, value))  # as the terminal says it
        else:
            measured = _ms(value) if _LATENCY_EXPRESSION.search(expression) else _value(value)
        reason = item.get("reason")
        if value is None and isinstance(reason, str) and reason:
            measured = f'<span class="reason">{_esc(reason)}</span>'
        rows.append(
            f'<tr class="{state}"><td><code>{_esc(expression)}</code></td>'
            f'<td class="num">{measured}</td><td>{result}</td></tr>'
        )
    table = (
        '<table class="thresholds"><thead><tr><th>Threshold</th><th class="num">Measured</th>'
        f"<th>Result</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return _section("Thresholds", table, "thresholds")


def _latency_table(summary: Mapping[str, Any]) -> str:
    names = (*ENDPOINTS, "conversation")
    columns = [
        (key, heading)
        for key, heading in _LATENCY_COLUMNS
        if any(f"{name}_{key}_ms" in summary for name in names)
    ]
    shown = [name for name in names if any(f"{name}_{key}_ms" in summary for key, _ in columns)]
    if not shown:
        return ""
    head = "".join(f'<th class="num">{_esc(heading)}</th>' for _, heading in columns)
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
            cells = "".join(
                f'<td class="num">{_ms(summary.get(f"{prefix}_{key}_ms"))}</td>'
                for key, _ in columns
            )
            rows.append(
                f'<tr><th scope="row"><span class="swatch" style="background:{_COLORS[name]}">'
                f'</span>{_esc(label)}</th><td class="num">{_count(calls)}</td>{cells}</tr>'
            )
    table = (
        f'<table><thead><tr><th></th><th class="num">calls</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return _section("Latency", table, "latency")


def _outcomes(summary: Mapping[str, Any]) -> str:
    started = summary.get("conversations_started")
    completed = summary.get("conversations_completed")
    failed = summary.get("conversations_failed")
    dropped = summary.get("conversations_dropped")
    rows: list[tuple[str, str]] = [
        ("started", _count(started)),
        ("completed", _count(completed)),
        ("failed", _count(failed)),
        ("dropped (arrivals over --max-in-flight)", _count(dropped)),
    ]
    optional = (
        (
            "conversations_interrupted",
            "interrupted (cut off by the graceful stop: counted as failed in the error rate)",
        ),
        ("in_flight_max", "in flight at most"),
    )
    rows += [(label, _count(summary[key])) for key, label in optional if key in summary]
    rows += [
        ("ended by the agent", _count(summary.get("ended_by_agent"))),
        ("handed off", _count(summary.get("handoffs"))),
        ("turns completed", _count(summary.get("turns_completed"))),
        ("retries", _count(summary.get("retries"))),
    ]
    requests = (
        ("requests_ok", "requests answered ok"),
        ("requests_failed", "requests failed"),
        ("requests_cancelled", "requests cancelled (cut off by the graceful stop)"),
    )
    rows += [(label, _count(summary[key])) for key, label in requests if key in summary]
    bar = _outcome_bar(completed, failed, dropped, started)
    handoffs = _counts_table(
        _mapping(summary.get("handoffs_by_destination"), "handoffs_by_destination"),
        "destination",
        "handoffs",
    )
    reasons = _mapping(summary.get("handoffs_by_reason"), "handoffs_by_reason")
    by_reason = (
        f'<h3 class="later">Handoffs by reason</h3>{_counts_table(reasons, "reason", "handoffs")}'
        if reasons
        else ""
    )
    expectations = _key_values(
        (
            ("checked", _count(summary.get("expectations_checked"))),
            ("failed", _count(summary.get("expectations_failed"))),
        )
    )
    body = (
        '<div class="grid three">'
        f'<div class="card"><h3>Conversations</h3>{bar}{_key_values(rows)}</div>'
        f'<div class="card"><h3>Handoffs by destination</h3>{handoffs}{by_reason}</div>'
        f'<div class="card"><h3>Expectations</h3>{expectations}'
        '<p class="caption">An unmet expectation is counted, not an error; the personas '
        "table shows an example of each.</p></div></div>"
    )
    return _section("Outcomes", body, "outcomes")


def _counts_table(
    counts: Mapping[str, Any], name: str, what: str, *, largest_first: bool = True
) -> str:
    """Counts by name (largest first, or as given), each with a bar scaled to the largest."""
    if not counts:
        return f'<p class="empty">No {_esc(what)}.</p>'
    most = max(map(_as_count, counts.values()), default=0) or 1
    items = list(counts.items())
    if largest_first:
        items.sort(key=lambda kv: -_sort_key(kv[1]))
    rows = "".join(
        f"<tr><td>{_esc(str(key))}</td><td class='num'>{_count(n)}</td>"
        f"<td class='bar-cell'>{_bar(n, most, _COLORS['conversation'])}</td></tr>"
        for key, n in items
    )
    return (
        f'<table class="counts"><thead><tr><th>{_esc(name)}</th><th class="num">{_esc(what)}</th>'
        f"<th></th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _turns(summary: Mapping[str, Any]) -> str:
    """Respond latency by turn index, and how many turns conversations had."""
    by_turn = [
        _mapping(row, "respond_by_turn", i)
        for i, row in enumerate(_sequence(summary.get("respond_by_turn"), "respond_by_turn"))
    ]
    turns_by_count = _mapping(summary.get("turns_by_count"), "turns_by_count")
    if not by_turn and not turns_by_count:
        return ""
    if by_turn:
        rows = "".join(
            f"<tr><td>{_turn_number(row.get('turn'))}</td>"
            f'<td class="num">{_count(row.get("count"))}</td>'
            f'<td class="num">{_ms(row.get("p50_ms"))}</td>'
            f'<td class="num">{_ms(row.get("p99_ms"))}</td></tr>'
            for row in by_turn
        )
        latency = (
            '<table class="by-turn"><thead><tr><th>turn</th><th class="num">calls</th>'
            '<th class="num">p50</th><th class="num">p99</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    else:
        latency = '<p class="empty">No respond call succeeded.</p>'
    ordered = dict(sorted(turns_by_count.items(), key=lambda kv: _turns_key(kv[0])))
    body = (
        '<div class="grid">'
        f'<div class="card"><h3>Respond latency by turn</h3>{latency}'
        '<p class="caption">Turn 1 is the first user message: a later turn that is slower '
        "points at state the agent builds up.</p></div>"
        '<div class="card"><h3>Turns per conversation</h3>'
        f"{_counts_table(ordered, 'turns', 'conversations', largest_first=False)}"
        '<p class="caption">Fewer turns than the scenario has: the agent ended the '
        "conversation or handed it off (or a call failed).</p></div></div>"
    )
    return _section("Turns", body, "turns")


def _turn_number(turn: object) -> str:
    if isinstance(turn, int) and not isinstance(turn, bool):
        return f"{turn + 1:,}"
    return _value(turn)


def _turns_key(key: object) -> int:
    """Turn counts are JSON object keys ("3"): sort them as numbers."""
    return int(key) if isinstance(key, str) and key.isdigit() else -1


def _outcome_bar(completed: object, failed: object, dropped: object, started: object) -> str:
    parts = [
        ("completed", _as_count(completed), "#16a34a"),
        ("failed", _as_count(failed), "#dc2626"),
        ("dropped", _as_count(dropped), "#94a3b8"),
    ]
    # Dropped arrivals never started, so the bar's whole is started + dropped.
    total = max(_as_count(started) + _as_count(dropped), sum(n for _, n, _ in parts))
    if not total:
        return ""
    segments = "".join(
        f'<span class="segment" style="width:{100 * n / total:.2f}%;background:{colour}" '
        f'title="{label}: {n:,}"></span>'
        for label, n, colour in parts
        if n
    )
    return f'<div class="stack" aria-hidden="true">{segments}</div>'


def _personas(summary: Mapping[str, Any]) -> str:
    personas = _mapping(summary.get("personas"), "personas")
    if not personas:
        return ""
    rows = []
    for name, entry in personas.items():
        figures = _mapping(entry, "personas", str(name))
        example = figures.get("example_failure")
        rows.append(
            f"<tr><td>{_esc(str(name))}</td>"
            + "".join(
                f'<td class="num">{_count(figures.get(key))}</td>'
                for key in (
                    "started",
                    "completed",
                    "failed",
                    "expectations_checked",
                    "expectations_failed",
                )
            )
            + f'<td class="example">{_text(example)}</td></tr>'
        )
    table = (
        '<table class="personas"><thead><tr><th>persona</th><th class="num">started</th>'
        '<th class="num">completed</th><th class="num">failed</th>'
        '<th class="num">expectations</th><th class="num">unmet</th>'
        "<th>example of an unmet expectation</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return _section("Personas", table, "personas")


def _errors(summary: Mapping[str, Any]) -> str:
    errors = _mapping(summary.get("errors_by_class"), "errors_by_class")
    if not errors:
        return _section("Errors", '<p class="empty">No call failed.</p>', "errors")
    rows = []
    for name, entry in errors.items():
        detail = _mapping(entry, "errors_by_class", str(name))
        rows.append(
            f"<tr><td><code>{_esc(str(name))}</code></td>"
            f'<td class="num">{_count(detail.get("count"))}</td>'
            f'<td class="example">{_text(detail.get("example"))}</td></tr>'
        )
    table = (
        '<table class="errors"><thead><tr><th>error</th><th class="num">count</th>'
        f"<th>example</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return _section("Errors", table, "errors")


def _workers(summary: Mapping[str, Any]) -> str:
    workers = [
        _mapping(w, "workers", i)
        for i, w in enumerate(_sequence(summary.get("workers"), "workers"))
    ]
    if not workers:
        return ""
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
    head = "".join(f'<th class="num">{_esc(wanted[k])}</th>' for k in keys)
    rows = "".join(
        f"<tr><td>{i + 1}</td>"
        + "".join(
            f'<td class="num">{_ms(w.get(k)) if k.endswith("_ms") else _value(w.get(k))}</td>'
            for k in keys
        )
        + "</tr>"
        for i, w in enumerate(workers)
    )
    table = (
        f"<table><thead><tr><th>worker</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
        "<p class=\"caption\">The run's figures above merge the workers' histograms and counters "
        "exactly; these are each worker's own.</p>"
    )
    return _section("Workers", table, "workers")


def _settings(summary: Mapping[str, Any]) -> str:
    settings = _mapping(summary.get("settings"), "settings")
    if not settings:
        return _section(
            "Settings", '<p class="empty">The summary lists no settings.</p>', "settings"
        )
    rows = "".join(
        f"<tr><th scope='row'><code>{_esc(str(key))}</code></th><td>{_text(value)}</td></tr>"
        for key, value in settings.items()
    )
    table = f'<table class="settings"><tbody>{rows}</tbody></table>'
    return _section("Settings", table, "settings")


def _footer(summary: Mapping[str, Any]) -> str:
    schema = summary.get("schema")
    made = "Made by polyai-async"
    if schema is not None:
        made += f" from a <code>{_esc(_plain(schema))}</code> summary"
    return (
        f"<footer><p>{made}. Charts by uPlot (MIT licence, inlined: the file opens offline)."
        "</p></footer>"
    )


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_esc(title)}</h2>{body}</section>'


def _key_values(pairs: Sequence[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><td>{_esc(k)}</td><td class='num'>{v}</td></tr>" for k, v in pairs)
    return f'<table class="figures"><tbody>{rows}</tbody></table>'


def _bar(n: object, most: float, colour: str) -> str:
    width = 100 * _as_count(n) / most if most else 0
    return f'<span class="hbar" style="width:{width:.1f}%;background:{colour}"></span>'


# --- values -------------------------------------------------------------------------------------

_NONE = '<span class="muted">&ndash;</span>'


def _as_count(value: object) -> int:
    """A count for a bar's width: a non-negative int, or 0 for anything else."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _sort_key(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: object) -> str:
    if value is None:
        return _NONE
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return _value(value)


def _value(value: object) -> str:
    """Any figure as escaped HTML: numbers compact, null as a dash, the rest as text."""
    if value is None:
        return _NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return _NONE
        return _esc(_compact(value))
    return _text(value)


def _compact(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _ms(value: object) -> str:
    number = _finite(value)
    if number is None:
        return _value(value)
    if abs(number) >= 1000:
        return _esc(f"{number / 1000:,.2f} s")
    if abs(number) >= 100:
        return _esc(f"{number:.0f} ms")
    if abs(number) >= 10:
        return _esc(f"{number:.1f} ms")
    return _esc(f"{number:.2f} ms")


def _percent(value: object) -> str:
    number = _finite(value)
    if number is None:
        return _value(value)
    return _esc(f"{100 * number:.2f} %")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"


def _plain(value: object) -> str:
    """A value as one line of text (not yet escaped): strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return repr(value)


def _text(value: object) -> str:
    if value is None:
        return _NONE
    return _esc(_plain(value))


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


# --- assets and inlining ------------------------------------------------------------------------


@functools.cache
def _asset(name: str) -> str:
    return (resources.files(__package__) / "_assets" / name).read_text(encoding="utf-8")


def _inline(text: str, element: str) -> str:
    """Text that cannot close its <script> or <style> element (``</script`` never occurs)."""
    return re.sub(rf"</(?={element})", r"<\\/", text, flags=re.IGNORECASE)


def _script_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{b64encode(digest).decode()}'"


def _script_json(data: object) -> str:
    r"""JSON for a <script type="application/json">: ``<``, ``>`` and ``&`` as \u escapes."""
    text = orjson.dumps(data).decode()
    replacements: dict[str, str] = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
    escape: Callable[[re.Match[str]], str] = lambda m: replacements[m[0]]  # noqa: E731
    return re.sub("[<>&]", escape, text)
