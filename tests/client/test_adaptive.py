"""Adaptive concurrency: the cap on calls in flight, how it moves, and the client-wide pause."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from polyai_async import (
    AdaptiveConcurrency,
    APITimeoutError,
    CallEvent,
    ConfigurationError,
    PolyAIClient,
    PolyAIError,
    RateLimitError,
    RetryPolicy,
)
from polyai_async._adaptive import Limiter
from polyai_async._gate import Gate
from polyai_async.testing import FakePolyAI, Faults
from tests.client.test_telemetry import Telemetry
from tests.conftest import CREDS
from tests.servers import RawServer

# Enough attempts for every conversation to complete, with or without the cap.
PATIENT = RetryPolicy(max_attempts=100, deadline=60, retry_budget=None)
ONCE = RetryPolicy(max_attempts=1)


async def run_conversations(client: PolyAIClient, n: int) -> list[BaseException | None]:
    async def one() -> None:
        async with client.conversation() as chat:
            await chat.send("hi")

    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


async def rate_limited_share(fake: FakePolyAI, **options: Any) -> tuple[float, int]:
    """Run 60 conversations through a new client; the share of 429s and the completed count."""
    answers: list[int | None] = []
    hooks = {"answer_received": [lambda event: answers.append(event.status)]}
    async with fake.client(retry=PATIENT, event_hooks=hooks, **options) as client:
        results = await run_conversations(client, 60)
    return answers.count(429) / len(answers), results.count(None)


# Retry-After: 0, so that the run is short; the pause is tested on its own below.
@pytest.mark.polyai(faults=Faults(concurrency_limit=8, latency=0.02, retry_after=0))
async def test_adaptive_concurrency_cuts_the_429s_of_an_8_slot_api(
    polyai_fake: FakePolyAI,
) -> None:
    """Against an API that admits 8 calls, the cap cuts the 429s and every conversation ends."""
    adaptive, adaptive_completed = await rate_limited_share(polyai_fake, adaptive_concurrency=True)
    without, without_completed = await rate_limited_share(polyai_fake)
    assert adaptive_completed == without_completed == 60
    assert without > 0.3
    assert adaptive < 0.1
    assert adaptive < without / 5


async def test_the_cap_starts_small_and_grows_while_calls_succeed(
    polyai_fake: FakePolyAI,
) -> None:
    """Slow start: from initial_limit, the cap grows as calls using it succeed."""
    config = AdaptiveConcurrency(initial_limit=2, max_limit=50)
    caps: list[int | None] = []
    hooks = {"request_sent": [lambda event: caps.append(event.concurrency_limit)]}
    async with polyai_fake.client(adaptive_concurrency=config, event_hooks=hooks) as client:
        assert client.concurrency_limit == 2
        await asyncio.gather(*(client.create_chat() for _ in range(40)))
        assert client.concurrency_limit is not None
        assert client.concurrency_limit > 8
    assert caps[0] == 2
    assert polyai_fake.stats.max_in_flight <= client.concurrency_limit


async def test_an_idle_client_does_not_grow_its_cap(polyai_fake: FakePolyAI) -> None:
    """Calls one at a time use a fraction of the cap: it stays where it was."""
    async with polyai_fake.client(adaptive_concurrency=True) as client:
        for _ in range(10):
            await client.create_chat()
        assert client.concurrency_limit == AdaptiveConcurrency().initial_limit


@pytest.mark.parametrize("fault", ["429", "503"])
async def test_an_overload_halves_the_cap(polyai_fake: FakePolyAI, fault: str) -> None:
    """A 429 or a 503 multiplies the cap by decrease_ratio."""
    polyai_fake.faults = Faults(script=[fault], retry_after=0)
    config = AdaptiveConcurrency(initial_limit=8)
    async with polyai_fake.client(adaptive_concurrency=config, retry=ONCE) as client:
        with pytest.raises(PolyAIError):
            await client.create_chat()
        assert client.concurrency_limit == 4


async def test_overloads_of_calls_started_together_decrease_once(polyai_fake: FakePolyAI) -> None:
    """Eight 429s to calls that were in flight together are one congestion: one decrease."""
    polyai_fake.faults = Faults(script=["429"] * 8, retry_after=0)
    config = AdaptiveConcurrency(initial_limit=8)
    async with polyai_fake.client(adaptive_concurrency=config, retry=ONCE) as client:
        await asyncio.gather(*(client.create_chat() for _ in range(8)), return_exceptions=True)
        assert client.concurrency_limit == 4


async def test_a_timeout_decreases_the_cap(polyai_fake: FakePolyAI) -> None:
    """An attempt that timed out waiting for its answer counts as an overload."""
    polyai_fake.faults = Faults(latency=0.5)
    config = AdaptiveConcurrency(initial_limit=8)
    async with polyai_fake.client(adaptive_concurrency=config, retry=ONCE, timeout=0.05) as client:
        with pytest.raises(APITimeoutError):
            await client.create_chat()
        assert client.concurrency_limit == 4


async def test_the_cap_never_goes_below_min_limit(polyai_fake: FakePolyAI) -> None:
    """Repeated overloads stop at min_limit."""
    polyai_fake.faults = Faults(script=["503"] * 5, retry_after=0)
    config = AdaptiveConcurrency(initial_limit=8, min_limit=3)
    async with polyai_fake.client(adaptive_concurrency=config, retry=ONCE) as client:
        for _ in range(5):
            with pytest.raises(PolyAIError):
                await client.create_chat()
        assert client.concurrency_limit == 3


@pytest.mark.parametrize("adaptive", [True, False])
async def test_retry_after_pauses_every_new_call(adaptive: bool) -> None:
    """With the cap, a 429's Retry-After holds back the client's next call, not only its own."""
    loop = asyncio.get_running_loop()
    async with RawServer(["429ms=300", "ok"]) as server:
        options: dict[str, Any] = {"base_url": server.url, "retry": ONCE}
        async with PolyAIClient(**CREDS, **options, adaptive_concurrency=adaptive) as client:
            with pytest.raises(RateLimitError):
                await client.create_chat()
            started = loop.time()
            await client.create_chat()  # another call, which got no 429
            waited = loop.time() - started
    assert (waited >= 0.25) is adaptive


async def test_calls_wait_for_a_slot_in_arrival_order(polyai_fake: FakePolyAI) -> None:
    """With one slot, calls reach the API in the order they were made."""
    sent: list[str | None] = []
    hooks = {"request_sent": [lambda event: sent.append(event.conversation_id)]}
    config = AdaptiveConcurrency(initial_limit=1, max_limit=1)
    async with polyai_fake.client(adaptive_concurrency=config, event_hooks=hooks) as client:
        ids = [(await client.create_chat()).conversation_id for _ in range(6)]
        sent.clear()
        polyai_fake.faults = Faults(latency=0.01)
        await asyncio.gather(*(client.respond(cid, "hi") for cid in ids))
    assert sent == ids
    assert polyai_fake.stats.max_in_flight == 1


async def test_the_wait_for_a_slot_is_bounded_by_the_calls_deadline(
    polyai_fake: FakePolyAI,
) -> None:
    """A call that finds no slot before its deadline fails, sending nothing; the slot is kept."""
    polyai_fake.faults = Faults(latency=0.5)
    config = AdaptiveConcurrency(initial_limit=1, max_limit=1)
    async with polyai_fake.client(adaptive_concurrency=config) as client:
        slow = asyncio.create_task(client.create_chat())
        await asyncio.sleep(0.05)
        hasty = client.with_options(retry=RetryPolicy(deadline=0.1, max_attempts=1))
        with pytest.raises(APITimeoutError, match="adaptive concurrency") as caught:
            await hasty.create_chat()
        assert caught.value.request_sent is False
        await slow
        assert polyai_fake.stats.requests["create"] == 1
        assert client._limiter is not None
        assert client._limiter.in_flight == 0


async def test_a_call_cancelled_while_waiting_gives_its_place_back(
    polyai_fake: FakePolyAI,
) -> None:
    """Cancelling a waiting call leaves the cap whole: the next calls still get slots."""
    polyai_fake.faults = Faults(latency=0.1)
    config = AdaptiveConcurrency(initial_limit=1, max_limit=1)
    async with polyai_fake.client(adaptive_concurrency=config) as client:
        first = asyncio.create_task(client.create_chat())
        waiting = asyncio.create_task(client.create_chat())
        await asyncio.sleep(0.02)
        waiting.cancel()
        await first
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.wait_for(client.create_chat(), 1)
        assert client._limiter is not None
        assert client._limiter.in_flight == 0


async def test_the_cap_is_in_the_events_and_the_telemetry(polyai_fake: FakePolyAI) -> None:
    """Every event carries the cap; telemetry records it as the concurrency.limit gauge."""
    events: list[CallEvent] = []
    otel = Telemetry()
    options = otel.options(
        adaptive_concurrency=AdaptiveConcurrency(initial_limit=3),
        event_hooks={"answer_received": [events.append]},
    )
    try:
        async with polyai_fake.client(**options) as client:
            await client.create_chat()
        points = otel.points("polyai.client.concurrency.limit")
    finally:
        otel.tracer_provider.shutdown()
        otel.meter_provider.shutdown()
    assert [e.concurrency_limit for e in events] == [3]
    assert [p.value for p in points] == [3]


async def test_without_it_there_is_no_cap(polyai_fake: FakePolyAI) -> None:
    """Off by default: no cap on the client, none in the events."""
    events: list[CallEvent] = []
    async with polyai_fake.client(event_hooks={"answer_received": [events.append]}) as client:
        await client.create_chat()
        assert client.concurrency_limit is None
        assert client.adaptive_concurrency is None
    assert events[0].concurrency_limit is None


def test_after_an_overshoot_the_cap_holds_below_where_the_api_said_no() -> None:
    """Slow start crossed the API's limit by 8: eight 429s put the cap at 8, and it grows slowly."""

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        limiter = Limiter(AdaptiveConcurrency(initial_limit=16), max_pause=60)
        tickets = [limiter.admit(loop) for _ in range(16)]
        refused = RateLimitError("429", status=429)  # no Retry-After: no pause, no hold
        for ticket in tickets[:8]:  # the eight calls past the API's limit of 8
            assert ticket is not None
            limiter.release(ticket, refused)
        assert limiter.limit == 8
        held = [t for t in tickets[8:] if t is not None]
        for _ in range(40):  # calls keep every slot busy and succeed
            limiter.release(held.pop(0), None)
            ticket = limiter.admit(loop)
            assert ticket is not None
            held.append(ticket)
        return limiter.limit

    assert asyncio.run(scenario()) == 8


