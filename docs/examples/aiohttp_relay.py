"""An aiohttp.web service that relays a web chat to a PolyAI agent.

``POST /chat`` with ``{"message": "hi"}`` starts a conversation; send its ``conversation_id``
back with the next message to continue it. The answer::

    {"conversation_id": "...", "replies": ["greeting", "reply"], "ended": false, "handoff": null}

When the agent hands off, ``handoff`` holds ``{"destination": ..., "reason": ...}`` and
``ended`` is true: the web page should connect the user to that human queue.

Run it: ``python aiohttp_relay.py [PORT]``. With POLYAI_API_KEY set it talks to the API
configured by the POLYAI_* variables; without, to a fake PolyAI server it starts itself.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from polyai_async import (
    APIConnectionError,
    APIStatusError,
    ConversationEndedError,
    NotFoundError,
    PolyAIClient,
)

POLYAI = web.AppKey("polyai", PolyAIClient)


async def chat(request: web.Request) -> web.Response:
    """Start or continue a conversation with one message."""
    client = request.app[POLYAI]
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return web.json_response({"error": "send a JSON object"}, status=400)
    conversation_id = data.get("conversation_id")
    message = data.get("message")
    answer: dict[str, Any] = {"replies": [], "ended": False, "handoff": None}
    try:
        if conversation_id is None:
            created = await client.create_chat(channel="webchat")
            conversation_id = created.conversation_id
            answer["replies"].append(created.response)
        if message is not None:
            reply = await client.respond(conversation_id, message)
            answer["replies"].append(reply.response)
            answer["ended"] = reply.end_conversation
            if reply.handoff is not None:
                handoff = reply.handoff
                answer["handoff"] = {"destination": handoff.destination, "reason": handoff.reason}
    except (ConversationEndedError, NotFoundError):
        over = {"error": "this conversation is over: start a new one"}
        return web.json_response(over, status=410)
    except APIStatusError as error:
        # Log the correlation id: it is what PolyAI support asks for.
        request.app.logger.warning("PolyAI said no: %s", error)
        body = {"error": "the agent is unavailable", "correlation_id": error.correlation_id}
        return web.json_response(body, status=502)
    except APIConnectionError as error:
        request.app.logger.warning("PolyAI unreachable: %s", error)
        return web.json_response({"error": "the agent is unavailable"}, status=504)
    return web.json_response({"conversation_id": conversation_id, **answer})


def make_app(client_factory: Callable[[], PolyAIClient] = PolyAIClient) -> web.Application:
    """Build the app; its PolyAIClient lives as long as the app, on the app's event loop."""

    async def polyai_client(app: web.Application) -> AsyncIterator[None]:
        async with client_factory() as client:
            app[POLYAI] = client
            yield

    app = web.Application()
    app.cleanup_ctx.append(polyai_client)
    app.router.add_post("/chat", chat)
    return app


async def serve(client_factory: Callable[[], PolyAIClient], port: int) -> None:
    """Serve the relay on 127.0.0.1 until cancelled (Ctrl-C)."""
    runner = web.AppRunner(make_app(client_factory))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        host, port = runner.addresses[0][:2]
        print(f"relay listening on http://{host}:{port}/chat", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def main(port: int = 8080) -> None:
    """Serve the relay for the API the POLYAI_* variables name, or for a fake PolyAI server."""
    if os.environ.get("POLYAI_API_KEY"):
        await serve(PolyAIClient, port)
        return
    from polyai_async.testing import FakePolyAI  # noqa: PLC0415 - only without credentials

    async with FakePolyAI() as fake:
        print(f"POLYAI_API_KEY is not set: using a fake PolyAI server at {fake.url}", flush=True)
        await serve(fake.client, port)


if __name__ == "__main__":
    asyncio.run(main(*(int(arg) for arg in sys.argv[1:2])))
