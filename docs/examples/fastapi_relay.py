"""A FastAPI service that relays a web chat to a PolyAI agent, the conversation in the session.

``POST /chat`` with ``{"message": "hi"}`` continues the browser's conversation, or starts one.
The conversation's state lives in the session (Starlette's signed cookie here; any session
store will do), and each request resumes it with ``client.resume()``. The answer::

    {"replies": ["greeting", "reply"], "ended": false, "handoff": null}

When the agent hands off, ``handoff`` holds ``{"destination": ..., "reason": ...}`` and
``ended`` is true: the page connects the user to that human queue. After that, or after
``DELETE /chat``, the next message starts a new conversation.

Two requests of one browser at once (a double-click, two tabs) are sent to the agent one
after the other, in the order they came, because every Conversation of one client for one id
shares one order. That holds within one process: with several worker processes, hold the
session store's lock around the turn (see the Concurrency page).

Run it: ``uvicorn fastapi_relay:app`` (pip install fastapi uvicorn). With POLYAI_API_KEY set it
talks to the API configured by the POLYAI_* variables; without, to a fake PolyAI server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel
from starlette.middleware.sessions import SessionMiddleware

from polyai_async import (
    APIConnectionError,
    APIStatusError,
    ConversationEndedError,
    NotFoundError,
    PolyAIClient,
)

logger = logging.getLogger("relay")


class Message(BaseModel):
    """What the page sends."""

    message: str


async def chat(message: Message, request: Request) -> dict[str, Any]:
    """Send the user's message in the session's conversation, starting one if there is none."""
    client: PolyAIClient = request.app.state.polyai
    replies: list[str] = []
    try:
        saved = request.session.get("polyai")
        if saved is None or saved["ended"]:
            created = await client.create_chat(channel="webchat")
            conversation = client.resume(created)
            replies.append(created.response)
        else:
            conversation = client.resume(saved)  # checked: a tampered state is refused
        reply = await conversation.send(message.message)
        replies.append(reply.response)
    except (ConversationEndedError, NotFoundError):
        request.session.pop("polyai", None)  # ended elsewhere: the next message starts anew
        over = "this conversation is over: send again to start a new one"
        raise HTTPException(410, over) from None
    except APIStatusError as error:
        # Log the correlation id: it is what PolyAI support asks for.
        logger.warning("PolyAI said no: %s", error)
        raise HTTPException(502, f"the agent is unavailable ({error.correlation_id})") from None
    except APIConnectionError as error:
        logger.warning("PolyAI unreachable: %s", error)
        raise HTTPException(504, "the agent is unavailable") from None
    state = conversation.state
    request.session["polyai"] = state.to_dict()
    handoff = None
    if state.handoff is not None:
        handoff = {"destination": state.handoff.destination, "reason": state.handoff.reason}
    return {"replies": replies, "ended": state.ended, "handoff": handoff}


async def end_chat(request: Request) -> dict[str, bool]:
    """Close the session's conversation (the user left) and forget it."""
    saved = request.session.pop("polyai", None)
    if saved is not None and not saved["ended"]:
        client: PolyAIClient = request.app.state.polyai
        await client.resume(saved).aclose()
    return {"ended": True}


def make_app(
    client_factory: Callable[[], AbstractAsyncContextManager[PolyAIClient]] = PolyAIClient,
    secret_key: str | None = None,
) -> FastAPI:
    """Build the app; its PolyAIClient lives as long as the app (the lifespan)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with client_factory() as client:
            app.state.polyai = client
            yield

    app = FastAPI(lifespan=lifespan)
    # The session cookie is signed, so the state in it is the server's own; the key must be
    # the same in every worker and survive restarts (read it from your secret store).
    key = secret_key or os.environ.get("RELAY_SECRET_KEY") or secrets.token_urlsafe(32)
    app.add_middleware(SessionMiddleware, secret_key=key, same_site="strict")
    app.add_api_route("/chat", chat, methods=["POST"])
    app.add_api_route("/chat", end_chat, methods=["DELETE"])
    return app


@contextlib.asynccontextmanager
async def client_or_fake() -> AsyncIterator[PolyAIClient]:
    """A client for the POLYAI_* variables; without credentials, one for a fake server."""
    if os.environ.get("POLYAI_API_KEY"):
        async with PolyAIClient() as client:
            yield client
        return
    from polyai_async.testing import FakePolyAI  # noqa: PLC0415 - only without credentials

    async with FakePolyAI() as fake, fake.client() as client:
        logger.warning("POLYAI_API_KEY is not set: using a fake PolyAI server at %s", fake.url)
        yield client


app = make_app(client_or_fake)
