"""FakePolyAI: the contract status by status, agents, faults, counters and the subprocess mode."""

from __future__ import annotations

import asyncio
import inspect
import signal
import sys
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import attrs
import orjson
import pytest

import polyai_async.testing
from polyai_async import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    ConversationEndedError,
    Handoff,
    InternalServerError,
    PolyAIClient,
    RateLimitError,
    ResponseValidationError,
    RetryPolicy,
)
from polyai_async.testing import (
    AgentReply,
    ConversationState,
    DemoAgent,
    EchoAgent,
    FakePolyAI,
    Faults,
    ScriptedAgent,
    run_server,
)
from polyai_async.testing.__main__ import main

AUTH = {"X-API-KEY": "test-api-key", "X-TOKEN": "test-token"}
NO_RETRY = RetryPolicy(max_attempts=1)
FAST_RETRY = RetryPolicy(initial_backoff=0, max_backoff=0, max_attempts=3)
ERROR_KEYS = {"success", "error", "error_id", "error_code", "error_message", "data"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw aiohttp session, to test the server itself rather than the client."""
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    session: aiohttp.ClientSession,
    fake: FakePolyAI,
    endpoint: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
    path: str | None = None,
) -> tuple[int, Any, Any]:
    """Send one request; return the status, the parsed body (or raw bytes) and the headers."""
    if method is None:
        method = "PUT" if endpoint == "close" else "POST"
    if path is None:
        path = f"/v1/ACCOUNT-test/PROJECT-test/chat/{endpoint}"
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    async with session.request(
        method, fake.url + path, data=data, headers=AUTH if headers is None else headers
    ) as response:
        content = await response.read()
        try:
            parsed: Any = orjson.loads(content)
        except orjson.JSONDecodeError:
            parsed = content
        return response.status, parsed, response.headers


async def create(session: aiohttp.ClientSession, fake: FakePolyAI, **body: Any) -> str:
    """Create a conversation and return its id."""
    status, answer, _ = await call(session, fake, "create", body)
    assert status == 200, answer
    conversation_id: str = answer["conversation_id"]
    return conversation_id


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (the server runs its side of a test concurrently)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


# -- the contract ----------------------------------------------------------------------------


async def test_create_returns_a_fresh_id_and_the_greeting(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession
) -> None:
    """create answers 200 JSON with a CONV- id and the greeting, a new id each time."""
    status, answer, headers = await call(session, polyai_fake, "create")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert set(answer) == {"conversation_id", "response"}
    assert answer["conversation_id"].startswith("CONV-")
    int(answer["conversation_id"].removeprefix("CONV-"), 16)
    assert answer["response"] == "Hello! How can I help you today?"
    assert await create(session, polyai_fake) != answer["conversation_id"]


async def test_create_keeps_its_options_in_the_state(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession
) -> None:
    """The channel, variant, language codes and integration attributes of create are kept."""
    conversation_id = await create(
        session,
        polyai_fake,
        channel="sms",
        variant_id="v2",
        asr_lang_code="en-GB",
        tts_lang_code="en-US",
        integration_attributes={"crm": 1},
    )
    state = polyai_fake.conversations[conversation_id]
    assert (state.channel, state.variant_id) == ("sms", "v2")
    assert (state.asr_lang_code, state.tts_lang_code) == ("en-GB", "en-US")
    assert state.integration_attributes == {"crm": 1}


async def test_every_answer_has_a_fresh_correlation_id(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession
) -> None:
    """Successes and errors carry X-PolyAI-Correlation-Id, new each time; error_id matches it."""
    ids = []
    for endpoint, body in (("create", None), ("create", None), ("respond", {})):
        _, answer, headers = await call(session, polyai_fake, endpoint, body)
        ids.append(headers["X-PolyAI-Correlation-Id"])
    assert len(set(ids)) == 3
    assert answer["error_id"] == ids[-1]


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/v2/ACCOUNT-test/PROJECT-test/chat/create", "API version 'v2'"),
        ("/v1/ACCOUNT-other/PROJECT-test/chat/create", "account 'ACCOUNT-other'"),
        ("/v1/ACCOUNT-test/PROJECT-other/chat/create", "project 'PROJECT-other'"),
        ("/v1/ACCOUNT-test/PROJECT-test/chat/nope", "no such endpoint"),
        ("/health", "no such endpoint"),
    ],
)
async def test_unknown_path_is_404_with_the_error_body(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession, path: str, named: str
) -> None:
    """A wrong version, account, project or endpoint is 404 in the current error shape."""
    status, answer, headers = await call(session, polyai_fake, "create", path=path)
    assert status == 404
    assert set(answer) == ERROR_KEYS
    assert answer["success"] is False
    assert answer["data"] is None
    assert answer["error_code"] == "NOT_FOUND"
    assert named in answer["error_message"]
    assert answer["error_id"] == headers["X-PolyAI-Correlation-Id"]


async def test_wrong_method_is_405(polyai_fake: FakePolyAI, session: aiohttp.ClientSession) -> None:
    """close takes PUT and create takes POST; anything else is 405."""
    status, answer, _ = await call(
        session, polyai_fake, "close", {"conversation_id": "x"}, method="POST"
    )
    assert (status, answer["error_code"]) == (405, "METHOD_NOT_ALLOWED")
    status, _, _ = await call(session, polyai_fake, "create", method="GET")
    assert status == 405


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-TOKEN": "test-token"}, "X-API-KEY header is missing"),
        ({"X-API-KEY": "test-api-key"}, "X-TOKEN header is missing"),
        ({"X-API-KEY": "wrong", "X-TOKEN": "test-token"}, "X-API-KEY header is not valid"),
        ({"X-API-KEY": "test-api-key", "X-TOKEN": "wrong"}, "X-TOKEN header is not valid"),
    ],
)
@pytest.mark.parametrize("endpoint", ["create", "respond", "close"])
async def test_missing_or_wrong_credentials_are_401(
    polyai_fake: FakePolyAI,
    session: aiohttp.ClientSession,
    endpoint: str,
    headers: dict[str, str],
    named: str,
) -> None:
    """Every endpoint needs both X-API-KEY and X-TOKEN, right."""
    status, answer, _ = await call(
        session, polyai_fake, endpoint, {"conversation_id": "x"}, headers=headers
    )
    assert (status, answer["error_code"]) == (401, "UNAUTHORIZED")
    assert named in answer["error_message"]


async def test_credentials_are_checked_before_the_account(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession
) -> None:
    """A wrong project with no credentials is 401, not 404: nothing leaks to strangers."""
    status, _, _ = await call(
        session, polyai_fake, "create", path="/v1/ACCOUNT-test/PROJECT-x/chat/create", headers={}
    )
    assert status == 401


async def test_channel_outside_create_is_ignored_like_any_undocumented_field(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession
) -> None:
    """respond documents no channel: a stray one of any type is ignored, not a server error."""
    _, created, _ = await call(session, polyai_fake, "create", {})
    body = {"conversation_id": created["conversation_id"], "message": "hi", "channel": []}
    status, answer, _ = await call(session, polyai_fake, "respond", body)
    assert status == 200, answer


@pytest.mark.parametrize(
    ("endpoint", "raw", "named"),
    [
        ("create", b"{", "not valid JSON"),
        ("create", b"[1]", "must be a JSON object, not an array"),
        ("create", b'{"channel": 1}', "channel must be a string, not a number"),
        ("create", b'{"channel": "fax"}', "channel must be one of webchat, whatsapp, sms, api"),
        ("create", b'{"variant_id": null}', "variant_id must be a string, not null"),
        ("create", b'{"integration_attributes": []}', "integration_attributes must be an object"),
        ("create", b'{"asr_lang_code": true}', "asr_lang_code must be a string, not a boolean"),
        ("respond", b"", "the request body is required"),
        ("respond", b'{"message": "hi"}', "conversation_id is required"),
        ("respond", b'{"conversation_id": 7}', "conversation_id must be a string"),
        ("respond", b'{"conversation_id": "c", "message": 5}', "message must be a string"),
        ("respond", b'{"conversation_id": "c", "metadata": "x"}', "metadata must be an object"),
        ("respond", b'{"conversation_id": "c", "tts_lang_code": 1}', "tts_lang_code must be"),
        ("close", b"{}", "conversation_id is required"),
        ("close", b"null", "must be a JSON object, not null"),
    ],
)
async def test_invalid_bodies_are_400_naming_the_field(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession, endpoint: str, raw: bytes, named: str
) -> None:
    """Bodies that break the contract are 400 INVALID_REQUEST, and the message says why."""
    status, answer, _ = await call(session, polyai_fake, endpoint, raw=raw)
    assert (status, answer["error_code"], answer["error"]) == (400, "INVALID_REQUEST", "BadRequest")
    assert named in answer["error_message"]
    assert polyai_fake.conversations == {}


async def test_unknown_conversation_is_404(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession
) -> None:
    """respond and close on an id create never gave are 404 CONVERSATION_NOT_FOUND."""
    for endpoint in ("respond", "close"):
        status, answer, _ = await call(
            session, polyai_fake, endpoint, {"conversation_id": "CONV-0"}
        )
        assert (status, answer["error_code"]) == (404, "CONVERSATION_NOT_FOUND")
        assert "CONV-0" in answer["error_message"]


async def test_respond_answers_exactly_the_documented_fields(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession
) -> None:
    """A plain reply has conversation_id, response and end_conversation, and no handoff."""
    conversation_id = await create(session, polyai_fake)
    status, answer, _ = await call(
        session, polyai_fake, "respond", {"conversation_id": conversation_id, "message": "hello"}
    )
    assert status == 200
    assert answer == {
        "conversation_id": conversation_id,
        "response": "Hello! What can I do for you?",
        "end_conversation": False,
    }


async def test_handoff_answer_and_then_410(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession
) -> None:
    """Asking for a human hands off (ending the conversation); the next message is 410."""
    conversation_id = await create(session, polyai_fake)
    body = {"conversation_id": conversation_id, "message": "Can I talk to a human please?"}
    status, answer, _ = await call(session, polyai_fake, "respond", body)
    assert status == 200
    assert answer["end_conversation"] is True
    assert answer["handoff"] == {
        "destination": "live_agent_queue",
        "reason": "user_requested_human",
    }
    status, answer, _ = await call(session, polyai_fake, "respond", body)
    assert (status, answer["error_code"]) == (410, "CHAT_CONVERSATION_ENDED")
    assert answer["error"] == "ChatConversationEnded"
    assert polyai_fake.turns[conversation_id] == [body["message"]]


async def test_close_then_respond_is_410_and_close_is_idempotent(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession
) -> None:
    """close answers {"success": true} every time; respond on a closed conversation is 410."""
    conversation_id = await create(session, polyai_fake)
    for _ in range(2):
        status, answer, _ = await call(
            session, polyai_fake, "close", {"conversation_id": conversation_id}
        )
        assert (status, answer) == (200, {"success": True})
    assert polyai_fake.conversations[conversation_id].closed
    status, answer, _ = await call(
        session, polyai_fake, "respond", {"conversation_id": conversation_id, "message": "hi"}
    )
    assert (status, answer["error_code"]) == (410, "CHAT_CONVERSATION_ENDED")
    assert "closed" in answer["error_message"]


async def test_closed_conversations_are_forgotten_beyond_keep_closed(
    session: aiohttp.ClientSession,
) -> None:
    """300 closed with keep_closed=10: it holds 10 closed and the open ones, never more."""
    async with FakePolyAI(keep_closed=10) as fake:
        still_open = [await create(session, fake) for _ in range(3)]
        for _ in range(300):
            conversation_id = await create(session, fake)
            await call(session, fake, "respond", {"conversation_id": conversation_id})
            await call(session, fake, "close", {"conversation_id": conversation_id})
        assert len(fake.conversations) == 3 + 10
        assert all(cid in fake.conversations for cid in still_open)
        assert len(fake.stats.attempts) <= 3 + 10
        assert fake.requests["close"] == 300  # the counters are whole


async def test_a_forgotten_id_still_answers_as_closed_and_a_made_up_one_404(
    session: aiohttp.ClientSession,
) -> None:
    """A closed id it forgot: respond 410, close 200; an id it never made, even well formed: 404."""
    async with FakePolyAI(keep_closed=0) as fake:
        forgotten = await create(session, fake)
        await call(session, fake, "close", {"conversation_id": forgotten})
        assert fake.conversations == {}
        status, answer, _ = await call(
            session, fake, "respond", {"conversation_id": forgotten, "message": "hi"}
        )
        assert (status, answer["error_code"]) == (410, "CHAT_CONVERSATION_ENDED")
        assert "closed" in answer["error_message"]
        status, answer, _ = await call(session, fake, "close", {"conversation_id": forgotten})
        assert (status, answer) == (200, {"success": True})
        forged = forgotten[:-1] + ("0" if forgotten[-1] != "0" else "1")
        async with FakePolyAI(seed=7) as other:
            foreign = await create(session, other)
        for made_up in (forged, foreign):
            for endpoint in ("respond", "close"):
                status, answer, _ = await call(
                    session, fake, endpoint, {"conversation_id": made_up}
                )
                assert (status, answer["error_code"]) == (404, "CONVERSATION_NOT_FOUND")


def test_keep_closed_must_be_a_whole_number() -> None:
    """keep_closed=-1 (or 1.5) is refused, naming the setting."""
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigurationError, match="keep_closed"):
            FakePolyAI(keep_closed=bad)  # type: ignore[arg-type]


async def test_legacy_error_shape(session: aiohttp.ClientSession) -> None:
    """With legacy_errors the body is only {"error_message": ...}; the header stays."""
    async with FakePolyAI(legacy_errors=True) as fake:
        status, answer, headers = await call(session, fake, "respond", {"conversation_id": "x"})
    assert status == 404
    assert answer == {"error_message": "conversation 'x' does not exist"}
    assert headers["X-PolyAI-Correlation-Id"]


async def test_custom_credentials_and_ids(session: aiohttp.ClientSession) -> None:
    """The fake accepts exactly the credentials and path it was given, and the client agrees."""
    options: dict[str, Any] = {
        "api_key": "k",
        "token": "t",
        "account_id": "acme",
        "project_id": "bot",
        "version": "v9",
    }
    async with FakePolyAI(**options) as fake:
        status, _, _ = await call(
            session,
            fake,
            "create",
            headers={"X-API-KEY": "k", "X-TOKEN": "t"},
            path="/v9/acme/bot/chat/create",
        )
        assert status == 200
        async with fake.client() as client:
            await client.create_chat()
        assert fake.requests["create"] == 2


# -- through the client --------------------------------------------------------------------


async def test_a_whole_conversation_through_the_client(
    polyai_fake: FakePolyAI, polyai_client: Any
) -> None:
    """client.conversation() talks to the fake: greeting, reply, goodbye, then close."""
    async with polyai_client.conversation(channel="webchat") as chat:
        assert chat.greeting == "Hello! How can I help you today?"
        reply = await chat.send("what are your opening hours?", metadata={"turn": 1})
        assert "9am" in reply.response
        reply = await chat.send("ok, bye")
        assert reply.end_conversation
        assert reply.handoff is None
        with pytest.raises(ConversationEndedError):
            await chat.send("still there?")
    state = polyai_fake.conversations[chat.conversation_id]
    assert state.turns == ["what are your opening hours?", "ok, bye"]
    assert state.closed
    assert state.ended
    assert polyai_fake.requests == {"create": 1, "respond": 2, "close": 1}


async def test_client_sees_handoff_and_typed_errors(polyai_fake: FakePolyAI) -> None:
    """The client parses the fake's handoff and maps its 401 with the correlation id."""
    async with polyai_fake.client() as client:
        created = await client.create_chat()
        reply = await client.respond(created.conversation_id, "get me an agent")
    assert reply.handoff == Handoff(destination="live_agent_queue", reason="user_requested_human")
    async with polyai_fake.client(token="nope") as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.create_chat()
    assert caught.value.correlation_id
    assert caught.value.error_code == "UNAUTHORIZED"


# -- agents --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "ends", "handoff"),
    [
        ("I want to speak to a person", True, True),
        ("REPRESENTATIVE!", True, True),
        ("goodbye", True, False),
        ("bye now", True, False),
        ("hi there", False, False),
        ("thanks", False, False),
        ("what's on the agenda?", False, False),
        (None, False, False),
        ("  ", False, False),
    ],
)
def test_demo_agent(message: str | None, ends: bool, handoff: bool) -> None:
    """DemoAgent hands off on human requests, ends on goodbye, and answers anything else."""
    reply = DemoAgent()(message, ConversationState("c"))
    assert reply.ends is ends
    assert (reply.handoff is not None) is handoff
    assert reply.text
    if handoff:
        assert reply.handoff == Handoff(
            destination="live_agent_queue", reason="user_requested_human"
        )


