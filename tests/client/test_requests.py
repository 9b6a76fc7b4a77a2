"""The exact requests each call sends: method, path, headers and JSON body."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aioresponses import aioresponses
from yarl import URL

from polyai_async import (
    Channel,
    CloseChatResponse,
    ConfigurationError,
    CreateChatResponse,
    Handoff,
    PolyAIClient,
    RespondChatResponse,
)
from tests.conftest import BASE, CREDS
from tests.servers import REPLY, answer, served


def sent(mocked: aioresponses, method: str, url: str) -> list[Any]:
    """The calls aioresponses recorded for method and url."""
    return mocked.requests.get((method, URL(url)), [])


def body_of(call: Any) -> Any:
    """The JSON the client sent in a recorded call."""
    return orjson.loads(call.kwargs["data"])


def test_headers(client: PolyAIClient) -> None:
    """Every call carries X-API-KEY, X-TOKEN and a JSON content type."""
    assert client._headers["X-API-KEY"] == "key-123"
    assert client._headers["X-TOKEN"] == "tok-456"
    assert client._headers["Content-Type"] == "application/json"


async def test_create_chat_request(client: PolyAIClient, mocked: aioresponses) -> None:
    """create_chat POSTs .../chat/create with only the fields that were set."""
    mocked.post(f"{BASE}/create", payload={"conversation_id": "CONV-9", "response": "Hello!"})
    answer = await client.create_chat(channel="webchat", variant_id="v2")
    assert answer == CreateChatResponse(conversation_id="CONV-9", response="Hello!")
    (call,) = sent(mocked, "POST", f"{BASE}/create")
    assert body_of(call) == {"channel": "webchat", "variant_id": "v2"}
    assert call.kwargs["headers"]["X-API-KEY"] == "key-123"
    assert call.kwargs["headers"]["X-TOKEN"] == "tok-456"
    assert call.kwargs["headers"]["Content-Type"] == "application/json"


async def test_create_chat_with_no_fields_sends_empty_object(
    client: PolyAIClient, mocked: aioresponses
) -> None:
    """create_chat with nothing set sends {}."""
    mocked.post(f"{BASE}/create", payload={"conversation_id": "C", "response": "hi"})
    await client.create_chat()
    (call,) = sent(mocked, "POST", f"{BASE}/create")
    assert body_of(call) == {}


async def test_create_chat_all_fields(client: PolyAIClient, mocked: aioresponses) -> None:
    """Every create field is sent under its API name."""
    mocked.post(f"{BASE}/create", payload={"conversation_id": "C", "response": "hi"})
    await client.create_chat(
        channel=Channel.SMS,
        variant_id="v",
        integration_attributes={"crm": 1},
        asr_lang_code="en-GB",
        tts_lang_code="en-US",
    )
    (call,) = sent(mocked, "POST", f"{BASE}/create")
    assert body_of(call) == {
        "channel": "sms",
        "variant_id": "v",
        "integration_attributes": {"crm": 1},
        "asr_lang_code": "en-GB",
        "tts_lang_code": "en-US",
    }


async def test_respond_request(client: PolyAIClient, mocked: aioresponses) -> None:
    """respond POSTs .../chat/respond with the conversation id, message and set fields."""
    mocked.post(
        f"{BASE}/respond",
        payload={"conversation_id": "C", "response": "Sure.", "end_conversation": False},
    )
    answer = await client.respond("C", "Book a table", metadata={"user": "u1"})
    assert answer == RespondChatResponse(
        conversation_id="C", response="Sure.", end_conversation=False, handoff=None
    )
    (call,) = sent(mocked, "POST", f"{BASE}/respond")
    assert body_of(call) == {
        "conversation_id": "C",
        "message": "Book a table",
        "metadata": {"user": "u1"},
    }


async def test_respond_with_handoff(client: PolyAIClient, mocked: aioresponses) -> None:
    """A handoff in the answer is structured into Handoff."""
    mocked.post(
        f"{BASE}/respond",
        payload={
            "conversation_id": "C",
            "response": "Transferring you.",
            "end_conversation": True,
            "handoff": {"destination": "live_agent_queue", "reason": "billing"},
        },
    )
    answer = await client.respond("C", "a human please")
    assert answer.end_conversation
    assert answer.handoff == Handoff(destination="live_agent_queue", reason="billing")


async def test_close_chat_request(client: PolyAIClient, mocked: aioresponses) -> None:
    """close_chat PUTs .../chat/close with the conversation id."""
    mocked.put(f"{BASE}/close", payload={"success": True})
    assert await client.close_chat("C") == CloseChatResponse(success=True)
    (call,) = sent(mocked, "PUT", f"{BASE}/close")
    assert body_of(call) == {"conversation_id": "C"}


async def test_unknown_answer_fields_are_ignored(
    client: PolyAIClient, mocked: aioresponses
) -> None:
    """Fields the API adds later do not break parsing."""
    mocked.put(f"{BASE}/close", payload={"success": True, "closed_at": "2026-01-01"})
    assert (await client.close_chat("C")).success


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ({"conversation_id": ""}, "conversation_id"),
        ({"conversation_id": "   "}, "conversation_id"),
        ({"conversation_id": 42}, "conversation_id"),
        ({"conversation_id": "C", "message": 5}, "message"),
        ({"conversation_id": "C", "metadata": ["x"]}, "metadata"),
        ({"conversation_id": "C", "metadata": {"when": object()}}, "JSON"),
        ({"conversation_id": "C", "metadata": {1: "x"}}, "JSON"),
        ({"conversation_id": "C", "metadata": {"n": 2**70}}, "JSON"),
        ({"conversation_id": "C", "asr_lang_code": 1}, "asr_lang_code"),
    ],
)
async def test_bad_respond_arguments_fail_before_sending(
    client: PolyAIClient, mocked: aioresponses, call: dict[str, Any], match: str
) -> None:
    """Invalid respond arguments raise ConfigurationError and send nothing."""
    conversation_id = call.pop("conversation_id")
    with pytest.raises(ConfigurationError, match=match):
        await client.respond(conversation_id, **call)
    assert not mocked.requests


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channel": "telegram"}, "webchat, whatsapp, sms, api"),
        ({"variant_id": 3}, "variant_id"),
        ({"integration_attributes": "x"}, "integration_attributes"),
    ],
)
async def test_bad_create_arguments_fail_before_sending(
    client: PolyAIClient, mocked: aioresponses, kwargs: dict[str, Any], match: str
) -> None:
    """Invalid create arguments raise ConfigurationError and send nothing."""
    with pytest.raises(ConfigurationError, match=match):
        await client.create_chat(**kwargs)
    assert not mocked.requests


async def test_bad_close_argument_fails_before_sending(
    client: PolyAIClient, mocked: aioresponses
) -> None:
    """close_chat with an empty id raises and sends nothing."""
    with pytest.raises(ConfigurationError, match="conversation_id"):
        await client.close_chat("")
    assert not mocked.requests


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda c: c.respond("C", "hi", metadata={"x": NAN}), "metadata['x']"),
        (lambda c: c.respond("C", "hi", metadata={"a": [1, INF]}), "metadata['a'][1]"),
        (
            lambda c: c.respond("C", "hi", integration_attributes={"n": {"deep": -INF}}),
            "integration_attributes['n']['deep']",
        ),
        (lambda c: c.create_chat(integration_attributes={"t": (1.0, NAN)}), "['t'][1]"),
    ],
)
async def test_nan_and_infinity_are_refused_before_sending(
    call: Callable[[PolyAIClient], Awaitable[object]], where: str
) -> None:
    """11: NaN or Infinity anywhere in metadata or integration_attributes is refused, unsent."""
    async with served(answer(REPLY)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            with pytest.raises(ConfigurationError) as info:
                await call(client)
    assert where in str(info.value)
    assert "JSON" in str(info.value)
    assert server.requests == []


async def test_data_that_holds_itself_is_refused_not_walked_forever() -> None:
    """11: the check for NaN stops where JSON does; the encoder then refuses the cycle."""
    cyclic: dict[str, Any] = {"x": 1.0}
    cyclic["self"] = cyclic
    async with served(answer(REPLY)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            with pytest.raises(ConfigurationError, match="cannot be sent as JSON"):
                await asyncio.wait_for(client.respond("C", "hi", metadata=cyclic), 10)
    assert server.requests == []
