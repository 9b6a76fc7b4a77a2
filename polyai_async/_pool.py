"""Per API host: its connections (the client's own, or an aiohttp session's) and a fair way in."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import attrs
from yarl import URL

from . import _redact, _wire
from ._config import PoolLimits
from ._errors import ClientClosedError, ConfigurationError
from ._gate import Gate

__all__ = ["SessionPool"]

logger = logging.getLogger("polyai_async")


def check_proxy(value: object, source: str = "proxy") -> URL | None:
    """Check a proxy URL; the message never quotes it, as it may hold a password."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{source} must be a URL string, not {type(value).__name__}")
    try:
        url = URL(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{source} is not a URL: use http://host:port") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ConfigurationError(
            f"{source} must be an http:// or https:// URL such as http://proxy:3128"
        )
    if url.path not in {"", "/"} or url.query_string or url.fragment:
        raise ConfigurationError(f"{source} must be just scheme, host and port (and user)")
    return url


def display_proxy(url: URL) -> str:
    """A proxy URL fit to print: its user and password shown as ``***``."""
    if url.raw_user is None and url.raw_password is None:
        return str(url.origin())
    return str(url.origin()).replace("://", "://***@", 1)


class Host:
    """One API host's connections (the client's own, or a session's) and the gate before them.

    The gate admits requests in arrival order, ``max_connections`` at a time, so neither the
    client's own connections nor aiohttp's connector ever queue. aiohttp's queue lets a task
    that just released a connection take it straight back, so new conversations wait behind
    running ones (seconds of p99 at 200 concurrent conversations over 100 connections) and
    woken waiters loop for nothing.
    """

    __slots__ = ("closed", "gate", "loop", "proxy", "session", "wire")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        max_connections: int,
        loop: asyncio.AbstractEventLoop,
        proxy: URL | None = None,
    ) -> None:
        self.session = session
        # The proxy its requests go through, to name it when it refuses them.
        self.proxy = proxy
        self.gate = Gate(max_connections)
        # aiohttp binds a session to the loop it was made in: another loop needs another one.
        self.loop = loop
        self.closed = False
        # The client's own HTTP/1.1 connections (_wire), when the host may use them; set by
        # the pool. Otherwise requests go through the aiohttp session.
        self.wire: _wire.Wire | None = None

    async def close(self) -> None:
        """Close the session, and wake the requests waiting at the gate so they can fail."""
        self.closed = True
        # Each woken waiter sees `closed`, releases and wakes the next: a chain, not a flood.
        self.gate.release()
        if self.wire is not None:
            self.wire.close()
        await self.session.close()

    def abandon(self) -> None:
        """Give up a session whose event loop has ended (or is another thread's).

        Nothing can be awaited on a closed loop: aiohttp's close runs without suspending there
        (it only marks the connector closed), so it is driven by hand. The sockets of that
        loop's idle connections were left open when the loop closed; they are freed (with
        asyncio's "unclosed transport" ResourceWarning) when collected.
        """
        self.closed = True  # no gate.release(): its waiters belong to the other loop
        if self.wire is not None:
            self.wire.abandon()
        if not self.loop.is_closed():
            return  # a running loop elsewhere: closing from here would touch it from our thread
        closing = self.session.close()
        try:
            closing.send(None)
        except StopIteration:
            return
        except Exception:  # best effort: the session is unusable either way
            logger.debug("polyai_async: abandoning a session failed", exc_info=True)
        else:
            closing.close()


