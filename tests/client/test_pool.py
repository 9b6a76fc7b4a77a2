"""Pooled sessions against a real local server: reuse, limits, faults and clean shutdown."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings

import aiohttp
import pytest

from polyai_async import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    PolyAIClient,
    PoolLimits,
    ResponseValidationError,
    RetryPolicy,
    SessionPool,
)
from tests.conftest import CREDS, FAST_RETRY, ONCE
from tests.servers import RawServer


async def test_concurrent_calls_reuse_a_bounded_number_of_connections() -> None:
    """500 concurrent calls over one client open at most max_connections TCP connections."""
    async with RawServer() as server:
        limits = PoolLimits(max_connections=8)
        async with PolyAIClient(**CREDS, base_url=server.url, limits=limits) as client:
            await asyncio.gather(*(client.respond("C", f"m{i}") for i in range(500)))
            await asyncio.gather(*(client.respond("C", f"n{i}") for i in range(100)))
    assert server.requests == 600
    assert server.max_open_connections <= 8
    assert server.connections <= 8


async def test_sequential_calls_use_one_connection() -> None:
    """Calls one after another reuse the same keep-alive connection."""
    async with RawServer() as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            for i in range(20):
                await client.respond("C", f"m{i}")
    assert server.connections == 1


async def test_clients_share_a_pool_and_its_connections() -> None:
    """Two clients (other credentials) on one pool share its session and connections."""
    async with RawServer() as server, SessionPool() as pool:
        first = PolyAIClient(**CREDS, base_url=server.url, pool=pool)
        second = PolyAIClient(**{**CREDS, "api_key": "other"}, base_url=server.url, pool=pool)
        await first.respond("C", "a")
        await second.respond("C", "b")
        await first.aclose()
        assert not pool.closed  # a client given a pool does not close it
        await second.respond("C", "c")
        await second.aclose()
    assert server.connections == 1
    assert pool.closed


async def test_client_closes_the_pool_it_made() -> None:
    """A client that made its own pool closes it, releasing every connection."""
    async with RawServer() as server:
        client = PolyAIClient(**CREDS, base_url=server.url)
        await client.respond("C", "a")
        assert client.pool.open_connections() == 1
        await client.aclose()
        assert client.pool.closed
        assert client.pool.open_connections() == 0
        await asyncio.sleep(0.05)
        assert server.open_connections == 0


async def test_one_session_per_host() -> None:
    """Each host (region) gets its own session; the same host reuses one."""
    async with RawServer() as a, RawServer() as b, SessionPool() as pool:
        for url in (a.url, b.url, a.url):
            async with PolyAIClient(**CREDS, base_url=url, pool=pool) as client:
                await client.respond("C", "x")
        assert len(pool._hosts) == 2


@pytest.mark.parametrize("fault", ["reset", "close", "half"])
async def test_transport_faults_are_retried(fault: str) -> None:
    """A reset, a dead keep-alive connection and a body cut half-way are retried."""
    async with RawServer(["ok", fault]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=FAST_RETRY) as client:
            await client.respond("C", "first")  # leaves a pooled keep-alive connection
            assert (await client.respond("C", "second")).response == "hi"
    assert server.requests == 3


@pytest.mark.parametrize("fault", ["reset", "close", "half"])
async def test_transport_faults_surface_typed(fault: str) -> None:
    """With retries off, a transport fault raises APIConnectionError, never an aiohttp error."""
    async with RawServer([fault]) as server:
        async with PolyAIClient(
            **CREDS, base_url=server.url, retry=RetryPolicy(max_attempts=1)
        ) as client:
            with pytest.raises(APIConnectionError) as info:
                await client.respond("C", "x")
    assert info.value.request_sent is True
    # aiohttp's exception is not chained: its request_info holds the credentials.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


async def test_oversized_answer_is_cut_and_reported() -> None:
    """An answer larger than max_response_bytes is not read whole and says why."""
    async with RawServer(["big"]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, max_response_bytes=1000) as client:
            with pytest.raises(Exception, match="max_response_bytes=1000") as info:
                await client.respond("C", "x")
    assert len(getattr(info.value, "body", b"")) <= 1000


async def test_answer_of_unknown_length_is_read_whole() -> None:
    """An answer without Content-Length (ended by the connection closing) is read in full."""
    async with RawServer(["unsized"]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, max_response_bytes=1000) as client:
            reply = await client.respond("C", "x")
    assert reply.response == "hi"


async def test_oversized_answer_of_unknown_length_is_cut_and_reported() -> None:
    """Without Content-Length, reading stops at max_response_bytes and the call says why."""
    async with RawServer(["big-unsized"]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, max_response_bytes=1000) as client:
            with pytest.raises(ResponseValidationError, match="max_response_bytes=1000") as info:
                await client.respond("C", "x")
    assert len(info.value.body) <= 1000


async def test_call_on_closed_client_is_refused() -> None:
    """After aclose(), every call raises ClientClosedError without sending."""
    async with RawServer() as server:
        client = PolyAIClient(**CREDS, base_url=server.url)
        await client.aclose()
        with pytest.raises(ClientClosedError, match="closed"):
            await client.respond("C", "x")
        with pytest.raises(ClientClosedError):
            async with client:
                pass
    assert server.requests == 0


async def test_closing_during_calls_fails_them_cleanly() -> None:
    """Closing the client while calls hang fails them with ClientClosedError, none left pending."""
    async with RawServer(["hang"] * 5) as server:
        client = PolyAIClient(**CREDS, base_url=server.url)
        tasks = [asyncio.create_task(client.respond("C", "x")) for _ in range(5)]
        while server.requests < 5:
            await asyncio.sleep(0.01)
        await client.aclose()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
    assert all(isinstance(r, ClientClosedError) for r in results), results


async def test_unclosed_pool_warns_on_garbage_collection() -> None:
    """An unclosed pool warns with ResourceWarning when collected, doing no async work."""
    async with RawServer() as server:
        client = PolyAIClient(**CREDS, base_url=server.url)
        await client.respond("C", "x")
        session = client.pool.session(client._origin)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del client
            gc.collect()
        await session.close()  # tidy up what the test leaked on purpose
    assert any(
        issubclass(w.category, ResourceWarning) and "SessionPool" in str(w.message) for w in caught
    )


async def test_cancelled_calls_return_their_connections() -> None:
    """Cancelling calls in flight returns every connection; a later call works."""
    async with RawServer(["hang"] * 50) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            tasks = [asyncio.create_task(client.respond("C", "x")) for _ in range(50)]
            while server.requests < 50:
                await asyncio.sleep(0.01)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            # Cancelled mid-answer, those connections are closed rather than reused.
            assert client.pool.open_connections() == 0
            assert (await client.respond("C", "after")).response == "hi"
            assert client.pool.open_connections() == 1


async def test_trace_configs_and_connector_options_are_applied() -> None:
    """A pool's aiohttp TraceConfig sees every request; connector options reach the connector."""
    started: list[str] = []

    async def on_start(
        session: aiohttp.ClientSession, context: object, params: aiohttp.TraceRequestStartParams
    ) -> None:
        started.append(params.method)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with RawServer() as server:
        pool = SessionPool(trace_configs=[trace], connector_options={"use_dns_cache": False})
        async with pool, PolyAIClient(**CREDS, base_url=server.url, pool=pool) as client:
            await client.respond("C", "a")
            await client.respond("C", "b")
            connector = client.pool.session(client._origin).connector
            assert isinstance(connector, aiohttp.TCPConnector)
            assert connector.use_dns_cache is False
    assert started == ["POST", "POST"]


