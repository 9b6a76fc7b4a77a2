"""One request, the short way through aiohttp.

``ClientSession.request`` serves every use of HTTP: it merges session and request headers,
builds and parses URLs, consults the cookie jar, arms a timer per request, runs trace hooks
and middlewares, follows redirects and may resend a request. The client sends fixed requests
to one host and needs none of that (no cookies, no redirects, no resend; its own timer), so it
builds aiohttp's ``ClientRequest`` itself and runs the three steps ``ClientSession._request``
would: take a pooled connection, send, read the status and headers. Measured: about a quarter
of the transport's CPU per request (docs/benchmarks.md).

It is taken only where it is the same request: the session has no trace configs and no proxy
(those go through ``ClientSession.request``), the aiohttp installed has the signatures it was
written against (checked once at import; otherwise every request takes the general path), and
``ClientSession._request`` is aiohttp's own: a test double that patches it (aioresponses, say)
sees every request.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import TimerNoop
from yarl import URL


def _has(function: object, *names: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):  # pragma: no cover - a C implementation, say
        return False
    return all(name in parameters for name in names)


#: Whether this aiohttp has what ``send`` relies on (aiohttp 3.14's signatures).
SUPPORTED = (
    _has(
        aiohttp.ClientRequest.__init__,
        "headers",
        "data",
        "loop",
        "response_class",
        "session",
        "ssl",
        "timer",
        "traces",
    )
    and _has(aiohttp.BaseConnector.connect, "req", "traces", "timeout")
    and _has(
        ResponseHandler.set_response_params,
        "timer",
        "skip_payload",
        "read_until_eof",
        "auto_decompress",
    )
    and _has(aiohttp.ClientResponse.start, "connection")
)


#: aiohttp's own ``ClientSession._request``: a mock that replaced it must see every request.
ORIGINAL_REQUEST = aiohttp.ClientSession._request


def usable(session: aiohttp.ClientSession, proxy: URL | None) -> bool:
    """Whether requests on ``session`` may take the short way."""
    return SUPPORTED and proxy is None and not session.trace_configs


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: Mapping[str, str],
    body: bytes,
    timeout: aiohttp.ClientTimeout,
) -> aiohttp.ClientResponse:
    """Send one request on ``session``'s connector; return the answer, its body unread.

    Raises what ``ClientSession.request`` raises for the same failures (a
    ``ConnectionTimeoutError`` for a connect timeout, ``ClientOSError`` for an OS error), so
    the caller translates both paths alike. The caller releases the answer.
    """
    connector = session.connector
    if connector is None or session.closed:
        raise RuntimeError("Session is closed")
    request = aiohttp.ClientRequest(
        method,
        url,
        headers=headers,
        data=body,
        loop=asyncio.get_running_loop(),  # the session's: the pool keeps one per loop
        response_class=aiohttp.ClientResponse,
        session=session,
        ssl=True,
        timer=TimerNoop(),
        traces=[],
    )
    try:
        try:
            connection = await connector.connect(request, traces=[], timeout=timeout)
        except asyncio.TimeoutError as exc:
            raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}") from exc
        protocol = connection.protocol
        assert protocol is not None  # noqa: S101 - a connection from connect() has one
        # What the session would set, for a session made as SessionPool makes them.
        protocol.set_response_params(
            timer=None,
            skip_payload=False,
            read_until_eof=True,
            auto_decompress=False,
            read_timeout=timeout.sock_read,
        )
        try:
            response = await request.send(connection)
            try:
                await response.start(connection)
            except BaseException:
                response.close()
                raise
        except BaseException:
            connection.close()
            raise
    except aiohttp.ClientError:
        raise
    except OSError as exc:
        if exc.errno is None and isinstance(exc, asyncio.TimeoutError):
            raise
        raise aiohttp.ClientOSError(*exc.args) from exc
    return response
