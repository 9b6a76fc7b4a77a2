"""Reliability: faults survived in the deadline, outages, cancellation, shutdown, no turn lost."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections import Counter
from typing import Any

import psutil
import pytest

from polyai_async import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    InternalServerError,
    PolyAIClient,
    PolyAIError,
    RespondChatResponse,
    ResponseValidationError,
    RetryPolicy,
    Timeouts,
)
from polyai_async.testing import EchoAgent, FakePolyAI, Faults
from tests.client.test_retry import refused_port
from tests.conftest import CREDS
from tests.servers import RawServer, Unaccepting

# How much later than its deadline a call may end: scheduling, not a second attempt.
MARGIN = 0.3


def policy(**overrides: Any) -> RetryPolicy:
    """Short, fast retries for fault tests."""
    options: dict[str, Any] = {"max_attempts": 4, "initial_backoff": 0.01, "max_backoff": 0.05}
    options.update(overrides)
    return RetryPolicy(**options)


@pytest.mark.parametrize(
    ("script", "wait", "at_least"),
    [
        (["500", "502", "503"], 0.0, 0.0),
        (["429-ms"], 0.3, 0.27),
        # An HTTP date has one-second resolution: the server names the first whole second at
        # least 0.3 s away, so the client waits 0.3 to 1.3 s.
        (["429-date"], 0.3, 0.27),
        (["reset"], 0.0, 0.0),
        (["half"], 0.0, 0.0),
        (["close"], 0.0, 0.0),
    ],
    ids=[
        "5xx-burst",
        "retry-after-ms",
        "retry-after-http-date",
        "reset",
        "reset-mid-body",
        "close",
    ],
)
async def test_fault_is_survived_within_the_deadline(
    script: list[str], wait: float, at_least: float
) -> None:
    """Each fault is retried into a success, waiting what the server asked, within the deadline."""
    deadline = 3.0
    async with RawServer(script) as server:
        server.wait = wait
        async with PolyAIClient(
            **CREDS, base_url=server.url, retry=policy(deadline=deadline)
        ) as client:
            started = time.monotonic()
            answer = await client.respond("C", "hi")
            elapsed = time.monotonic() - started
    assert answer.response == "hi"
    assert server.requests == len(script) + 1
    assert elapsed >= at_least
    assert elapsed < deadline + MARGIN
    if server.asked_until is not None:  # the retry came no earlier than the 429 asked
        assert server.arrived[-1] >= server.asked_until - 0.002
        assert server.asked_until - server.arrived[0] >= wait


async def test_dead_keepalive_connection_in_the_pool() -> None:
    """A pooled connection the server closed while idle does not fail the next call."""
    async with RawServer(["ok-close"]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=policy()) as client:
            await client.respond("C", "first")
            await asyncio.sleep(0.1)  # the server has closed it by now
            assert (await client.respond("C", "second")).response == "hi"
    assert server.connections == 2


async def test_server_that_never_answers() -> None:
    """A server that accepts and never answers times out, and the deadline holds."""
    deadline = 0.4
    # Ten attempts of 0.15 s would take 1.5 s: only the deadline ends it at 0.4.
    async with RawServer(["hang"] * 10) as server:
        async with PolyAIClient(
            **CREDS,
            base_url=server.url,
            retry=policy(deadline=deadline, max_attempts=10),
            timeout=Timeouts(connect=1, read=0.15),
        ) as client:
            started = time.monotonic()
            with pytest.raises(APITimeoutError) as info:
                await client.respond("C", "hi")
            elapsed = time.monotonic() - started
    assert info.value.attempts >= 2
    assert elapsed < deadline + MARGIN


async def test_server_that_never_accepts() -> None:
    """A connection that cannot be made times out as request_sent=False, within the deadline."""
    deadline = 2.0
    with Unaccepting() as server:
        async with PolyAIClient(
            **CREDS,
            base_url=server.url,
            retry=policy(deadline=deadline, max_attempts=3),
            timeout=Timeouts(connect=0.1, read=5),
        ) as client:
            started = time.monotonic()
            with pytest.raises(APITimeoutError, match="connecting") as info:
                await client.respond("C", "hi")
            elapsed = time.monotonic() - started
    assert info.value.request_sent is False
    assert info.value.attempts == 3
    assert elapsed < deadline


async def test_refused_port_within_the_deadline() -> None:
    """A refused port fails fast with every attempt made, far inside the deadline."""
    url = f"http://127.0.0.1:{refused_port()}"
    async with PolyAIClient(**CREDS, base_url=url, retry=policy(deadline=2)) as client:
        started = time.monotonic()
        with pytest.raises(APIConnectionError, match="could not connect") as info:
            await client.respond("C", "hi")
    assert info.value.attempts == 4
    assert time.monotonic() - started < 2


async def test_oversized_body_is_refused_not_retried() -> None:
    """A body over max_response_bytes fails at once, says so, and is not retried."""
    async with RawServer(["big"]) as server:
        async with PolyAIClient(
            **CREDS, base_url=server.url, retry=policy(), max_response_bytes=64 * 1024
        ) as client:
            with pytest.raises(ResponseValidationError, match="max_response_bytes=65536"):
                await client.respond("C", "hi")
    assert server.requests == 1


async def test_outage_is_bounded_by_the_budget_and_recovers() -> None:
    """During an outage the budget caps retries; afterwards the same client serves normally."""
    async with FakePolyAI(agent=EchoAgent()) as fake:
        async with fake.client(retry=policy(max_attempts=3, retry_budget=50)) as client:
            conversation = (await client.create_chat()).conversation_id
            fake.faults = Faults(error_rate=1.0, error_status=503, endpoints={"respond"})
            outcomes = await asyncio.gather(
                *(client.respond(conversation, f"m{i}") for i in range(100)),
                return_exceptions=True,
            )
            assert all(isinstance(o, InternalServerError) for o in outcomes)
            # 100 first attempts, and at most 50 / 5 = 10 retries paid for by the budget.
            assert fake.requests["respond"] <= 110
            fake.faults = Faults()
            before = fake.requests["respond"]
            answers = await asyncio.gather(
                *(client.respond(conversation, f"n{i}") for i in range(50))
            )
    assert [a.response for a in answers] == [f"n{i}" for i in range(50)]
    assert fake.requests["respond"] - before == 50  # no retries needed: no poisoned pool


async def test_cancelling_thousands_returns_every_connection() -> None:
    """Cancelling 2,000 calls in flight releases every connection, and a later call works."""
    async with FakePolyAI(agent=EchoAgent()) as fake:
        async with fake.client() as client:
            conversation = (await client.create_chat()).conversation_id
            idle = client.pool.open_connections()
            fake.faults = Faults(latency=30)
            tasks = [
                asyncio.create_task(client.respond(conversation, f"m{i}")) for i in range(2000)
            ]
            while fake.stats.open_connections < 100:
                await asyncio.sleep(0.01)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            assert client.pool.open_connections() <= idle
            fake.faults = Faults()
            assert (await client.respond(conversation, "after")).response == "after"
        for _ in range(100):
            if fake.stats.open_connections == 0:
                break
            await asyncio.sleep(0.02)
        assert fake.stats.open_connections == 0


async def test_shutdown_with_calls_in_flight() -> None:
    """Closing the client mid-flight fails every call with ClientClosedError and leaves no task."""
    async with FakePolyAI(agent=EchoAgent()) as fake:
        client = fake.client()
        conversation = (await client.create_chat()).conversation_id
        fake.faults = Faults(latency=30)
        tasks = [asyncio.create_task(client.respond(conversation, f"m{i}")) for i in range(300)]
        while fake.stats.open_connections < 100:
            await asyncio.sleep(0.01)
        await client.aclose()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        assert all(isinstance(r, ClientClosedError) for r in results), Counter(map(type, results))
        assert all("closed" in str(r) for r in results)
        # The fake's handlers outlive their requests (aiohttp does not cancel a handler
        # whose client hung up), so only the client's side is checked: no task of ours is left.
        pending = [
            t
            for t in asyncio.all_tasks()
            if t is not asyncio.current_task()
            and "RequestHandler" not in getattr(t.get_coro(), "__qualname__", "")
        ]
    assert pending == []


async def test_a_fake_stops_at_once_when_its_handlers_only_wait_out_latency() -> None:
    """Stopping a fake cancels handlers sleeping through injected latency (a client that hung
    up, and two still waiting, which see the connection close) well inside aiohttp's 1 s
    grace, and leaves none behind; a handler an async agent is busy in still answers."""

    async def slow_agent(message: str | None, state: object) -> str:
        await asyncio.sleep(0.3)
        return f"slow {message}"

    fake = FakePolyAI(agent=slow_agent)
    await fake.start()
    async with fake.client(retry=policy(max_attempts=1)) as client:
        conversation = (await client.create_chat()).conversation_id
        fake.faults = Faults(latency=30, endpoints={"create"})
        waiting = [asyncio.create_task(client.create_chat()) for _ in range(3)]
        busy = asyncio.create_task(client.respond(conversation, "hi"))
        while fake.stats.faults["latency"] < 3 or not fake.turns[conversation]:
            await asyncio.sleep(0.01)
        waiting[0].cancel()  # this client hangs up; aiohttp keeps its handler sleeping
        with contextlib.suppress(asyncio.CancelledError):
            await waiting[0]
        started = time.monotonic()
        await fake.aclose()
        stopped = time.monotonic() - started
        outcomes = await asyncio.wait_for(
            asyncio.gather(*waiting[1:], busy, return_exceptions=True), 5
        )
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert all(isinstance(o, APIConnectionError) for o in outcomes[:2]), outcomes
    assert isinstance(outcomes[2], RespondChatResponse)
    assert outcomes[2].response == "slow hi"
    # The agent's 0.3 s (less what passed before the stop) is all the stop waited for.
    assert stopped < 0.6
    assert left == []


async def soak(
    conversations: int, turns: int, *, retry_ambiguous: bool, seed: int
) -> dict[str, int]:
    """Drive conversations through injected faults; check every turn against the server.

    Returns the soak's figures. Asserts, per turn: a reply means the server recorded it; an
    error is a PolyAIError, and if the server recorded the turn anyway the error says the
    request may have been processed.
    """
    faults = Faults(error_rate=0.03, reset_rate=0.02, after_processing=True)
    async with FakePolyAI(agent=EchoAgent(), faults=faults, seed=seed) as fake:
        retry = policy(retry_ambiguous=retry_ambiguous, deadline=10, retry_budget=None)
        async with fake.client(retry=retry) as client:
            outcomes: dict[tuple[str, str], object] = {}

            async def converse(index: int) -> None:
                try:
                    created = await client.create_chat()
                except PolyAIError:
                    return
                for turn in range(turns):
                    message = f"c{index}-t{turn}"
                    try:
                        outcomes[created.conversation_id, message] = await client.respond(
                            created.conversation_id, message
                        )
                    except PolyAIError as error:
                        outcomes[created.conversation_id, message] = error

            await asyncio.gather(*(converse(i) for i in range(conversations)))
        recorded = {cid: Counter(messages) for cid, messages in fake.turns.items()}
        figures = Counter[str]()
        for (cid, message), outcome in outcomes.items():
            times = recorded[cid][message]
            figures["turns"] += 1
            figures["duplicated"] += max(0, times - 1)
            if isinstance(outcome, PolyAIError):
                figures["failed"] += 1
                if times:
                    figures["failed_but_recorded"] += 1
                    assert isinstance(outcome, APIConnectionError | APIStatusError)
                    ambiguous = getattr(outcome, "request_sent", True)
                    assert ambiguous, f"{message}: recorded, but the error said it was not sent"
            else:
                figures["replied"] += 1
                assert times >= 1, f"{message}: the caller got a reply the server never recorded"
                figures["lost"] += 0
        figures["faults"] = sum(fake.stats.faults.values())
        figures["conversations"] = len(fake.conversations)
    return dict(figures)


async def test_soak_loses_no_turn() -> None:
    """Under 5% faults every turn ends in a reply or a typed error, and the counts agree."""
    figures = await soak(300, 5, retry_ambiguous=True, seed=7)
    assert figures["turns"] == figures["replied"] + figures.get("failed", 0)
    assert figures["faults"] > 50
    assert figures["replied"] >= figures["turns"] * 0.99


async def test_soak_without_ambiguous_retries_never_duplicates() -> None:
    """With retry_ambiguous=False no turn is recorded twice; ambiguous failures surface instead."""
    figures = await soak(300, 5, retry_ambiguous=False, seed=7)
    assert figures.get("duplicated", 0) == 0
    assert figures["failed"] > 0


async def test_memory_returns_after_soaks(caplog: pytest.LogCaptureFixture) -> None:
    """After repeated soaks the interpreter holds no more objects, nor RSS, than before:
    nothing leaks per request."""
    # pytest keeps every log record of a test: the retries' warnings would show as growth.
    caplog.set_level(logging.ERROR, logger="polyai_async")
    process = psutil.Process()
    await soak(100, 5, retry_ambiguous=True, seed=1)  # warm caches, pools and allocators
    gc.collect()
    baseline = process.memory_info().rss
    blocks = sys.getallocatedblocks()
    for seed in range(2, 4):
        await soak(100, 5, retry_ambiguous=True, seed=seed)
    gc.collect()
    grown = process.memory_info().rss - baseline
    grown_blocks = sys.getallocatedblocks() - blocks
    # 2 soaks of 600 calls: one object kept per call, whatever its size, adds 1,200 blocks
    # (1,000 if only per respond); what warm caches leave is under 150.
    assert grown_blocks < 450, f"{grown_blocks} more memory blocks allocated"
    # RSS also sees what C code allocates, but it is coarse (freed heap is reused).
    assert grown < 3 * 1024 * 1024, f"RSS grew {grown / 1024:.0f} KiB"
