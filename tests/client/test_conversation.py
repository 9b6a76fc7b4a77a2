"""client.conversation(): history, ending, handoff, and closing on the way out."""

from __future__ import annotations

import pytest
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
    import time

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