async def test_waiting_calls_are_served_in_arrival_order() -> None:
    """A call queued for a connection is not overtaken by a task that keeps re-using one."""
    async with RawServer() as server:
        limits = PoolLimits(max_connections=1)
        async with PolyAIClient(**CREDS, base_url=server.url, limits=limits) as client:
            done_by_busy = 0

            async def busy() -> None:
                nonlocal done_by_busy
                for _ in range(50):
                    await client.respond("C", "again")
                    done_by_busy += 1

            task = asyncio.create_task(busy())
            while done_by_busy < 3:
                await asyncio.sleep(0)
            before = done_by_busy
            await client.respond("C", "newcomer")
            overtaken = done_by_busy - before
            await task
    # In arrival order the newcomer waits for at most the call in flight and the one queued.
    assert overtaken <= 2, f"overtaken by {overtaken} calls"


async def test_no_free_connection_within_the_deadline() -> None:
    """A call that cannot get a connection in time fails as not sent, naming the limit."""
    async with (
        RawServer(["hang"]) as server,
        SessionPool(limits=PoolLimits(max_connections=1)) as pool,
    ):
        patient = PolyAIClient(**CREDS, base_url=server.url, pool=pool)
        hurried = PolyAIClient(
            **CREDS, base_url=server.url, pool=pool, retry=RetryPolicy(deadline=0.3)
        )
        hanging = asyncio.create_task(patient.respond("C", "first"))
        while server.requests < 1:
            await asyncio.sleep(0.01)
        with pytest.raises(APITimeoutError, match="no connection came free") as info:
            await hurried.respond("C", "second")
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging
    assert info.value.request_sent is False
    assert "all 1 were busy" in str(info.value)
    assert server.requests == 1


class ThreadedRawServer:
    """A RawServer on its own event loop in a thread, so that it outlives asyncio.run calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = RawServer()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RawServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self.loop).result(5)
        return self.server

    def __exit__(self, *exc: object) -> None:
        stop = self.server.__aexit__(None, None, None)
        asyncio.run_coroutine_threadsafe(stop, self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_client_works_under_a_second_asyncio_run() -> None:
    """6: a client used under one asyncio.run, then another, works in both; no raw error."""
    with ThreadedRawServer() as server:
        client = PolyAIClient(**CREDS, base_url=server.url, retry=ONCE)
        # The first loop's idle keep-alive connection is left open when that loop closes
        # (asyncio closes no transports); collecting it warns. That is the caller's leak.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            first = asyncio.run(client.respond("C", "one"))
            second = asyncio.run(client.respond("C", "two"))
            third = asyncio.run(client.respond("C", "three"))
            asyncio.run(client.aclose())
            gc.collect()
            gc.collect()
    assert first.response == second.response == third.response == "hi"
    assert server.requests == 3
