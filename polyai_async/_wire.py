"""HTTP/1.1 to one API host on asyncio's own transports: the client's request path.

aiohttp's client serves every use of HTTP, and a request through it builds a request and a
response object, a stream reader, header multidicts, URL objects and timers, most of them
in Python. The client sends small requests of a fixed shape to one host over keep-alive
connections and reads small answers: this module does just that. A request's head (method,
path, headers) is encoded once per endpoint, one write sends it with its body, and httptools
(llhttp, Node.js's parser, in C) parses the answer. Measured: a one-turn conversation's CPU
fell to about a third (docs/benchmarks.md).

It is used for a host with no proxy and no aiohttp trace configs whose connector options it
knows (``ssl``, ``local_addr``, ``family``), and only while aiohttp's
``ClientSession._request`` is aiohttp's own: a test double that patches it (aioresponses,
say) sees every request. Everything else goes through ``aiohttp.ClientSession.request``.

What it does not do, because the API needs none of it: redirects (never followed, by either
path), proxies, cookies, compression (the client asks for ``identity`` and does not decode),
``Expect: 100-continue``, pipelining. A connection carries one request at a time; the host's
gate bounds how many are open. Of the package it imports only the attempt timer
(``_timing``): its failures are its own exception classes, translated by
``_errors.transport_error``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import aiohappyeyeballs
import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from ._timing import Expiry

__all__ = [
    "ORIGINAL_REQUEST",
    "Answer",
    "Certificate",
    "ConnectFailed",
    "ConnectTimeout",
    "Disconnected",
    "NotHTTP",
    "PayloadBroken",
    "Wire",
    "WireError",
    "request_head",
]

#: aiohttp's own ``ClientSession._request``: a mock that replaced it must see every request.
ORIGINAL_REQUEST = aiohttp.ClientSession._request

#: The longest header field (name or value) and status reason read, as aiohttp's parser.
MAX_FIELD = 8190
#: The most header bytes read before an answer is refused.
MAX_HEAD = 65536

#: The connector options the wire honours; with any other, a host uses aiohttp.
OPTIONS = frozenset({"ssl", "local_addr", "family"})


class WireError(Exception):
    """A request failed on the wire (translated by ``_errors.transport_error``)."""


class ConnectFailed(WireError):
    """No connection could be opened; nothing was sent."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"could not connect to {host}:{port} ({reason})")
        self.host = host
        self.port = port
        self.reason = reason


class ConnectTimeout(WireError):
    """Opening a connection took longer than the connect timeout; nothing was sent."""


class Certificate(WireError):
    """The server's TLS certificate was rejected; nothing was sent."""


class Disconnected(WireError):
    """The server closed the connection before its answer began."""


class PayloadBroken(WireError):
    """The connection broke while the answer was being read."""


class NotHTTP(WireError):
    """The server's bytes are not an HTTP/1.1 answer."""


