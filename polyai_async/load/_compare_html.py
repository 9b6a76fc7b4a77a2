"""The HTML report of a comparison: one self-contained page, as bench's report.

``_templates/compare.html.j2`` extends the reports' shared page and macros (``_page``:
autoescaped, offline, strict Content-Security-Policy) and lays out the setup differences, the
rules' verdicts, the percentile spectra of base and new overlaid per endpoint, the per-second
series side by side and the table of every figure with the real changes marked. Everything
goes through ``redact_value`` first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._redact import redact_value
from ._compare import Change, Comparison
from ._metrics import ENDPOINTS
from ._page import chart as _chart
from ._page import render_page
from ._page import series as _series

__all__ = ["render_comparison_html", "write_comparison_html"]

_BASE_COLOR = "#64748b"
_NEW_COLOR = "#dc2626"
_MAX_PERCENTILE = 99.9999


def _spectrum(side: Mapping[str, Any], source: str) -> dict[float, float]:
    spectrum = side.get("latency_spectrum")
    points = spectrum.get(source) if isinstance(spectrum, Mapping) else None
    out: dict[float, float] = {}
    for point in points or ():
        if not isinstance(point, Mapping):
            continue
        percentile, ms = point.get("percentile"), point.get("ms")
        if not isinstance(percentile, int | float) or not isinstance(ms, int | float):
            continue
        if not 0 <= percentile <= 100:
            continue
        x = round(-math.log10(1 - min(float(percentile), _MAX_PERCENTILE) / 100), 6)
        out[x] = float(ms)
    return out


def _spectrum_charts(base: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    charts = []
    for source in (*ENDPOINTS, "conversation"):
        a, b = _spectrum(base, source), _spectrum(new, source)
        xs = sorted({*a, *b})
        charts.append(
            _chart(
                f"spectrum_{source}",
                f"{source}: latency by percentile",
                "base (grey) and new (red), every call that ended (log percentile axis)",
                xs,
                [
                    _series("base", [a.get(x) for x in xs], _BASE_COLOR, span_gaps=True),
                    _series("new", [b.get(x) for x in xs], _NEW_COLOR, span_gaps=True),
                ],
                unit="ms",
                x_kind="percentile",
            )
        )
    return charts


def _rows(side: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    rows = side.get("timeseries")
    if not isinstance(rows, Sequence):
        return []
    return [r for r in rows if isinstance(r, Mapping) and isinstance(r.get("t"), int | float)]


def _series_charts(base: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    colors = {"create": "#2563eb", "respond": "#0d9488", "close": "#d97706"}
    charts = []
    for metric in ("latency", "throughput"):
        for label, side in (("base", base), ("new", new)):
            rows = _rows(side)
            xs = [float(r["t"]) for r in rows]

            def column(key: str, rows: list[Mapping[str, Any]] = rows) -> list[float | None]:
                values = [r.get(key) for r in rows]
                return [float(v) if isinstance(v, int | float) else None for v in values]

            if metric == "latency":
                series = [
                    _series(f"{e} {p}", column(f"{e}_{p}_ms"), colors[e], dash=p == "p99")
                    for e in ENDPOINTS
                    for p in ("p50", "p99")
                ]
                title, caption, unit = "Latency over time", "p50 (solid), p99 (dashed)", "ms"
            else:
                series = [
                    _series("requests/s", column("requests"), "#2563eb"),
                    _series("errors/s", column("errors"), "#dc2626", fill=True),
                ]
                title, caption, unit = "Throughput", "requests and failed calls a second", "/s"
            charts.append(
                _chart(f"{metric}_{label}", f"{title}: {label}", caption, xs, series, unit=unit)
            )
    return charts


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(changes: Sequence[Change]) -> list[dict[str, Any]]:
    from ._compare import mark, p_text, percent_text, signed_text, value_text  # noqa: PLC0415

    rows = []
    for c in changes:
        if c.base is None and c.new is None:
            continue
        rows.append(
            {
                "figure": c.figure,
                "base": value_text(c.base, c.figure),
                "new": value_text(c.new, c.figure),
                "absolute": signed_text(c.absolute, c.figure),
                "relative": "-" if c.relative is None else percent_text(c.relative),
                "p": p_text(c.p_value),
                "real": c.real and c.test is not None,
                "mark": mark(c).lower(),
            }
        )
    return rows


def render_comparison_html(comparison: Comparison) -> str:
    """The comparison as one self-contained HTML page (offline, strict CSP, escaped)."""
    data = redact_value(comparison.to_dict())
    base, new = redact_value(dict(comparison.base)), redact_value(dict(comparison.new))
    spectra, series = _spectrum_charts(base, new), _series_charts(base, new)
    if not comparison.verdicts:
        state, verdict = "none", "No rules"
    elif comparison.failed:
        state, verdict = "fail", "Regression"
    else:
        state, verdict = "pass", "No regression"
    context = {
        "base_runs": data["base_runs"],
        "new_runs": data["new_runs"],
        "alpha": f"{comparison.alpha:g}",
        "noise": f"{comparison.noise:.0%}",
        "state": state,
        "verdict": verdict,
        "verdicts": data["rules"],
        "differences": [
            f"{d['setting']}: {_text(d['base'])} \u2192 {_text(d['new'])}"
            for d in data["differences"]
        ],
        "spectra": spectra,
        "series": series,
        "rows": redact_value(_table(comparison.changes)),
        "test_names": "Mann-Whitney U on the histograms, two-proportion z on the error rate",
        "schema": _text(base.get("schema")),
    }
    return render_page(
        "compare.html.j2",
        title="Load test comparison",
        data={"charts": [*spectra, *series]},
        **context,
    )


def write_comparison_html(comparison: Comparison, path: str | os.PathLike[str]) -> None:
    """Write ``render_comparison_html(comparison)`` to ``path``, in UTF-8.

    Raises:
        OSError: the file cannot be written.
    """
    Path(path).write_text(render_comparison_html(comparison), encoding="utf-8")
