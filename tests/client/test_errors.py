"""Error answers map to typed errors; bad 2xx answers raise ResponseValidationError."""

from __future__ import annotations

import logging

import orjson
import pytest
from aioresponses import aioresponses

import polyai_async
from polyai_async import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConversationEndedError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PolyAIClient,
    PolyAIError,
    RateLimitError,
    ResponseValidationError,
)
from tests.client.test_security import MALFORMED
from tests.conftest import BASE, CREDS, FAST_RETRY, ONCE
from tests.servers import CREATED, REPLY, RawServer, answer, served

STATUS_CLASSES = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (403, PermissionDeniedError),
    (404, NotFoundError),
    (410, ConversationEndedError),
    (429, RateLimitError),
    (500, InternalServerError),
    (502, InternalServerError),
    (503, InternalServerError),
    (418, APIStatusError),
]
CURRENT = {
    "success": False,
    "error": "Chat timed out",
    "error_id": "corr-from-body",
    "error_code": "CHAT_TIMEOUT",
    "error_message": "The conversation timed out.",
    "data": None,
}
LEGACY = {"error_message": "The conversation timed out."}
HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
async def test_current_error_shape(
    once: PolyAIClient, mocked: aioresponses, status: int, cls: type[APIStatusError]
) -> None:
    """The current error body fills error_code, error_message and correlation_id."""
    mocked.post(f"{BASE}/respond", status=status, payload=CURRENT)
    with pytest.raises(cls) as info:
        await once.respond("C", "hi")
    error = info.value
    assert type(error) is cls
    assert error.status == status
    assert error.error_code == "CHAT_TIMEOUT"
    assert error.error_message == "The conversation timed out."
    assert error.correlation_id == "corr-from-body"
    assert error.body == CURRENT
    assert error.attempts == 1
    assert "CHAT_TIMEOUT" in str(error)
    assert "corr-from-body" in str(error)


@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
async def test_legacy_error_shape(
    once: PolyAIClient, mocked: aioresponses, status: int, cls: type[APIStatusError]
) -> None:
    """The older {error_message} body parses, and the header gives the correlation id."""
    mocked.post(
        f"{BASE}/create",
        status=status,
        payload=LEGACY,
        headers={"X-PolyAI-Correlation-Id": "corr-header"},
    )
    with pytest.raises(cls) as info:
        await once.create_chat()
    assert info.value.error_message == "The conversation timed out."
    assert info.value.error_code is None
    assert info.value.correlation_id == "corr-header"


@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
async def test_html_error_body(
    once: PolyAIClient, mocked: aioresponses, status: int, cls: type[APIStatusError]
) -> None:
    """A proxy's HTML page still gives the class its status calls for, with the raw body."""
    mocked.put(f"{BASE}/close", status=status, body=HTML, content_type="text/html")
    with pytest.raises(cls) as info:
        await once.close_chat("C")
    assert info.value.body == HTML
    assert info.value.error_message is None
    assert "502 Bad Gateway" in str(info.value)


def test_header_correlation_id_wins() -> None:
    """The X-PolyAI-Correlation-Id header is preferred over the body's error_id."""
    from polyai_async._errors import status_error

    error = status_error(
        500, "x", {"X-PolyAI-Correlation-Id": "h"}, orjson.dumps(CURRENT), what="respond"
    )
    assert error.correlation_id == "h"


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b'{"conversation_id": "C"}', "response"),
        (
            b'{"conversation_id": "C", "response": 5, "end_conversation": false}',
            "expected str, got int @ \\$.response",
        ),
        (
            b'{"conversation_id": "C", "response": "x", "end_conversation": "yes"}',
            "end_conversation",
        ),
        (b'{"conversation_id": "C", "response": "x", "end_conversation": 1}', "end_conversation"),
        (b"not json at all", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "not a JSON object but list"),
        (b'"text"', "not a JSON object but str"),
        (
            b'{"conversation_id": "C", "response": "x", "end_conversation": true, "handoff": 3}',
            "handoff",
        ),
    ],
)
async def test_invalid_success_body(
    once: PolyAIClient, mocked: aioresponses, payload: bytes, match: str
) -> None:
    """A 2xx whose body is not the documented JSON raises ResponseValidationError."""
    mocked.post(f"{BASE}/respond", status=200, body=payload)
    with pytest.raises(ResponseValidationError, match=match) as info:
        await once.respond("C", "hi")
    assert info.value.status == 200
    assert info.value.body == payload


def test_hierarchy() -> None:
    """Every exported error derives from PolyAIError."""
    errors = [
        getattr(polyai_async, name)
        for name in polyai_async.__all__
        if isinstance(getattr(polyai_async, name), type)
        and issubclass(getattr(polyai_async, name), BaseException)
    ]
    assert len(errors) == 14
    assert all(issubclass(e, PolyAIError) for e in errors)
    assert issubclass(polyai_async.APITimeoutError, polyai_async.APIConnectionError)


async def test_errors_never_contain_secrets(once: PolyAIClient, mocked: aioresponses) -> None:
    """Neither the error message nor its chain nor its repr holds the key or token."""
    mocked.post(f"{BASE}/respond", status=401, payload={"error_message": "bad key"})
    with pytest.raises(AuthenticationError) as info:
        await once.respond("C", "hi")
    texts = []
    error: BaseException | None = info.value
    while error is not None:
        texts += [str(error), repr(error), repr(vars(error))]
        error = error.__cause__ or error.__context__
    for text in texts:
        assert "key-123" not in text
        assert "tok-456" not in text


