"""Regression tests for the hostile review of the client (issue 10), one or more per finding.

Every test goes through the public API against a server it starts on 127.0.0.1: an aiohttp
web application (`served`), or the raw socket server of `tests/servers.py` for answers that are
not HTTP. Each test's docstring names the finding it guards.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gc
import gzip
import logging
import math
import re
import socket
import ssl
import subprocess
import threading
import time
import warnings
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from polyai_async import (
    REGIONS,
    APIConnectionError,
    APIStatusError,
    BadRequestError,
    ConfigurationError,
    ConversationEndedError,
    InternalServerError,
    PolyAIClient,
    PolyAIError,
    PoolLimits,
    RateLimitError,
    ResponseValidationError,
    RetryPolicy,
    SessionPool,
    Timeouts,
)
from tests.conftest import CREDS, FAST_RETRY
from tests.servers import RawServer

API_KEY = "sk-live-SECRET-api-key-0123456789"
TOKEN = "tok-SECRET-connector-9876543210"
PASSWORD = "pw-SECRET-in-the-url"
SECRETS = (API_KEY, TOKEN, PASSWORD)
SECRET_CREDS: dict[str, Any] = {
    "api_key": API_KEY,
    "token": TOKEN,
    "account_id": "A",
    "project_id": "P",
}
ONCE = RetryPolicy(max_attempts=1)
CREATED = {"conversation_id": "CONV-1", "response": "hello"}
REPLY = {"conversation_id": "CONV-1", "response": "hi", "end_conversation": False}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Served:
    """An aiohttp application on 127.0.0.1 that records every request it gets."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.method, request.path, dict(request.headers), body))
        return await self.handler(request)


@contextlib.asynccontextmanager
async def served(handler: Handler) -> AsyncIterator[Served]:
    """Run ``handler`` for every path on a loopback port for the block."""
    server = Served(handler)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


def answer(payload: object, status: int = 200) -> Handler:
    """A handler that always answers ``payload`` as JSON."""

    async def handle(_: web.Request) -> web.Response:
        return web.json_response(payload, status=status)

    return handle


def chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every exception reachable from it through __cause__ and __context__."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def shown(error: BaseException) -> Iterator[str]:
    """Everything a reporter could show of each exception in the chain."""
    for current in chain(error):
        yield str(current)
        yield repr(current)
        yield repr(current.args)
        yield repr(getattr(current, "__dict__", {}))
        yield repr({name: getattr(current, name, None) for name in dir(current)})


def assert_clean(texts: Iterator[str] | list[str]) -> None:
    """Fail if any secret appears in any of ``texts``."""
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"secret leaked: {text[:300]}"


# -- 1. redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_is_never_followed(status: int) -> None:
    """1: a 3xx is an APIStatusError with its status and Location, not followed, not retried."""
    async with served(answer(REPLY)) as elsewhere:
        target = f"{elsewhere.url}/steal"

        async def redirect(_: web.Request) -> web.Response:
            return web.Response(status=status, headers={"Location": target})

        async with served(redirect) as origin:
            async with PolyAIClient(**SECRET_CREDS, base_url=origin.url, retry=FAST_RETRY) as c:
                with pytest.raises(APIStatusError) as info:
                    await c.respond("C", "hi")
    assert elsewhere.requests == []  # neither the credentials nor the body went there
    assert len(origin.requests) == 1  # not retried
    error = info.value
    assert error.status == status
    assert error.headers["Location"] == target
    assert error.attempts == 1
    assert "redirect" in str(error)
    assert target in str(error)


# -- 2. secrets in chained exceptions ----------------------------------------------------------

MALFORMED = {
    "bad-status-line": b"HTTP/1.1 abc Broken\r\nContent-Length: 2\r\n\r\n{}",
    "oversized-header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    "bad-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\n{}",
    "bad-chunked-framing": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n",
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n",
}


