"""Numbers as every report shows them: the terminal, the live view and the HTML page.

One rule for every measured figure: three significant digits, fixed decimals, never an
exponent, thousands separated (``0.0123``, ``5.12``, ``53.4``, ``536``, ``1,234``). A
latency reads in milliseconds up to a second and in seconds past it (``536 ms``, ``1.23 s``),
as the charts' axes (``_assets/report.js``) write it; counts are whole with separators;
shares are percentages. ``duration`` says a length of time in prose (``12.5 s``,
``2 min 05 s``); the option syntax that ``--duration`` reads (``2m30s``) is
``_units.format_duration``, beside its parser.

The functions take numbers only: each report says "no data" in its own way (a dash).
"""

from __future__ import annotations

import math

__all__ = ["count", "duration", "figure", "milliseconds", "number", "percent"]


def count(value: int) -> str:
    """A whole count: ``1,234``."""
    return f"{value:,}"


def figure(value: float) -> str:
    """A measured figure to three significant digits: ``0.0123``, ``5.12``, ``53.4``, ``1,234``.

    Rates, latencies in a table headed "ms", threshold values: everything measured.
    """
    magnitude = abs(value)
    if not math.isfinite(value) or magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    # Below 1: as many decimals as keep three significant digits (0.0123, 0.000456).
    return f"{value:.{2 - math.floor(math.log10(magnitude))}f}"


def number(value: float) -> str:
    """Any number: whole ones as counts (``3``, ``1,200``), the rest as ``figure``."""
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer()):
        return count(int(value))
    return figure(value)


def milliseconds(ms: float) -> str:
    """A latency with its unit: ``5.12 ms``, ``536 ms``, then seconds: ``1.23 s``."""
    if abs(ms) >= 1000:
        return f"{ms / 1000:,.2f} s"
    return f"{figure(ms)} ms"


def percent(share: float, *, digits: int = 2) -> str:
    """A share (0.0123) as a percentage: ``1.23 %``."""
    return f"{100 * share:.{digits}f} %"


def duration(seconds: float) -> str:
    """A length of time in prose: ``12.5 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"
