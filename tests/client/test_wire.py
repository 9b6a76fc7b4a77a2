"""The client's own HTTP/1.1 connections (``polyai_async/_wire.py``), on loopback servers.

The rest of the client's tests run through the wire too (every host without a proxy or trace
configs uses it); these are about what only a hand-made connection can get wrong: answers
that arrive a byte at a time, answers that belong to a cancelled request, connections the
answer says to drop, idle connections, bytes out of turn, TLS, and when aiohttp is used
instead.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
import pytest
import trustme

from polyai_async import (
    APIConnectionError,
    PolyAIClient,
    PoolLimits,
    RetryPolicy,
    SessionPool,
)
from tests.servers import LoopbackServer, read_message

CREDS: dict[str, Any] = {
    "api_key": "k-wire",
    "token": "t-wire",
    "account_id": "A",
    "project_id": "P",
}
NO_RETRY = RetryPolicy(max_attempts=1)


def reply(text: str, *, extra: str = "", chunked: bool = False) -> bytes:
    """A 200 whose answer says ``text``."""
    body = orjson.dumps({"conversation_id": "C", "response": text, "end_conversation": False})
    if chunked:
        half = len(body) // 2
        framed = b"".join(
            b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:])
        )
        return (
            f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode()
            + framed
            + b"0\r\n\r\n"
        )
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


class Scripted(LoopbackServer):
    """Answers the n-th request with ``replies[n]`` (keeping the connection open).

    ``piece``: write each answer that many bytes at a time; ``delays``: seconds to wait before
    the n-th answer; ``trailing``: bytes written right after the n-th answer, out of turn.
    """

    def __init__(
        self,
        replies: Sequence[bytes],
        *,
        piece: int | None = None,
        delays: Sequence[float] = (),
        trailing: dict[int, bytes] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__()
        self.replies = list(replies)
        self.piece = piece
        self.delays = list(delays)
        self.trailing = trailing or {}
        self.tls = tls
        self.connections = 0
        self.open = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> Scripted:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            while True:
                head, body = await read_message(reader)
                n = len(self.requests)
                self.requests.append(head + body)
                if n < len(self.delays):
                    await asyncio.sleep(self.delays[n])
                answer = self.replies[n]
                step = self.piece or len(answer)
                for i in range(0, len(answer), step):
                    writer.write(answer[i : i + step])
                    await writer.drain()
                    if self.piece:
                        await asyncio.sleep(0.001)
                if n in self.trailing:
                    writer.write(self.trailing[n])
                    await writer.drain()
        finally:
            self.open -= 1


async def test_an_answer_arriving_a_byte_at_a_time_is_read_whole() -> None:
    """Status, headers and a chunked body split into single bytes parse as one answer."""
    replies = [reply("first", chunked=True), reply("second", extra="X-Other: yes\r\n")]
    async with Scripted(replies, piece=1) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=NO_RETRY) as client:
            assert client._host is None
            first = await client.respond("C", "one")
            second = await client.respond("C", "two")
            assert client._host is not None
            assert client._host.wire is not None
    assert (first.response, second.response) == ("first", "second")
    assert server.connections == 1  # the chunked answer ended where it said: kept alive


async def test_a_cancelled_call_never_hands_its_answer_to_the_next() -> None:
    """A late answer dies with its cancelled request's connection; the next call gets its own."""
    async with Scripted([reply("late"), reply("own")], delays=[0.3]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=NO_RETRY) as client:
            task = asyncio.create_task(client.respond("C", "one"))
            while not server.requests:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            answer = await client.respond("C", "two")
            assert client.pool.open_connections() == 1
    assert answer.response == "own"
    assert server.connections == 2


def test_the_wire_under_uvloop() -> None:
    """bench runs on uvloop by default: the same connections, reused, on its loop."""
    import uvloop  # the cli extra's, installed with the tests

    async def main() -> tuple[str, str, int, bool]:
        async with Scripted([reply("a"), reply("b", chunked=True)]) as server:
            async with PolyAIClient(**CREDS, base_url=server.url, retry=NO_RETRY) as client:
                first = await client.respond("C", "1")
                second = await client.respond("C", "2")
                wire = client._host is not None and client._host.wire is not None
        return first.response, second.response, server.connections, wire

    assert uvloop.run(main()) == ("a", "b", 1, True)