async def test_echo_agent_and_its_greeting(session: aiohttp.ClientSession) -> None:
    """EchoAgent echoes with its prefix; an agent's greeting attribute answers create."""
    async with FakePolyAI(agent=EchoAgent("you said: ", greeting="Yo")) as fake:
        _, answer, _ = await call(session, fake, "create")
        assert answer["response"] == "Yo"
        _, answer, _ = await call(
            session, fake, "respond", {"conversation_id": answer["conversation_id"], "message": "x"}
        )
    assert answer["response"] == "you said: x"


async def test_scripted_agent_runs_per_conversation_and_ends(
    session: aiohttp.ClientSession,
) -> None:
    """ScriptedAgent gives the n-th reply to the n-th turn of each conversation; the last ends."""
    agent = ScriptedAgent(["one", AgentReply("two", handoff=("billing", "billing_question"))])
    async with FakePolyAI(agent=agent) as fake:
        first, second = await create(session, fake), await create(session, fake)
        answers = []
        for conversation_id in (first, first, second):
            _, answer, _ = await call(
                session, fake, "respond", {"conversation_id": conversation_id, "message": "m"}
            )
            answers.append(answer)
    assert [a["response"] for a in answers] == ["one", "two", "one"]
    assert answers[1]["end_conversation"] is True
    assert answers[1]["handoff"] == {"destination": "billing", "reason": "billing_question"}


