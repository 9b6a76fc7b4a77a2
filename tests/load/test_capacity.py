"""The capacity search: its settings, the bisection on synthetic agents, and real searches."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from polyai_async import ConfigurationError, PoolLimits, RetryPolicy
from polyai_async.load import demo_scenario
from polyai_async.load._capacity import (
    CAPACITY_SCHEMA,
    CapacityResult,
    CapacitySearch,
    CapacityStep,
    _Halt,
    _run_to_end,
    _search,
    find_capacity,
    find_capacity_async,
)
from polyai_async.testing import FakePolyAI
from tests.threaded_fake import ThreadedFake

OPEN: dict[str, Any] = {"slos": ["respond.p99<2s"], "minimum": 1, "maximum": 200}


def synthetic(
    capacity: float, *, generator_from: float = math.inf, flaky: float | None = None
) -> tuple[Callable[[int, float, str], Any], list[tuple[float, str]]]:
    """A measure whose agent passes up to ``capacity``; the generator fails from
    ``generator_from``; a confirmation at ``flaky`` fails (a short step looked fine)."""
    seen: list[tuple[float, str]] = []

    async def measure(index: int, target: float, phase: str) -> CapacityStep:
        seen.append((target, phase))
        limited = "client CPU 95% of a core > 90%" if target >= generator_from else None
        passed: bool | None = target <= capacity and not (phase == "confirm" and target == flaky)
        if limited and passed:
            passed = None
        return CapacityStep(
            index=index,
            target=target,
            phase=phase,
            passed=passed,
            stopped_early=False,
            generator_limited=limited,
            first_failed=None if passed or passed is None else "respond.p99<2s",
            verdicts=(),
            figures={
                "in_flight_mean": 3.0,
                "conversations_per_second": target,
                "conversation_mean_ms": 100.0,
            },
            summary={},
            seconds=1.0,
        )

    return measure, seen


def search_with(measure: Any, **options: Any) -> CapacityResult:
    return _run_to_end(_search(CapacitySearch(**{**OPEN, **options}), measure, None))


@pytest.mark.parametrize("capacity", [1.0, 3.7, 40.0, 66.0, 150.0, 199.0])
def test_the_bisection_finds_the_capacity_within_the_precision(capacity: float) -> None:
    """The answer passed, is at most the capacity and within 5% of it, and was confirmed."""
    measure, seen = synthetic(capacity)
    result = search_with(measure)
    assert result.answer is not None
    assert capacity / 1.05 <= result.answer <= capacity
    assert result.confirmed
    assert result.limited_by == "respond.p99<2s"
    assert seen[:2] == [(1, "minimum"), (200, "maximum")]
    assert seen[-1] == (result.answer, "confirm")
    assert len(seen) <= CapacitySearch(**OPEN).steps_to_converge()
    assert result.exit_code == 0


def test_nothing_passing_at_the_minimum_is_none_and_spares_the_maximum() -> None:
    """SLOs failing at --min: the answer is none (not the minimum), exit 99, max never run."""
    measure, seen = synthetic(0.5)
    result = search_with(measure)
    assert result.answer is None
    assert not result.confirmed
    assert seen == [(1, "minimum")]
    assert result.exit_code == 99
    assert result.as_dict()["max_rate"] is None


def test_the_maximum_passing_is_the_answer_with_no_limit() -> None:
    """If the maximum holds, that is the answer, limited by nothing measured."""
    measure, seen = synthetic(1000)
    result = search_with(measure)
    assert result.answer == 200
    assert result.limited_by is None
    assert [p for _, p in seen] == ["minimum", "maximum", "confirm"]


def test_a_failed_confirmation_moves_the_search_down() -> None:
    """The answer's confirmation fails: that target counts as failed, the search goes below."""
    first = search_with(synthetic(66)[0])
    assert first.answer is not None
    measure, seen = synthetic(66, flaky=first.answer)
    result = search_with(measure)
    assert result.answer is not None
    assert result.answer < first.answer
    assert result.confirmed
    assert [p for _, p in seen].count("confirm") == 2