@pytest.mark.parametrize("reply", sorted(MALFORMED))
async def test_no_secret_reachable_from_an_error(reply: str) -> None:
    """2, 5: no exception reachable from ours holds the key, token or URL password anywhere."""
    async with RawServer([reply, reply], canned=MALFORMED) as server:
        url = server.url.replace("://", f"://user:{PASSWORD}@")
        retry = RetryPolicy(max_attempts=2, initial_backoff=0, max_backoff=0)
        async with PolyAIClient(**SECRET_CREDS, base_url=url, retry=retry) as client:
            with pytest.raises(PolyAIError) as info:
                await client.respond("C", "hi")
    assert isinstance(info.value, APIConnectionError)
    assert info.value.attempts == 2
    assert_clean(shown(info.value))
    assert "\n" not in str(info.value)


# -- 3. decompression bomb ---------------------------------------------------------------------

BOMB = b"0" * (16 * 1024 * 1024)  # 16 MiB of zeros: 16 KiB compressed


@pytest.mark.parametrize(
    ("encoding", "compress", "chunked"),
    [
        ("gzip", gzip.compress, False),
        ("deflate", zlib.compress, False),
        ("gzip", gzip.compress, True),
    ],
    ids=["gzip", "deflate", "gzip-chunked"],
)
async def test_compressed_answer_is_never_inflated(
    encoding: str, compress: Callable[[bytes], bytes], chunked: bool
) -> None:
    """3: no compression is asked for, and a compressed answer is held as sent: bounded."""
    packed = compress(BOMB)

    async def bomb(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Encoding": encoding, "Content-Type": "application/json"}
        )
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(packed)
        await response.prepare(request)
        await response.write(packed)
        await response.write_eof()
        return response

    async with served(bomb) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(ResponseValidationError) as info:
                await client.respond("C", "hi")
    assert server.requests[0][2]["Accept-Encoding"] == "identity"
    assert len(info.value.body) <= client.max_response_bytes
    assert len(info.value.body) <= len(packed)


# -- 4. control characters in credentials ------------------------------------------------------


@pytest.mark.parametrize("argument", ["api_key", "token"])
@pytest.mark.parametrize(
    "value",
    [
        "key\x01value",
        "key\x1b[31mvalue",
        "key\x0bvalue",
        "key\x7fvalue",
        "key\x00value",
        "key\x85value",
        "key\u2028value",
        "key\u00e9value",
        " leading-space",
        "trailing-tab\t",
    ],
)
async def test_credentials_must_be_http_field_values(argument: str, value: str) -> None:
    """4: a character an HTTP field value cannot hold is refused at construction, named."""
    async with RawServer() as server:
        with pytest.raises(ConfigurationError, match=argument) as info:
            PolyAIClient(**{**CREDS, argument: value, "base_url": server.url})
    assert value.strip() not in str(info.value)
    assert server.requests == 0


async def test_credentials_with_inner_spaces_are_sent() -> None:
    """4: visible ASCII with inner spaces is a valid field value and is sent unchanged."""
    async with served(answer(REPLY)) as server:
        async with PolyAIClient(**{**CREDS, "token": "a b~!"}, base_url=server.url) as client:
            await client.respond("C", "hi")
    assert server.requests[0][2]["X-TOKEN"] == "a b~!"


# -- 5. userinfo in URLs -----------------------------------------------------------------------


async def test_userinfo_is_hidden_wherever_a_url_is_printed() -> None:
    """5: repr(client) and every error show ``***`` for a base_url's user and password."""
    async with RawServer(["close"]) as server:
        url = server.url.replace("://", f"://user:{PASSWORD}@")
        async with PolyAIClient(**CREDS, base_url=url, retry=ONCE) as client:
            text = repr(client)
            with pytest.raises(APIConnectionError) as info:
                await client.respond("C", "hi")
    assert "***@127.0.0.1" in text
    assert "user" not in text
    assert_clean([text, *shown(info.value)])
    for bad in (f"ftp://user:{PASSWORD}@host", f"http://user:{PASSWORD}@example.com/?q=1"):
        with pytest.raises(ConfigurationError) as refused:
            PolyAIClient(**CREDS, base_url=bad)
        assert_clean([str(refused.value)])
        assert "***@" in str(refused.value)


# -- 6. a second event loop --------------------------------------------------------------------


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