class Answer:
    """A status, its reason, the header fields (raw) and the body as read.

    ``truncated``: the body stopped at the cap (an error page, kept for its status) or was
    not read at all (a success announced larger than the cap).
    """

    __slots__ = ("body", "fields", "reason", "status", "truncated")

    def __init__(
        self,
        status: int,
        reason: str,
        fields: list[tuple[bytes, bytes]],
        body: bytes,
        truncated: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.fields = fields
        self.body = body
        self.truncated = truncated

    def header(self, name: bytes) -> str | None:
        """The first field named ``name`` (lower case), decoded as aiohttp decodes it, or None."""
        for field, value in self.fields:
            if field.lower() == name:
                return value.decode("utf-8", "surrogateescape")
        return None

    def headers(self) -> CIMultiDictProxy[str]:
        """Every field, as aiohttp would give them (only built for error answers)."""
        return CIMultiDictProxy(
            CIMultiDict(
                (f.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                for f, v in self.fields
            )
        )


def request_head(method: str, target: str, host: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The request line and headers, up to ``Content-Length: `` (the body's length follows).

    ``host`` is the Host field as aiohttp sends it (the port only when not the scheme's
    default). Header values are checked by the client (no CR or LF can split them).
    """
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


def frame(head: bytes, body: bytes) -> bytes:
    """One request's bytes: its head, the body's length, and the body."""
    return b"%s%d\r\n\r\n%s" % (head, len(body), body)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed by httptools."""

    __slots__ = (
        "announced",
        "cap",
        "chunks",
        "fields",
        "framed",
        "head_size",
        "idle_since",
        "lost",
        "parser",
        "reason",
        "reusable",
        "size",
        "status",
        "transport",
        "truncated",
        "waiter",
        "wire",
    )

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.lost = False
        self.reusable = False
        self.idle_since = 0.0
        self._reset(0)

    def _reset(self, cap: int) -> None:
        self.cap = cap
        self.status = 0
        self.reason = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.announced: int | None = None
        # Whether the answer says where it ends (Content-Length or chunked); if not, it ends
        # when the server closes the connection.
        self.framed = False

    # -- asyncio's side --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.wire.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            # Bytes nobody asked for (an answer after its request was given up, or a server
            # talking out of turn): the connection cannot be trusted for another request.
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except WireError as exc:  # raised by a callback below
            self._fail(exc)
            self.abort()
        except httptools.HttpParserError as exc:
            self._fail(NotHTTP(_excerpt(exc)))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.wire.connections.discard(self)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.status and not self.framed and exc is None:
            # An answer without Content-Length or chunking ends where the connection does.
            self.reusable = False
            waiter.set_result(self._answer())
        elif self.status:
            self._fail(PayloadBroken("the connection closed in the middle of the answer"))
        else:
            self._fail(Disconnected())

    # -- httptools' side -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.waiter is None or self.waiter.done():
            # An answer nobody asked for (two in one read, say): stop, and drop the connection.
            raise Disconnected

    def on_status(self, reason: bytes) -> None:
        self.reason += reason
        if len(self.reason) > MAX_FIELD:
            raise NotHTTP(f"the status line is longer than {MAX_FIELD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) > MAX_FIELD or len(value) > MAX_FIELD:
            raise NotHTTP(f"a header field is longer than {MAX_FIELD} bytes")
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD:
            raise NotHTTP(f"the headers are longer than {MAX_HEAD} bytes")
        self.fields.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length":
            self.framed = True
            if value.isdigit():
                self.announced = int(value)
        elif lowered == b"transfer-encoding":
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        announced = self.announced
        if announced is not None and announced > self.cap and self.status < 300:
            # A success larger than the client will hold: answered as such, never read.
            self.truncated = True
            self._finish(reusable=False)

    def on_body(self, body: bytes) -> None:
        if self.truncated:
            return
        self.size += len(body)
        if self.size <= self.cap:
            self.chunks.append(body)
            return
        # Past the cap: what was read up to it is the answer (an error page keeps its status).
        self.chunks.append(body[: len(body) - (self.size - self.cap)])
        self.truncated = True
        self._finish(reusable=False)

    def on_message_complete(self) -> None:
        if not self.truncated:
            self._finish(reusable=self.parser.should_keep_alive())

    # -- the request -----------------------------------------------------------------------

    def send(
        self, data: bytes, cap: int, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Answer]:
        """Write one request; the future gets its answer."""
        self._reset(cap)
        self.reusable = False
        waiter = self.waiter = loop.create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        return waiter

    def _answer(self) -> Answer:
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        return Answer(
            self.status,
            self.reason.decode("latin-1"),
            self.fields,
            body,
            self.truncated,
        )

    def _finish(self, *, reusable: bool) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self.reusable = reusable and not self.lost
            waiter.set_result(self._answer())
        if self.truncated:
            self.abort()  # the rest of the answer is not wanted: never read it
        elif not reusable:
            self.close()

    def _fail(self, error: WireError) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def close(self) -> None:
        """Close the connection (its pending request, if any, fails)."""
        self.reusable = False
        if self.transport is not None and not self.lost:
            self.transport.close()

    def abort(self) -> None:
        """Reset the connection at once: the server learns now that its answer is not wanted.

        For a request given up (cancelled, timed out) or an answer that cannot be trusted. A
        plain close would only half-close: a server still working on the request would go on
        until it answers, holding whatever the request holds there (an agent's slot, say).
        """
        self.reusable = False
        if self.transport is not None and not self.lost:
            self.transport.abort()


def _excerpt(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:120] or type(exc).__name__


def _default_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


_CONTEXT: ssl.SSLContext | None = None


def _tls(option: object) -> ssl.SSLContext:
    """The SSLContext for a connector's ``ssl`` option: True (verify), False (do not)."""
    global _CONTEXT  # noqa: PLW0603 - built once: a context loads the system's certificates
    if isinstance(option, ssl.SSLContext):
        return option
    if option is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if _CONTEXT is None:
        _CONTEXT = _default_context()
    return _CONTEXT


def supports(connector_options: Mapping[str, Any]) -> bool:
    """Whether the wire honours every one of these connector options."""
    if not OPTIONS.issuperset(connector_options):
        return False
    option = connector_options.get("ssl", True)
    return option is True or option is False or isinstance(option, ssl.SSLContext)


class Wire:
    """Keep-alive connections to one host (scheme, host, port), for one event loop.

    The host's gate admits at most ``max_connections`` requests at once, so the wire never
    queues: a request takes an idle connection or opens one. Idle connections are kept for
    ``keepalive`` seconds, the most recently used first.
    """

    __slots__ = (
        "closed",
        "connections",
        "family",
        "host",
        "idle",
        "keepalive",
        "local_addr",
        "loop",
        "port",
        "server_hostname",
        "sweeper",
        "tls",
    )

    def __init__(
        self,
        *,
        scheme: str,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop,
        keepalive: float,
        connector_options: Mapping[str, Any],
    ) -> None:
        self.host = host
        self.port = port
        self.loop = loop
        self.keepalive = keepalive
        self.tls = _tls(connector_options.get("ssl", True)) if scheme == "https" else None
        self.server_hostname = host if self.tls is not None else None
        self.local_addr: tuple[str, int] | None = connector_options.get("local_addr")
        self.family: int = connector_options.get("family", socket.AF_UNSPEC)
        self.idle: list[_Connection] = []
        self.connections: set[_Connection] = set()
        self.sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    async def exchange(self, data: bytes, cap: int, connect_timeout: float | None) -> Answer:
        """Send one request (``frame``'s bytes); return its answer, its body at most ``cap``.

        Raises a WireError for what failed on the wire. A cancellation closes the connection:
        the answer it would bring belongs to nobody.
        """
        connection = self._take()
        if connection is None:
            connection = await self._connect(connect_timeout)
        waiter = connection.send(data, cap, self.loop)
        try:
            answer = await waiter
        except BaseException:
            connection.abort()  # given up or broken: its answer belongs to nobody
            raise
        if connection.reusable and not self.closed:
            connection.idle_since = self.loop.time()
            self.idle.append(connection)
            if self.sweeper is None:
                self.sweeper = self.loop.call_at(
                    connection.idle_since + self.keepalive, self._sweep
                )
        else:
            connection.close()
        return answer

    def _take(self) -> _Connection | None:
        idle = self.idle
        while idle:
            connection = idle.pop()
            if not connection.lost and not connection.transport.is_closing():  # type: ignore[union-attr]
                return connection
            connection.close()
        return None

    async def _connect(self, timeout: float | None) -> _Connection:
        # A timer that cancels this task, not asyncio.wait_for: on Python 3.10 and 3.11,
        # wait_for returns the connection when the caller's cancellation comes just as the
        # connection opens, and the cancellation is lost (the call then waits for its answer).
        loop = self.loop
        expiry = timer = None
        if timeout is not None:
            expiry = Expiry(asyncio.current_task())  # type: ignore[arg-type]
            timer = loop.call_at(loop.time() + timeout, expiry)
        try:
            # Happy eyeballs, as aiohttp connects (its library): with IPv6 and IPv4 addresses
            # the next is tried after 250 ms, not after the first's timeout; and no socket is
            # left open when the caller gives up mid-race (asyncio's own race, on 3.11,
            # leaves them).
            sock = await aiohappyeyeballs.start_connection(
                await self._addresses(self.host, self.port),
                local_addr_infos=None
                if self.local_addr is None
                else await self._addresses(*self.local_addr),
                happy_eyeballs_delay=0.25,
                interleave=1,
                loop=loop,
            )
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    sock=sock,
                    ssl=self.tls,
                    server_hostname=self.server_hostname,
                )
            except BaseException:
                sock.close()
                raise
        except asyncio.CancelledError:
            if expiry is None or not expiry.expired():
                raise  # the caller's cancellation, not the connect timeout's
            raise ConnectTimeout from None
        except ssl.SSLCertVerificationError as exc:
            raise Certificate(_excerpt(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _excerpt(exc)
            raise ConnectFailed(self.host, self.port, reason) from None
        finally:
            if timer is not None:
                timer.cancel()
        if self.closed:
            connection.close()
            raise Disconnected
        return connection

    async def _addresses(self, host: str, port: int) -> list[Any]:
        """The host's addresses: at once for an IP address, else from the resolver."""
        try:
            return socket.getaddrinfo(
                host, port, self.family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            pass  # a name, not an address
        return await self.loop.getaddrinfo(host, port, family=self.family, type=socket.SOCK_STREAM)

    def _sweep(self) -> None:
        """Close the connections idle for ``keepalive`` seconds; come back for the rest."""
        self.sweeper = None
        expiry = self.loop.time() - self.keepalive
        keep = []
        for connection in self.idle:
            if connection.idle_since <= expiry:
                connection.close()
            elif not connection.lost:
                keep.append(connection)
        self.idle[:] = keep
        if keep:
            self.sweeper = self.loop.call_at(keep[0].idle_since + self.keepalive, self._sweep)

    def open_connections(self) -> int:
        """Connections open now, idle or carrying a request."""
        return len(self.connections)

    def close(self) -> None:
        """Close every connection; requests still out fail (the caller says why)."""
        self.closed = True
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        self.idle.clear()
        for connection in list(self.connections):
            if connection.waiter is not None and not connection.waiter.done():
                connection.abort()  # a request still out
            else:
                connection.close()

    def abandon(self) -> None:
        """Forget the connections of an event loop that has ended (nothing can run there)."""
        self.closed = True
        self.idle.clear()
        self.connections.clear()
