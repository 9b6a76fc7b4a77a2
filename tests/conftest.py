"""Shared fixtures: credentials in the environment are cleared so every test says what it uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core

from polyai_async import PolyAIClient, RetryPolicy

pytest_plugins = ["pytester"]

ENV = ("POLYAI_API_KEY", "POLYAI_TOKEN", "POLYAI_ACCOUNT_ID", "POLYAI_PROJECT_ID")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove POLYAI_* settings that the machine running the tests might have."""
    for name in (*ENV, "POLYAI_REGION", "POLYAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


CREDS: dict[str, Any] = {
    "api_key": "key-123",
    "token": "tok-456",
    "account_id": "ACCOUNT-1",
    "project_id": "PROJ-1",
}
BASE = "https://api.us-1.platform.polyai.app/v1/ACCOUNT-1/PROJ-1/chat"
# Zero backoff keeps retry tests fast; the deadline and Retry-After rules still apply.
FAST_RETRY = RetryPolicy(initial_backoff=0, max_backoff=0)


@pytest.fixture
async def client() -> AsyncIterator[PolyAIClient]:
    """A client for us-1 with fast retries; aioresponses intercepts its requests."""
    async with PolyAIClient(**CREDS, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture
async def once() -> AsyncIterator[PolyAIClient]:
    """A client that never retries, so each test sees exactly one answer."""
    async with PolyAIClient(**CREDS, retry=RetryPolicy(max_attempts=1)) as client:
        yield client


class _SentRequest:
    """Stands in for the stream writer of a request aioresponses never really sent."""

    output_size = 0


class _MockResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` (its issue #289)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _SentRequest())
        super().__init__(*args, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, passing loopback through so local servers still work."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _MockResponse)
    with aioresponses(passthrough=["http://127.0.0.1"]) as m:
        yield m


@pytest.fixture
def cli_state() -> Iterator[None]:
    """Put back what running the command in this process changes (``tests/cli_runner.py``)."""
    from .cli_runner import restored_cli_state

    with restored_cli_state():
        yield
