"""Contract tests: the client's requests and the fake's answers against chat-openapi.yaml."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from polyai_async import (
    Channel,
    CloseChatRequest,
    CreateChatRequest,
    PolyAIClient,
    RespondChatRequest,
)
from polyai_async._client import Endpoint
from polyai_async._models import dumps
from polyai_async.testing import AgentReply, FakePolyAI, ScriptedAgent
from tests.conftest import CREDS

CONTRACT = Path(__file__).parent.parent / "contract" / "chat-openapi.yaml"


@cache
def spec() -> dict[str, Any]:
    """The OpenAPI document."""
    document: dict[str, Any] = yaml.safe_load(CONTRACT.read_text())
    return document


def schema(name: str) -> dict[str, Any]:
    """A component schema, with its $refs resolvable against the whole document."""
    return {"$ref": f"#/components/schemas/{name}", "components": spec()["components"]}


def validate(instance: object, name: str) -> None:
    """Validate against a component schema; also refuse properties the contract does not name."""
    jsonschema.validate(instance, schema(name))
    properties = spec()["components"]["schemas"][name].get("properties", {})
    assert isinstance(instance, dict)
    assert set(instance) <= set(properties), set(instance) - set(properties)


OPERATIONS = {"chatCreate": "create", "chatRespond": "respond", "chatClose": "close"}


def test_client_calls_every_operation_with_its_method_and_path() -> None:
    """Each documented operation is a client endpoint with the same method and path."""
    client = PolyAIClient(**CREDS)
    endpoints: dict[str, Endpoint[Any]] = {
        "create": client._create,
        "respond": client._respond,
        "close": client._close,
    }
    seen = set()
    for template, methods in spec()["paths"].items():
        for method, operation in methods.items():
            endpoint = endpoints[OPERATIONS[operation["operationId"]]]
            seen.add(operation["operationId"])
            assert endpoint.method == method.upper()
            path = re.sub(r"\{(\w+)\}", lambda m: {"version": "v1"}.get(m[1], "X"), template)
            expected = path.replace("/X/X/", f"/{client.account_id}/{client.project_id}/")
            assert endpoint.url.path == expected
    assert seen == set(OPERATIONS)


def test_channel_values_match_the_contract() -> None:
    """Channel's members are exactly the contract's enum."""
    assert [c.value for c in Channel] == spec()["components"]["schemas"]["Channel"]["enum"]


maybe_text = st.none() | st.text(max_size=20)
# orjson, like the API, takes 64-bit integers; bigger ones are refused before sending.
ints = st.integers(-(2**63), 2**63 - 1)
maybe_object = st.none() | st.dictionaries(st.text(max_size=5), ints, max_size=3)


@given(
    channel=st.none() | st.sampled_from(Channel),
    variant_id=maybe_text,
    attributes=maybe_object,
    asr=maybe_text,
    tts=maybe_text,
)
def test_create_requests_follow_the_contract(
    channel: Channel | None,
    variant_id: str | None,
    attributes: dict[str, int] | None,
    asr: str | None,
    tts: str | None,
) -> None:
    """Every create body the client can send is a valid CreateChatRequest."""
    request = CreateChatRequest(
        channel=channel,
        variant_id=variant_id,
        integration_attributes=attributes,
        asr_lang_code=asr,
        tts_lang_code=tts,
    )
    validate(orjson.loads(dumps(request)), "CreateChatRequest")


@given(
    conversation_id=st.text(min_size=1, max_size=20),
    message=maybe_text,
    metadata=maybe_object,
    attributes=maybe_object,
    asr=maybe_text,
)
def test_respond_and_close_requests_follow_the_contract(
    conversation_id: str,
    message: str | None,
    metadata: dict[str, int] | None,
    attributes: dict[str, int] | None,
    asr: str | None,
) -> None:
    """Every respond and close body the client can send is valid for the contract."""
    respond = RespondChatRequest(
        conversation_id=conversation_id,
        message=message,
        metadata=metadata,
        integration_attributes=attributes,
        asr_lang_code=asr,
    )
    validate(orjson.loads(dumps(respond)), "RespondChatRequest")
    close = CloseChatRequest(conversation_id=conversation_id)
    validate(orjson.loads(dumps(close)), "CloseChatRequest")


async def post(
    session: aiohttp.ClientSession, fake: FakePolyAI, method: str, endpoint: str, body: object
) -> tuple[int, Any]:
    """Send a raw request to the fake and return its status and JSON answer."""
    url = f"{fake.url}/v1/{fake.account_id}/{fake.project_id}/chat/{endpoint}"
    headers = {"X-API-KEY": fake.api_key, "X-TOKEN": fake.token}
    async with session.request(method, url, json=body, headers=headers) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers["X-PolyAI-Correlation-Id"]
        return resp.status, orjson.loads(await resp.read())


@pytest.mark.parametrize("legacy", [False, True])
async def test_fake_answers_follow_the_contract(legacy: bool) -> None:
    """Every answer of the fake, success or error, validates against its documented schema."""
    agent = ScriptedAgent(["sure", AgentReply("Transferring.", handoff=("queue", "billing"))])
    async with (
        FakePolyAI(agent=agent, legacy_errors=legacy) as fake,
        aiohttp.ClientSession() as session,
    ):
        status, created = await post(session, fake, "POST", "create", {"channel": "webchat"})
        assert status == 200
        validate(created, "CreateChatResponse")
        cid = created["conversation_id"]
        status, replied = await post(session, fake, "POST", "respond", {"conversation_id": cid})
        assert status == 200
        validate(replied, "RespondChatResponse")
        body = {"conversation_id": cid, "message": "a human please"}
        status, handed = await post(session, fake, "POST", "respond", body)
        assert status == 200
        validate(handed, "RespondChatResponse")
        assert handed["end_conversation"] is True
        assert handed["handoff"] == {"destination": "queue", "reason": "billing"}
        status, closed = await post(session, fake, "PUT", "close", {"conversation_id": cid})
        assert status == 200
        validate(closed, "CloseChatResponse")
        errors = [
            await post(session, fake, "POST", "respond", {"conversation_id": cid}),  # 410
            await post(session, fake, "POST", "respond", {"conversation_id": "CONV-nope"}),  # 404
            await post(session, fake, "POST", "respond", {"message": "no id"}),  # 400
            await post(session, fake, "POST", "create", {"channel": "fax"}),  # 400
        ]
        assert [status for status, _ in errors] == [410, 404, 400, 400]
        for _, body in errors:
            validate(body, "Error")
            assert body["error_message"]
            if not legacy:
                assert body["success"] is False
                assert body["error_code"]
                assert body["error_id"]
        unauthenticated = f"{fake.url}/v1/{fake.account_id}/{fake.project_id}/chat/create"
        async with session.post(unauthenticated) as resp:
            assert resp.status == 401
            validate(orjson.loads(await resp.read()), "Error")