def test_scripted_agent_repeats_its_last_reply_and_needs_one() -> None:
    """Past the end of its script ScriptedAgent repeats the last reply; an empty script fails."""
    agent = ScriptedAgent(["a", "b"])
    state = ConversationState("c", turns=["1", "2", "3"])
    assert agent("3", state).text == "b"
    with pytest.raises(ValueError, match="at least one"):
        ScriptedAgent([])


async def test_async_agent_sees_the_conversation_state(session: aiohttp.ClientSession) -> None:
    """An async agent gets the message and a state with turns, metadata and attributes."""
    seen: list[ConversationState] = []

    async def agent(message: str | None, state: ConversationState) -> str:
        await asyncio.sleep(0)
        seen.append(attrs.evolve(state, turns=list(state.turns)))
        return f"{len(state.turns)}:{message}"

    async with FakePolyAI(agent=agent) as fake:
        conversation_id = await create(
            session, fake, channel="whatsapp", variant_id="v", integration_attributes={"a": 1}
        )
        _, answer, _ = await call(
            session,
            fake,
            "respond",
            {
                "conversation_id": conversation_id,
                "message": "hi",
                "metadata": {"m": 2},
                "integration_attributes": {"b": 3},
            },
        )
        await call(session, fake, "respond", {"conversation_id": conversation_id})
    assert answer["response"] == "1:hi"
    first, second = seen
    assert first.conversation_id == conversation_id
    assert (first.channel, first.variant_id) == ("whatsapp", "v")
    assert first.turns == ["hi"]
    assert first.metadata == {"m": 2}
    assert first.integration_attributes == {"a": 1, "b": 3}
    assert second.turns == ["hi", None]
    assert second.metadata is None