@attrs.define(eq=False, repr=False)
class SessionPool:
    """Pooled HTTP sessions, one per API host (per region), made on first use.

    Every request to a host reuses that host's keep-alive connections: the client's own
    (``_wire``), or, with a proxy, trace configs or a connector option the client's own do not
    know, those of an ``aiohttp.ClientSession``. Several clients (other projects, other
    credentials) may share one pool; the credentials travel per request, never in the
    session. Close it with ``await pool.aclose()`` or ``async with``; a client that made its
    own pool closes it, a client given one does not.

    Args:
        limits: connection limits applied to each host's pool.
        trace_configs: aiohttp ``TraceConfig`` objects, to observe every request and connection.
        connector_options: extra keyword arguments for each ``aiohttp.TCPConnector`` (for
            example ``ssl=`` with a custom ``SSLContext``, ``local_addr=``, ``family=``).
        proxy: an HTTP proxy every request goes through, such as
            ``http://user:password@proxy:3128``; its password never appears in a repr, log
            or error.
        trust_env: take the proxy from ``HTTPS_PROXY`` (``HTTP_PROXY`` for a plain
            ``http://`` host) and ``NO_PROXY``, read once per host; nothing else is read
            from the environment (no ``~/.netrc``). Not with ``proxy``.
    """

    limits: PoolLimits = attrs.field(factory=PoolLimits, kw_only=True)
    trace_configs: Sequence[aiohttp.TraceConfig] = attrs.field(default=(), kw_only=True)
    connector_options: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True)
    proxy: str | None = attrs.field(default=None, kw_only=True)
    trust_env: bool = attrs.field(default=False, kw_only=True)
    _proxy_url: URL | None = attrs.field(init=False, default=None)
    _hosts: dict[tuple[str, asyncio.AbstractEventLoop], Host] = attrs.field(
        init=False, factory=dict
    )
    _closed: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.limits, PoolLimits):
            raise ConfigurationError("SessionPool.limits must be a PoolLimits")
        self._proxy_url = check_proxy(self.proxy)
        if self._proxy_url is not None:
            _redact.remember(self._proxy_url.password)
        if not isinstance(self.trust_env, bool):
            raise ConfigurationError("SessionPool.trust_env must be True or False")
        if self.trust_env and self.proxy is not None:
            raise ConfigurationError("pass proxy or trust_env=True, not both")
        if isinstance(self.trace_configs, str | bytes) or not isinstance(
            self.trace_configs, Sequence
        ):
            raise ConfigurationError("SessionPool.trace_configs must be a list of TraceConfig")
        for trace in self.trace_configs:
            if not isinstance(trace, aiohttp.TraceConfig):
                raise ConfigurationError(
                    "SessionPool.trace_configs must hold aiohttp.TraceConfig objects, "
                    f"not {type(trace).__name__}"
                )
        if not isinstance(self.connector_options, Mapping):
            raise ConfigurationError(
                "SessionPool.connector_options must be a dict of TCPConnector arguments"
            )
        reserved = {"limit", "limit_per_host", "keepalive_timeout", "ttl_dns_cache"}
        clash = reserved & set(self.connector_options)
        if clash:
            raise ConfigurationError(
                f"connector_options may not set {', '.join(sorted(clash))}: use PoolLimits"
            )

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` has been called."""
        return self._closed

    def session(self, origin: URL) -> aiohttp.ClientSession:
        """Return the session for ``origin`` (scheme, host and port), making it on first use.

        Must be called from a running event loop: aiohttp binds sessions to it.
        """
        return self.host(origin).session

    def host(self, origin: URL) -> Host:
        """Return the host entry (session and gate) for ``origin``; the client sends through it.

        One per host and event loop: a client used under a second ``asyncio.run`` gets fresh
        sessions there, and the ones of loops that have ended are given up.
        """
        if self._closed:
            raise ClientClosedError("the session pool is closed; make a new client or pool")
        loop = asyncio.get_running_loop()
        key = (str(origin), loop)
        host = self._hosts.get(key)
        if host is None or host.session.closed:
            for other_key, other in list(self._hosts.items()):
                if other.loop.is_closed():
                    del self._hosts[other_key]
                    other.abandon()
            proxy = self._proxy_for(origin)
            host = self._hosts[key] = Host(
                self._make_session(proxy), self.limits.max_connections, loop, proxy
            )
            if proxy is None and not self.trace_configs and _wire.supports(self.connector_options):
                host.wire = _wire.Wire(
                    scheme=origin.scheme,
                    host=origin.raw_host or "",
                    port=origin.port or (443 if origin.scheme == "https" else 80),
                    loop=loop,
                    keepalive=self.limits.keepalive_timeout,
                    connector_options=self.connector_options,
                )
        return host

    def _proxy_for(self, origin: URL) -> URL | None:
        """The proxy for ``origin``: ours, or the environment's with trust_env (read here)."""
        if not self.trust_env:
            return self._proxy_url
        # The standard library's reading of the variables (lower case wins, as curl's).
        proxies = urllib.request.getproxies_environment()
        chosen = proxies.get(origin.scheme)
        # proxy_bypass_environment: NO_PROXY as urllib reads it (undocumented, untyped, stable).
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if not chosen or bypass(origin.host or "", proxies):
            return None
        try:
            return check_proxy(chosen, source=f"{origin.scheme.upper()}_PROXY")
        except ConfigurationError:
            logger.warning(
                "polyai_async: %s_PROXY is not an http(s) URL; connecting directly",
                origin.scheme.upper(),
            )
            return None

    def _make_session(self, proxy: URL | None) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections,
            limit_per_host=self.limits.max_connections,
            keepalive_timeout=self.limits.keepalive_timeout,
            ttl_dns_cache=self.limits.dns_ttl,
            **self.connector_options,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            trace_configs=list(self.trace_configs) or None,
            # The client bounds each attempt itself (Timeouts and the deadline).
            timeout=aiohttp.ClientTimeout(total=None),
            # Credentials are per client, so nothing is read from the environment: no proxy
            # from HTTP(S)_PROXY, no ~/.netrc (see docs/configuration.md, "Proxies"); with
            # trust_env=True, _proxy_for reads the proxy variables, and only them.
            trust_env=False,
            proxy=proxy,
            # The API sets no cookies we need, and clients sharing this pool (other credentials)
            # must not share any; a real jar would also filter cookies on every request.
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
            # The client asks for no compression (Accept-Encoding: identity); an answer
            # compressed anyway stays compressed, so max_response_bytes bounds what is held
            # in memory: a 200 KiB gzip body can inflate to 200 MiB.
            auto_decompress=False,
        )
        # aiohttp re-sends an idempotent request (close, a PUT) once, uncounted, when the
        # connection breaks; the retry layer decides and counts every attempt instead. The
        # attribute is private but stable (aiohttp's own test client sets it);
        # test_retry.py::test_no_silent_resend fails if it stops working.
        session._retry_connection = False
        return session

    def open_connections(self) -> int:
        """Count the connections held by every host's pool, busy or idle (for tests and stats)."""
        total = 0
        for host in self._hosts.values():
            if host.wire is not None:
                total += host.wire.open_connections()
            connector = host.session.connector
            if connector is not None and not connector.closed:
                # aiohttp exposes no public count; _conns holds the idle, _acquired the busy.
                idle = sum(len(v) for v in getattr(connector, "_conns", {}).values())
                total += idle + len(getattr(connector, "_acquired", ()))
        return total

    async def aclose(self) -> None:
        """Close every session and release every connection. Idempotent."""
        self._closed = True
        hosts, self._hosts = list(self._hosts.values()), {}
        loop = asyncio.get_running_loop()
        for host in reversed(hosts):
            if host.loop is not loop:
                host.abandon()  # another loop's session cannot be closed from this one
                continue
            try:
                await host.close()
            except Exception:  # a failed close must not stop the others closing
                logger.warning("polyai_async: closing a pooled session failed", exc_info=True)
        if hosts:
            # Let the transports finish closing so no "unclosed transport" warning follows.
            await asyncio.sleep(0)

    async def __aenter__(self) -> SessionPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._hosts)} host(s)"
        via = f" proxy={display_proxy(self._proxy_url)}" if self._proxy_url is not None else ""
        return f"<SessionPool {state} limits={self.limits!r}{via}>"

    def __del__(self) -> None:
        # Only warn: closing needs the event loop, which may be gone by now.
        hosts = getattr(self, "_hosts", None)
        if hosts and any(not host.session.closed for host in hosts.values()):
            warnings.warn(
                f"{self!r} was never closed: use `async with` or `await aclose()`",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )
