"""client.conversation(): history, ending, handoff, and closing on the way out."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from aioresponses import aioresponses

from polyai_async import (
    ConversationEndedError,
    Handoff,
    InternalServerError,
    PolyAIClient,
    Turn,
)
from tests.client.test_requests import body_of, sent
from tests.conftest import BASE, CREDS
from tests.servers import CREATED, Handler, served

GREETING = {"conversation_id": "CONV-1", "response": "Hello, how can I help?"}


def reply(
    text: str, *, end: bool = False, handoff: dict[str, str] | None = None
) -> dict[str, object]:
    """A respond answer."""
    answer: dict[str, object] = {
        "conversation_id": "CONV-1",
        "response": text,
        "end_conversation": end,
    }
    if handoff:
        answer["handoff"] = handoff
    return answer


async def test_conversation_records_history_and_closes(
    client: PolyAIClient, mocked: aioresponses
) -> None:
    """The block sees the greeting and the turns, and leaving it closes the chat."""
    mocked.post(f"{BASE}/create", payload=GREETING)
    mocked.post(f"{BASE}/respond", payload=reply("Which booking?"))
    mocked.put(f"{BASE}/close", payload={"success": True})
    async with client.conversation(channel="webchat") as chat:
        assert chat.conversation_id == "CONV-1"
        assert chat.greeting == "Hello, how can I help?"
        answer = await chat.send("My booking", metadata={"k": "v"})
        assert answer.response == "Which booking?"
        assert not chat.ended
    assert chat.history == [
        Turn("agent", "Hello, how can I help?"),
        Turn("user", "My booking"),
        Turn("agent", "Which booking?"),
    ]
    assert body_of(sent(mocked, "POST", f"{BASE}/respond")[0])["metadata"] == {"k": "v"}
    assert len(sent(mocked, "PUT", f"{BASE}/close")) == 1
    assert chat.ended


async def test_send_after_end_raises_without_request(
    client: PolyAIClient, mocked: aioresponses
) -> None:
    """Once the agent ends the conversation, send raises ConversationEndedError locally."""
    mocked.post(f"{BASE}/create", payload=GREETING)
    mocked.post(
        f"{BASE}/respond",
        payload=reply("Transferring.", end=True, handoff={"destination": "billing_queue"}),
    )
    mocked.put(f"{BASE}/close", payload={"success": True})
    async with client.conversation() as chat:
        await chat.send("a human please")
        assert chat.ended
        assert chat.handoff == Handoff(destination="billing_queue")
        with pytest.raises(ConversationEndedError, match="billing_queue") as info:
            await chat.send("hello?")
        assert info.value.attempts == 0
    assert len(sent(mocked, "POST", f"{BASE}/respond")) == 1


@pytest.mark.parametrize("status", [404, 410])
async def test_close_of_gone_conversation_is_not_an_error(
    client: PolyAIClient, mocked: aioresponses, status: int
) -> None:
    """A 404 or 410 when closing on the way out is swallowed."""
    mocked.post(f"{BASE}/create", payload=GREETING)
    mocked.put(f"{BASE}/close", status=status, payload={"error_message": "gone"})
    async with client.conversation():
        pass


async def test_close_failure_raises_when_block_succeeded(
    once: PolyAIClient, mocked: aioresponses
) -> None:
    """Any other failure to close is raised when the block itself succeeded."""
    mocked.post(f"{BASE}/create", payload=GREETING)
    mocked.put(f"{BASE}/close", status=500, payload={"error_message": "down"})
    with pytest.raises(InternalServerError):
        async with once.conversation():
            pass


async def test_close_failure_never_hides_the_block_error(
    once: PolyAIClient, mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    """When the block raised, a failing close is logged and the block's error propagates."""
    mocked.post(f"{BASE}/create", payload=GREETING)
    mocked.put(f"{BASE}/close", status=500, payload={"error_message": "down"})
    with pytest.raises(KeyError, match="mine"):
        async with once.conversation():
            raise KeyError("mine")
    assert "closing conversation CONV-1 failed" in caplog.text


async def test_close_is_sent_once(client: PolyAIClient, mocked: aioresponses) -> None:
    """Closing explicitly inside the block is not repeated on the way out."""
    mocked.post(f"{BASE}/create", payload=GREETING)
    mocked.put(f"{BASE}/close", payload={"success": True})
    async with client.conversation() as chat:
        await chat.aclose()
    assert len(sent(mocked, "PUT", f"{BASE}/close")) == 1
    assert "ended" in repr(chat)


async def test_cancelled_block_closes_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelling a conversation block spends at most QUIET_CLOSE_TIMEOUT on closing the chat."""
    import asyncio

    from polyai_async import _conversation
    from tests.servers import RawServer

    monkeypatch.setattr(_conversation, "QUIET_CLOSE_TIMEOUT", 0.2)
    greeting = b'{"conversation_id": "CONV-1", "response": "hi"}'
    async with RawServer(["ok", "hang", "hang"], body=greeting) as server:
        client = PolyAIClient(**CREDS, base_url=server.url)

        async def chat() -> None:
            async with client.conversation() as conversation:
                await conversation.send("this never gets an answer")

        task = asyncio.create_task(chat())
        while server.requests < 2:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 1.0
        assert server.requests == 3  # the close was attempted
        await client.aclose()


async def test_server_410_marks_the_conversation_ended(
    client: PolyAIClient, mocked: aioresponses
) -> None:
    """A 410 from the API ends the conversation locally: the next send sends nothing."""
    mocked.post(f"{BASE}/create", payload=GREETING)
    mocked.post(f"{BASE}/respond", status=410, payload={"error_message": "ended"})
    mocked.put(f"{BASE}/close", status=410, payload={"error_message": "ended"})
    async with client.conversation() as chat:
        with pytest.raises(ConversationEndedError) as first:
            await chat.send("hello?")
        assert first.value.attempts == 1
        assert chat.ended
        with pytest.raises(ConversationEndedError) as second:
            await chat.send("anyone?")
        assert second.value.attempts == 0
    assert len(sent(mocked, "POST", f"{BASE}/respond")) == 1


@pytest.mark.parametrize(("close_after_handoff", "closes"), [(True, 1), (False, 0)])
async def test_close_after_handoff(
    client: PolyAIClient, mocked: aioresponses, close_after_handoff: bool, closes: int
) -> None:
    """close_after_handoff=False leaves a handed-off chat open for the human side to close."""
    mocked.post(f"{BASE}/create", payload=GREETING)
    mocked.post(
        f"{BASE}/respond",
        payload=reply("Transferring.", end=True, handoff={"destination": "live_agent_queue"}),
    )
    mocked.put(f"{BASE}/close", payload={"success": True})
    async with client.conversation(close_after_handoff=close_after_handoff) as chat:
        await chat.send("a human please")
    assert len(sent(mocked, "PUT", f"{BASE}/close")) == closes


async def test_no_handoff_always_closes(client: PolyAIClient, mocked: aioresponses) -> None:
    """Without a handoff the chat is closed whatever close_after_handoff says."""
    mocked.post(f"{BASE}/create", payload=GREETING)
    mocked.put(f"{BASE}/close", payload={"success": True})
    async with client.conversation(close_after_handoff=False):
        pass
    assert len(sent(mocked, "PUT", f"{BASE}/close")) == 1


def turn_server() -> tuple[Handler, dict[str, Any]]:
    """A chat server that echoes, slowly for "first", ends on "bye", and tracks overlap."""
    seen: dict[str, Any] = {"messages": [], "in_flight": 0, "most_in_flight": 0}

    async def handle(request: web.Request) -> web.Response:
        if request.path.endswith("/create"):
            return web.json_response(CREATED)
        if request.path.endswith("/close"):
            return web.json_response({"success": True})
        message = (await request.json())["message"]
        seen["messages"].append(message)
        seen["in_flight"] += 1
        seen["most_in_flight"] = max(seen["most_in_flight"], seen["in_flight"])
        try:
            await asyncio.sleep(0.3 if message == "first" else 0)
        finally:
            seen["in_flight"] -= 1
        ended = message == "bye"
        return web.json_response(
            {"conversation_id": "CONV-1", "response": f"echo {message}", "end_conversation": ended}
        )

    return handle, seen


async def test_concurrent_sends_are_serialised() -> None:
    """14: two sends at once reach the server one after the other, and history in call order."""
    handle, seen = turn_server()
    async with served(handle) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            async with client.conversation() as chat:
                first = asyncio.create_task(chat.send("first"))
                await asyncio.sleep(0)  # first is now waiting for its answer
                second = asyncio.create_task(chat.send("second"))
                await asyncio.gather(first, second)
    assert seen["messages"] == ["first", "second"]
    assert seen["most_in_flight"] == 1
    assert [(t.role, t.text) for t in chat.history] == [
        ("agent", "hello"),
        ("user", "first"),
        ("agent", "echo first"),
        ("user", "second"),
        ("agent", "echo second"),
    ]


async def test_send_queued_behind_an_ending_turn_sends_nothing() -> None:
    """14: a send waiting behind one that ends the conversation fails without a request."""
    handle, seen = turn_server()
    async with served(handle) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            async with client.conversation() as chat:
                results = await asyncio.gather(
                    chat.send("bye"), chat.send("after"), return_exceptions=True
                )
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], ConversationEndedError)
    assert seen["messages"] == ["bye"]