# -- 7. configuration values -------------------------------------------------------------------

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("make", "kwargs", "field"),
    [
        (RetryPolicy, {"deadline": NAN}, "deadline"),
        (RetryPolicy, {"deadline": INF}, "deadline"),
        (RetryPolicy, {"initial_backoff": NAN}, "initial_backoff"),
        (RetryPolicy, {"max_backoff": NAN}, "max_backoff"),
        (RetryPolicy, {"max_backoff": INF}, "max_backoff"),
        (RetryPolicy, {"max_retry_after": NAN}, "max_retry_after"),
        (RetryPolicy, {"max_retry_after": "5"}, "max_retry_after"),
        (RetryPolicy, {"max_attempts": 2.0}, "max_attempts"),
        (RetryPolicy, {"max_attempts": True}, "max_attempts"),
        (RetryPolicy, {"retry_statuses": {"500"}}, "retry_statuses"),
        (RetryPolicy, {"retry_statuses": 500}, "retry_statuses"),
        (RetryPolicy, {"retry_statuses": "500"}, "retry_statuses"),
        (RetryPolicy, {"retry_statuses": {True}}, "retry_statuses"),
        (RetryPolicy, {"retry_statuses": {302}}, "retry_statuses"),
        (RetryPolicy, {"retry_budget": "5"}, "retry_budget"),
        (RetryPolicy, {"retry_budget": True}, "retry_budget"),
        (RetryPolicy, {"retry_budget": 5.5}, "retry_budget"),
        (RetryPolicy, {"retry_budget": -1}, "retry_budget"),
        (RetryPolicy, {"retry_ambiguous": "no"}, "retry_ambiguous"),
        (RetryPolicy, {"retry_ambiguous": 0}, "retry_ambiguous"),
        (Timeouts, {"connect": NAN}, "connect"),
        (Timeouts, {"read": INF}, "read"),
        (Timeouts, {"read": "30"}, "read"),
        (Timeouts, {"connect": True}, "connect"),
        (PoolLimits, {"max_connections": NAN}, "max_connections"),
        (PoolLimits, {"max_connections": "100"}, "max_connections"),
        (PoolLimits, {"keepalive_timeout": INF}, "keepalive_timeout"),
        (PoolLimits, {"keepalive_timeout": NAN}, "keepalive_timeout"),
        (PoolLimits, {"dns_ttl": True}, "dns_ttl"),
        (SessionPool, {"limits": "many"}, "limits"),
        (SessionPool, {"trace_configs": "trace"}, "trace_configs"),
        (SessionPool, {"trace_configs": [object()]}, "trace_configs"),
        (SessionPool, {"connector_options": [("ssl", False)]}, "connector_options"),
        (PolyAIClient, {**CREDS, "timeout": NAN}, "timeout"),
        (PolyAIClient, {**CREDS, "timeout": INF}, "timeout"),
        (PolyAIClient, {**CREDS, "allow_insecure_http": "no"}, "allow_insecure_http"),
        (PolyAIClient, {**CREDS, "version": 1}, "version"),
        (PolyAIClient, {**CREDS, "base_url": 8080}, "base_url"),
        (PolyAIClient, {**CREDS, "max_response_bytes": NAN}, "max_response_bytes"),
    ],
)
def test_every_configuration_field_refuses_nonsense(
    make: Callable[..., object], kwargs: dict[str, Any], field: str
) -> None:
    """7: a wrong type, NaN or infinity is a ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError, match=field):
        make(**kwargs)


async def test_nan_deadline_cannot_make_a_call_hang() -> None:
    """7: deadline=nan (which turned the per-attempt timeout off) is refused; nothing is sent."""
    async with RawServer(["hang"]) as server:
        with pytest.raises(ConfigurationError, match="deadline"):
            PolyAIClient(**CREDS, base_url=server.url, retry=RetryPolicy(deadline=NAN))
    assert server.requests == 0


async def test_close_after_handoff_must_be_a_bool() -> None:
    """7: conversation(close_after_handoff="no") is refused before anything is sent."""
    async with served(answer(CREATED)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            with pytest.raises(ConfigurationError, match="close_after_handoff"):
                async with client.conversation(close_after_handoff="no"):  # type: ignore[arg-type]
                    pass
    assert server.requests == []


# -- 8. oversized error pages ------------------------------------------------------------------


@pytest.mark.parametrize("action", ["big-503", "big-503-unsized"])
async def test_oversized_error_page_is_classified_by_status_and_retried(action: str) -> None:
    """8: a 503 page larger than max_response_bytes is an InternalServerError, retried."""
    async with RawServer([action, action, action]) as server:
        server.big_size = 70 * 1024
        async with PolyAIClient(
            **CREDS, base_url=server.url, retry=FAST_RETRY, max_response_bytes=16 * 1024
        ) as client:
            with pytest.raises(InternalServerError) as info:
                await client.respond("C", "hi")
            assert server.requests == 3
            assert (await client.respond("C", "again")).response == "hi"
    error = info.value
    assert error.status == 503
    assert error.attempts == 3
    assert isinstance(error.body, bytes)
    assert 0 < len(error.body) <= 16 * 1024
    assert error.body.startswith(b"<html>")
    assert len(str(error)) < 600


# -- 9, 10. answers of the wrong shape ---------------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
async def test_blank_conversation_id_from_create_is_invalid(blank: str) -> None:
    """9: create answering a blank conversation_id is a ResponseValidationError at create."""
    async with served(answer({"conversation_id": blank, "response": "hello"})) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(ResponseValidationError, match="conversation_id") as info:
                await client.create_chat()
            with pytest.raises(ResponseValidationError):
                async with client.conversation():
                    pass
    assert info.value.status == 200
    assert [path.rsplit("/", 1)[-1] for _, path, _, _ in server.requests] == ["create", "create"]


@pytest.mark.parametrize(
    ("handoff", "got"),
    [
        ("live_agent_queue", "a string"),
        ("", "a string"),
        ([1, 2], "an array"),
        ([], "an array"),
        (0, "a number"),
        (1.5, "a number"),
        (False, "a boolean"),
    ],
)
async def test_handoff_of_the_wrong_type_is_invalid(handoff: object, got: str) -> None:
    """10: a handoff that is neither an object nor null says what was expected."""
    reply = {**REPLY, "end_conversation": True, "handoff": handoff}
    async with served(answer(reply)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(ResponseValidationError) as info:
                await client.respond("C", "hi")
    assert f"expected an object or null, got {got}" in str(info.value)
    assert "handoff" in str(info.value)


@pytest.mark.parametrize(
    ("handoff", "destination"), [(None, None), ({}, None), ({"destination": "q"}, "q")]
)
async def test_handoff_object_or_null_is_read(handoff: object, destination: str | None) -> None:
    """10: null and objects still parse as before."""
    reply = {**REPLY, "end_conversation": True, "handoff": handoff}
    async with served(answer(reply)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            answer_ = await client.respond("C", "hi")
    assert (answer_.handoff.destination if answer_.handoff else None) == destination
    assert (answer_.handoff is None) == (handoff is None)


# -- 11. NaN and Infinity in request data ------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda c: c.respond("C", "hi", metadata={"x": NAN}), "metadata['x']"),
        (lambda c: c.respond("C", "hi", metadata={"a": [1, INF]}), "metadata['a'][1]"),
        (
            lambda c: c.respond("C", "hi", integration_attributes={"n": {"deep": -INF}}),
            "integration_attributes['n']['deep']",
        ),
        (lambda c: c.create_chat(integration_attributes={"t": (1.0, NAN)}), "['t'][1]"),
    ],
)
async def test_nan_and_infinity_are_refused_before_sending(
    call: Callable[[PolyAIClient], Awaitable[object]], where: str
) -> None:
    """11: NaN or Infinity anywhere in metadata or integration_attributes is refused, unsent."""
    async with served(answer(REPLY)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            with pytest.raises(ConfigurationError) as info:
                await call(client)
    assert where in str(info.value)
    assert "JSON" in str(info.value)
    assert server.requests == []


async def test_data_that_holds_itself_is_refused_not_walked_forever() -> None:
    """11: the check for NaN stops where JSON does; the encoder then refuses the cycle."""
    cyclic: dict[str, Any] = {"x": 1.0}
    cyclic["self"] = cyclic
    async with served(answer(REPLY)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            with pytest.raises(ConfigurationError, match="cannot be sent as JSON"):
                await asyncio.wait_for(client.respond("C", "hi", metadata=cyclic), 10)
    assert server.requests == []


# -- 12. Retry-After -------------------------------------------------------------------------


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


# -- 13. every request counted -----------------------------------------------------------------


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


# -- 14. concurrent sends on one conversation --------------------------------------------------


def turn_server() -> tuple[Handler, dict[str, Any]]:
    """A chat server that echoes, slowly for "first", ends on "bye", and tracks overlap."""
    seen: dict[str, Any] = {"messages": [], "in_flight": 0, "most_in_flight": 0}

    async def handle(request: web.Request) -> web.Response:
        if request.path.endswith("/create"):
            return web.json_response(CREATED)
        if request.path.endswith("/close"):
            return web.json_response({"success": True})
        message = (await request.json())["message"]
        seen["messages"].append(message)
        seen["in_flight"] += 1
        seen["most_in_flight"] = max(seen["most_in_flight"], seen["in_flight"])
        try:
            await asyncio.sleep(0.3 if message == "first" else 0)
        finally:
            seen["in_flight"] -= 1
        ended = message == "bye"
        return web.json_response(
            {"conversation_id": "CONV-1", "response": f"echo {message}", "end_conversation": ended}
        )

    return handle, seen


async def test_concurrent_sends_are_serialised() -> None:
    """14: two sends at once reach the server one after the other, and history in call order."""
    handle, seen = turn_server()
    async with served(handle) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            async with client.conversation() as chat:
                first = asyncio.create_task(chat.send("first"))
                await asyncio.sleep(0)  # first is now waiting for its answer
                second = asyncio.create_task(chat.send("second"))
                await asyncio.gather(first, second)
    assert seen["messages"] == ["first", "second"]
    assert seen["most_in_flight"] == 1
    assert [(t.role, t.text) for t in chat.history] == [
        ("agent", "hello"),
        ("user", "first"),
        ("agent", "echo first"),
        ("user", "second"),
        ("agent", "echo second"),
    ]


async def test_send_queued_behind_an_ending_turn_sends_nothing() -> None:
    """14: a send waiting behind one that ends the conversation fails without a request."""
    handle, seen = turn_server()
    async with served(handle) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            async with client.conversation() as chat:
                results = await asyncio.gather(
                    chat.send("bye"), chat.send("after"), return_exceptions=True
                )
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], ConversationEndedError)
    assert seen["messages"] == ["bye"]


# -- 15. bounded error text --------------------------------------------------------------------


async def test_error_text_is_capped_and_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """15: a 512 KiB error_message is quoted briefly, on one line; the body keeps it whole."""
    huge = "line one\nline two " + "x" * (512 * 1024)
    body = {"error_message": huge, "error_code": "C" * 10_000, "error_id": "i" * 10_000}
    caplog.set_level(logging.DEBUG, "polyai_async")
    async with served(answer(body, status=500)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=FAST_RETRY) as client:
            with pytest.raises(InternalServerError) as info:
                await client.close_chat("C")
    error = info.value
    assert len(server.requests) == 3
    assert len(str(error)) < 1000
    assert "\n" not in str(error)
    assert "line one line two" in str(error)
    assert error.error_message == huge
    assert isinstance(error.body, dict)
    assert error.body["error_message"] == huge
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert all(len(r.getMessage()) < 1500 for r in retries)


async def test_multiline_transport_text_stays_out_of_the_message() -> None:
    """15: aiohttp's multi-line parser errors become one capped line of ours."""
    async with RawServer(["bad"], canned={"bad": MALFORMED["bad-status-line"]}) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(APIConnectionError) as info:
                await client.respond("C", "hi")
    assert "\n" not in str(info.value)
    assert "not valid HTTP" in str(info.value)
    assert len(str(info.value)) < 400