async def test_failing_agent_is_a_500(session: aiohttp.ClientSession) -> None:
    """An agent that raises makes respond answer 500 AGENT_ERROR, not crash the server."""

    def agent(message: str | None, state: ConversationState) -> str:
        raise RuntimeError("boom")

    async with FakePolyAI(agent=agent) as fake:
        conversation_id = await create(session, fake)
        status, answer, _ = await call(
            session, fake, "respond", {"conversation_id": conversation_id}
        )
    assert (status, answer["error_code"]) == (500, "AGENT_ERROR")
    assert "boom" in answer["error_message"]


# -- faults --------------------------------------------------------------------------------


async def outcome(session: aiohttp.ClientSession, fake: FakePolyAI) -> str:
    """Send a create; describe what came back: a status, ``malformed`` or ``reset``."""
    try:
        status, answer, headers = await call(session, fake, "create")
    except aiohttp.ClientConnectionError:
        return "reset"
    if status == 429:
        return f"429 after {headers['Retry-After']}"
    if isinstance(answer, bytes):
        return "malformed"
    return str(status)


async def test_script_is_applied_in_order_then_the_rates(session: aiohttp.ClientSession) -> None:
    """Scripted faults hit the next requests in order; after the script, no rate means ok."""
    faults = Faults(script=("500", "reset", "ok", "429", "malformed", "503"), retry_after=0.25)
    async with FakePolyAI(faults=faults) as fake:
        outcomes = [await outcome(session, fake) for _ in range(7)]
    assert outcomes == ["500", "reset", "200", "429 after 0.25", "malformed", "503", "200"]
    assert fake.stats.faults == {"500": 1, "reset": 1, "429": 1, "malformed": 1, "503": 1}