def test_a_generator_limited_step_is_never_the_answer() -> None:
    """Passes the generator cannot vouch for bound the search; the answer says so."""
    measure, _ = synthetic(150, generator_from=50)
    result = search_with(measure)
    assert result.answer is not None
    assert result.answer < 50
    assert result.limited_by == "generator"
    assert all(s.passed is not True for s in result.steps if s.target >= 50)


def test_the_closed_model_ends_on_adjacent_whole_numbers() -> None:
    """Concurrency is searched in whole numbers until passing and failing are adjacent."""
    measure, seen = synthetic(11)
    result = search_with(measure, model="closed", minimum=1, maximum=64)
    assert result.answer == 11
    assert all(t == int(t) for t, _ in seen)
    assert result.as_dict()["max_concurrency"] == 11


def interrupted_at(
    halt: _Halt, index: int, by: str, capacity: float = 66
) -> tuple[Callable[[int, float, str], Any], list[tuple[float, str]]]:
    """The synthetic agent of ``capacity``, its step ``index`` cut short by signal ``by``."""
    measure, seen = synthetic(capacity)

    async def cut(i: int, target: float, phase: str) -> CapacityStep:
        step: CapacityStep = await measure(i, target, phase)
        if i != index:
            return step
        halt.stop(by)
        return attrs.evolve(step, passed=None, first_failed=None, interrupted_by=by)

    return cut, seen


@pytest.mark.parametrize(("by", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupted_search_ends_with_what_it_knew(by: str, code: int) -> None:
    """A signal during step 4 ends the search there: the answer is the best step that passed
    (not confirmed, not the cut step), marked interrupted, exit 130 or 143."""
    halt = _Halt()
    measure, seen = interrupted_at(halt, 4, by)
    result = _run_to_end(_search(CapacitySearch(**OPEN), measure, None, halt))
    assert [p for _, p in seen] == ["minimum", "maximum", "narrow", "narrow"]
    assert result.answer == pytest.approx(math.sqrt(200))  # passed; step 4 decided nothing
    assert result.confirmed is False
    assert result.interrupted_by == by
    assert result.exit_code == code
    data = result.as_dict()
    assert (data["interrupted"], data["interrupted_by"], data["confirmed"]) == (True, by, False)
    assert [s["interrupted"] for s in data["steps"]] == [False, False, False, True]
    assert result.notes == [
        f"INTERRUPTED ({by}): the load was stopped early; these figures cover what was "
        "measured until then"
    ]


def test_a_search_interrupted_before_any_pass_knows_none_and_exits_130() -> None:
    """Cut during its first step, the search has no answer, and exits 130, not 99."""
    halt = _Halt()
    measure, seen = interrupted_at(halt, 1, "SIGINT")
    result = _run_to_end(_search(CapacitySearch(**OPEN), measure, None, halt))
    assert seen == [(1, "minimum")]
    assert result.answer is None
    assert result.exit_code == 130


def test_a_stop_between_steps_starts_no_other() -> None:
    """A stop that came after a step ended (no step running) ends the search there."""
    halt = _Halt()
    measure, seen = synthetic(66)

    async def then_stop(i: int, target: float, phase: str) -> CapacityStep:
        step: CapacityStep = await measure(i, target, phase)
        if i == 2:
            halt.stop("SIGINT")
        return step

    result = _run_to_end(_search(CapacitySearch(**OPEN), then_stop, None, halt))
    assert [p for _, p in seen] == ["minimum", "maximum"]
    assert result.answer == 1
    assert result.interrupted_by == "SIGINT"
    assert not any(s.interrupted_by for s in result.steps)


def test_the_answer_as_json() -> None:
    """The JSON answer: schema, answer, confirmed, limited_by, in-flight, Little's law, steps."""
    result = search_with(synthetic(40)[0])
    data = result.as_dict()
    assert result.answer is not None
    assert data["schema"] == CAPACITY_SCHEMA
    assert data["max_rate"] == result.answer
    assert data["confirmed"] is True
    assert data["limited_by"] == "respond.p99<2s"
    assert data["in_flight_at_max"] == 3.0
    # Little's law: rate x mean duration = answer x 0.1 s.
    assert data["littles_law_in_flight"] == pytest.approx(result.answer * 0.1, abs=1e-3)
    assert [s["target"] for s in data["steps"]] == [s.target for s in result.steps]
    assert {"passed", "stopped_early", "summary", "target"} <= set(data["steps"][0])


@pytest.mark.parametrize(
    ("slos", "lag_ms", "limit"),
    [
        (["respond.p99<2s"], None, 200.0),
        (["respond.p99<2s", "create.p50<50ms"], None, 10.0),
        (["conversation_error_rate<0.01"], None, 10.0),
        (["respond.p99<2s"], 30.0, 30.0),
    ],
)
def test_the_generator_lag_limit_follows_the_tightest_latency_slo(
    slos: list[str], lag_ms: float | None, limit: float
) -> None:
    """A tenth of the tightest latency SLO, at least 10 ms, unless generator_lag_ms is given."""
    search = CapacitySearch(**{**OPEN, "slos": slos, "generator_lag_ms": lag_ms})
    assert search.lag_limit_ms == limit


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"slos": []}, "slos: give at least one SLO"),
        ({"slos": ["respond.p99<<2"]}, "threshold 'respond.p99<<2'"),
        ({"model": "half-open"}, "model must be one of open, closed"),
        ({"minimum": 0}, "minimum must be a finite number above 0"),
        ({"maximum": math.inf}, "maximum must be a finite number above 0"),
        ({"minimum": 10, "maximum": 5}, "minimum \\(10\\) must not be above maximum \\(5\\)"),
        ({"model": "closed", "maximum": 7.5}, "maximum must be a whole number"),
        ({"step_duration": 0}, "step_duration must be a finite number above 0"),
        ({"warmup": -1}, "warmup must be a number of seconds >= 0"),
        ({"precision": 0}, "precision must be between 0 and 1"),
        ({"precision": 1.5}, "precision must be between 0 and 1"),
        ({"window": 0}, "window must be a finite number above 0"),
        ({"max_steps": 0}, "max_steps must be a whole number >= 1"),
        ({"arrival": "bursty"}, "arrival must be one of poisson, constant"),
        ({"confirm_duration": -2}, "confirm_duration must be a finite number above 0"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(options: dict[str, Any], match: str) -> None:
    """CapacitySearch checks each field when made, with one clear ConfigurationError."""
    with pytest.raises(ConfigurationError, match=match):
        CapacitySearch(**{**OPEN, **options})


async def search_fake(search: CapacitySearch, **fake: Any) -> tuple[CapacityResult, float]:
    async with FakePolyAI(**fake) as server:
        async with server.client(retry=RetryPolicy(max_attempts=1)) as client:
            result = await find_capacity_async(client, search, demo_scenario(turns=1))
    assert server.agent_turns_per_second is not None
    return result, server.agent_turns_per_second


# Short steps; the fake shares this process's loop, so its lag is forgiven up to 100 ms.
FAST: dict[str, Any] = {
    "step_duration": 2,
    "warmup": 0.5,
    "window": 1,
    "graceful_stop": 1,
    "confirm_duration": 3,
}


@pytest.mark.e2e
async def test_finds_a_loopback_agents_rate_in_the_open_model() -> None:
    """4 slots of 50 ms hold 80 turns a second: one-turn conversations, evenly spaced, find
    a max_rate within 5% of 80 (or just under it, where the p99 starts to climb)."""
    search = CapacitySearch(
        slos=["respond.p99<250ms", "conversation_error_rate<0.01"],
        minimum=10,
        maximum=200,
        arrival="constant",
        generator_lag_ms=100,
        **FAST,
    )
    result, theory = await search_fake(search, agent_capacity=4, agent_latency=0.05)
    assert result.answer is not None
    assert theory * 0.9 <= result.answer <= theory * 1.05
    assert result.confirmed
    assert result.limited_by == "respond.p99<250ms"
    assert any(s.stopped_early for s in result.steps)
    assert result.littles_law_agrees


@pytest.mark.e2e
async def test_finds_a_loopback_agents_concurrency_in_the_closed_model() -> None:
    """4 slots of 100 ms: a fifth conversation at once waits up to a turn, so the p99 goes
    from 100 ms to about 200 ms and max_concurrency is 4."""
    search = CapacitySearch(
        slos=["respond.p99<150ms"],
        model="closed",
        minimum=1,
        maximum=16,
        generator_lag_ms=100,
        **FAST,
    )
    result, _ = await search_fake(search, agent_capacity=4, agent_latency=0.1)
    assert result.answer == 4
    assert result.confirmed
    assert result.in_flight_at_max == pytest.approx(4, abs=0.5)


@pytest.mark.e2e
async def test_a_step_that_drops_its_arrivals_fails_whatever_its_latency() -> None:
    """An SLO so lax that an overloaded agent meets it: the steps whose arrivals were dropped
    (the pool of 2 connections full) still fail, so the answer stays near the capacity."""
    search = CapacitySearch(
        slos=["respond.p99<30s"],
        minimum=5,
        maximum=200,
        precision=0.3,
        arrival="constant",
        generator_lag_ms=100,
        confirm=False,
        **FAST,
    )
    async with FakePolyAI(agent_capacity=2, agent_latency=0.05) as server:
        limits = PoolLimits(max_connections=2)
        async with server.client(retry=RetryPolicy(max_attempts=1), limits=limits) as client:
            result = await find_capacity_async(client, search, demo_scenario(turns=1))
    assert result.answer is not None
    assert result.answer < 100  # 2 slots of 50 ms: 40 turns a second, and 200/s was asked
    top = max(result.steps, key=lambda step: step.target)
    assert top.passed is False
    assert any("dropped" in (step.first_failed or "") for step in result.steps)


@pytest.mark.e2e
async def test_an_overloaded_step_stops_within_its_window() -> None:
    """At twice the capacity from the start, the step stops early, long before its 20 s."""
    search = CapacitySearch(
        slos=["respond.p99<200ms"],
        minimum=40,
        maximum=80,
        step_duration=20,
        warmup=0.5,
        window=1,
        graceful_stop=0.5,
        arrival="constant",
        generator_lag_ms=100,
    )
    started = asyncio.get_running_loop().time()
    result, _ = await search_fake(search, agent_capacity=1, agent_latency=0.05)
    assert result.answer is None
    assert result.exit_code == 99
    (step,) = result.steps
    assert step.stopped_early
    assert step.first_failed == "respond.p99<200ms"
    assert asyncio.get_running_loop().time() - started < 6


@pytest.mark.e2e
def test_an_overloaded_step_over_worker_processes_stops_within_its_window() -> None:
    """With processes=2 the parent judges the workers' merged seconds: at twice the capacity
    the 20 s step is stopped early, and its conversations are closed."""
    search = CapacitySearch(
        slos=["respond.p99<200ms"],
        minimum=40,
        maximum=80,
        step_duration=20,
        warmup=0.5,
        window=1,
        graceful_stop=0.5,
        arrival="constant",
        generator_lag_ms=100,
    )
    with ThreadedFake(agent_capacity=1, agent_latency=0.05) as fake:
        started = time.monotonic()
        result = find_capacity(
            search, demo_scenario(turns=1), client_settings=fake.settings, processes=2
        )
        seconds = time.monotonic() - started
        states = list(fake.server.conversations.values())
    assert result.answer is None
    (step,) = result.steps
    assert step.stopped_early
    assert step.interrupted_by is None  # the judge's stop, not the user's
    assert result.exit_code == 99
    assert step.first_failed == "respond.p99<200ms"
    assert seconds < 12  # two spawned workers start in a few seconds; the step asked 20.5 s
    assert states
    assert all(state.closed for state in states)
