"""The hot path's parts: the attempt timer, the connection gate, the short way through aiohttp."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import pytest

from polyai_async import APITimeoutError, PolyAIClient, PoolLimits, RetryPolicy, SessionPool
from polyai_async._gate import Gate
from polyai_async.testing import FakePolyAI, Faults
from tests.recording_server import RecordingServer

ONCE = RetryPolicy(max_attempts=1)


@pytest.mark.polyai(faults=Faults(latency=0.5))
async def test_the_attempt_timer_is_a_timeout(polyai_fake: FakePolyAI) -> None:
    """An answer slower than Timeouts.read is an APITimeoutError, and the task is not cancelled."""
    async with polyai_fake.client(timeout=0.1, retry=ONCE) as client:
        with pytest.raises(APITimeoutError, match="timed out waiting for the answer"):
            await client.create_chat()
        task = asyncio.current_task()
        assert task is not None
        if sys.version_info >= (3, 11):
            assert task.cancelling() == 0
        await asyncio.sleep(0)  # no cancellation left pending for the next await


@pytest.mark.polyai(faults=Faults(latency=0.5))
async def test_the_callers_cancellation_stays_a_cancellation(polyai_fake: FakePolyAI) -> None:
    """Cancelling a call in flight raises CancelledError, never a timeout, and the client works."""
    async with polyai_fake.client(retry=ONCE) as client:
        call = asyncio.create_task(client.create_chat())
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        polyai_fake.faults = Faults()
        assert (await client.create_chat()).conversation_id


@pytest.mark.polyai(faults=Faults(latency=0.5))
async def test_the_callers_own_timeout_is_the_callers(polyai_fake: FakePolyAI) -> None:
    """A caller's timeout shorter than the attempt's raises the caller's TimeoutError."""
    async with polyai_fake.client(retry=ONCE) as client:
        with pytest.raises(asyncio.TimeoutError) as raised:
            await asyncio.wait_for(client.create_chat(), 0.1)
        assert not isinstance(raised.value, APITimeoutError)


@pytest.mark.polyai(faults=Faults(latency=0.3))
async def test_a_cancelled_waiter_does_not_lose_a_connection(polyai_fake: FakePolyAI) -> None:
    """With one connection, a waiter cancelled at the gate leaves the next one to be served."""
    async with polyai_fake.client(limits=PoolLimits(max_connections=1), retry=ONCE) as client:
        first = asyncio.create_task(client.create_chat())
        await asyncio.sleep(0.05)
        second = asyncio.create_task(client.create_chat())
        third = asyncio.create_task(client.create_chat())
        await asyncio.sleep(0.05)
        second.cancel()
        await asyncio.wait_for(asyncio.gather(first, third), 5)
        assert second.cancelled()


async def test_a_slot_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    """A waiter cancelled after it was handed the slot, before it ran, passes it to the next."""
    gate = Gate(1)
    assert gate.try_acquire()
    handed = asyncio.create_task(gate.acquire())
    nxt = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # hands the slot to `handed`...
    handed.cancel()  # ... which is cancelled before it runs
    await asyncio.wait_for(nxt, 1)  # the slot went on to the next waiter
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert not gate.try_acquire()  # exactly one slot, held by `nxt`
    gate.release()
    assert gate.try_acquire()


async def test_the_gate_serves_in_arrival_order() -> None:
    """Waiters get the slot in the order they came, even when a releaser asks again at once."""
    gate = Gate(1)
    assert gate.try_acquire()
    order: list[int] = []

    async def wait(index: int) -> None:
        await gate.acquire()
        order.append(index)
        gate.release()

    waiters = [asyncio.create_task(wait(i)) for i in range(5)]
    await asyncio.sleep(0)
    gate.release()
    assert not gate.try_acquire()  # the releaser cannot take the slot back past the queue
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2, 3, 4]


async def test_the_wire_sends_the_same_request() -> None:
    """A request on the client's own connections carries exactly aiohttp's headers."""
    async with RecordingServer() as server:
        async with PolyAIClient(**server.client_options()) as short:
            await short.create_chat()
            assert short._host is not None
            assert short._host.wire is not None
        # Trace configs need aiohttp's general path (ClientSession.request).
        async with SessionPool(trace_configs=[aiohttp.TraceConfig()]) as pool:
            async with PolyAIClient(**server.client_options(), pool=pool) as general:
                await general.create_chat()
                assert general._host is not None
                assert general._host.wire is None
    direct, through_session = server.header_lines
    assert sorted(direct) == sorted(through_session)
    assert server.paths[0] == server.paths[1]