async def test_same_seed_same_faults(session: aiohttp.ClientSession) -> None:
    """Two fakes with one seed fault the same requests the same way; another seed differs."""
    faults = Faults(error_rate=0.25, rate_limit_rate=0.25, reset_rate=0.1, malformed_rate=0.1)
    runs = []
    for seed in (7, 7, 8):
        async with FakePolyAI(faults=faults, seed=seed) as fake:
            runs.append([await outcome(session, fake) for _ in range(30)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert {"200", "500", "reset", "malformed"} <= set(runs[0])


async def test_rates_of_one_always_fault(session: aiohttp.ClientSession) -> None:
    """error_rate=1 with error_status faults every request with that status."""
    async with FakePolyAI(faults=Faults(error_rate=1.0, error_status=502)) as fake:
        status, answer, _ = await call(session, fake, "create")
    assert (status, answer["error_code"], answer["error"]) == (502, "BAD_GATEWAY", "BadGateway")


async def test_faults_change_at_runtime(session: aiohttp.ClientSession) -> None:
    """Assigning fake.faults takes effect on the next request, and its script starts over."""
    async with FakePolyAI() as fake:
        assert await outcome(session, fake) == "200"
        fake.faults = attrs.evolve(fake.faults, error_rate=1.0, error_status=503)
        assert await outcome(session, fake) == "503"
        fake.faults = Faults(script=("500",))
        assert [await outcome(session, fake) for _ in range(2)] == ["500", "200"]
        fake.faults = Faults(script=("500",))
        assert await outcome(session, fake) == "500"


async def test_faults_apply_only_to_their_endpoints(session: aiohttp.ClientSession) -> None:
    """With endpoints={"respond"}, create passes and does not use up the script."""
    async with FakePolyAI(faults=Faults(script=("500",), endpoints={"respond"})) as fake:
        conversation_id = await create(session, fake)
        status, _, _ = await call(session, fake, "respond", {"conversation_id": conversation_id})
    assert status == 500


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"error_rate": 1.5}, "between 0 and 1"),
        ({"error_rate": 0.6, "reset_rate": 0.6}, "more than 1"),
        ({"error_status": 200}, "from 400 to 599"),
        ({"latency": -1}, ">= 0"),
        ({"script": ("boom",)}, "unknown fault 'boom'"),
        ({"script": ("500+later",)}, "suffix"),
        ({"script": ("429+after",)}, "never processed"),
        ({"endpoints": {"delete"}}, "unknown endpoints"),
        ({"concurrency_limit": 0}, "concurrency_limit must be a whole number >= 1"),
        ({"concurrency_limit": 2.5}, "concurrency_limit must be a whole number >= 1"),
    ],
)
def test_invalid_faults_are_refused(kwargs: dict[str, Any], match: str) -> None:
    """Faults checks its settings when made, not when a request meets them."""
    with pytest.raises(ValueError, match=match):
        Faults(**kwargs)


