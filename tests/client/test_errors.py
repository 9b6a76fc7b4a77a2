"""Error answers map to typed errors; bad 2xx answers raise ResponseValidationError."""

from __future__ import annotations

import orjson
import pytest
from aioresponses import aioresponses

import polyai_async
from polyai_async import (
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
from tests.conftest import BASE

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
