"""The load runner: open and closed models, stages, drops, honest latency, lag, processes."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from polyai_async import ConfigurationError, PoolLimits, RetryPolicy
from polyai_async.load import (
    Load,
    Persona,
    Scenario,
    Stage,
    TurnSpec,
    arrivals,
    parse_stages,
    run_load,
    run_load_async,
)
from polyai_async.load._metrics import new_histogram
from polyai_async.testing import FakePolyAI, Faults
from tests.threaded_fake import ThreadedFake

# One persona, two turns: every conversation makes the same calls, so counts are exact.
FIXED = Scenario(
    name="fixed",
    personas=(Persona(name="two-turns", turns=(TurnSpec(say=("a",)), TurnSpec(say=("b",)))),),
)


class StallingFake(FakePolyAI):
    """The fake, but every request waits while ``stalled`` is set: a server that hangs once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.open_gate = asyncio.Event()
        self.open_gate.set()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        await self.open_gate.wait()
        return await super()._handle(request)

    async def stall(self, after: float, seconds: float) -> None:
        await asyncio.sleep(after)
        self.open_gate.clear()
        await asyncio.sleep(seconds)
        self.open_gate.set()


@pytest.fixture(scope="module")
def server_thread() -> Iterator[dict[str, str]]:
    """Client settings for a fake in a thread, for runs that start their own loop.

    (A thread, not a process: the workers under test are the processes; the fake only
    needs a loop that run_load's own loop does not block.)
    """
    with ThreadedFake() as fake:
        yield fake.settings


def test_constant_arrivals_are_evenly_spaced() -> None:
    """Constant arrivals at 40/s for 6 s: 240 of them, every gap exactly 25 ms."""
    times = list(arrivals(Load.open(rate=40, duration=6, arrival="constant"), random.Random(1)))
    assert len(times) == 240
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) - min(gaps) < 1e-9
    assert gaps[0] == pytest.approx(0.025)


def test_poisson_arrivals_average_the_rate() -> None:
    """Poisson arrivals at 40/s over 100 s average 40 a second, with uneven gaps."""
    times = list(arrivals(Load.open(rate=40, duration=100), random.Random(2)))
    assert 3800 < len(times) < 4200
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) > 5 * min(gaps)


