"""Headers both ways: correlation ids on answers, default_headers, app_info, the version."""

from __future__ import annotations

import importlib.metadata

import pytest

import polyai_async
from polyai_async import (
    CloseChatResponse,
    ConfigurationError,
    CreateChatResponse,
    PolyAIClient,
    RespondChatResponse,
)
from polyai_async._models import converter
from tests.recording_server import CORRELATION_ID, RecordingServer


async def test_every_answer_carries_the_correlation_id() -> None:
    """create, respond and close answers carry X-PolyAI-Correlation-Id."""
    async with RecordingServer() as server, PolyAIClient(**server.client_options()) as client:
        created = await client.create_chat()
        reply = await client.respond(created.conversation_id, "hi")
        closed = await client.close_chat(created.conversation_id)
    assert created.correlation_id == reply.correlation_id == closed.correlation_id
    assert created.correlation_id == CORRELATION_ID


async def test_no_header_means_none() -> None:
    """Without the header the correlation id is None."""
    async with RecordingServer(correlation_id=None) as server:
        async with PolyAIClient(**server.client_options()) as client:
            created = await client.create_chat()
    assert created.correlation_id is None


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            CreateChatResponse(conversation_id="C", response="r", correlation_id="a"),
            CreateChatResponse(conversation_id="C", response="r", correlation_id="b"),
        ),
        (
            RespondChatResponse(
                conversation_id="C", response="r", end_conversation=False, correlation_id="a"
            ),
            RespondChatResponse(conversation_id="C", response="r", end_conversation=False),
        ),
        (CloseChatResponse(success=True, correlation_id="a"), CloseChatResponse(success=True)),
    ],
)
def test_correlation_id_is_not_in_equality_nor_json(first: object, second: object) -> None:
    """Two answers differing only by correlation id are equal, hash alike, unstructure alike."""
    assert first == second
    assert hash(first) == hash(second)
    assert "correlation_id" not in converter.unstructure(first)
    assert converter.unstructure(first) == converter.unstructure(second)


@pytest.mark.parametrize("header", [CORRELATION_ID, None])
async def test_a_correlation_id_in_the_body_is_not_taken(header: str | None) -> None:
    """A correlation_id field in the JSON body is ignored: the id is the header's, or None."""
    async with RecordingServer(correlation_id=header, body_extra={"correlation_id": "body"}) as s:
        async with PolyAIClient(**s.client_options()) as client:
            created = await client.create_chat()
    assert created.correlation_id == header


async def test_default_headers_and_app_info_are_sent() -> None:
    """default_headers go on every request; app_info is appended to the User-Agent."""
    async with RecordingServer() as server:
        async with PolyAIClient(
            **server.client_options(),
            default_headers={"X-Tenant": "blue", "Accept-Language": "en"},
            app_info="my-bot/1.2",
        ) as client:
            created = await client.create_chat()
            await client.close_chat(created.conversation_id)
    for headers in server.headers:
        assert headers["X-Tenant"] == "blue"
        assert headers["Accept-Language"] == "en"
        assert headers["User-Agent"] == f"polyai-async/{polyai_async.__version__} my-bot/1.2"
        assert headers["X-API-KEY"] == "key-123"


@pytest.mark.parametrize("name", ["X-API-KEY", "x-token", "Content-Type", "accept-encoding"])
def test_default_headers_may_not_replace_what_the_client_sets(name: str) -> None:
    """Credentials, Content-Type and the encoding are refused, whatever their case."""
    with pytest.raises(ConfigurationError, match=f"default_headers may not set {name}"):
        PolyAIClient(
            api_key="k", token="t", account_id="A", project_id="P", default_headers={name: "x"}
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"default_headers": ["X-A"]}, "default_headers must be a dict"),
        ({"default_headers": {"X-A": 1}}, r"default_headers\['X-A'\] must be a string"),
        ({"default_headers": {"Bad Name": "x"}}, "invalid header name"),
        ({"default_headers": {"X-A": "a\r\nX-Evil: 1"}}, "default_headers"),
        ({"app_info": 12}, "app_info must be a string"),
        ({"app_info": "bot\n"}, "app_info"),
    ],
)
def test_bad_headers_are_refused(options: dict[str, object], message: str) -> None:
    """A wrong default header or app_info is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=message):
        PolyAIClient(api_key="k", token="t", account_id="A", project_id="P", **options)  # type: ignore[arg-type]


def test_a_secret_default_header_value_is_not_quoted() -> None:
    """A refused default header's value (it may be the user's own secret) is not in the error."""
    with pytest.raises(ConfigurationError) as raised:
        PolyAIClient(
            api_key="k",
            token="t",
            account_id="A",
            project_id="P",
            default_headers={"X-Secret": "hunter2\n"},
        )
    assert "hunter2" not in str(raised.value)


def test_version_is_the_installed_one() -> None:
    """polyai_async.__version__ is the package's version, and the User-Agent says it."""
    assert polyai_async.__version__ == importlib.metadata.version("polyai-async")
    client = PolyAIClient(api_key="k", token="t", account_id="A", project_id="P")
    assert client._headers["User-Agent"] == f"polyai-async/{polyai_async.__version__}"
