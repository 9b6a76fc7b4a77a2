"""Durations as people write them: ``500ms``, ``6s``, ``2m``, ``1h`` or plain seconds."""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*", re.IGNORECASE)
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from ``value``: a number of seconds, or a string such as ``500ms``, ``2m``.

    Raises:
        ValueError: with a message that says what a duration looks like.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (such as 500ms, 6s, 2m, 1h or 2.5)")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        unit = match.group(2).lower() if match.group(2) else None
        seconds = float(match.group(1)) * _SCALE[unit]
    else:
        raise ValueError(f"{value!r} is not a duration (such as 500ms, 6s, 2m, 1h or 2.5)")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a finite duration >= 0")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form of ``seconds``: ``500ms``, ``6s``, ``2m30s``."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes:g}m" + (f"{rest:g}s" if rest else "")