def test_stages_ramp_the_arrival_rate_linearly() -> None:
    """0 -> 20/s over 2 s, 20/s for 2 s, then down to 0: 5, 15, 20, 20, 15, 5 a second."""
    load = Load.open(stages="2s:20,2s:20,2s:0", arrival="constant")
    times = list(arrivals(load, random.Random(1)))
    per_second = [sum(1 for t in times if s <= t < s + 1) for s in range(6)]
    assert per_second == pytest.approx([5, 15, 20, 20, 15, 5], abs=1)
    assert load.planned_seconds() == 6
    assert load.target_at(1) == 10
    assert Load.closed(concurrency=2, stages=[Stage(duration=10, target=12)]).target_at(5) == 7


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "open", "rate": 5}, "conversations or duration"),
        ({"model": "closed", "rate": 5, "duration": 1}, "rate is for the open model"),
        ({"model": "open", "concurrency": 5, "duration": 1}, "concurrency is for the closed"),
        ({"model": "open", "rate": float("inf"), "duration": 1}, "rate must be a finite"),
        ({"model": "closed", "concurrency": 2.5, "duration": 1}, "concurrency must be a whole"),
        ({"model": "sideways", "concurrency": 1, "duration": 1}, "model must be"),
        ({"model": "open", "rate": 1, "duration": 1, "arrival": "burst"}, "arrival must be"),
    ],
)
def test_bad_loads_say_which_field(options: dict[str, Any], message: str) -> None:
    """A Load that cannot run is refused with a ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError, match=message):
        Load(**options)


def test_bad_stages_name_the_stage() -> None:
    """--stages with a bad part says which stage and how to write them."""
    with pytest.raises(ConfigurationError, match=r"stage 2 \('fast'\)"):
        parse_stages("30s:10,fast")


@pytest.mark.e2e
async def test_open_model_starts_the_planned_conversations() -> None:
    """At 40/s for 6 s the open model starts 240 conversations, within 15%."""
    async with FakePolyAI() as fake, fake.client() as client:
        result = await run_load_async(client, Load.open(rate=40, duration=6), FIXED)
    started = result.figure("conversations_started")
    assert 204 <= started <= 276
    assert result.figure("conversations_completed") == started
    assert result.figure("conversations_dropped") == 0
    assert result.figure("load_model") == "open"
    rows = result.summary["timeseries"]
    assert [row["t"] for row in rows[:6]] == [0, 1, 2, 3, 4, 5]
    assert sum(row["conversations_started"] for row in rows) == started
    assert result.figure("generator_lag_p99_ms") is not None


async def test_arrivals_over_max_in_flight_are_dropped_and_counted() -> None:
    """With 2 allowed in flight and slow answers, later arrivals are dropped, not skipped."""
    # 40 arrivals in 0.25 s; each conversation (4 calls of 0.1 s) outlasts the schedule.
    load = Load.open(rate=160, duration=0.25, max_in_flight=2, arrival="constant")
    async with FakePolyAI(faults=Faults(latency=0.1)) as fake, fake.client() as client:
        result = await run_load_async(client, load, FIXED)
    started = result.figure("conversations_started")
    dropped = result.figure("conversations_dropped")
    assert started + dropped == 40
    assert dropped > 20
    assert result.figure("in_flight_max") == 2
    assert len(fake.conversations) == started


async def test_arrivals_too_late_to_start_are_dropped_and_counted() -> None:
    """A loop stalled for 0.3 s: arrivals more than 100 ms late are dropped, not started back
    to back; the rest start, and every arrival is one or the other."""
    async with FakePolyAI() as fake, fake.client() as client:
        asyncio.get_running_loop().call_later(0.05, time.sleep, 0.3)
        load = Load.open(rate=200, duration=0.5, arrival="constant")
        result = await run_load_async(client, load, FIXED)
    started = result.figure("conversations_started")
    dropped = result.figure("conversations_dropped")
    assert started + dropped == 100
    assert 30 <= dropped <= 60  # those due more than 0.1 s before the loop came back
    assert result.figure("conversations_completed") == started
    assert result.figure("generator_lag_p99_ms") > 100  # the lag still shows the stall


async def test_arrivals_finding_a_pool_of_calls_waiting_are_dropped() -> None:
    """One connection, 20 ms answers, 200 arrivals/s: an arrival that finds a call already
    waiting for the connection is dropped, so the calls queued in the client stay bounded."""
    load = Load.open(rate=200, duration=0.4, arrival="constant")
    async with FakePolyAI(faults=Faults(latency=0.02)) as fake:
        async with fake.client(limits=PoolLimits(max_connections=1)) as client:
            result = await run_load_async(client, load, FIXED)
    started = result.figure("conversations_started")
    dropped = result.figure("conversations_dropped")
    assert started + dropped == 80
    assert dropped >= 60
    assert result.figure("in_flight_max") <= 3
    assert result.figure("conversations_completed") == started


async def test_closed_model_keeps_the_concurrency_and_runs_the_conversations() -> None:
    """Closed, 4 at a time, 20 in all: 20 complete, never more than 4 in flight."""
    async with FakePolyAI(faults=Faults(latency=0.01)) as fake, fake.client() as client:
        result = await run_load_async(client, Load.closed(concurrency=4, conversations=20), FIXED)
        assert fake.stats.max_open_connections <= 4
    assert result.figure("conversations_started") == 20
    assert result.figure("conversations_completed") == 20
    assert result.figure("in_flight_max") == 4
    assert result.figure("calls") == 20 * 4
    assert result.figure("load_model") == "closed"


async def test_retries_are_counted_from_the_client_hooks_even_with_logging_off() -> None:
    """Every retry the client makes is counted (through its retry_scheduled hook, not its log,
    so silenced logging loses none), and the hook is gone once the run is over."""
    faults = Faults(error_rate=0.3, error_status=503)
    retry = RetryPolicy(initial_backoff=0, max_backoff=0, max_attempts=10)
    async with FakePolyAI(faults=faults, seed=3) as fake, fake.client(retry=retry) as client:
        logging.disable(logging.CRITICAL)
        try:
            result = await run_load_async(
                client, Load.closed(concurrency=4, conversations=20), FIXED
            )
        finally:
            logging.disable(logging.NOTSET)
        injected = fake.stats.faults["503"]
        hooks_left = client._hooks
    assert injected > 0
    assert result.figure("conversations_failed") == 0
    assert result.figure("retries") == injected
    assert result.figure("requests") == result.figure("calls") + injected
    assert hooks_left is None


async def test_closed_stages_ramp_the_concurrency() -> None:
    """Closed stages 0 -> 6 users over 1.5 s: conversations in flight climb towards 6."""
    # Second 0 holds 2 user-seconds of load, second 1 (to the end at 1.75 s) 4: twice as many
    # conversations start in it. All 6 users from the start would make second 0 the busier.
    load = Load.closed(stages="1.5s:6,0.25s:6", graceful_stop=2)
    async with FakePolyAI(faults=Faults(latency=0.03)) as fake, fake.client() as client:
        result = await run_load_async(client, load, FIXED)
    assert result.figure("in_flight_max") == 6
    rows = result.summary["timeseries"]
    assert rows[0]["in_flight"] < 6
    assert rows[0]["conversations_started"] < rows[1]["conversations_started"]


async def test_a_duration_ends_the_run_and_late_conversations_are_interrupted() -> None:
    """Past the duration and the graceful stop, conversations still running are cancelled,
    counted as interrupted, and closed on the server."""
    # Cancelled at 0.25 s in their first turn: a conversation (4 calls of 0.2 s) needs 0.8.
    load = Load.closed(concurrency=3, duration=0.15, graceful_stop=0.1)
    async with FakePolyAI(faults=Faults(latency=0.2)) as fake, fake.client() as client:
        result = await run_load_async(client, load, FIXED)
        closed = sum(state.closed for state in fake.conversations.values())
    assert result.figure("conversations_interrupted") == 3
    assert result.figure("conversations_completed") == 0
    assert closed == len(fake.conversations) == 3


@pytest.mark.e2e
async def test_open_model_shows_a_stall_that_the_closed_model_hides() -> None:
    """A server stalling 2 s once: open create p99 >= 1 s; closed create p99 stays < 1 s."""
    one_turn = Scenario(
        name="one", personas=(Persona(name="p", turns=(TurnSpec(say=("hello",)),)),)
    )
    figures = {}
    for load in (Load.open(rate=30, duration=4.0), Load.closed(concurrency=2, duration=4.0)):
        fake = StallingFake()
        async with fake, fake.client() as client:
            stall = asyncio.create_task(fake.stall(1.0, 2.0))
            result = await run_load_async(client, load, one_turn)
            await stall
        figures[load.model] = result.figure("create_p99_ms")
    assert figures["open"] >= 1000
    assert figures["closed"] < 1000


async def test_generator_lag_is_measured_and_warned_about() -> None:
    """A blocked event loop makes arrivals late: the lag p99 passes 10 ms and a warning says so."""

    async def hog() -> None:
        while True:
            time.sleep(0.03)  # noqa: ASYNC251 - blocking the loop on purpose
            await asyncio.sleep(0.01)

    async with FakePolyAI() as fake, fake.client() as client:
        task = asyncio.create_task(hog())
        try:
            result = await run_load_async(client, Load.open(rate=100, duration=0.4), FIXED)
        finally:
            task.cancel()
    assert result.figure("generator_lag_p99_ms") > 10
    assert any("generator lag" in w for w in result.warnings)


def test_processes_merge_to_the_counts_of_one_process(server_thread: dict[str, str]) -> None:
    """--processes 2 gives the counts of one process, on uvloop; the merged histograms hold
    exactly the union of the workers' samples."""
    load = Load.closed(concurrency=4, conversations=60)
    one = run_load(load, FIXED, client_settings=server_thread, loop="asyncio")
    two = run_load(load, FIXED, client_settings=server_thread, processes=2, loop="uvloop")
    for key in ("conversations_started", "conversations_completed", "calls", "turns_completed"):
        assert two.figure(key) == one.figure(key), key
    assert two.figure("processes") == 2
    assert two.summary["settings"]["loop"] == "uvloop"
    assert [w["conversations_started"] for w in two.summary["workers"]] == [30, 30]
    union = new_histogram()
    for worker in two.workers:
        histogram = worker.histogram("respond")
        assert histogram is not None
        for item in histogram.get_recorded_iterator():
            union.record_value(item.value_iterated_to, item.count_at_value_iterated_to)
    merged = two.metrics.histogram("respond")
    assert merged is not None
    assert merged.get_total_count() == union.get_total_count() == 60 * 2
    for p in (50, 90, 99, 100):
        assert merged.get_value_at_percentile(p) == union.get_value_at_percentile(p)
    assert sum(row["conversations_started"] for row in two.summary["timeseries"]) == 60


def test_run_load_refuses_bad_arguments() -> None:
    """Bad processes, loop or threshold fail before anything runs."""
    load = Load.closed(concurrency=1, conversations=1)
    with pytest.raises(ConfigurationError, match="processes"):
        run_load(load, processes=0)
    with pytest.raises(ConfigurationError, match="loop must be"):
        run_load(load, loop="trio")
    with pytest.raises(ConfigurationError, match="threshold"):
        run_load(load, thresholds=["respond.p42<1s"])


async def test_a_cancelled_run_closes_its_conversations() -> None:
    """Cancelling the run (Ctrl-C) cancels its conversations, and each still closes."""
    async with FakePolyAI(faults=Faults(latency=0.15)) as fake, fake.client() as client:
        for load in (
            Load.closed(concurrency=3, duration=30),
            Load.open(rate=40, duration=30, arrival="constant"),
        ):
            before = len(fake.conversations)
            run = asyncio.create_task(run_load_async(client, load, FIXED))
            await asyncio.sleep(0.1)  # each conversation is still creating (0.15 s)
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            assert len(fake.conversations) > before, load.model
            assert all(state.closed for state in fake.conversations.values()), load.model
        assert fake.conversations
        assert all(state.closed for state in fake.conversations.values())


@pytest.mark.parametrize(
    ("load", "text"),
    [
        (
            Load.closed(concurrency=1000, conversations=1000),
            "closed model: 1,000 conversations, 1,000 at a time",
        ),
        (
            Load.closed(concurrency=500, conversations=5),
            "closed model: 5 conversations, 5 at a time (concurrency 500, but only that many "
            "to run)",
        ),
        (
            Load.closed(stages="30s:10,2m:50,30s:0"),
            "closed model: 3m, up to 50 at a time, following stages 30s:10,2m:50,30s:0",
        ),
        (
            Load.open(rate=20, duration=60, max_in_flight=100),
            "open model: 20 conversations/s (poisson arrivals), 1m, at most 100 in flight",
        ),
        (
            Load.open(rate=0, stages="10s:5", arrival="constant", conversations=7),
            "open model: stages 10s:5 (constant arrivals), 7 conversations or 10s, at most "
            "10,000 in flight",
        ),
    ],
)
def test_a_load_describes_its_plan_with_the_effective_concurrency(load: Load, text: str) -> None:
    """Load.describe(): model, length and size; no more users than conversations to run."""
    assert load.describe() == text


