"""Capacity search: the highest load an agent sustains within its SLOs (private).

A search is a series of steps, each a load run at one target (conversations started a
second in the open model, conversations at once in the closed one):

1. ``minimum`` first: if the SLOs fail there, the answer is *none* (never "the minimum"), and
   the agent is spared the maximum;
2. then ``maximum``: if it passes, the answer is the maximum (raise it to learn more);
3. then bisection between the highest target that passed and the lowest that failed, in
   log space (the midpoint is their geometric mean), until they are within ``precision`` of
   each other (closed model: adjacent whole numbers);
4. a confirmation step at the answer, ``confirm_duration`` long and never stopped early; if
   it fails, that target counts as failed and the narrowing goes on below it.

Why bisection rather than interpolation on the SLO margin: near a knee the margin is far
from linear in the load (a queue's latency grows without bound as the load nears the
capacity), so a straight line through two margins lands close to the failing side and a
fitted curve (vLLM's PCHIP) needs points on both sides of the knee to be trusted. Each step's
figures are noisy as well, and bisection only needs each step's pass or fail. Its cost is
known in advance: ``log2(log(max / min) / log(1 + precision))`` steps (8 for 1..200 at 5%).

Each step's figures exclude its first ``warmup`` seconds: the SLOs are judged on the
per-second series from the end of the warm-up to the end of the step (endpoint latencies,
the conversation error rate, the rates), and on the step's whole summary for the figures
the series does not keep (``conversation.p99``, ``expectations_failed``...). During a
step, the SLOs the series keeps are judged every second over the last ``window`` seconds; a
step stops early once one has failed at two judgements in a row (k6's ``abortOnFail`` with
``delayAbortEval``: the warm-up is the grace period).

The first SIGINT or SIGTERM (``find_capacity``, from the main thread) stops the search as
it stops a bench run (``_interrupt``): the current step's conversations are closed, that step
is kept but judges nothing (``interrupted``), no other step starts, and the answer is what was
known: the highest target that passed, never confirmed, marked ``interrupted_by``.

A step whose generator was late (lag p99 above ``generator_lag_ms``) or busy (client CPU
above ``generator_cpu_share`` of a core) is *generator-limited*: it says nothing of the
agent, so it is never taken as the answer and bounds the search from above, and the answer
says so (``limited_by`` = ``generator``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, TypeVar, cast

import attrs

from .._client import PolyAIClient
from .._errors import ConfigurationError
from ._abort import WindowJudge, non_negative_seconds, window_figures
from ._api import OnTick, Ticker, check_processes, parse_thresholds, run_load
from ._interrupt import EXIT_CODES, Interrupt, on_loop_signals, on_signals, stop_notes
from ._metrics import Metrics, _Second
from ._result import CPU_WARNING_SHARE, LAG_WARNING_MS, LoadResult, make_result
from ._runner import choose_loop, drive, run_with_loop
from ._scenario import Scenario, ThinkTime, demo_scenario
from ._shape import Load
from ._thresholds import Threshold, ThresholdResult

__all__ = [
    "CAPACITY_SCHEMA",
    "CapacityResult",
    "CapacitySearch",
    "CapacityStep",
    "find_capacity",
    "find_capacity_async",
]

T = TypeVar("T")
#: The JSON schema name of a capacity search's answer.
CAPACITY_SCHEMA = "polyai-async-capacity/1"
# How often a step in one process samples the conversations in flight.
_SAMPLE_SECONDS = 0.05
# Little's law: measured and predicted in-flight within this share agree.
_LITTLE_TOLERANCE = 0.25


def _slos(value: Iterable[str | Threshold] | str) -> tuple[Threshold, ...]:
    if isinstance(value, str):
        value = (value,)
    return parse_thresholds(value)


def _positive(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{attribute.name} must be a finite number above 0, got {value!r}")


def _share(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigurationError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def _whole(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be a whole number >= 1, got {value!r}")


def _one_of(*choices: str) -> Callable[[object, attrs.Attribute[Any], Any], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ConfigurationError(
                f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}"
            )

    return check


def _not_empty(_: object, attribute: attrs.Attribute[Any], value: tuple[Threshold, ...]) -> None:
    if not value:
        raise ConfigurationError(f"{attribute.name}: give at least one SLO, such as respond.p99<2s")


@attrs.frozen(kw_only=True)
class CapacitySearch:
    """How to search for an agent's capacity: the SLOs, the model, the bounds, the steps.

    Args:
        slos: what must hold, in bench's threshold grammar (``respond.p99<2s``,
            ``conversation_error_rate<0.01``): strings or Threshold objects.
        model: ``open`` searches conversations started a second (``max_rate``); ``closed``
            searches conversations at once (``max_concurrency``, whole numbers).
        minimum: the lowest target tried; if the SLOs fail there the answer is none.
        maximum: the highest target tried.
        step_duration: seconds each step is measured, after its warm-up.
        warmup: seconds at the start of each step left out of its figures (the grace
            period before a step may stop early, too).
        precision: the search stops when the highest passing and the lowest failing
            targets are within this share of each other (0.05: 5%).
        window: seconds of the sliding window over which a step is judged as it runs.
        early_stop: stop a step once an SLO has clearly failed over the window.
        confirm: run a confirmation step at the answer.
        confirm_duration: its measured seconds (default: twice ``step_duration``).
        max_steps: steps at most, the confirmations included.
        arrival: open model: ``poisson`` or ``constant`` arrivals.
        max_in_flight: open model: arrivals finding this many conversations in flight are
            dropped (counted as ``conversations_dropped``).
        think_time: overrides the scenario's think time.
        graceful_stop: seconds each step waits for its conversations in flight at its end.
        seed: seeds the users' choices and arrivals of every step.
        generator_lag_ms: a step whose generator lag p99 is above this is generator-limited
            (default: a tenth of the tightest latency SLO, at least bench's warning of
            10 ms: a lag below it cannot turn a verdict; 10 ms without a latency SLO).
        generator_cpu_share: a step whose client used more of a core (per process) is
            generator-limited.
        max_dropped_share: open model: a step that dropped more than this share of the
            arrivals it was asked for fails (the agent did not take that rate: its calls
            filled the pool, or ``max_in_flight`` conversations were running), whatever its
            latency says. Nighthawk scores the generator the same way: a step must have sent
            what it was asked to send.
    """

    slos: tuple[Threshold, ...] = attrs.field(converter=_slos, validator=_not_empty)
    model: str = attrs.field(default="open", validator=_one_of("open", "closed"))
    minimum: float = attrs.field(validator=_positive)
    maximum: float = attrs.field(validator=_positive)
    step_duration: float = attrs.field(default=20.0, validator=_positive)
    warmup: float = attrs.field(default=5.0, validator=non_negative_seconds)
    precision: float = attrs.field(default=0.05, validator=_share)
    window: float = attrs.field(default=5.0, validator=_positive)
    early_stop: bool = True
    confirm: bool = True
    confirm_duration: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    max_steps: int = attrs.field(default=20, validator=_whole)
    arrival: str = attrs.field(default="poisson", validator=_one_of("poisson", "constant"))
    max_in_flight: int = attrs.field(default=10_000, validator=_whole)
    think_time: ThinkTime | None = None
    graceful_stop: float = attrs.field(default=5.0, validator=non_negative_seconds)
    seed: int = 0
    generator_lag_ms: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive)
    )
    generator_cpu_share: float = attrs.field(default=CPU_WARNING_SHARE, validator=_positive)
    max_dropped_share: float = attrs.field(default=0.03, validator=_share)

    def __attrs_post_init__(self) -> None:
        if self.minimum > self.maximum:
            raise ConfigurationError(
                f"minimum ({self.minimum:g}) must not be above maximum ({self.maximum:g})"
            )
        if self.model == "closed":
            for name in ("minimum", "maximum"):
                value = getattr(self, name)
                if value != int(value):
                    raise ConfigurationError(
                        f"{name} must be a whole number of conversations in the closed "
                        f"model, got {value:g}"
                    )

    @property
    def lag_limit_ms(self) -> float:
        """The generator lag p99 above which a step is generator-limited (see the class)."""
        if self.generator_lag_ms is not None:
            return self.generator_lag_ms
        latencies = [t.limit for t in self.slos if t.key.endswith("_ms") and t.op in ("<", "<=")]
        return max(LAG_WARNING_MS, min(latencies) / 10) if latencies else LAG_WARNING_MS

    @property
    def answer_name(self) -> str:
        """``max_rate`` (open model) or ``max_concurrency`` (closed)."""
        return "max_rate" if self.model == "open" else "max_concurrency"

    @property
    def unit(self) -> str:
        """What a target counts: ``conversations/s`` or ``conversations at once``."""
        return "conversations/s" if self.model == "open" else "conversations at once"

    def load(self, target: float, *, measured: float) -> Load:
        """The Load of a step at ``target``, measured for ``measured`` seconds after warm-up."""
        options: dict[str, Any] = {
            "duration": self.warmup + measured,
            "think_time": self.think_time,
            "graceful_stop": self.graceful_stop,
            "seed": self.seed,
        }
        if self.model == "open":
            return Load.open(
                rate=target, arrival=self.arrival, max_in_flight=self.max_in_flight, **options
            )
        return Load.closed(concurrency=round(target), **options)

    def steps_to_converge(self) -> int:
        """Steps the bisection needs at most, the two bounds and a confirmation included."""
        span = math.log(self.maximum / self.minimum) / math.log1p(self.precision)
        narrowing = max(0, math.ceil(math.log2(span))) if span > 1 else 0
        return 2 + narrowing + (1 if self.confirm else 0)


@attrs.frozen(kw_only=True)
class CapacityStep:
    """One step of the search: a run at one target, and what it said.

    Attributes:
        index: 1 for the first step.
        target: the rate or concurrency offered.
        phase: ``minimum``, ``maximum``, ``narrow`` or ``confirm``.
        passed: whether every SLO held; None when the step was generator-limited.
        stopped_early: the step was stopped once an SLO clearly failed.
        generator_limited: why the generator, not the agent, was the limit (else None).
        first_failed: the first SLO to fail (the one that stopped the step, if one did).
        verdicts: each SLO's verdict on the step's measured window.
        figures: the measured window's figures (see ``window_figures``).
        summary: the step's bench summary (schema ``polyai_async.load.SCHEMA``).
        seconds: how long the step took.
        interrupted_by: the signal (or ``stop``) that cut the step short, else None: its
            figures are what was measured until then, and it passed nothing (``passed`` None).
    """

    index: int
    target: float
    phase: str
    passed: bool | None
    stopped_early: bool
    generator_limited: str | None
    first_failed: str | None
    verdicts: tuple[ThresholdResult, ...]
    figures: dict[str, Any]
    summary: dict[str, Any]
    seconds: float
    interrupted_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The step as the JSON answer holds it."""
        return {
            "index": self.index,
            "target": self.target,
            "phase": self.phase,
            "passed": self.passed,
            "interrupted": self.interrupted_by is not None,
            "stopped_early": self.stopped_early,
            "generator_limited": self.generator_limited,
            "first_failed": self.first_failed,
            "slos": [v.as_dict() for v in self.verdicts],
            "figures": dict(self.figures),
            "seconds": round(self.seconds, 3),
            "summary": self.summary,
        }


