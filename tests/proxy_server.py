"""A loopback HTTP forward proxy for tests: relays absolute-form requests, can require a login.

Only what the client's tests need: plain ``http://`` targets on 127.0.0.1 (absolute-form
request lines, as a client sends through a proxy), keep-alive, bodies framed by
Content-Length, and ``Proxy-Authorization: Basic`` checked when a user and password are set
(a 407 otherwise). It records what it relayed.
"""

from __future__ import annotations

import asyncio
import base64

from yarl import URL

from .servers import LoopbackServer, read_message


class ProxyServer(LoopbackServer):
    """A forward proxy on 127.0.0.1; counts and records the requests it relays."""

    def __init__(self, *, user: str | None = None, password: str | None = None) -> None:
        super().__init__()
        self.expected = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if user is not None
            else None
        )
        self.relayed: list[str] = []  # the absolute URL of each request relayed
        self.refused = 0  # requests answered 407

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head, body = await read_message(reader)
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, version = request_line.split(" ")
                headers = [line.split(":", 1) for line in lines if line]
                auth = next(
                    (v.strip() for k, v in headers if k.lower() == "proxy-authorization"), None
                )
                if self.expected is not None and auth != self.expected:
                    self.refused += 1
                    writer.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
                    )
                    await writer.drain()
                    continue
                url = URL(target)
                self.relayed.append(target)
                if upstream is None:
                    upstream = await asyncio.open_connection(url.host, url.port)
                kept = "".join(
                    f"{k}:{v}\r\n"
                    for k, v in headers
                    if k.lower() not in ("proxy-authorization", "proxy-connection")
                )
                path = url.raw_path_qs
                upstream[1].write(f"{method} {path} {version}\r\n{kept}\r\n".encode() + body)
                await upstream[1].drain()
                answer_head, answer_body = await read_message(upstream[0])
                writer.write(answer_head + answer_body)
                await writer.drain()
        finally:
            if upstream is not None:
                upstream[1].close()
