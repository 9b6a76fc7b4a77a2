"""A load run's figures are true: what did not complete fails the run, failed calls are latency,
rates divide by the load window, --max-in-flight holds, every request sent is counted."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from pathlib import Path

import pytest

from polyai_async import RetryPolicy, Timeouts
from polyai_async.load import Load, Persona, Scenario, TurnSpec, run_load_async, write_csv
from polyai_async.testing import FakePolyAI, Faults

# One persona, two turns: every conversation makes the same calls, so counts are exact.
FIXED = Scenario(
    name="fixed",
    personas=(Persona(name="two-turns", turns=(TurnSpec(say=("a",)), TurnSpec(say=("b",)))),),
)
ONE_TURN = Scenario(name="one", personas=(Persona(name="one-turn", turns=(TurnSpec(say=("a",)),)),))


def served(fake: FakePolyAI) -> int:
    """Every request the fake received, whatever became of it."""
    return sum(fake.requests.values())


async def test_a_server_that_never_answers_fails_the_run_and_every_request_is_counted() -> None:
    """Conversations cut off waiting on the agent count against the run: error rate 1, no
    conversation completed, passed false, exit 1; the responds cut off are counted as cancelled
    requests, the closes made after the cut as calls, and the client's count is the server's."""
    never = Faults(latency=30, endpoints={"respond"})  # create and close answer, respond never
    async with FakePolyAI(faults=never) as fake:
        async with fake.client(retry=RetryPolicy(max_attempts=1)) as client:
            result = await run_load_async(
                client,
                Load.open(rate=20, duration=0.3, arrival="constant", graceful_stop=0.2),
                FIXED,
                max_error_rate=0.5,
            )
        s = result.summary
        started = s["conversations_started"]
        assert started == 6
        assert s["conversations_interrupted"] == started
        assert (s["conversations_completed"], s["conversations_failed"]) == (0, 0)
        assert s["conversation_error_rate"] == 1.0
        assert (result.passed, s["passed"], result.exit_code) == (False, False, 1)
        # create, the respond cut off, and the close made after the cut: 3 requests each.
        assert (s["create_count"], s["close_count"], s["respond_count"]) == (started, started, 0)
        assert s["requests_cancelled"] == s["calls_cancelled"] == started
        assert s["requests_ok"] == 2 * started
        assert s["requests"] == 3 * started == served(fake)


async def test_every_request_sent_is_counted_with_its_outcome_as_the_server_counted_it() -> None:
    """Errors, retries and calls cut off by the graceful stop: the client's requests, and each
    outcome, add up to what the server received."""
    faults = Faults(error_rate=0.25, latency=0.05)
    async with FakePolyAI(faults=faults, seed=5) as fake:
        policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
        async with fake.client(retry=policy) as client:
            result = await run_load_async(
                client,
                Load.open(rate=60, duration=0.5, arrival="constant", graceful_stop=0.08),
                FIXED,
            )
        s = result.summary
        assert s["retries"] > 0
        assert s["requests_failed"] > 0
        assert s["requests_cancelled"] > 0  # the graceful stop cut some off
        assert s["requests"] == s["requests_ok"] + s["requests_failed"] + s["requests_cancelled"]
        assert s["requests"] == served(fake)
        assert s["calls"] + s["calls_cancelled"] + s["retries"] >= s["requests"]


async def test_a_failed_call_is_latency_too(tmp_path: Path) -> None:
    """Calls that time out put their time to fail in create.p99 (a threshold on it fails);
    create.ok.p99 holds the successful ones alone, in the JSON and in the CSV."""
    slow = Faults(latency=0.4, endpoints={"create"})
    async with FakePolyAI(faults=slow) as fake:
        async with fake.client(
            retry=RetryPolicy(max_attempts=1), timeout=Timeouts(read=0.15)
        ) as client:
            result = await run_load_async(
                client,
                Load.closed(concurrency=4, conversations=8),
                ONE_TURN,
                thresholds=["create.p99<100ms", "create.ok.p99<100ms"],
                max_error_rate=1.0,
            )
    s = result.summary
    assert s["create_count"] == 8
    assert s["create_ok_count"] == 0
    assert s["create_p99_ms"] == pytest.approx(150, abs=40)  # the time it took to time out
    assert s["create_ok_p99_ms"] is None
    verdicts = {t["expression"]: t["passed"] for t in s["thresholds"]}
    assert verdicts == {"create.p99<100ms": False, "create.ok.p99<100ms": False}
    assert s["conversation_p99_ms"] is not None  # failed conversations ended too
    assert s["conversation_ok_p99_ms"] is None
    write_csv(result, tmp_path / "series.csv")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "series.csv").read_text())))
    assert {"create_p99_ms", "create_ok_p99_ms"} <= set(rows[0])
    assert any(row["create_p99_ms"] for row in rows)
    assert not any(row["create_ok_p99_ms"] for row in rows)


async def test_rates_divide_by_the_load_window_not_the_wall_time() -> None:
    """10 conversations/s for 1 s with a slow agent: 10/s over the 1 s window, the drain after
    it in the wall time only."""
    slow = Faults(latency=0.2)
    async with FakePolyAI(faults=slow) as fake:
        async with fake.client() as client:
            result = await run_load_async(
                client, Load.open(rate=10, duration=1, arrival="constant"), ONE_TURN
            )
    s = result.summary
    assert s["conversations_started"] == 10
    assert s["load_window_seconds"] == pytest.approx(1.0, abs=0.05)
    assert s["wall_seconds"] > s["load_window_seconds"] + 0.4  # create, respond, close: 0.6 s
    assert s["conversations_per_second"] == pytest.approx(10, rel=0.05)
    assert s["requests_per_second"] == pytest.approx(30, rel=0.05)


async def test_a_run_bound_by_a_count_divides_by_its_arrivals() -> None:
    """--rate 20 --conversations 10: the arrivals span 0.5 s (to where the next would come)."""
    async with FakePolyAI() as fake:
        async with fake.client() as client:
            result = await run_load_async(
                client, Load.open(rate=20, conversations=10, arrival="constant"), ONE_TURN
            )
    s = result.summary
    assert s["load_window_seconds"] == pytest.approx(0.5, abs=0.01)
    assert s["conversations_per_second"] == pytest.approx(20, rel=0.03)


async def test_max_in_flight_holds_when_the_generator_is_behind() -> None:
    """A loop stalled for 0.3 s makes 60 arrivals late, and the generator starts them back to
    back: each counts in flight from its scheduled start, so no more than --max-in-flight run,
    and the rest are dropped and counted."""
    async with FakePolyAI() as fake:
        async with fake.client() as client:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, time.sleep, 0.3)  # the generator falls behind its schedule
            result = await run_load_async(
                client,
                Load.open(rate=200, duration=0.5, arrival="constant", max_in_flight=5),
                ONE_TURN,
            )
    s = result.summary
    assert s["in_flight_max"] <= 5
    assert s["conversations_dropped"] >= 50
    assert s["conversations_started"] + s["conversations_dropped"] == 100
