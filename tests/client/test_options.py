"""client.with_options(): per-call settings over the original's pool, credentials and budget."""

from __future__ import annotations

import asyncio

import pytest

from polyai_async import (
    APITimeoutError,
    ClientClosedError,
    ConfigurationError,
    InternalServerError,
    PolyAIClient,
    ResponseValidationError,
    RetryPolicy,
    Timeouts,
)
from polyai_async.testing import FakePolyAI, Faults
from tests.conftest import FAST_RETRY


@pytest.mark.polyai(faults=Faults(latency=0.3))
async def test_a_tighter_timeout_applies_to_calls_through_it(polyai_fake: FakePolyAI) -> None:
    """A call through with_options(timeout=...) times out; the original's same call works."""
    async with polyai_fake.client(retry=RetryPolicy(max_attempts=1)) as client:
        fast = client.with_options(timeout=0.1)
        assert fast.timeouts == Timeouts(connect=0.1, read=0.1)
        with pytest.raises(APITimeoutError):
            await fast.create_chat()
        created = await client.create_chat()
        assert created.conversation_id
        assert client.timeouts == Timeouts()


async def test_retry_and_max_response_bytes_apply_only_through_it(
    polyai_fake: FakePolyAI,
) -> None:
    """with_options(retry=..., max_response_bytes=...) changes those calls and nothing else."""
    async with polyai_fake.client(retry=FAST_RETRY) as client:
        once = client.with_options(retry=RetryPolicy(max_attempts=1))
        polyai_fake.faults = Faults(script=("503",))
        with pytest.raises(InternalServerError):
            await once.create_chat()
        polyai_fake.faults = Faults(script=("503",))
        assert (await client.create_chat()).conversation_id  # retried by the original
        tiny = client.with_options(max_response_bytes=10)
        with pytest.raises(ResponseValidationError, match="max_response_bytes=10"):
            await tiny.create_chat()
        assert client.max_response_bytes == 1024 * 1024


async def test_it_shares_pool_credentials_and_budget(polyai_fake: FakePolyAI) -> None:
    """The derived client uses the same pool and session, and spends the same retry budget."""
    async with polyai_fake.client(retry=FAST_RETRY) as client:
        await client.create_chat()
        session = client.pool.session(client.base_url.origin())
        derived = client.with_options(retry=RetryPolicy(initial_backoff=0, max_backoff=0))
        assert derived.pool is client.pool
        polyai_fake.faults = Faults(script=("503",))
        before = client.retry_budget
        assert before is not None
        await derived.create_chat()  # one retry through the derived client
        assert client.retry_budget == derived.retry_budget == before - 5 + 1
        assert derived.pool.session(client.base_url.origin()) is session
        assert client.pool.open_connections() >= 1
        assert polyai_fake.requests["create"] == 3  # the credentials worked through both


async def test_closing_it_leaves_the_original_open(polyai_fake: FakePolyAI) -> None:
    """Closing the derived client fails its calls only; the original and its pool go on."""
    async with polyai_fake.client() as client:
        async with client.with_options(timeout=5) as derived:
            await derived.create_chat()
        assert derived.closed
        with pytest.raises(ClientClosedError):
            await derived.create_chat()
        assert not client.closed
        assert not client.pool.closed
        assert (await client.create_chat()).conversation_id


async def test_closing_the_original_closes_what_it_made(polyai_fake: FakePolyAI) -> None:
    """After the original is closed, a client it made fails with ClientClosedError."""
    client = polyai_fake.client()
    derived = client.with_options(timeout=5)
    await derived.create_chat()
    await client.aclose()
    assert derived.closed
    with pytest.raises(ClientClosedError):
        await derived.create_chat()
    with pytest.raises(ClientClosedError):
        client.with_options(timeout=1)


async def test_it_is_cheap_enough_per_call(polyai_fake: FakePolyAI) -> None:
    """Per-call use makes no session and no converter: 200 calls through fresh derived clients."""
    async with polyai_fake.client() as client:
        created = await client.create_chat()
        sessions = {id(h.session) for h in client.pool._hosts.values()}
        replies = await asyncio.gather(
            *(
                client.with_options(timeout=10).respond(created.conversation_id, f"m{i}")
                for i in range(200)
            )
        )
        assert len(replies) == 200
        assert {id(h.session) for h in client.pool._hosts.values()} == sessions
        derived = client.with_options(timeout=10)
        assert derived._respond is client._respond  # the endpoint and its structure function


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": 3}, "retry must be a RetryPolicy"),
        ({"timeout": "fast"}, "timeout must be a finite number of seconds"),
        ({"max_response_bytes": 0}, "max_response_bytes must be at least 1"),
        ({"max_response_bytes": 1.5}, "max_response_bytes must be a whole number"),
    ],
)
async def test_bad_options_are_refused(
    polyai_client: PolyAIClient, options: dict[str, object], message: str
) -> None:
    """A wrong option is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=message):
        polyai_client.with_options(**options)  # type: ignore[arg-type]