# -- 16, 17. what the API documents ------------------------------------------------------------


async def test_nested_error_envelope_is_read() -> None:
    """16: {"error": {"code", "id", "message", "correlation_id"}} fills the error's fields."""
    body = {
        "error": {
            "code": "SCHEMA_VALIDATION_FAILED",
            "id": 1,
            "message": "message must be a string",
            "correlation_id": "corr-42",
        }
    }
    async with served(answer(body, status=400)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            with pytest.raises(BadRequestError) as info:
                await client.respond("C", "hi")
    error = info.value
    assert error.error_code == "SCHEMA_VALIDATION_FAILED"
    assert error.error_message == "message must be a string"
    assert error.correlation_id == "corr-42"
    assert "[SCHEMA_VALIDATION_FAILED]" in str(error)
    assert "corr-42" in str(error)


async def test_create_answered_201_is_a_success() -> None:
    """17: older revisions answer create with 201 Created; that is a success."""
    async with served(answer(CREATED, status=201)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            created = await client.create_chat()
    assert created.conversation_id == "CONV-1"
    assert created.response == "hello"


# -- 18. the self-serve Studio host ------------------------------------------------------------


class LoopbackResolver(AbstractResolver):
    """Resolves every host name to a port on 127.0.0.1 (so a region's host is a local server)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": self.port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


STUDIO_HOST = "api.studio.poly.ai"


@pytest.fixture
def studio_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for api.studio.poly.ai, made with openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(  # noqa: S603 - fixed arguments, openssl from PATH
        [
            # An EC P-256 key: as good for TLS as RSA, and made in a millisecond, not 0.1-0.6 s.
            *("openssl", "req", "-x509", "-newkey", "ec", "-nodes", "-days", "1"),
            *("-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-subj", f"/CN={STUDIO_HOST}", "-addext", f"subjectAltName=DNS:{STUDIO_HOST}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_studio_region_reaches_its_host_over_tls(studio_cert: tuple[Path, Path]) -> None:
    """18: region="studio" connects to api.studio.poly.ai, verifying its certificate."""
    host = STUDIO_HOST
    cert, key = studio_cert
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    seen: list[tuple[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.host, request.path))
        return web.json_response(CREATED)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
    resolver = LoopbackResolver(runner.addresses[0][1])
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        pool = SessionPool(connector_options={"resolver": resolver, "ssl": trusted})
        async with pool, PolyAIClient(**CREDS, region="studio", pool=pool) as client:
            created = await client.create_chat()
    finally:
        await runner.cleanup()
    assert created.conversation_id == "CONV-1"
    assert resolver.asked == [host]
    assert seen == [(host, "/v1/ACCOUNT-1/PROJ-1/chat/create")]


def test_studio_region_is_the_self_serve_host() -> None:
    """18: region="studio" sends to https://api.studio.poly.ai; unknown regions list it."""
    client = PolyAIClient(**CREDS, region="studio")
    assert str(client.base_url) == "https://api.studio.poly.ai"
    assert REGIONS["studio"] == "https://api.studio.poly.ai"
    with pytest.raises(ConfigurationError, match=r"us-1, uk-1, euw-1, studio"):
        PolyAIClient(**CREDS, region="eu")


# -- 19. proxies from the environment ----------------------------------------------------------


async def test_proxy_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """19: HTTP(S)_PROXY and ALL_PROXY are not used (trust_env=False), by design."""
    async with served(answer({"proxied": True})) as proxy, served(answer(REPLY)) as api:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with PolyAIClient(**CREDS, base_url=api.url, retry=ONCE) as client:
            assert (await client.respond("C", "hi")).response == "hi"
    assert proxy.requests == []
    assert len(api.requests) == 1


# -- the reliability page ----------------------------------------------------------------------


def test_reliability_page_names_real_tests() -> None:
    """docs/reliability.md names only tests that exist, and every finding above has a row."""
    tests = Path(__file__).resolve().parents[1]
    page = (tests.parent / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)(?=[`\[])", page)
    assert len(named) > 30
    for module, test in named:
        (path,) = tests.rglob(module)  # test file names are unique across the topic folders
        source = path.read_text()
        assert re.search(rf"^(async )?def {test}\(", source, re.MULTILINE), f"{module}::{test}"
    for finding in range(1, 20):
        assert re.search(rf"^\| {finding} \| ", page, re.MULTILINE), f"finding {finding}"