async def test_a_concurrency_limit_answers_429_beyond_it() -> None:
    """With concurrency_limit=2, a third request at once gets a 429 and is not processed."""
    faults = Faults(concurrency_limit=2, latency=0.05, retry_after=0)
    async with FakePolyAI(faults=faults) as fake:
        async with fake.client(retry=RetryPolicy(max_attempts=1)) as client:
            results = await asyncio.gather(
                *(client.create_chat() for _ in range(3)), return_exceptions=True
            )
    assert sum(isinstance(r, RateLimitError) for r in results) == 1
    assert len(fake.conversations) == 2
    assert fake.stats.max_in_flight == 2
    assert fake.stats.faults["429"] == 1


def test_script_from_a_string() -> None:
    """A comma-separated script (from a command line) becomes a tuple of names."""
    assert Faults(script="500, reset,,ok").script == ("500", "reset", "ok")


@pytest.mark.parametrize(
    ("faults", "turns", "duplicated", "lost"),
    [
        (Faults(script=("500",)), ["hi"], 0, 0),
        (Faults(script=("500+after",)), ["hi", "hi"], 1, 1),
        (Faults(script=("500",), after_processing=True), ["hi", "hi"], 1, 1),
        (Faults(script=("reset+after",)), ["hi", "hi"], 1, 1),
        (Faults(script=("reset+before",), after_processing=True), ["hi"], 0, 0),
        (Faults(script=("malformed+after",)), ["hi"], 0, 1),
        (Faults(script=("429",), retry_after=0), ["hi"], 0, 0),
    ],
)
async def test_ambiguous_faults_duplicate_turns_on_retry(
    faults: Faults, turns: list[str], duplicated: int, lost: int
) -> None:
    """A fault after processing records the turn, so the client's retry records it twice."""
    async with FakePolyAI(faults=Faults(endpoints={"respond"})) as fake:
        async with fake.client(retry=FAST_RETRY) as client:
            created = await client.create_chat()
            fake.faults = attrs.evolve(faults, endpoints={"respond"})
            try:
                await client.respond(created.conversation_id, "hi")
            except ResponseValidationError:
                assert "malformed" in faults.script[0]  # validation failures are not retried
        conversation_id = created.conversation_id
        assert fake.turns[conversation_id] == turns
        expected = {conversation_id: duplicated} if duplicated else {}
        assert fake.duplicated_turns() == expected
        assert fake.stats.lost_answers["respond"] == lost
        assert fake.stats.attempts[conversation_id] == (1 if "malformed" in faults.script[0] else 2)


