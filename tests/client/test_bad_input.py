"""Hostile answers: whatever a server or proxy sends back, only PolyAIError comes out."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyai_async import (
    APIStatusError,
    CloseChatResponse,
    CreateChatResponse,
    PolyAIClient,
    PolyAIError,
    RespondChatResponse,
    ResponseValidationError,
    RetryPolicy,
)
from tests.conftest import CREDS

T = TypeVar("T")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
# Objects that look like answers, with fields of the wrong type or missing.
answer_like = st.fixed_dictionaries(
    {},
    optional={
        "conversation_id": json_values,
        "response": json_values,
        "end_conversation": json_values,
        "handoff": json_values,
        "success": json_values,
        "error_message": json_values,
        "error_code": json_values,
        "error_id": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(orjson.dumps),
    answer_like.map(orjson.dumps),
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 5000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.sampled_from([1000, 2_000_000]).map(lambda size: b'{"response": "' + b"x" * size + b'"}'),
    st.sampled_from(
        [
            b"\xff\xfe\x00\x00not utf-8",
            b'{"conversation_id": "\xc3\x28", "response": "x"}',
            b"<html><body>502 Bad Gateway</body></html>",
            b"",
            b"null",
        ]
    ),
)
content_types = st.sampled_from(
    ["application/json", "text/html", "text/plain", "application/octet-stream", "x/garbage"]
)
statuses = st.sampled_from([200, 201, 202, 299, 301, 400, 401, 403, 404, 409, 410, 418, 429])
statuses |= st.integers(500, 599)


class Hostile:
    """A real server on 127.0.0.1, in its own thread, answering whatever it is told."""

    def __init__(self) -> None:
        self.answer: tuple[int, bytes, str] = (200, b"{}", "application/json")
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.url = self.run(self._start())
        self.client = self.run(self._client())

    def run(self, coro: Awaitable[T]) -> T:
        """Run a coroutine on the server's loop and wait for it."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return future.result(timeout=30)

    async def _handle(self, request: web.Request) -> web.Response:
        status, body, content_type = self.answer
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def _client(self) -> PolyAIClient:
        return PolyAIClient(**CREDS, base_url=self.url, retry=RetryPolicy(max_attempts=1))

    async def _close(self) -> None:
        await self.client.aclose()
        await self._runner.cleanup()

    def close(self) -> None:
        """Stop the client, the server and the thread."""
        self.run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    """One hostile server and client for all the examples."""
    server = Hostile()
    yield server
    server.close()


CALLS: list[tuple[str, type[Any], Callable[[PolyAIClient], Awaitable[Any]]]] = [
    ("create_chat", CreateChatResponse, lambda c: c.create_chat()),
    ("respond", RespondChatResponse, lambda c: c.respond("CONV-1", "hi")),
    ("close_chat", CloseChatResponse, lambda c: c.close_chat("CONV-1")),
]


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(status=statuses, body=bodies, content_type=content_types)
def test_only_polyai_errors_come_out(
    hostile: Hostile, status: int, body: bytes, content_type: str
) -> None:
    """Every endpoint, given any status, body and content type, returns a model or a PolyAIError."""
    hostile.answer = (status, body, content_type)
    for what, model, call in CALLS:
        outcome: object
        try:
            outcome = hostile.run(call(hostile.client))
        except PolyAIError as error:
            outcome = error
        if not isinstance(outcome, PolyAIError):
            assert 200 <= status < 300
            assert isinstance(outcome, model)
            continue
        message = str(outcome)
        assert message.startswith(what), message
        assert len(message) < 2000, "the message must stay readable"
        if isinstance(outcome, APIStatusError):
            assert status >= 300
            assert outcome.status == status
            assert f"HTTP {status}" in message
        elif isinstance(outcome, ResponseValidationError):
            assert outcome.status == status
            assert "HTTP" in message
