"""Load shapes: how many conversations run, and when.

Two models, as k6 names its executors:

- closed (``constant-vus`` / ``ramping-vus``): ``concurrency`` conversations in flight; each
  simulated user starts its next conversation when the last one ends, so a slow server slows
  the load down (and hides its own slowness from the percentiles: coordinated omission);
- open (``constant-arrival-rate`` / ``ramping-arrival-rate``): ``rate`` new conversations a
  second, whatever the server does; latency counts from each conversation's *scheduled*
  start, and an arrival that finds ``max_in_flight`` conversations running is dropped and
  counted (``conversations_dropped``), never silently skipped.

``stages`` ramp the rate (open) or the concurrency (closed) linearly from one target to the
next, starting from ``rate``/``concurrency`` (0 when not given).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import Any, cast

import attrs

from .._errors import ConfigurationError
from ._scenario import ThinkTime
from ._units import format_duration, parse_duration

__all__ = ["Load", "Stage", "arrivals", "parse_stages"]

_MODELS = ("closed", "open")
_ARRIVALS = ("poisson", "constant")


def _number(
    minimum: float, *, whole: bool = False, optional: bool = False, above: bool = False
) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        kinds: tuple[type, ...] = (int,) if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            kind = "a whole number" if whole else "a number"
            raise ConfigurationError(f"{attribute.name} must be {kind}, got {value!r}")
        number = cast(float, value)
        if not math.isfinite(number) or number < minimum or (above and number == minimum):
            sign = ">" if above else ">="
            raise ConfigurationError(
                f"{attribute.name} must be a finite number {sign} {minimum:g}, got {value!r}"
            )

    return check


@attrs.frozen(kw_only=True)
class Stage:
    """One step of a ramp: reach ``target`` linearly over ``duration`` seconds.

    Args:
        duration: seconds the ramp takes (0: jump to the target).
        target: the rate (open) or concurrency (closed) at its end.
    """

    duration: float = attrs.field(validator=_number(0))
    target: float = attrs.field(validator=_number(0))


def parse_stages(text: str) -> tuple[Stage, ...]:
    """Stages from ``30s:10,2m:50,30s:0`` (DURATION:TARGET, comma-separated).

    Raises:
        ConfigurationError: naming the stage that is wrong.
    """
    stages = []
    for index, part in enumerate(text.split(",")):
        duration, sep, target = part.strip().partition(":")
        try:
            if not sep:
                raise ValueError("is not DURATION:TARGET")
            value = float(target)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"target {target!r} is not a number >= 0")
            stages.append(Stage(duration=parse_duration(duration), target=value))
        except ValueError as exc:
            raise ConfigurationError(
                f"stages: stage {index + 1} ({part.strip()!r}) {exc} (write them like "
                "30s:10,2m:50,30s:0)"
            ) from None
    return tuple(stages)


def _check_model(instance: Load, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _MODELS:
        raise ConfigurationError(f"model must be 'closed' or 'open', got {value!r}")


def _check_arrival(instance: Load, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _ARRIVALS:
        raise ConfigurationError(f"arrival must be 'poisson' or 'constant', got {value!r}")


def _check_part(instance: Load, attribute: attrs.Attribute[Any], value: Any) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] < value[1]
    )
    if not ok:
        raise ConfigurationError(
            f"part must be (index, parts) with 0 <= index < parts, not {value!r}"
        )


def _stages(value: Sequence[Stage] | str) -> tuple[Stage, ...]:
    if isinstance(value, str):
        return parse_stages(value)
    stages = tuple(value)
    if not all(isinstance(s, Stage) for s in stages):
        raise ConfigurationError("stages must be Stage objects or a string like 30s:10,1m:50")
    return stages


@attrs.frozen(kw_only=True)
class Load:
    """A load to apply: its model, its size over time, and how long it lasts.

    Build one with ``Load.closed(...)`` or ``Load.open(...)``. A run ends when
    ``conversations`` have been started (arrivals dropped included), or when ``duration`` has
    passed (default: the stages' total), then waits up to ``graceful_stop`` for the
    conversations in flight before cancelling them (each still closes).

    Args:
        model: ``closed`` or ``open``.
        concurrency: conversations in flight (closed); the start of the stages if given.
        rate: new conversations a second (open); the start of the stages if given.
        arrival: ``poisson`` (random, the default) or ``constant`` (evenly spaced) arrivals.
        max_in_flight: arrivals finding this many conversations running are dropped (open).
        stages: ramps of the rate or concurrency (see Stage); a string like ``30s:10,1m:50``.
        conversations: conversations to start in all.
        duration: seconds to apply the load.
        think_time: overrides the scenario's think time.
        graceful_stop: seconds to wait for the conversations in flight at the end.
        seed: seeds persona choice, messages, think times and arrivals (repeatable runs).
        part: ``(index, parts)``: which share of a closed-model ramp this is (set by
            ``split`` for worker processes).
    """

    model: str = attrs.field(default="closed", validator=_check_model)
    concurrency: int | None = attrs.field(
        default=None, validator=_number(0, whole=True, optional=True)
    )
    rate: float | None = attrs.field(default=None, validator=_number(0, optional=True))
    arrival: str = attrs.field(default="poisson", validator=_check_arrival)
    max_in_flight: int = attrs.field(default=10_000, validator=_number(1, whole=True))
    stages: tuple[Stage, ...] = attrs.field(default=(), converter=_stages)
    conversations: int | None = attrs.field(
        default=None, validator=_number(1, whole=True, optional=True)
    )
    duration: float | None = attrs.field(
        default=None, validator=_number(0, optional=True, above=True)
    )
    think_time: ThinkTime | None = None
    graceful_stop: float = attrs.field(default=30.0, validator=_number(0))
    seed: int | None = attrs.field(
        default=0, validator=_number(-(2**63), whole=True, optional=True)
    )
    part: tuple[int, int] = attrs.field(default=(0, 1), validator=_check_part)

    def __attrs_post_init__(self) -> None:
        size, name = (self.concurrency, "concurrency") if self.closed_model else (self.rate, "rate")
        if self.closed_model and self.rate is not None:
            raise ConfigurationError(
                "rate is for the open model; the closed model takes concurrency"
            )
        if not self.closed_model and self.concurrency is not None:
            raise ConfigurationError(
                "concurrency is for the closed model; the open model takes rate (and max_in_flight)"
            )
        if size is None and not self.stages:
            raise ConfigurationError(f"the {self.model} model needs {name} or stages")
        if size == 0 and not self.stages:
            raise ConfigurationError(f"{name} must be above 0 without stages")
        if self.conversations is None and self.planned_seconds() is None:
            raise ConfigurationError("say how long the load lasts: conversations or duration")

    @classmethod
    def closed(cls, *, concurrency: int | None = None, **options: Any) -> Load:
        """A closed-model load: ``concurrency`` conversations in flight (see the class)."""
        return cls(model="closed", concurrency=concurrency, **options)

    @classmethod
    def open(cls, *, rate: float | None = None, **options: Any) -> Load:
        """An open-model load: ``rate`` new conversations a second (see the class)."""
        return cls(model="open", rate=rate, **options)

    @property
    def closed_model(self) -> bool:
        """True for the closed model."""
        return self.model == "closed"

    def planned_seconds(self) -> float | None:
        """How long the load is applied: ``duration``, else the stages' total, else None."""
        if self.duration is not None:
            return self.duration
        if self.stages:
            return sum(s.duration for s in self.stages)
        return None

    def _start(self) -> float:
        value = self.concurrency if self.closed_model else self.rate
        return float(value or 0)

    def target_at(self, t: float) -> float:
        """The rate (open) or concurrency (closed) planned ``t`` seconds into the run."""
        level = self._start()
        for stage in self.stages:
            if t < stage.duration:
                return level + (stage.target - level) * (t / stage.duration)
            t -= stage.duration
            level = stage.target
        return level

    def split(self, parts: int, index: int) -> Load:
        """The share of this load that worker ``index`` of ``parts`` applies.

        Rates and open-model stage targets are divided; whole numbers (concurrency,
        conversations, max_in_flight) are split so the shares add up exactly; a closed-model
        ramp is shared user by user (see ``users_at``).
        """

        def whole(n: int | None) -> int | None:
            return None if n is None else n // parts + (1 if index < n % parts else 0)

        common: dict[str, Any] = {
            "max_in_flight": max(1, whole(self.max_in_flight) or 1),
            "conversations": whole(self.conversations),
            "duration": self.planned_seconds(),
            "seed": None if self.seed is None else self.seed * 1000 + index,
        }
        if self.closed_model and self.stages:
            # The ramp stays whole; each worker runs every parts-th of its users.
            return attrs.evolve(self, part=(index, parts), **common)
        return attrs.evolve(
            self,
            concurrency=whole(self.concurrency),
            rate=None if self.rate is None else self.rate / parts,
            stages=tuple(Stage(duration=s.duration, target=s.target / parts) for s in self.stages),
            **common,
        )

    def users_at(self, t: float) -> int:
        """Closed model: how many simulated users this load (or this share of it) runs at ``t``.

        The whole load's users are ``round(target_at(t))``; the share ``part = (index,
        parts)`` runs users ``index``, ``index + parts``... of them, so the shares always add
        up to the whole, at every moment of a ramp.
        """
        total = round(self.target_at(t))
        index, parts = self.part
        return max(0, -(-(total - index) // parts))

    def describe(self) -> str:
        """The plan in words: the model, its length and its size, as a run's report opens.

        The concurrency said is the effective one: no more users than conversations to run.
        ``closed model: 1,000 conversations, 1,000 at a time``; ``open model: 20
        conversations/s (poisson arrivals), 1m, at most 10,000 in flight``.
        """
        length = []
        if self.conversations is not None:
            length.append(f"{self.conversations:,} conversations")
        planned = self.planned_seconds()
        if planned is not None:
            length.append(format_duration(planned))
        length_text = " or ".join(length)
        stages = ",".join(f"{format_duration(s.duration)}:{s.target:g}" for s in self.stages)
        if not self.closed_model:
            rate = f"stages {stages}" if self.stages else f"{self.rate or 0:g} conversations/s"
            return (
                f"open model: {rate} ({self.arrival} arrivals), {length_text}, at most "
                f"{self.max_in_flight:,} in flight"
            )
        concurrency = self.concurrency or 0
        if self.stages:
            peak = round(max([concurrency] + [s.target for s in self.stages]))
            size = f"up to {peak:,} at a time, following stages {stages}"
        else:
            effective = concurrency
            if self.conversations is not None:
                effective = min(effective, self.conversations)
            size = f"{effective:,} at a time"
            if effective != concurrency:
                size += f" (concurrency {concurrency:,}, but only that many to run)"
        return f"closed model: {length_text}, {size}"


def arrivals(load: Load, rng: random.Random) -> Iterator[float]:
    """The open model's arrival times, in seconds since the start, in order.

    Constant arrivals come each time the integral of the rate passes k + 1/2 (evenly spaced,
    the first half an interval in); Poisson arrivals each time it passes the last arrival's
    value plus an exponential draw (mean 1). The rate is piecewise linear (the stages), so the
    integral is solved exactly, segment by segment. Stops at the planned duration (never, when
    only ``conversations`` bounds the run).
    """
    planned = load.planned_seconds()
    segments: list[tuple[float, float, float, float]] = []  # start, end, rate at start, slope
    t, level = 0.0, load._start()
    for stage in load.stages:
        if stage.duration > 0:
            segments.append((t, t + stage.duration, level, (stage.target - level) / stage.duration))
        t += stage.duration
        level = stage.target
    segments.append((t, math.inf, level, 0.0))
    constant = load.arrival == "constant"
    now: float | None = 0.0
    need = 0.5 if constant else rng.expovariate(1.0)
    while True:
        assert now is not None  # noqa: S101 - the loop returns on None
        now = _reach(segments, now, need)
        if now is None or (planned is not None and now >= planned):
            return
        yield now
        need = 1.0 if constant else rng.expovariate(1.0)


def _reach(
    segments: list[tuple[float, float, float, float]], now: float, need: float
) -> float | None:
    """The time after ``now`` at which the rate's integral has grown by ``need`` (None: never)."""
    for start, end, rate0, slope in segments:
        if end <= now:
            continue
        r = rate0 + slope * (now - start)
        if slope == 0:
            if r > 0 and now + need / r <= end:
                return now + need / r
        else:
            # need = r*dt + slope*dt^2/2, so dt = (sqrt(r^2 + 2*slope*need) - r) / slope
            disc = r * r + 2 * slope * need
            if disc >= 0:
                dt = (math.sqrt(disc) - r) / slope
                if dt >= 0 and now + dt <= end:
                    return now + dt
        if math.isinf(end):
            return None
        need -= (r + rate0 + slope * (end - start)) / 2 * (end - now)
        now = end
    return None
