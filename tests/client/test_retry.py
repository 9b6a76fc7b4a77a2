"""The retry rules: what is retried, the backoff, Retry-After, the deadline and the budget."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import time

import aiohttp
import pytest
from aioresponses import aioresponses

from polyai_async import (
    APIConnectionError,
    APITimeoutError,
    InternalServerError,
    PolyAIClient,
    RateLimitError,
    RetryPolicy,
)
from polyai_async._errors import parse_retry_after as retry_after
from tests.conftest import BASE, CREDS, FAST_RETRY, ONCE
from tests.servers import RawServer

OK = {"conversation_id": "C", "response": "ok", "end_conversation": False}


def count(mocked: aioresponses) -> int:
    """How many requests aioresponses saw."""
    return sum(len(calls) for calls in mocked.requests.values())


async def test_5xx_then_success(client: PolyAIClient, mocked: aioresponses) -> None:
    """A 500 and a 502 are retried, and the third attempt's answer is returned."""
    mocked.post(f"{BASE}/respond", status=500, payload={"error_message": "x"})
    mocked.post(f"{BASE}/respond", status=502, payload={"error_message": "y"})
    mocked.post(f"{BASE}/respond", payload=OK)
    assert (await client.respond("C", "hi")).response == "ok"
    assert count(mocked) == 3