async def test_a_cancellation_as_the_connection_opens_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled just as its connection opens, a call ends cancelled at once.

    (``asyncio.wait_for`` on Python 3.10 and 3.11 returns the connection instead when the
    cancellation comes as it opens: the cancellation is lost, and the call waits for its
    answer, here 30 s.)
    """
    async with Scripted([reply("late")], delays=[30]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=NO_RETRY) as client:
            tasks: list[asyncio.Task[object]] = []
            loop_type = type(asyncio.get_running_loop())
            connect = loop_type.create_connection

            async def opened_then_cancelled(self: Any, *args: Any, **kwargs: Any) -> Any:
                opened = await connect(self, *args, **kwargs)
                tasks[0].cancel()  # the caller gives up as the connection opens
                return opened

            monkeypatch.setattr(loop_type, "create_connection", opened_then_cancelled)
            tasks.append(asyncio.create_task(client.respond("C", "1")))
            done, _ = await asyncio.wait(tasks, timeout=2)
            assert tasks[0] in done
            assert tasks[0].cancelled()
            assert client.pool.open_connections() == 0  # and its connection went with it
    assert server.connections == 1


async def test_connection_close_in_the_answer_is_obeyed() -> None:
    """An answer saying ``Connection: close`` ends its connection; the next call opens one."""
    replies = [reply("a", extra="Connection: close\r\n"), reply("b")]
    async with Scripted(replies) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=NO_RETRY) as client:
            assert (await client.respond("C", "1")).response == "a"
            assert (await client.respond("C", "2")).response == "b"
    assert server.connections == 2


async def test_idle_connections_close_after_the_keepalive_timeout() -> None:
    """PoolLimits.keepalive_timeout closes an idle connection, on our side, in time."""
    async with Scripted([reply("a"), reply("b")]) as server:
        limits = PoolLimits(keepalive_timeout=0.2)
        async with PolyAIClient(**CREDS, base_url=server.url, limits=limits) as client:
            await client.respond("C", "1")
            assert client.pool.open_connections() == 1
            await asyncio.sleep(0.5)
            assert client.pool.open_connections() == 0
            for _ in range(50):
                if server.open == 0:
                    break
                await asyncio.sleep(0.01)
            assert server.open == 0
            assert (await client.respond("C", "2")).response == "b"
    assert server.connections == 2


async def test_bytes_out_of_turn_drop_the_connection() -> None:
    """A second answer nobody asked for is never taken as the next call's answer."""
    async with Scripted([reply("a"), reply("b")], trailing={0: reply("stray")}) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=NO_RETRY) as client:
            assert (await client.respond("C", "1")).response == "a"
            await asyncio.sleep(0.05)  # the stray answer arrives on the idle connection
            assert (await client.respond("C", "2")).response == "b"
    assert server.connections == 2


async def test_a_request_is_framed_as_aiohttp_frames_it() -> None:
    """One write: request line, Host, the client's headers, Content-Length, then the JSON body."""
    async with Scripted([reply("a")]) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            await client.respond("C", "hello")
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/A/P/chat/respond HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert orjson.loads(body) == {"conversation_id": "C", "message": "hello"}


async def test_a_password_in_base_url_is_sent_as_basic_auth() -> None:
    """``https://user:password@host`` logs in with basic auth, as through aiohttp."""
    async with Scripted([reply("a")]) as server:
        url = server.url.replace("://", "://us%20er:p%40ss@")
        async with PolyAIClient(**CREDS, base_url=url) as client:
            await client.respond("C", "hello")
    head = server.requests[0].partition(b"\r\n\r\n")[0].decode()
    login = base64.b64encode(b"us er:p@ss").decode()
    assert f"Authorization: Basic {login}" in head.split("\r\n")
    assert "p%40ss" not in head  # nor in the request line or Host


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def _server_tls(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_tls_with_a_trusted_certificate(authority: trustme.CA) -> None:
    """https on the wire: the certificate is checked against the SSLContext given."""
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    async with Scripted([reply("secure")], tls=_server_tls(authority)) as server:
        url = server.url.replace("http://", "https://")
        async with SessionPool(connector_options={"ssl": trusting}) as pool:
            async with PolyAIClient(**CREDS, base_url=url, pool=pool) as client:
                assert (await client.respond("C", "1")).response == "secure"
                assert client._host is not None
                assert client._host.wire is not None


async def test_tls_with_an_unknown_certificate_is_refused(authority: trustme.CA) -> None:
    """A certificate nobody vouches for fails before anything is sent, and says why."""
    async with Scripted([reply("never")], tls=_server_tls(authority)) as server:
        url = server.url.replace("http://", "https://")
        async with PolyAIClient(**CREDS, base_url=url, retry=NO_RETRY) as client:
            with pytest.raises(APIConnectionError) as info:
                await client.respond("C", "1")
    assert "TLS certificate was rejected" in str(info.value)
    assert info.value.request_sent is False
    assert server.requests == []


@pytest.mark.parametrize(
    "pool_options",
    [
        {"proxy": "http://127.0.0.1:9"},
        {"trace_configs": [aiohttp.TraceConfig()]},
        {"connector_options": {"use_dns_cache": False}},
    ],
    ids=["proxy", "trace-configs", "connector-option-it-does-not-know"],
)
async def test_aiohttp_carries_what_the_wire_does_not_know(pool_options: dict[str, object]) -> None:
    """A proxy, trace configs or an unknown connector option send through aiohttp instead."""
    async with Scripted([reply("a")]) as server:
        async with SessionPool(**pool_options) as pool:  # type: ignore[arg-type]
            async with PolyAIClient(**CREDS, base_url=server.url, pool=pool) as client:
                host = pool.host(client.base_url.origin())
                assert host.wire is None