@pytest.mark.parametrize("action", ["big-503", "big-503-unsized"])
async def test_oversized_error_page_is_classified_by_status_and_retried(action: str) -> None:
    """8: a 503 page larger than max_response_bytes is an InternalServerError, retried."""
    async with RawServer([action, action, action]) as server:
        server.big_size = 70 * 1024
        async with PolyAIClient(
            **CREDS, base_url=server.url, retry=FAST_RETRY, max_response_bytes=16 * 1024
        ) as client:
            with pytest.raises(InternalServerError) as info:
                await client.respond("C", "hi")
            assert server.requests == 3
            assert (await client.respond("C", "again")).response == "hi"
    error = info.value
    assert error.status == 503
    assert error.attempts == 3
    assert isinstance(error.body, bytes)
    assert 0 < len(error.body) <= 16 * 1024
    assert error.body.startswith(b"<html>")
    assert len(str(error)) < 600


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
async def test_blank_conversation_id_from_create_is_invalid(blank: str) -> None:
    """9: create answering a blank conversation_id is a ResponseValidationError at create."""
    async with served(answer({"conversation_id": blank, "response": "hello"})) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(ResponseValidationError, match="conversation_id") as info:
                await client.create_chat()
            with pytest.raises(ResponseValidationError):
                async with client.conversation():
                    pass
    assert info.value.status == 200
    assert [path.rsplit("/", 1)[-1] for _, path, _, _ in server.requests] == ["create", "create"]


@pytest.mark.parametrize(
    ("handoff", "got"),
    [
        ("live_agent_queue", "a string"),
        ("", "a string"),
        ([1, 2], "an array"),
        ([], "an array"),
        (0, "a number"),
        (1.5, "a number"),
        (False, "a boolean"),
    ],
)
async def test_handoff_of_the_wrong_type_is_invalid(handoff: object, got: str) -> None:
    """10: a handoff that is neither an object nor null says what was expected."""
    reply = {**REPLY, "end_conversation": True, "handoff": handoff}
    async with served(answer(reply)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(ResponseValidationError) as info:
                await client.respond("C", "hi")
    assert f"expected an object or null, got {got}" in str(info.value)
    assert "handoff" in str(info.value)


@pytest.mark.parametrize(
    ("handoff", "destination"), [(None, None), ({}, None), ({"destination": "q"}, "q")]
)
async def test_handoff_object_or_null_is_read(handoff: object, destination: str | None) -> None:
    """10: null and objects still parse as before."""
    reply = {**REPLY, "end_conversation": True, "handoff": handoff}
    async with served(answer(reply)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            answer_ = await client.respond("C", "hi")
    assert (answer_.handoff.destination if answer_.handoff else None) == destination
    assert (answer_.handoff is None) == (handoff is None)


async def test_error_text_is_capped_and_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """15: a 512 KiB error_message is quoted briefly, on one line; the body keeps it whole."""
    huge = "line one\nline two " + "x" * (512 * 1024)
    body = {"error_message": huge, "error_code": "C" * 10_000, "error_id": "i" * 10_000}
    caplog.set_level(logging.DEBUG, "polyai_async")
    async with served(answer(body, status=500)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=FAST_RETRY) as client:
            with pytest.raises(InternalServerError) as info:
                await client.close_chat("C")
    error = info.value
    assert len(server.requests) == 3
    assert len(str(error)) < 1000
    assert "\n" not in str(error)
    assert "line one line two" in str(error)
    assert error.error_message == huge
    assert isinstance(error.body, dict)
    assert error.body["error_message"] == huge
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert all(len(r.getMessage()) < 1500 for r in retries)


async def test_multiline_transport_text_stays_out_of_the_message() -> None:
    """15: aiohttp's multi-line parser errors become one capped line of ours."""
    async with RawServer(["bad"], canned={"bad": MALFORMED["bad-status-line"]}) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(APIConnectionError) as info:
                await client.respond("C", "hi")
    assert "\n" not in str(info.value)
    assert "not valid HTTP" in str(info.value)
    assert len(str(info.value)) < 400


async def test_nested_error_envelope_is_read() -> None:
    """16: {"error": {"code", "id", "message", "correlation_id"}} fills the error's fields."""
    body = {
        "error": {
            "code": "SCHEMA_VALIDATION_FAILED",
            "id": 1,
            "message": "message must be a string",
            "correlation_id": "corr-42",
        }
    }
    async with served(answer(body, status=400)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            with pytest.raises(BadRequestError) as info:
                await client.respond("C", "hi")
    error = info.value
    assert error.error_code == "SCHEMA_VALIDATION_FAILED"
    assert error.error_message == "message must be a string"
    assert error.correlation_id == "corr-42"
    assert "[SCHEMA_VALIDATION_FAILED]" in str(error)
    assert "corr-42" in str(error)


async def test_create_answered_201_is_a_success() -> None:
    """17: older revisions answer create with 201 Created; that is a success."""
    async with served(answer(CREATED, status=201)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            created = await client.create_chat()
    assert created.conversation_id == "CONV-1"
    assert created.response == "hello"