async def test_ambiguous_create_leaves_an_orphan() -> None:
    """A create faulted after processing makes a conversation the client never hears of."""
    async with FakePolyAI(faults=Faults(script=("500+after",))) as fake:
        async with fake.client(retry=FAST_RETRY) as client:
            created = await client.create_chat()
    assert len(fake.conversations) == 2
    assert fake.stats.lost_answers == {"create": 1}
    assert created.conversation_id in fake.conversations


async def test_client_sees_each_fault_typed() -> None:
    """Through the client: reset, malformed, 500 and 429 surface as the documented errors."""
    faults = Faults(script=("reset", "malformed", "500", "429"), retry_after=0)
    async with FakePolyAI(faults=faults) as fake, fake.client(retry=NO_RETRY) as client:
        for error in (APIConnectionError, ResponseValidationError, InternalServerError):
            with pytest.raises(error):
                await client.create_chat()
        with pytest.raises(RateLimitError) as caught:
            await client.create_chat()
    assert caught.value.headers["Retry-After"] == "0"


async def test_latency_past_the_timeout_still_records_the_turn() -> None:
    """With latency beyond the client's timeout, the turn is processed and its answer lost."""
    async with FakePolyAI(faults=Faults(endpoints={"respond"})) as fake:
        async with fake.client(retry=NO_RETRY, timeout=0.05) as client:
            created = await client.create_chat()
            fake.faults = Faults(latency=0.25, latency_jitter=0.05, endpoints={"respond"})
            with pytest.raises(APITimeoutError):
                await client.respond(created.conversation_id, "slow")
        await eventually(lambda: fake.stats.lost_answers["respond"] == 1)
        assert fake.turns[created.conversation_id] == ["slow"]
        assert fake.stats.faults["latency"] == 1


# -- counters ------------------------------------------------------------------------------


async def test_requests_and_attempts_are_counted(
    polyai_fake: FakePolyAI, session: aiohttp.ClientSession
) -> None:
    """requests counts every request by endpoint (errors too); attempts counts per conversation."""
    conversation_id = await create(session, polyai_fake)
    await call(session, polyai_fake, "respond", {"conversation_id": conversation_id})
    await call(session, polyai_fake, "respond", raw=b"{")
    await call(session, polyai_fake, "close", {"conversation_id": conversation_id})
    await call(session, polyai_fake, "create", path="/v1/x/y/chat/create")
    assert polyai_fake.requests == {"create": 1, "respond": 2, "close": 1, "unknown": 1}
    assert polyai_fake.stats.attempts == {conversation_id: 2}


async def test_keep_alive_connections_are_counted_once(polyai_fake: FakePolyAI) -> None:
    """One keep-alive session makes one TCP connection; force_close makes one per request."""
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            await call(session, polyai_fake, "create")
    assert polyai_fake.stats.connections_accepted == 1
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(3):
            await call(session, polyai_fake, "create")
    assert polyai_fake.stats.connections_accepted == 4
    await eventually(lambda: polyai_fake.stats.open_connections == 0)


