"""The pytest plugin: ``polyai_fake`` and ``polyai_client`` fixtures, no import needed.

Registered through the ``pytest11`` entry point, so installing polyai-async enables it. The
fixtures are async (``pytest_asyncio.fixture``), so they work with pytest-asyncio in strict
mode as well as in auto mode. In strict mode an ``async def`` test that asks for
``polyai_fake`` or ``polyai_client`` by name, or carries the ``polyai`` mark, is marked
``asyncio`` by this plugin (unless it already names its async runner with an ``asyncio``,
``anyio`` or ``trio`` mark): those fixtures run on asyncio, so the test can only run there.

Configure the fake in two ways, merged in this order:

- override the ``polyai_fake_options`` fixture (a dict of FakePolyAI keyword arguments) in a
  conftest or a test module;
- mark a test: ``@pytest.mark.polyai(faults=Faults(error_rate=1.0), seed=7)``.

``polyai_client_options`` (a dict of PolyAIClient keyword arguments, such as ``retry=``) does
the same for the client.
"""

from __future__ import annotations

import inspect
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
    "pytest_pycollect_makeitem",
]

_MARKER = "polyai"
_FIXTURES = frozenset({"polyai_fake", "polyai_client"})
# Marks by which a test already says which async runner (pytest-asyncio, anyio, trio) runs it.
_RUNNER_MARKS = frozenset({"asyncio", "anyio", "trio"})


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``polyai`` marker, so ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**options): FakePolyAI keyword arguments for the polyai_fake fixture",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> None:
    """Mark ``async def`` tests that use this plugin ``asyncio``, so strict mode runs them.

    pytest-asyncio's strict mode runs only the coroutines marked ``asyncio``. A test that asks
    for ``polyai_fake`` or ``polyai_client`` by name, or is marked ``polyai``, needs asyncio;
    the mark is added to the function before pytest builds the test item from it, which is
    when pytest-asyncio looks for it. Returns None, so pytest collects the test as usual.
    """
    if not inspect.iscoroutinefunction(obj) or not collector.istestfunction(obj, name):
        return
    marks = {mark.name for mark in getattr(obj, "pytestmark", [])}
    marks |= {mark.name for mark in collector.iter_markers() if mark.name in _RUNNER_MARKS}
    if marks & _RUNNER_MARKS:
        return
    uses_fixture = not _FIXTURES.isdisjoint(inspect.signature(obj).parameters)
    if uses_fixture or _MARKER in marks or collector.get_closest_marker(_MARKER) is not None:
        pytest.mark.asyncio(obj)


@pytest.fixture
def polyai_fake_options() -> dict[str, Any]:
    """FakePolyAI keyword arguments for ``polyai_fake``; override this fixture to change them."""
    return {}


@pytest.fixture
def polyai_client_options() -> dict[str, Any]:
    """PolyAIClient keyword arguments for ``polyai_client``; override this fixture to change."""
    return {}


@pytest_asyncio.fixture(loop_scope="function")
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


@pytest_asyncio.fixture(loop_scope="function")
async def polyai_client(
    polyai_fake: FakePolyAI, polyai_client_options: dict[str, Any]
) -> AsyncIterator[PolyAIClient]:
    """A PolyAIClient wired to ``polyai_fake``, closed after the test."""
    async with polyai_fake.client(**polyai_client_options) as client:
        yield client
