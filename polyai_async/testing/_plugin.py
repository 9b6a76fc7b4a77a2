"""The pytest plugin: ``polyai_fake`` and ``polyai_client`` fixtures, no import needed.

Registered through the ``pytest11`` entry point, so installing polyai-async enables it. The
fixtures are async (``pytest_asyncio.fixture``), so they work with pytest-asyncio in strict
mode as well as in auto mode.

Configure the fake in two ways, merged in this order:

- override the ``polyai_fake_options`` fixture (a dict of FakePolyAI keyword arguments) in a
  conftest or a test module;
- mark a test: ``@pytest.mark.polyai(faults=Faults(error_rate=1.0), seed=7)``.

``polyai_client_options`` (a dict of PolyAIClient keyword arguments, such as ``retry=``) does
the same for the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .._client import PolyAIClient
from ._server import FakePolyAI

__all__ = [
    "polyai_client",
    "polyai_client_options",
    "polyai_fake",
    "polyai_fake_options",
    "pytest_configure",
]

_MARKER = "polyai"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``polyai`` marker, so ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**options): FakePolyAI keyword arguments for the polyai_fake fixture",
    )


@pytest.fixture
def polyai_fake_options() -> dict[str, Any]:
    """FakePolyAI keyword arguments for ``polyai_fake``; override this fixture to change them."""
    return {}


@pytest.fixture
def polyai_client_options() -> dict[str, Any]:
    """PolyAIClient keyword arguments for ``polyai_client``; override this fixture to change."""
    return {}


@pytest_asyncio.fixture
async def polyai_fake(
    request: pytest.FixtureRequest, polyai_fake_options: dict[str, Any]
) -> AsyncIterator[FakePolyAI]:
    """A running FakePolyAI on 127.0.0.1, stopped after the test.

    Its options are ``polyai_fake_options`` updated with the test's ``polyai`` marks (the
    closest mark wins).
    """
    options = dict(polyai_fake_options)
    for mark in reversed(list(request.node.iter_markers(_MARKER))):
        if mark.args:
            raise pytest.UsageError("@pytest.mark.polyai takes keyword arguments only")
        options.update(mark.kwargs)
    async with FakePolyAI(**options) as fake:
        yield fake


@pytest_asyncio.fixture
async def polyai_client(
    polyai_fake: FakePolyAI, polyai_client_options: dict[str, Any]
) -> AsyncIterator[PolyAIClient]:
    """A PolyAIClient wired to ``polyai_fake``, closed after the test."""
    async with polyai_fake.client(**polyai_client_options) as client:
        yield client