async def test_most_connections_open_at_once(polyai_fake: FakePolyAI) -> None:
    """Concurrent slow requests open a connection each; the most at once is remembered."""
    polyai_fake.faults = Faults(latency=0.1)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=5)) as session:
        await asyncio.gather(*(call(session, polyai_fake, "create") for _ in range(8)))
        assert polyai_fake.stats.open_connections == 5
    assert polyai_fake.stats.max_open_connections == 5
    assert polyai_fake.stats.connections_accepted == 5
    await eventually(lambda: polyai_fake.stats.open_connections == 0)
    assert polyai_fake.stats.as_dict()["max_open_connections"] == 5


async def test_lifecycle() -> None:
    """url needs a running server; start twice fails; aclose is idempotent."""
    fake = FakePolyAI()
    with pytest.raises(RuntimeError, match="not running"):
        fake.url  # noqa: B018
    await fake.start()
    try:
        assert fake.running
        assert fake.url == f"http://127.0.0.1:{fake.port}"
        with pytest.raises(RuntimeError, match="already running"):
            await fake.start()
    finally:
        await fake.aclose()
        await fake.aclose()
    assert not fake.running
    assert "stopped" in repr(fake)


# -- running as a process ------------------------------------------------------------------


async def test_run_server_until_stopped(session: aiohttp.ClientSession) -> None:
    """run_server calls on_ready with the running fake and returns its stats once stopped."""
    stop = asyncio.Event()
    urls: list[str] = []

    def ready(fake: FakePolyAI) -> None:
        urls.append(fake.url)
        stop.set()

    stats = await run_server(FakePolyAI(), on_ready=ready, stop=stop)
    assert len(urls) == 1
    assert urls[0].startswith("http://127.0.0.1:")
    assert stats.requests == {}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_subprocess_prints_its_url_and_stops_cleanly(sig: signal.Signals) -> None:
    """python -m polyai_async.testing prints its URL first, serves, and exits 0 on a signal."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polyai_async.testing",
        "--port",
        "0",
        "--agent",
        "echo",
        "--script",
        "503",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        url = line.decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with PolyAIClient(
            base_url=url,
            api_key="test-api-key",
            token="test-token",
            account_id="ACCOUNT-test",
            project_id="PROJECT-test",
            retry=FAST_RETRY,
        ) as client:
            created = await client.create_chat()
            reply = await client.respond(created.conversation_id, "ping")
        assert reply.response == "ping"
        proc.send_signal(sig)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 0, stderr
    stats = orjson.loads(stderr.decode().strip().splitlines()[-1])
    assert stats["requests"] == {"create": 2, "respond": 1}
    assert stats["faults"] == {"503": 1}


def test_cli_refuses_bad_fault_options(capsys: pytest.CaptureFixture[str]) -> None:
    """An out-of-range fault option is a usage error (exit 2) that names it."""
    with pytest.raises(SystemExit) as caught:
        main(["--error-rate", "2"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--error-rate must be between 0 and 1" in err
    assert err.count("\n") == 1  # one line, no usage block


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_cli_refuses_a_port_out_of_range(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--port outside 0-65535 is a one-line usage error naming the range, not an OverflowError."""
    with pytest.raises(SystemExit) as caught:
        main(["--port", port])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m polyai_async.testing: error: argument --port: ")
    assert "0 to 65535" in err or "whole number" in err
    assert "Overflow" not in err
    assert err.count("\n") == 1


def test_testing_exports_are_sorted_and_documented() -> None:
    """polyai_async.testing exports a sorted __all__ of names that all have docstrings."""
    names = polyai_async.testing.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    for name in names:
        obj = getattr(polyai_async.testing, name)
        # Type aliases (Agent, AgentResult) are generic aliases; Python 3.10 calls them classes.
        if isinstance(obj, types.GenericAlias):
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_every_fake_accepts_the_same_default_credentials() -> None:
    """FakePolyAI, python -m polyai_async.testing and the polyai-async command share one set of
    made-up credentials, so the values one prints work with the others."""
    from polyai_async.cli._common import FAKE_CREDENTIALS
    from polyai_async.testing.__main__ import build_parser

    fake = FakePolyAI()
    library = {name: getattr(fake, name) for name in ("api_key", "token", "account_id")}
    library["project_id"] = fake.project_id
    args = build_parser().parse_args([])
    module = {name: getattr(args, name) for name in library}
    assert library == module == FAKE_CREDENTIALS
    assert library["api_key"] == "test-api-key"
