"""Fault injection for the fake server: which requests fail, how, and whether they were processed.

A fault is decided per request that reached an endpoint and passed auth and validation: first
from ``Faults.script`` in order, then by the rates, drawn from one ``random.Random(seed)``, so
the same seed and the same requests give the same faults.

Fault names (in ``script``, and the keys of ``Stats.faults``):

- ``ok``: no fault (a script step that lets one request through);
- ``429``: rate limited, with ``Retry-After``; never processed;
- any other status from 400 to 599 (``500``, ``503``...): that status with the error body;
- ``reset``: the connection is aborted before any answer;
- ``malformed``: a 200 whose body is not JSON.

A name may end in ``+after`` (processed: the turn is recorded, then the answer is replaced, the
ambiguous failure that makes a retry duplicate a turn) or ``+before`` (not processed); without
a suffix ``Faults.after_processing`` decides.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import attrs

__all__ = ["ENDPOINTS", "Faults"]

#: The endpoints, by the last segment of their path.
ENDPOINTS = frozenset({"create", "respond", "close"})


@attrs.frozen
class Fault:
    """One decided fault.

    Attributes:
        kind: ``status``, ``reset`` or ``malformed``.
        name: the name it is counted under: the status as text, ``reset`` or ``malformed``.
        status: the HTTP status of a ``status`` fault.
        after: apply it after the request was processed.
    """

    kind: str
    name: str
    status: int = 0
    after: bool = False


def parse_fault(spec: str, *, after_processing: bool) -> Fault | None:
    """Turn a fault name into a Fault; None for ``ok``.

    Raises:
        ValueError: the name is not one of the fault names.
    """
    name, _, suffix = spec.strip().partition("+")
    if suffix not in ("", "after", "before"):
        raise ValueError(f"fault {spec!r}: the suffix must be +after or +before")
    after = after_processing if not suffix else suffix == "after"
    if name == "ok":
        return None
    if name in ("reset", "malformed"):
        return Fault(name, name, after=after)
    if name.isdigit() and 400 <= int(name) <= 599:
        if name == "429" and after:
            raise ValueError("a 429 is never processed: the rate limiter answers first")
        return Fault("status", name, int(name), after=after)
    raise ValueError(
        f"unknown fault {spec!r}: use ok, reset, malformed or a status from 400 to 599, "
        "optionally with +after or +before"
    )


def _rate(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def _seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{attribute.name} must be a number of seconds >= 0, got {value!r}")


def _status(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError(f"{attribute.name} must be an HTTP status from 400 to 599")


def _limit(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{attribute.name} must be a whole number >= 1 or None, got {value!r}")


def _script(value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):  # "500,reset,ok" from a command line
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(value)


def _endpoints(value: Iterable[str]) -> frozenset[str]:
    endpoints = frozenset(value)
    unknown = endpoints - ENDPOINTS
    if unknown:
        raise ValueError(f"unknown endpoints {sorted(unknown)}: use {sorted(ENDPOINTS)}")
    return endpoints


@attrs.frozen(kw_only=True)
class Faults:
    """What goes wrong, and how often; change it at runtime with ``fake.faults = ...``.

    Rates are probabilities per request, drawn in the order error, rate limit, reset,
    malformed; together they may not exceed 1.

    Args:
        error_rate: share of requests answered with ``error_status``.
        error_status: the status of those errors.
        rate_limit_rate: share of requests answered 429 with ``Retry-After``.
        retry_after: seconds sent in ``Retry-After`` (fractions allowed, to keep tests fast).
        reset_rate: share of requests whose connection is aborted before any answer.
        malformed_rate: share of requests answered 200 with a body that is not JSON.
        latency: seconds added before every request is processed.
        latency_jitter: up to this many more seconds, uniformly random.
        after_processing: apply errors, resets and malformed answers after the request was
            processed (the turn is recorded, the conversation created or closed): the
            ambiguous failure whose retry duplicates a turn. 429 is always before.
        script: fault names applied to the next requests in order, before the rates (see the
            module's docstring); a comma-separated string is accepted.
        endpoints: the endpoints faults apply to; the others are never faulted and do not
            advance the script.
        concurrency_limit: requests (to any endpoint) processed at once at most, as an API
            that admits so many calls at once: one more is answered 429 with ``Retry-After:
            retry_after`` and never processed. None: no limit.
    """

    error_rate: float = attrs.field(default=0.0, validator=_rate)
    error_status: int = attrs.field(default=500, validator=_status)
    rate_limit_rate: float = attrs.field(default=0.0, validator=_rate)
    retry_after: float = attrs.field(default=1.0, validator=_seconds)
    reset_rate: float = attrs.field(default=0.0, validator=_rate)
    malformed_rate: float = attrs.field(default=0.0, validator=_rate)
    latency: float = attrs.field(default=0.0, validator=_seconds)
    latency_jitter: float = attrs.field(default=0.0, validator=_seconds)
    after_processing: bool = False
    script: tuple[str, ...] = attrs.field(default=(), converter=_script)
    endpoints: frozenset[str] = attrs.field(default=ENDPOINTS, converter=_endpoints)
    concurrency_limit: int | None = attrs.field(default=None, validator=_limit)

    def __attrs_post_init__(self) -> None:
        if self.error_rate + self.rate_limit_rate + self.reset_rate + self.malformed_rate > 1:
            raise ValueError("the fault rates add up to more than 1")
        for spec in self.script:  # fail here, not at the request that reaches a bad step
            parse_fault(spec, after_processing=self.after_processing)


class FaultPlan:
    """Decides each request's fault from a Faults and the fake's random source.

    Built again whenever the fake's faults change (the script starts over), with the same
    ``random.Random``, so a seeded run stays repeatable.
    """

    def __init__(self, faults: Faults, rng: random.Random) -> None:
        self.faults = faults
        self._rng = rng
        self._script = [
            parse_fault(s, after_processing=faults.after_processing) for s in faults.script
        ]
        self._next = 0
        after = faults.after_processing
        # Cumulative thresholds, so one draw per request picks at most one fault.
        self._thresholds: list[tuple[float, Fault]] = []
        total = 0.0
        for rate, fault in (
            (
                faults.error_rate,
                Fault("status", str(faults.error_status), faults.error_status, after),
            ),
            (faults.rate_limit_rate, Fault("status", "429", 429, after=False)),
            (faults.reset_rate, Fault("reset", "reset", after=after)),
            (faults.malformed_rate, Fault("malformed", "malformed", after=after)),
        ):
            if rate > 0:
                total += rate
                self._thresholds.append((total, fault))
        self.retry_after = f"{faults.retry_after:g}"
        self.delays = faults.latency > 0 or faults.latency_jitter > 0

    def draw(self) -> Fault | None:
        """The next request's fault: the script's next step, else one draw against the rates."""
        if self._next < len(self._script):
            self._next += 1
            return self._script[self._next - 1]
        if not self._thresholds:
            return None
        roll = self._rng.random()
        for threshold, fault in self._thresholds:
            if roll < threshold:
                return fault
        return None

    def delay(self) -> float:
        """Seconds to wait before processing: the latency plus a random share of the jitter."""
        jitter = self.faults.latency_jitter
        return self.faults.latency + (self._rng.uniform(0, jitter) if jitter else 0.0)