@attrs.frozen(kw_only=True)
class CapacityResult:
    """The answer of a capacity search.

    Attributes:
        search: the search's settings.
        answer: the highest target that passed (``max_rate`` or ``max_concurrency``); None
            when the SLOs failed even at the minimum (or nothing could be measured).
        confirmed: a confirmation step at the answer passed.
        limited_by: the first SLO to fail above the answer, ``generator`` when the step
            above it was generator-limited, None when the maximum passed.
        in_flight_at_max: conversations in flight at the answer, measured (mean of the
            per-second gauge over the measured window of its last passing step).
        littles_law_in_flight: the same predicted by Little's law: the measured start rate
            times the mean conversation duration.
        steps: every step, in order.
        seconds: how long the search took.
        interrupted_by: the signal (``SIGINT``, ``SIGTERM``, or ``stop``) that ended the
            search before its end, else None: the answer is then the best known so far.
    """

    search: CapacitySearch
    answer: float | None
    confirmed: bool
    limited_by: str | None
    in_flight_at_max: float | None
    littles_law_in_flight: float | None
    steps: tuple[CapacityStep, ...]
    seconds: float
    interrupted_by: str | None = None

    @property
    def found(self) -> bool:
        """True when some target passed."""
        return self.answer is not None

    @property
    def notes(self) -> list[str]:
        """What a report says first: the search was interrupted (empty when it was not)."""
        return stop_notes(
            {"interrupted": self.interrupted_by is not None, "interrupted_by": self.interrupted_by}
        )

    @property
    def littles_law_agrees(self) -> bool | None:
        """Measured and predicted in-flight within 25% of each other; None if not measured."""
        measured, predicted = self.in_flight_at_max, self.littles_law_in_flight
        if measured is None or predicted is None or predicted <= 0:
            return None
        return abs(measured - predicted) <= _LITTLE_TOLERANCE * predicted

    @property
    def exit_code(self) -> int:
        """0 found and confirmed (or found, with no confirmation asked); 99 none; 1 otherwise.

        An interrupted search exits 130 (SIGINT) or 143 (SIGTERM), whatever it found.
        """
        if self.interrupted_by is not None:
            return EXIT_CODES.get(self.interrupted_by, 130)
        if self.answer is None:
            return 99
        if self.search.confirm and not self.confirmed:
            return 1
        return 0

    def as_dict(self) -> dict[str, Any]:
        """The answer as JSON-ready data (schema ``polyai-async-capacity/1``)."""
        s = self.search
        return {
            "schema": CAPACITY_SCHEMA,
            "model": s.model,
            s.answer_name: self.answer,
            "confirmed": self.confirmed,
            "interrupted": self.interrupted_by is not None,
            "interrupted_by": self.interrupted_by,
            "limited_by": self.limited_by,
            "in_flight_at_max": _round(self.in_flight_at_max),
            "littles_law_in_flight": _round(self.littles_law_in_flight),
            "littles_law_agrees": self.littles_law_agrees,
            "seconds": round(self.seconds, 3),
            "settings": {
                "slos": [t.expression for t in s.slos],
                "minimum": s.minimum,
                "maximum": s.maximum,
                "step_duration": s.step_duration,
                "warmup": s.warmup,
                "precision": s.precision,
                "window": s.window,
                "early_stop": s.early_stop,
                "confirm": s.confirm,
                "confirm_duration": _confirm_duration(s),
            },
            "steps": [step.as_dict() for step in self.steps],
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _confirm_duration(search: CapacitySearch) -> float:
    return search.confirm_duration or 2 * search.step_duration


# -- one step --------------------------------------------------------------------------------


#: Called when a step starts: (index, target, phase, the search's state in words).
OnStep = Callable[[int, float, str, str], None]
#: Runs one step: (load, early_stop) -> (its LoadResult, the SLO that stopped it or None).
StepRunner = Callable[[Load, "WindowJudge | None"], Awaitable[tuple[LoadResult, str | None]]]


class _Halt:
    """The search's stop (private): the first signal ends the current step and the search.

    ``interrupt`` is bench's signal handler (``_interrupt.Interrupt``); ``by`` names what
    stopped the search once something did.
    """

    def __init__(self) -> None:
        self.by: str | None = None
        self.interrupt = Interrupt(self.stop)
        self._step: asyncio.Event | None = None

    def stop(self, by: str | None = None) -> None:
        """Stop the current step, and any other from starting."""
        if self.by is None:
            self.by = by or self.interrupt.signal or "stop"
        if self._step is not None:
            self._step.set()

    @contextlib.contextmanager
    def step(self, event: asyncio.Event) -> Iterator[None]:
        """Within the block, a stop also sets ``event`` (the running step's stop)."""
        self._step = event
        if self.by is not None:
            event.set()
        try:
            yield
        finally:
            self._step = None


async def _drive_step(
    client: PolyAIClient,
    scenario: Scenario,
    load: Load,
    stopper: WindowJudge | None,
    on_tick: OnTick | None,
    halt: _Halt | None = None,
) -> tuple[LoadResult, str | None]:
    """Apply one step's load on this loop, stopping it once ``stopper`` or ``halt`` says so."""
    metrics = Metrics()
    stop = asyncio.Event()
    ticker = None if on_tick is None else Ticker(on_tick, load)

    def tick(m: Metrics) -> None:
        if ticker is not None:
            ticker(m)
        if stopper is not None and stopper.check(m):
            stop.set()

    async def sample() -> None:
        if stopper is None:
            return
        begin = metrics.start + stopper.grace
        end = metrics.start + (load.planned_seconds() or 0.0)
        await asyncio.sleep(max(0.0, begin - time.perf_counter()))
        while time.perf_counter() < end:
            stopper.in_flight.append(metrics.in_flight)
            await asyncio.sleep(_SAMPLE_SECONDS)

    cpu = time.process_time()
    sampler = asyncio.create_task(sample())
    try:
        # A stopped step ends as a Ctrl-C'd run does: no new conversation, those in flight
        # cancelled and closed, what was measured kept.
        with halt.step(stop) if halt is not None else contextlib.nullcontext():
            await drive(client, scenario, load, metrics, on_tick=tick, stop=stop)
    finally:
        sampler.cancel()
        if ticker is not None:
            await ticker.aclose()
    # A step its SLO stopped first is that SLO's failure, not an interrupted one.
    early = stopper is not None and stopper.reason is not None
    result = make_result(
        metrics,
        load=load,
        scenario=scenario,
        wall_seconds=time.perf_counter() - metrics.start,
        client_cpu_seconds=time.process_time() - cpu,
        interrupted_by=None if halt is None or early else halt.by,
    )
    return result, None if stopper is None else stopper.reason


def _judge_workers(stopper: WindowJudge) -> Callable[[int, Mapping[str, Any]], bool]:
    """Early stop with worker processes: ``stopper`` judges the seconds they finished, merged.

    Each worker's snapshot (about once a second) holds its latest finished second with its
    counters and histograms; added up second by second (each worker's once), they are the
    run's series as far as it has gone, which ``stopper`` judges as it does one process's.
    """
    merged: Metrics | None = None
    seen: set[tuple[int, int]] = set()

    def judge(index: int, snapshot: Mapping[str, Any]) -> bool:
        nonlocal merged
        if merged is None:  # the workers started together: the first one's clock will do
            merged = Metrics(start=time.perf_counter() - float(snapshot.get("elapsed", 0.0)))
        last = snapshot.get("last")
        if last is not None and (index, last["t"]) not in seen:
            seen.add((index, last["t"]))
            second = merged.series.get(last["t"])
            if second is None:
                second = merged.series[last["t"]] = _Second(last["t"])
            counters = Counter(last["counters"])
            second.add(_Second(last["t"], counters=counters, encoded=dict(last["histograms"])))
        return stopper.check(merged)

    return judge


def _dropped_share(summary: Mapping[str, Any]) -> float:
    """The share of the step's arrivals that were dropped, not started."""
    dropped = summary.get("conversations_dropped") or 0
    asked = (summary.get("conversations_started") or 0) + dropped
    return dropped / asked if asked else 0.0


def _generator_limit(search: CapacitySearch, summary: Mapping[str, Any]) -> str | None:
    lag = summary.get("generator_lag_p99_ms")
    if lag is not None and lag > search.lag_limit_ms:
        return f"generator lag p99 {lag:.0f} ms > {search.lag_limit_ms:g} ms"
    cpu = summary.get("client_cpu_share") or 0.0
    if cpu > search.generator_cpu_share:
        return f"client CPU {cpu:.0%} of a core > {search.generator_cpu_share:.0%}"
    return None


async def _step(
    search: CapacitySearch,
    runner: StepRunner,
    index: int,
    target: float,
    phase: str,
) -> CapacityStep:
    confirming = phase == "confirm"
    measured = _confirm_duration(search) if confirming else search.step_duration
    load = search.load(target, measured=measured)
    stopper = WindowJudge(
        search.slos,
        grace=search.warmup,
        window=search.window,
        enabled=search.early_stop and not confirming,
    )
    started = time.perf_counter()
    result, stopped_by = await runner(load, stopper)
    summary = result.summary
    interrupted_by = result.interrupted_by
    if stopped_by is not None and interrupted_by == "stop":
        # Worker processes stopped by the step's own judge: that SLO's failure, as in one.
        interrupted_by = None
        summary.update(interrupted=False, interrupted_by=None)
    load_seconds = summary.get("load_window_seconds") or 0.0
    end = min(search.warmup + measured, load_seconds) if load_seconds else search.warmup + measured
    figures = window_figures(result.metrics, search.warmup, end)
    if stopper.in_flight:  # sampled 20 times a second: finer than the series' gauge
        figures["in_flight_mean"] = sum(stopper.in_flight) / len(stopper.in_flight)
    judged = {**summary, **figures}
    verdicts = tuple(slo.evaluate(judged) for slo in search.slos)
    summary["thresholds"] = [v.as_dict() for v in verdicts]
    failed = [v.expression for v in verdicts if not v.passed]
    dropped = _dropped_share(summary)
    if dropped > search.max_dropped_share:
        failed.append(f"dropped {dropped:.1%} of arrivals > {search.max_dropped_share:.0%}")
    limited = _generator_limit(search, summary)
    completed = bool(summary.get("conversations_completed"))
    passed: bool | None = not failed and stopped_by is None and completed
    if not completed and not failed:
        failed = ["no conversation completed"]
    if limited is not None and passed:
        passed = None  # a pass the generator could not vouch for says nothing of the agent
    if interrupted_by is not None:
        passed = None  # cut short: neither its passes nor its failures are the agent's answer
    summary["passed"] = bool(passed)
    return CapacityStep(
        index=index,
        target=target,
        phase=phase,
        passed=passed,
        stopped_early=stopped_by is not None,
        generator_limited=limited,
        first_failed=None
        if interrupted_by is not None
        else stopped_by or (failed[0] if failed else None),
        verdicts=verdicts,
        figures={k: _round(v) if isinstance(v, float) else v for k, v in figures.items()},
        summary=summary,
        seconds=time.perf_counter() - started,
        interrupted_by=interrupted_by,
    )


def _measure(search: CapacitySearch, runner: StepRunner) -> Measure:
    async def measure(index: int, target: float, phase: str) -> CapacityStep:
        return await _step(search, runner, index, target, phase)

    return measure


# -- the search ------------------------------------------------------------------------------


class _Bisection:
    """Where the search stands, and the next target (private)."""

    def __init__(self, search: CapacitySearch) -> None:
        self.search = search
        self.passed: set[float] = set()
        self.failed: set[float] = set()
        self.limited: set[float] = set()  # generator-limited targets

    @property
    def low(self) -> float | None:
        """The highest target that passed, below every failure."""
        ceiling = self.high
        below = [t for t in self.passed if ceiling is None or t < ceiling]
        return max(below) if below else None

    @property
    def high(self) -> float | None:
        """The lowest target that failed or was generator-limited."""
        bad = self.failed | self.limited
        return min(bad) if bad else None

    def state(self) -> str:
        """Where the search stands, in words."""
        s = self.search
        low, high = self.low, self.high
        passing = "none yet" if low is None else f"{low:g}"
        failing = "none yet" if high is None else f"{high:g}"
        return f"passing up to {passing}, failing from {failing} (precision {s.precision:.0%})"

    def converged(self) -> bool:
        low, high = self.low, self.high
        if low is None or high is None:
            return False
        if self.search.model == "closed":
            return high - low <= max(1, math.floor(low * self.search.precision))
        return high <= low * (1 + self.search.precision)

    def next_target(self) -> tuple[float, str] | None:
        """The next (target, phase) to measure, None when the narrowing is over."""
        s = self.search
        tried = self.passed | self.failed | self.limited
        if s.minimum not in tried:
            return s.minimum, "minimum"
        low, high = self.low, self.high
        if low is None:
            return None  # the minimum failed: nothing passes
        if s.maximum not in tried:
            return s.maximum, "maximum"
        if high is None or self.converged():
            return None
        middle = math.sqrt(low * high)
        if s.model == "closed":
            middle = float(min(max(round(middle), int(low) + 1), int(high) - 1))
        return middle, "narrow"

    def record(self, step: CapacityStep) -> None:
        if step.interrupted_by is not None:
            return  # it judged nothing
        if step.passed is None:
            self.limited.add(step.target)
        elif step.passed:
            self.passed.add(step.target)
        else:
            self.failed.add(step.target)
            self.passed -= {t for t in self.passed if t >= step.target}


#: Measures one step: (index, target, phase) -> CapacityStep.
Measure = Callable[[int, float, str], Awaitable[CapacityStep]]


async def _search(
    search: CapacitySearch, measure: Measure, on_step: OnStep | None, halt: _Halt | None = None
) -> CapacityResult:
    """Bracket, narrow and confirm, measuring each step with ``measure``, until ``halt``."""
    started = time.perf_counter()
    state = _Bisection(search)
    steps: list[CapacityStep] = []
    confirmed = False
    while len(steps) < search.max_steps and (halt is None or halt.by is None):
        chosen = state.next_target()
        if chosen is None:
            answer = state.low
            confirmation = next(
                (s for s in steps if s.phase == "confirm" and s.target == answer), None
            )
            if answer is None or not search.confirm or confirmation is not None:
                confirmed = confirmation is not None and bool(confirmation.passed)
                break
            chosen = (answer, "confirm")
        target, phase = chosen
        if on_step is not None:
            on_step(len(steps) + 1, target, phase, state.state())
        step = await measure(len(steps) + 1, target, phase)
        steps.append(step)
        state.record(step)
    seconds = time.perf_counter() - started
    by = None if halt is None else halt.by
    return _answer(search, state, steps, confirmed and by is None, seconds, by)


def _answer(
    search: CapacitySearch,
    state: _Bisection,
    steps: Sequence[CapacityStep],
    confirmed: bool,
    seconds: float,
    interrupted_by: str | None = None,
) -> CapacityResult:
    answer = state.low
    high = state.high
    limited_by: str | None = None
    if high is not None:
        above = [s for s in steps if s.target == high]
        if high in state.limited and high not in state.failed:
            limited_by = "generator"
        else:
            limited_by = next((s.first_failed for s in above if s.passed is False), None)
    elif answer is None and state.limited:
        limited_by = "generator"
    in_flight = little = None
    at_answer = [s for s in steps if s.target == answer and s.passed]
    if at_answer:
        figures = at_answer[-1].figures
        in_flight = figures.get("in_flight_mean")
        rate, mean_ms = figures.get("conversations_per_second"), figures.get("conversation_mean_ms")
        if rate is not None and mean_ms is not None:
            little = rate * mean_ms / 1000
    return CapacityResult(
        search=search,
        answer=answer,
        confirmed=confirmed,
        limited_by=limited_by,
        in_flight_at_max=in_flight,
        littles_law_in_flight=little,
        steps=tuple(steps),
        seconds=seconds,
        interrupted_by=interrupted_by,
    )


async def find_capacity_async(
    client: PolyAIClient,
    search: CapacitySearch,
    scenario: Scenario | None = None,
    *,
    on_step: OnStep | None = None,
    on_tick: OnTick | None = None,
) -> CapacityResult:
    """Search the capacity through an open ``client`` on the running event loop (one process).

    Args:
        client: an open PolyAIClient (the caller closes it).
        search: the SLOs, model, bounds and steps (see CapacitySearch).
        scenario: what the users say (default: ``demo_scenario()``).
        on_step: called as each step starts with (index, target, phase, state in words).
        on_tick: called about once a second with the live figures of the step.
    """
    chosen = _check(search, scenario)

    async def runner(load: Load, stopper: WindowJudge | None) -> tuple[LoadResult, str | None]:
        return await _drive_step(client, chosen, load, stopper, on_tick)

    return await _search(search, _measure(search, runner), on_step)


def _check(search: CapacitySearch, scenario: Scenario | None) -> Scenario:
    if not isinstance(search, CapacitySearch):
        raise ConfigurationError(f"search must be a CapacitySearch, not {type(search).__name__}")
    if scenario is None:
        return demo_scenario()
    if not isinstance(scenario, Scenario):
        raise ConfigurationError(f"scenario must be a Scenario, not {type(scenario).__name__}")
    return scenario


def find_capacity(
    search: CapacitySearch,
    scenario: Scenario | None = None,
    *,
    client_settings: Mapping[str, Any] | None = None,
    processes: int = 1,
    loop: str = "auto",
    on_step: OnStep | None = None,
    on_tick: OnTick | None = None,
) -> CapacityResult:
    """Search the capacity (blocking: each step starts its own event loop, or processes).

    Called from the main thread, it handles SIGINT (Ctrl-C) and SIGTERM as ``run_load`` does:
    the first stops the current step (its conversations closed) and the search, which returns
    what it measured with ``CapacityResult.interrupted_by`` set; a second raises
    KeyboardInterrupt at once.

    With ``processes`` above 1, each step is a ``run_load`` over that many worker processes,
    judged on their merged metrics; the workers' seconds are merged as they report, and a
    step is stopped early on them as in one process.

    Args:
        search: the SLOs, model, bounds and steps (see CapacitySearch).
        scenario: what the users say (default: ``demo_scenario()``).
        client_settings: PolyAIClient keyword arguments (base_url, credentials, retry...).
        processes: worker processes per step.
        loop: ``auto`` (uvloop when installed), ``asyncio`` or ``uvloop``.
        on_step: called as each step starts with (index, target, phase, state in words).
        on_tick: called about once a second with the live figures of the step.

    Raises:
        ConfigurationError: a bad argument, before anything runs.
        WorkerError: a worker process failed.
    """
    chosen = _check(search, scenario)
    check_processes(search.load(search.maximum, measured=search.step_duration), processes)
    check_processes(search.load(search.minimum, measured=search.step_duration), processes)
    kind = choose_loop(loop)
    options = dict(client_settings or {})
    PolyAIClient(**options)  # refuse bad settings before the first step
    halt = _Halt()

    async def runner(load: Load, stopper: WindowJudge | None) -> tuple[LoadResult, str | None]:
        # Blocking on purpose: no event loop runs the search (see _run_to_end).
        if processes > 1:
            # run_load handles the signals itself while it runs, and says which came.
            result = run_load(
                load,
                chosen,
                client_settings=options,
                processes=processes,
                loop=kind,
                on_tick=on_tick,
                stop_when=_judge_workers(stopper) if stopper and stopper.enabled else None,
            )
            judged = None if stopper is None else stopper.reason
            # "stop" alone is the workers stopped by the judge above; a signal is the user's.
            if result.interrupted_by is not None and not (
                judged is not None and result.interrupted_by == "stop"
            ):
                halt.stop(result.interrupted_by)
            return result, judged

        async def one() -> tuple[LoadResult, str | None]:
            with on_loop_signals(asyncio.get_running_loop(), halt.interrupt):
                async with PolyAIClient(**options) as client:
                    return await _drive_step(client, chosen, load, stopper, on_tick, halt)

        return run_with_loop(one, kind)  # each step on a fresh loop of the kind asked

    # Between steps too (no loop runs then), a signal stops the search, not the process.
    with on_signals(halt.interrupt):
        return _run_to_end(_search(search, _measure(search, runner), on_step, halt))


def _run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its awaits all finish at once) without a loop.

    The search is written once, as a coroutine, for ``find_capacity_async``; here its step
    runner blocks (each step runs its own event loop, or worker processes), so the search
    itself needs no loop, and a step can start one.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast("T", done.value)
    coroutine.close()
    raise RuntimeError("the capacity search suspended without an event loop")  # pragma: no cover
