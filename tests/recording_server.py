"""A loopback Chat API stand-in that records each request's headers (for header tests)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

CREATED = {"conversation_id": "CONV-1", "response": "hello"}
CORRELATION_ID = "corr-recorded-1"


class RecordingServer:
    """Answers create, respond and close on 127.0.0.1 and keeps every request's headers."""

    def __init__(
        self,
        *,
        correlation_id: str | None = CORRELATION_ID,
        body_extra: dict[str, Any] | None = None,
    ) -> None:
        self.correlation_id = correlation_id
        self.body_extra = body_extra or {}
        self.headers: list[dict[str, str]] = []
        # Every header line as sent, duplicates included.
        self.header_lines: list[list[tuple[str, str]]] = []
        self.paths: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL clients use."""
        return f"http://127.0.0.1:{self.port}"

    def client_options(self) -> dict[str, Any]:
        """PolyAIClient arguments for this server."""
        return {
            "base_url": self.url,
            "api_key": "key-123",
            "token": "tok-456",
            "account_id": "A",
            "project_id": "P",
        }

    async def _handle(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        self.header_lines.append(list(request.headers.items()))
        self.paths.append(request.path)
        await request.read()
        endpoint = request.path.rsplit("/", 1)[-1]
        body: dict[str, Any]
        if endpoint == "create":
            body = CREATED
        elif endpoint == "respond":
            body = {"conversation_id": "CONV-1", "response": "ok", "end_conversation": False}
        else:
            body = {"success": True}
        headers = {"Content-Type": "application/json"}
        if self.correlation_id is not None:
            headers["X-PolyAI-Correlation-Id"] = self.correlation_id
        return web.Response(body=orjson.dumps({**body, **self.body_extra}), headers=headers)

    async def __aenter__(self) -> RecordingServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