def test_load_package_exports_its_names_sorted_and_documented() -> None:
    """polyai_async.load's __all__ is sorted, every name exists and has a docstring."""
    import polyai_async.load as load_package

    names = load_package.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in names:
        value = getattr(load_package, name)
        if callable(value):
            assert value.__doc__, name


@pytest.mark.e2e
async def test_constant_arrivals_start_evenly_in_a_real_run() -> None:
    """At a constant 20/s for 3 s, each second starts 20 conversations (one either way)."""
    load = Load.open(rate=20, duration=3, arrival="constant")
    async with FakePolyAI() as fake, fake.client() as client:
        result = await run_load_async(client, load, FIXED)
    per_second = [row["conversations_started"] for row in result.summary["timeseries"][:3]]
    assert per_second == pytest.approx([20, 20, 20], abs=1)
    assert result.figure("conversations_started") == 60


def test_a_closed_ramp_splits_over_processes_user_by_user() -> None:
    """Shares of a closed ramp add up to the whole ramp's users at every moment."""
    load = Load.closed(stages="10s:7,10s:7,5s:0")
    shares = [load.split(3, i) for i in range(3)]
    for tenth in range(0, 251):
        t = tenth / 10
        assert sum(share.users_at(t) for share in shares) == load.users_at(t), t
    assert [s.users_at(10) for s in shares] == [3, 2, 2]
    open_load = Load.open(rate=9, duration=1).split(3, 1)
    assert (open_load.rate, open_load.part) == (3, (0, 1))
