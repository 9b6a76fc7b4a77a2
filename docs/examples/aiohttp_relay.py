"""An aiohttp.web service that relays a web chat to a PolyAI agent, the conversation in a session.

``POST /chat`` with ``{"message": "hi"}`` continues the browser's conversation, or starts one.
The conversation's state lives in the session store, under the id in the browser's session
cookie, and each request resumes it with ``client.resume()``. The answer::

    {"replies": ["greeting", "reply"], "ended": false, "handoff": null}

When the agent hands off, ``handoff`` holds ``{"destination": ..., "reason": ...}`` and
``ended`` is true: the web page should connect the user to that human queue. After that, or
after ``DELETE /chat``, the next message starts a new conversation.

Two requests of one browser at once (a double-click, two tabs) are sent to the agent one
after the other, in the order they came, because every Conversation of one client for one id
shares one order. That holds within one process: with several worker processes, hold the
session store's lock around the turn (see the Concurrency page).

Run it: ``python aiohttp_relay.py [PORT]``. With POLYAI_API_KEY set it talks to the API
configured by the POLYAI_* variables; without, to a fake PolyAI server it starts itself.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from polyai_async import (
    APIConnectionError,
    APIStatusError,
    ConfigurationError,
    ConversationEndedError,
    NotFoundError,
    PolyAIClient,
)

POLYAI = web.AppKey("polyai", PolyAIClient)
# A dict stands in for the session store (Redis, a database, aiohttp-session): it keeps only
# what ``conversation.state.to_dict()`` gives, plain JSON data, so any store will do.
SESSIONS = web.AppKey("sessions", dict[str, dict[str, Any]])
COOKIE = "relay_session"


def session_id(request: web.Request) -> str | None:
    """The browser's session id, if its cookie names a session we hold."""
    sid = request.cookies.get(COOKIE)
    return sid if sid is not None and sid in request.app[SESSIONS] else None


async def chat(request: web.Request) -> web.Response:
    """Send the user's message in the session's conversation, starting one if there is none."""
    client = request.app[POLYAI]
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return web.json_response({"error": 'send {"message": "..."}'}, status=400)
    sessions = request.app[SESSIONS]
    sid = session_id(request)
    saved = sessions.get(sid) if sid is not None else None
    replies: list[str] = []
    try:
        if saved is None or saved["ended"]:
            created = await client.create_chat(channel="webchat")
            conversation = client.resume(created)
            replies.append(created.response)
        else:
            conversation = client.resume(saved)  # checked: a corrupted state is refused
        reply = await conversation.send(data["message"])
        replies.append(reply.response)
    except (ConversationEndedError, NotFoundError):
        if sid is not None:
            del sessions[sid]  # ended elsewhere: the next message starts anew
        over = {"error": "this conversation is over: send again to start a new one"}
        return web.json_response(over, status=410)
    except ConfigurationError as error:  # a state the store corrupted, say
        if sid is not None:
            del sessions[sid]
        return web.json_response({"error": str(error)}, status=400)
    except APIStatusError as error:
        # Log the correlation id: it is what PolyAI support asks for.
        request.app.logger.warning("PolyAI said no: %s", error)
        body = {"error": "the agent is unavailable", "correlation_id": error.correlation_id}
        return web.json_response(body, status=502)
    except APIConnectionError as error:
        request.app.logger.warning("PolyAI unreachable: %s", error)
        return web.json_response({"error": "the agent is unavailable"}, status=504)
    state = conversation.state
    handoff = None
    if state.handoff is not None:
        handoff = {"destination": state.handoff.destination, "reason": state.handoff.reason}
    response = web.json_response({"replies": replies, "ended": state.ended, "handoff": handoff})
    if sid is None:
        sid = secrets.token_urlsafe(24)
        response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict")
    sessions[sid] = state.to_dict()
    return response


async def end_chat(request: web.Request) -> web.Response:
    """Close the session's conversation (the user left) and forget it."""
    sid = session_id(request)
    saved = request.app[SESSIONS].pop(sid) if sid is not None else None
    if saved is not None and not saved["ended"]:
        await request.app[POLYAI].resume(saved).aclose()
    return web.json_response({"ended": True})


def make_app(client_factory: Callable[[], PolyAIClient] = PolyAIClient) -> web.Application:
    """Build the app; its PolyAIClient lives as long as the app, on the app's event loop."""

    async def polyai_client(app: web.Application) -> AsyncIterator[None]:
        async with client_factory() as client:
            app[POLYAI] = client
            yield

    app = web.Application()
    app[SESSIONS] = {}
    app.cleanup_ctx.append(polyai_client)
    app.router.add_post("/chat", chat)
    app.router.add_delete("/chat", end_chat)
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
