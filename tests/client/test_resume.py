"""client.resume(): a conversation made elsewhere, its saved state, and one order per id."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyai_async import (
    ClientClosedError,
    ConfigurationError,
    ConversationEndedError,
    ConversationSnapshot,
    Handoff,
    PolyAIClient,
)
from polyai_async.testing import FakePolyAI, Faults

# Each respond takes a while, so that sends that were not serialised would overlap.
SLOW = Faults(latency=0.02)


async def created_id(client: PolyAIClient) -> str:
    """A new conversation's id, created with no Conversation object."""
    return (await client.create_chat()).conversation_id


@pytest.mark.polyai(faults=SLOW)
async def test_sends_through_two_resumed_objects_never_overlap_and_keep_call_order(
    polyai_fake: FakePolyAI, polyai_client: PolyAIClient
) -> None:
    """Two objects for one id (two browser tabs) send one at a time, in the order called."""
    cid = await created_id(polyai_client)
    tabs = [polyai_client.resume(cid), polyai_client.resume(cid)]
    messages = [f"message {i}" for i in range(8)]
    await asyncio.gather(*(tabs[i % 2].send(m) for i, m in enumerate(messages)))
    assert polyai_fake.turns[cid] == messages
    assert polyai_fake.stats.max_in_flight == 1
    assert tabs[0].state.turns == tabs[1].state.turns == 8


@pytest.mark.polyai(faults=SLOW)
async def test_a_client_from_with_options_shares_the_order(
    polyai_fake: FakePolyAI, polyai_client: PolyAIClient
) -> None:
    """A conversation resumed through with_options waits for the one of its parent client."""
    cid = await created_id(polyai_client)
    first = polyai_client.resume(cid)
    second = polyai_client.with_options(timeout=10).resume(cid)
    await asyncio.gather(first.send("a"), second.send("b"), first.send("c"))
    assert polyai_fake.turns[cid] == ["a", "b", "c"]
    assert polyai_fake.stats.max_in_flight == 1


@pytest.mark.polyai(faults=SLOW)
async def test_the_objects_of_separate_conversations_run_at_once(
    polyai_fake: FakePolyAI, polyai_client: PolyAIClient
) -> None:
    """The order is per conversation: two conversations are not serialised together."""
    one = polyai_client.resume(await created_id(polyai_client))
    two = polyai_client.resume(await created_id(polyai_client))
    await asyncio.gather(one.send("x"), two.send("y"))
    assert polyai_fake.stats.max_in_flight == 2


async def test_a_send_queued_behind_a_handoff_on_another_object_sends_nothing(
    polyai_fake: FakePolyAI, polyai_client: PolyAIClient
) -> None:
    """The handoff one object saw ends the conversation for the other, before it sends."""
    async with polyai_client.conversation() as chat:
        tab = polyai_client.resume(chat.conversation_id)
        results = await asyncio.gather(
            chat.send("a human please"), tab.send("hello?"), return_exceptions=True
        )
        assert isinstance(results[1], ConversationEndedError)
        assert "live_agent_queue" in str(results[1])
        assert tab.ended
        assert tab.handoff == Handoff(destination="live_agent_queue", reason="user_requested_human")
        assert polyai_fake.turns[chat.conversation_id] == ["a human please"]


async def test_a_resumed_ended_conversation_sends_nothing(polyai_fake: FakePolyAI) -> None:
    """Resumed in another client from its saved JSON, an ended conversation refuses to send."""
    async with polyai_fake.client() as client:
        async with client.conversation(close_after_handoff=False) as chat:
            await chat.send("hi")
            await chat.send("get me a person")
        saved = json.dumps(chat.state.to_dict())
    respond_calls = polyai_fake.stats.requests["respond"]
    async with polyai_fake.client() as other:  # another request, another process
        resumed = other.resume(json.loads(saved))
        assert resumed.ended
        with pytest.raises(ConversationEndedError, match="handed off to live_agent_queue"):
            await resumed.send("are you there?")
    assert polyai_fake.stats.requests["respond"] == respond_calls


async def test_the_state_says_what_the_conversation_did(polyai_client: PolyAIClient) -> None:
    """Greeting, turns, ended and handoff follow the conversation, and resume continues them."""
    async with polyai_client.conversation() as chat:
        assert chat.state == ConversationSnapshot(
            conversation_id=chat.conversation_id, greeting=chat.greeting
        )
        await chat.send("hi")
        resumed = polyai_client.resume(chat.state.to_dict())
        assert resumed.greeting == chat.greeting
        assert resumed.history == []
        await resumed.send("bye")
        assert chat.state == resumed.state
        assert chat.state.turns == 2
        assert chat.state.ended
        assert chat.state.handoff is None