async def test_exhaustion_raises_last_error_with_attempts(
    client: PolyAIClient, mocked: aioresponses
) -> None:
    """After max_attempts failures the last typed error is raised, carrying the attempt count."""
    for status in (500, 503, 504):
        mocked.post(f"{BASE}/respond", status=status, payload={"error_message": f"e{status}"})
    with pytest.raises(InternalServerError) as info:
        await client.respond("C", "hi")
    assert info.value.status == 504
    assert info.value.attempts == 3
    assert "after 3 attempts" in str(info.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_other_4xx_not_retried(
    client: PolyAIClient, mocked: aioresponses, status: int
) -> None:
    """A 4xx other than 429 is raised at once."""
    mocked.post(f"{BASE}/respond", status=status, payload={"error_message": "no"})
    mocked.post(f"{BASE}/respond", payload=OK)
    with pytest.raises(Exception) as info:  # noqa: PT011 - the class varies by status
        await client.respond("C", "hi")
    assert getattr(info.value, "attempts", None) == 1
    assert count(mocked) == 1


async def test_max_attempts_one_turns_retries_off(mocked: aioresponses) -> None:
    """max_attempts=1 makes exactly one attempt."""
    mocked.post(f"{BASE}/respond", status=503, payload={})
    async with PolyAIClient(**CREDS, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(InternalServerError):
            await client.respond("C", "hi")
    assert count(mocked) == 1


async def test_retry_after_replaces_backoff(
    mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """A 429's Retry-After is the delay before the next attempt, not the computed backoff."""
    mocked.post(f"{BASE}/respond", status=429, payload={}, headers={"retry-after-ms": "200"})
    mocked.post(f"{BASE}/respond", payload=OK)
    policy = RetryPolicy(initial_backoff=5, max_backoff=5)
    caplog.set_level(logging.WARNING, "polyai_async")
    async with PolyAIClient(**CREDS, retry=policy) as client:
        started = time.monotonic()
        await client.respond("C", "hi")
        elapsed = time.monotonic() - started
    assert "retrying in 0.20s" in caplog.text
    assert 0.15 < elapsed < 3


async def test_retry_after_capped_by_max_retry_after(
    mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """A Retry-After above max_retry_after waits only max_retry_after."""
    mocked.post(f"{BASE}/respond", status=503, payload={}, headers={"Retry-After": "3600"})
    mocked.post(f"{BASE}/respond", payload=OK)
    caplog.set_level(logging.WARNING, "polyai_async")
    async with PolyAIClient(**CREDS, retry=RetryPolicy(max_retry_after=0.01)) as client:
        await client.respond("C", "hi")
    assert "retrying in 0.01s" in caplog.text


def test_retry_after_forms() -> None:
    """Retry-After in seconds, as an HTTP date, and retry-after-ms all parse."""
    assert retry_after({"Retry-After": "7"}) == 7
    assert retry_after({"retry-after-ms": "1500"}) == 1.5
    assert retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (retry_after({"Retry-After": date}) or 0) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert retry_after({"Retry-After": past}) == 0
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({}) is None


async def test_backoff_is_exponential_with_jitter_and_capped(
    mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """Computed delays stay under initial*2^n and never exceed max_backoff."""
    for _ in range(5):
        mocked.post(f"{BASE}/respond", status=500, payload={})
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.02)
    caplog.set_level(logging.WARNING, "polyai_async")
    async with PolyAIClient(**CREDS, retry=policy) as client:
        with pytest.raises(InternalServerError):
            await client.respond("C", "hi")
    delays = [float(r.args[-2]) for r in caplog.records if "retrying" in r.getMessage()]  # type: ignore[arg-type,index]
    assert len(delays) == 4
    assert all(0 <= d <= 0.02 for d in delays)
    assert delays[0] <= 0.01


async def test_no_sleep_past_the_deadline(mocked: aioresponses) -> None:
    """A Retry-After longer than what is left of the deadline ends the call at once."""
    mocked.post(f"{BASE}/respond", status=429, payload={}, headers={"Retry-After": "30"})
    mocked.post(f"{BASE}/respond", payload=OK)
    async with PolyAIClient(**CREDS, retry=RetryPolicy(deadline=1.0)) as client:
        started = time.monotonic()
        with pytest.raises(RateLimitError) as info:
            await client.respond("C", "hi")
    assert time.monotonic() - started < 0.5
    assert info.value.attempts == 1
    assert count(mocked) == 1


async def test_deadline_bounds_every_attempt() -> None:
    """A server that never answers is cut at the deadline, not after max_attempts timeouts."""
    async with RawServer(["hang", "hang", "hang"]) as server:
        policy = RetryPolicy(deadline=0.5, initial_backoff=0, max_backoff=0)
        async with PolyAIClient(**CREDS, base_url=server.url, retry=policy, timeout=10) as client:
            started = time.monotonic()
            with pytest.raises(APITimeoutError) as info:
                await client.respond("C", "hi")
            elapsed = time.monotonic() - started
    assert 0.45 < elapsed < 1.0
    assert "deadline of 0.5s" in str(info.value)


async def test_read_timeout_is_retried() -> None:
    """A read timeout on one attempt is retried, and the next attempt's answer returned."""
    async with RawServer(["hang"]) as server:
        policy = RetryPolicy(initial_backoff=0, max_backoff=0)
        async with PolyAIClient(**CREDS, base_url=server.url, retry=policy, timeout=0.2) as client:
            assert (await client.respond("C", "hi")).response == "hi"
    assert server.requests == 2


def refused_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unambiguous_failures_retried_when_ambiguous_off(mocked: aioresponses) -> None:
    """With retry_ambiguous=False, 429 and 503 (not processed) are still retried."""
    mocked.post(f"{BASE}/respond", status=429, payload={}, headers={"Retry-After": "0"})
    mocked.post(f"{BASE}/respond", status=503, payload={}, headers={"Retry-After": "0"})
    mocked.post(f"{BASE}/respond", payload=OK)
    policy = RetryPolicy(retry_ambiguous=False, initial_backoff=0, max_backoff=0)
    async with PolyAIClient(**CREDS, retry=policy) as client:
        await client.respond("C", "hi")
    assert count(mocked) == 3


@pytest.mark.parametrize(
    "failure",
    [{"status": 500, "payload": {}}, {"exception": aiohttp.ServerDisconnectedError()}],
)
async def test_ambiguous_failures_not_retried_when_off(
    mocked: aioresponses, failure: dict[str, object]
) -> None:
    """With retry_ambiguous=False, a 500 or a disconnect after sending ends respond at once."""
    mocked.post(f"{BASE}/respond", **failure)
    mocked.post(f"{BASE}/respond", payload=OK)
    policy = RetryPolicy(retry_ambiguous=False, initial_backoff=0, max_backoff=0)
    async with PolyAIClient(**CREDS, retry=policy) as client:
        with pytest.raises((InternalServerError, APIConnectionError)) as info:
            await client.respond("C", "hi")
    assert info.value.attempts == 1
    assert count(mocked) == 1


async def test_close_always_retried(mocked: aioresponses) -> None:
    """close is idempotent: a 500 on close is retried even with retry_ambiguous=False."""
    mocked.put(f"{BASE}/close", status=500, payload={})
    mocked.put(f"{BASE}/close", payload={"success": True})
    policy = RetryPolicy(retry_ambiguous=False, initial_backoff=0, max_backoff=0)
    async with PolyAIClient(**CREDS, retry=policy) as client:
        assert (await client.close_chat("C")).success
    assert count(mocked) == 2


async def test_connection_refused_is_retried_even_when_ambiguous_off() -> None:
    """A refused connection never reached the server, so even respond is retried."""
    policy = RetryPolicy(retry_ambiguous=False, initial_backoff=0, max_backoff=0)
    url = f"http://127.0.0.1:{refused_port()}"
    async with PolyAIClient(**CREDS, base_url=url, retry=policy) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.respond("C", "hi")
    assert info.value.request_sent is False
    assert info.value.attempts == 3
    assert "could not connect" in str(info.value)


async def test_budget_stops_retries_once_spent(mocked: aioresponses) -> None:
    """Retries spend the client's budget; once spent, failures raise after one attempt."""
    policy = RetryPolicy(initial_backoff=0, max_backoff=0, retry_budget=10)
    for _ in range(2):
        mocked.post(f"{BASE}/respond", status=500, payload={})
    mocked.post(f"{BASE}/respond", payload=OK)
    mocked.post(f"{BASE}/respond", status=500, payload={})
    mocked.post(f"{BASE}/respond", payload=OK)
    async with PolyAIClient(**CREDS, retry=policy) as client:
        await client.respond("C", "hi")  # two retries: 10 tokens spent, 1 refunded
        assert client.retry_budget == 1
        with pytest.raises(InternalServerError) as info:
            await client.respond("C", "hi")
    assert info.value.attempts == 1
    assert "retry budget" in str(info.value)
    assert count(mocked) == 4


async def test_successes_refill_the_budget(mocked: aioresponses) -> None:
    """Each success refunds one token, up to the budget's capacity."""
    policy = RetryPolicy(initial_backoff=0, max_backoff=0, retry_budget=6)
    mocked.post(f"{BASE}/respond", status=500, payload={})
    for _ in range(4):
        mocked.post(f"{BASE}/respond", payload=OK)
    async with PolyAIClient(**CREDS, retry=policy) as client:
        await client.respond("C", "hi")
        assert client.retry_budget == 2
        for _ in range(3):
            await client.respond("C", "hi")
        assert client.retry_budget == 5


async def test_retries_are_logged_without_secrets(
    client: PolyAIClient, mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """Each retry logs the attempt, the reason, the delay and the correlation id, never secrets."""
    mocked.post(
        f"{BASE}/respond",
        status=503,
        payload={"error_message": "busy"},
        headers={"X-PolyAI-Correlation-Id": "corr-7"},
    )
    mocked.post(f"{BASE}/respond", payload=OK)
    caplog.set_level(logging.DEBUG)
    await client.respond("C", "hi")
    (record,) = [r for r in caplog.records if r.name == "polyai_async"]
    message = record.getMessage()
    assert "attempt 1 of 3" in message
    assert "503" in message
    assert "retrying in" in message
    assert "corr-7" in message
    assert "key-123" not in caplog.text
    assert "tok-456" not in caplog.text


async def test_success_path_does_not_enter_tenacity(
    client: PolyAIClient, mocked: aioresponses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that succeeds first time never builds tenacity state."""
    mocked.post(f"{BASE}/respond", payload=OK)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("tenacity used on the success path")

    monkeypatch.setattr(client._retrier._retrying, "copy", boom)
    await client.respond("C", "hi")


async def test_concurrent_retries_keep_their_own_state(mocked: aioresponses) -> None:
    """Many calls retrying at once each count their own attempts."""
    for _ in range(20):
        mocked.post(f"{BASE}/respond", status=500, payload={})
    for _ in range(20):
        mocked.post(f"{BASE}/respond", payload=OK)
    async with PolyAIClient(**CREDS, retry=FAST_RETRY) as client:
        results = await asyncio.gather(*(client.respond("C", "hi") for _ in range(20)))
    assert len(results) == 20
    assert count(mocked) == 40


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("429=10", 10.0),
        ("429=0", 0.0),
        ("429=nan", None),
        ("429=1_0", None),
        ("429=\u0661\u0660", None),  # Arabic-Indic "10"
        ("429=1.5", None),
        ("429=-1", None),
        ("429=+5", None),
        ("429=inf", None),
        ("429=1e3", None),
        ("429=Sun, 06 Nov 1994 08:49:37 GMT", 0.0),  # IMF-fixdate, in the past
        ("429=Sunday, 06-Nov-94 08:49:37 GMT", 0.0),  # RFC 850, obsolete but allowed
        ("429=Sun Nov  6 08:49:37 1994", 0.0),  # asctime, obsolete but allowed
        ("429=06 Nov 1994 08:49:37 GMT", None),  # no day name: not an HTTP date
        ("429ms=1500", 1.5),
        ("429ms=nan", None),
        ("429ms=1_000", None),
        ("429ms=\u0661\u0660", None),
        ("429ms=-5", None),
    ],
)
async def test_retry_after_is_read_as_rfc_9110_says(action: str, expected: float | None) -> None:
    """12: only 1*DIGIT (or an HTTP date) is a Retry-After; anything else is ignored."""
    async with RawServer([action]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(RateLimitError) as info:
                await client.respond("C", "hi")
    assert info.value.retry_after == expected


async def test_retry_after_http_date_is_read() -> None:
    """12: an IMF-fixdate Retry-After is the time until that date."""
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    async with RawServer([f"429={when}", "429=Tomorrow, 1 Jan 2099"]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(RateLimitError) as dated:
                await client.respond("C", "hi")
            with pytest.raises(RateLimitError) as nonsense:
                await client.respond("C", "hi")
    assert 28 <= (dated.value.retry_after or 0) <= 31
    assert nonsense.value.retry_after is None


async def test_invalid_retry_after_falls_back_to_the_computed_backoff() -> None:
    """12: "1_0" (which float() reads as 10) does not make the client wait 10 s."""
    async with RawServer(["429=1_0"]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=FAST_RETRY) as client:
            started = time.monotonic()
            assert (await client.respond("C", "hi")).response == "hi"
            elapsed = time.monotonic() - started
    assert server.requests == 2
    assert elapsed < 5


async def test_no_silent_resend() -> None:
    """13: aiohttp's own resend of an idempotent PUT is off: one attempt is one request."""
    async with RawServer(["close"]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(APIConnectionError) as info:
                await client.close_chat("C")  # a PUT, on a fresh connection
    assert info.value.attempts == 1
    assert server.requests == 1


async def test_resends_are_the_retry_layers_and_counted() -> None:
    """13: a close broken on a pooled connection is retried by the policy, and counted."""
    async with RawServer(["ok", "close", "close", "close"]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=FAST_RETRY) as client:
            await client.respond("C", "first")  # leaves a keep-alive connection in the pool
            with pytest.raises(APIConnectionError) as info:
                await client.close_chat("C")
    assert server.methods == ["POST", "PUT", "PUT", "PUT"]
    assert info.value.attempts == 3
    assert server.requests == 1 + info.value.attempts