def test_a_slot_given_back_unused_does_not_move_the_cap() -> None:
    """A slot admitted as the deadline came is returned unused: no growth, unlike a success."""

    async def scenario() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        limiter = Limiter(AdaptiveConcurrency(initial_limit=2), max_pause=60)
        first, second = limiter.admit(loop), limiter.admit(loop)
        assert first is not None
        assert second is not None
        limiter.release(first, None, neutral=True)
        unused = limiter.limit
        limiter.release(second, None)
        return unused, limiter.limit

    assert asyncio.run(scenario()) == (2, 3)


def test_the_gate_shrinks_below_its_use_and_grows_in_arrival_order() -> None:
    """Shrunk, the gate takes back the slots in use as they come back; grown, it lets waiters in."""

    async def scenario() -> list[int]:
        gate = Gate(3)
        for _ in range(3):
            assert gate.try_acquire()
        gate.resize(1)
        assert gate.in_use == 3
        admitted: list[int] = []

        async def wait(n: int) -> None:
            await gate.acquire()
            admitted.append(n)

        tasks = [asyncio.create_task(wait(n)) for n in range(3)]
        await asyncio.sleep(0)
        gate.release()
        gate.release()  # the two owed slots: nobody is let in
        await asyncio.sleep(0)
        assert admitted == []
        gate.resize(3)  # two more: the two longest waiters
        await asyncio.sleep(0)
        assert admitted == [0, 1]
        gate.release()  # the last of the first three: the third waiter
        await asyncio.gather(*tasks)
        return admitted

    assert asyncio.run(scenario()) == [0, 1, 2]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"initial_limit": 0}, "initial_limit"),
        ({"initial_limit": 2.5}, "initial_limit"),
        ({"min_limit": True}, "min_limit"),
        ({"max_limit": -1}, "max_limit"),
        ({"increase": 0}, "increase"),
        ({"increase": float("inf")}, "increase"),
        ({"decrease_ratio": 1}, "decrease_ratio"),
        ({"decrease_ratio": 0}, "decrease_ratio"),
        ({"decrease_ratio": "half"}, "decrease_ratio"),
        ({"overload_statuses": 429}, "overload_statuses"),
        ({"overload_statuses": {200}}, "overload_statuses"),
        ({"initial_limit": 10, "max_limit": 5}, "initial_limit <= max_limit"),
        ({"initial_limit": 2, "min_limit": 3}, "min_limit <= initial_limit"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(fields: dict[str, Any], named: str) -> None:
    """Every field of AdaptiveConcurrency is checked; the error names it."""
    with pytest.raises(ConfigurationError, match=named):
        AdaptiveConcurrency(**fields)


@pytest.mark.parametrize("value", ["yes", 1, {"initial_limit": 2}])
def test_the_client_refuses_a_bad_adaptive_concurrency(value: object) -> None:
    """adaptive_concurrency takes True, False or an AdaptiveConcurrency."""
    with pytest.raises(ConfigurationError, match="adaptive_concurrency must be"):
        PolyAIClient(
            api_key="k",
            token="t",
            account_id="a",
            project_id="p",
            adaptive_concurrency=value,  # type: ignore[arg-type]
        )