async def test_a_stale_state_does_not_reopen_a_conversation_held_here(
    polyai_client: PolyAIClient,
) -> None:
    """What a live object knows wins over an older saved state: ended stays ended."""
    async with polyai_client.conversation() as chat:
        stale = chat.state
        await chat.send("bye")
        resumed = polyai_client.resume(stale)
        assert resumed.ended
        assert resumed.state.turns == 1


async def test_a_resumed_conversation_closes(
    polyai_fake: FakePolyAI, polyai_client: PolyAIClient
) -> None:
    """aclose() on a resumed conversation closes the chat on the API and ends it."""
    cid = await created_id(polyai_client)
    chat = polyai_client.resume(cid)
    await chat.aclose()
    assert polyai_fake.conversations[cid].closed
    assert chat.state.ended


async def test_nothing_is_kept_for_an_id_no_object_holds(polyai_client: PolyAIClient) -> None:
    """The client keeps a conversation's order only while a Conversation for it exists."""
    cid = await created_id(polyai_client)
    chat = polyai_client.resume(cid)
    await chat.send("hi")
    assert len(polyai_client._conversations) == 1
    del chat
    gc.collect()
    assert len(polyai_client._conversations) == 0


handoffs = st.none() | st.builds(
    Handoff, destination=st.none() | st.text(), reason=st.none() | st.text()
)
snapshots = st.builds(
    ConversationSnapshot,
    conversation_id=st.text(min_size=1).filter(str.strip),
    greeting=st.none() | st.text(),
    turns=st.integers(min_value=0, max_value=10**6),
    ended=st.booleans(),
    handoff=handoffs,
)


@given(snapshots)
def test_the_state_round_trips_through_json(state: ConversationSnapshot) -> None:
    """from_dict(json.loads(json.dumps(to_dict()))) gives the same state back."""
    data = json.loads(json.dumps(state.to_dict()))
    assert ConversationSnapshot.from_dict(data) == state


GOOD: dict[str, Any] = {
    "conversation_id": "CONV-1",
    "greeting": "Hello",
    "turns": 2,
    "ended": False,
    "handoff": None,
}


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({**GOOD, "conversation_id": ""}, "conversation_id"),
        ({**GOOD, "conversation_id": 7}, "conversation_id"),
        ({k: v for k, v in GOOD.items() if k != "conversation_id"}, "conversation_id"),
        ({**GOOD, "greeting": 3}, "greeting"),
        ({**GOOD, "turns": -1}, "turns"),
        ({**GOOD, "turns": "2"}, "turns"),
        ({**GOOD, "turns": True}, "turns"),
        ({**GOOD, "ended": "no"}, "ended"),
        ({**GOOD, "handoff": "queue"}, "handoff"),
        ({**GOOD, "handoff": {"destination": 1}}, "handoff"),
        ({**GOOD, "handoff": {"queue": "x"}}, "handoff"),
        (["CONV-1"], "dict"),
    ],
)
async def test_bad_saved_state_is_refused_naming_the_field(
    polyai_client: PolyAIClient, data: Any, named: str
) -> None:
    """resume() refuses bad data with one ConfigurationError naming what is wrong."""
    with pytest.raises(ConfigurationError, match=named):
        polyai_client.resume(data)


def test_unknown_keys_are_ignored_for_rolling_deploys() -> None:
    """Data a newer version wrote, with a key this one does not know, still resumes."""
    assert ConversationSnapshot.from_dict({**GOOD, "channel": "webchat"}) == (
        ConversationSnapshot.from_dict(GOOD)
    )


async def test_resume_refuses_other_types_and_a_closed_client(
    polyai_fake: FakePolyAI,
) -> None:
    """resume() takes an id, a state or its dict; a closed client refuses to resume."""
    client = polyai_fake.client()
    with pytest.raises(ConfigurationError, match="not int"):
        client.resume(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="conversation_id"):
        client.resume("  ")
    await client.aclose()
    with pytest.raises(ClientClosedError):
        client.resume("CONV-1")


async def test_resume_takes_the_answer_of_create(
    polyai_fake: FakePolyAI, polyai_client: PolyAIClient
) -> None:
    """client.resume(await client.create_chat()) starts a conversation with its greeting."""
    chat = polyai_client.resume(await polyai_client.create_chat())
    assert chat.greeting == chat.history[0].text
    await chat.send("hi")
    assert chat.state.turns == 1
    assert polyai_fake.turns[chat.conversation_id] == ["hi"]
