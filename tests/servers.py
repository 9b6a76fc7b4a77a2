"""A raw HTTP/1.1 server on 127.0.0.1 that misbehaves on purpose, for transport-fault tests.

aiohttp.web cannot answer half a body or sit on a request forever on demand; this can. Each
request takes the next action from a script (then "ok" forever):

- ``"ok"``: a 200 with ``body`` (keep-alive);
- ``"close"``: close the connection without answering (a dead keep-alive connection);
- ``"reset"``: abort the connection (RST) without answering;
- ``"half"``: send the headers and half the body, then close;
- ``"hang"``: never answer;
- ``"big"``: a 200 with a body of ``big_size`` bytes;
- ``"<status>"`` such as ``"503"``: that status with a JSON error body;
- ``"429-ms"``: a 429 asking to wait ``wait`` seconds in ``retry-after-ms``;
- ``"429-date"``: a 429 whose ``Retry-After`` is an HTTP date (whole seconds): the first whole
  second at least ``wait`` seconds away;
- ``"ok-close"``: a 200 announcing keep-alive, then the connection closed soon after (the
  client finds a dead connection in its pool);
- ``"unsized"``, ``"big-unsized"``: as ``"ok"`` and ``"big"`` but with no Content-Length, the
  body ending where the server closes the connection;
- ``"big-503"``, ``"big-503-unsized"``: a 503 whose HTML page is ``big_size`` bytes;
- ``"429=<value>"``, ``"429ms=<value>"``: a 429 with ``Retry-After: <value>`` or
  ``retry-after-ms: <value>``, sent as given;
- any key of ``canned``: those bytes, verbatim, then the connection closed (answers that are
  not HTTP, or broken HTTP).

``served`` runs an aiohttp handler on 127.0.0.1 instead, for answers HTTP can describe; it
records every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

import orjson
from aiohttp import web

OK_BODY = orjson.dumps({"conversation_id": "CONV-1", "response": "hi", "end_conversation": False})


S = TypeVar("S", bound="LoopbackServer")


class LoopbackServer:
    """An asyncio TCP server on 127.0.0.1 that closes every connection it accepted on exit.

    Subclasses serve one connection in ``_connection``; this keeps the port, the URL and the
    connection tasks, which ``__aexit__`` cancels and waits for.
    """

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """The server's URL (no credentials)."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self: S) -> S:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP message: its head (with the blank line) and its Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


class RawServer(LoopbackServer):
    """A scripted HTTP/1.1 server; counts connections and requests."""

    def __init__(
        self,
        script: Iterable[str] = (),
        *,
        body: bytes = OK_BODY,
        canned: Mapping[str, bytes] | None = None,
    ) -> None:
        super().__init__()
        self.script = list(script)
        self.body = body
        self.canned = dict(canned or {})
        self.methods: list[str] = []
        self.big_size = 8 * 1024 * 1024
        self.wait = 1.0
        self.connections = 0
        self.open_connections = 0
        self.max_open_connections = 0
        self.requests = 0
        #: When each request arrived (``time.time()``).
        self.arrived: list[float] = []
        #: The last 429's ask: the ``time.time()`` before which the client should not retry.
        self.asked_until: float | None = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        self.max_open_connections = max(self.max_open_connections, self.open_connections)
        try:
            while await self._serve_one(reader, writer):
                pass
        finally:
            self.open_connections -= 1

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head, _ = await read_message(reader)
        self.arrived.append(time.time())
        self.requests += 1
        self.methods.append(head.split(b" ", 1)[0].decode())
        action = self.script.pop(0) if self.script else "ok"
        if action in self.canned:
            writer.write(self.canned[action])
            await writer.drain()
            return False
        if action == "close":
            return False
        if action == "reset":
            writer.transport.abort()
            return False
        if action == "hang":
            await asyncio.sleep(3600)
        status, body, extra = self._answer(action)
        # Without Content-Length the body ends where the connection does.
        framing = (
            "Connection: close" if action.endswith("unsized") else f"Content-Length: {len(body)}"
        )
        header = (
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}{framing}\r\n\r\n"
        ).encode()  # UTF-8: a header value may carry any character, as a hostile server's can
        if action == "half":
            writer.write(header + body[: len(body) // 2])
            await writer.drain()
            return False
        writer.write(header + body)
        await writer.drain()
        if action == "ok-close":
            await asyncio.sleep(0.02)
            return False
        return not action.endswith("unsized")

    def _answer(self, action: str) -> tuple[str, bytes, str]:  # noqa: PLR0911 - a table
        """The status line, body and extra header lines ``action`` calls for."""
        if action in ("big", "big-unsized"):
            return "200 OK", b" " * self.big_size, ""
        if action.startswith("big-503"):
            page = b"<html><body>" + b"x" * self.big_size + b"</body></html>"
            return "503 Service Unavailable", page, ""
        if action.startswith(("429=", "429ms=")):
            name, _, value = action.partition("=")
            header = "retry-after-ms" if name == "429ms" else "Retry-After"
            return "429 Too Many Requests", b"{}", f"{header}: {value}\r\n"
        if action.isdigit():
            return f"{action} Error", orjson.dumps({"error_message": f"scripted {action}"}), ""
        if action == "429-ms":
            self.asked_until = time.time() + self.wait
            return "429 Too Many Requests", b"{}", f"retry-after-ms: {int(self.wait * 1000)}\r\n"
        if action == "429-date":
            # An HTTP date names a whole second: the first one at least ``wait`` away.
            self.asked_until = math.ceil(time.time() + self.wait)
            when = email.utils.formatdate(self.asked_until, usegmt=True)
            return "429 Too Many Requests", b"{}", f"Retry-After: {when}\r\n"
        return "200 OK", self.body, ""


class Unaccepting:
    """A loopback port whose listen backlog is full: connecting to it hangs (connect timeout)."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._fillers: list[socket.socket] = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._fillers.append(filler)
        time.sleep(0.1)  # let the fillers' handshakes fill the backlog

    @property
    def url(self) -> str:
        """The base URL clients use."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Unaccepting:
        return self

    def __exit__(self, *exc: object) -> None:
        for sock in (*self._fillers, self._listener):
            sock.close()


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


CREATED = {"conversation_id": "CONV-1", "response": "hello"}


REPLY = {"conversation_id": "CONV-1", "response": "hi", "end_conversation": False}
