"""A callback that raises (on_tick, an Observer) costs one log line, never the run."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from polyai_async import RetryPolicy
from polyai_async.load import (
    Load,
    LoadResult,
    TurnSpec,
    _conversation,
    run_conversation,
    run_load,
    run_load_async,
)
from polyai_async.testing import FakePolyAI
from tests.load.test_load_conversation import Recorder, scenario_of
from tests.load.test_load_runner import FIXED
from tests.threaded_fake import ThreadedFake

LOGGER = "polyai_async.load"


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


class Broken:
    """An on_tick callback that raises every time it is called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, figures: Mapping[str, Any]) -> None:
        self.calls += 1
        raise RuntimeError("the dashboard is down")


async def test_an_on_tick_that_raises_is_logged_once_and_the_run_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run of 1.2 s ticks twice into a raising on_tick: one warning, a whole LoadResult."""
    on_tick = Broken()
    async with FakePolyAI() as fake, fake.client() as client:
        result = await run_load_async(
            client, Load.closed(concurrency=2, duration=1.2), FIXED, on_tick=on_tick
        )
    assert isinstance(result, LoadResult)
    assert result.summary["conversations_completed"] > 0
    assert on_tick.calls >= 2  # the ticker went on after the first failure
    [record] = _failures(caplog)
    assert "on_tick" in record.getMessage()
    assert record.exc_info is not None  # the traceback says where


@pytest.fixture(scope="module")
def fake_thread() -> Iterator[dict[str, str]]:
    """Client settings for a fake in a thread, for run_load's own loop."""
    with ThreadedFake() as fake:
        yield fake.settings


def test_run_load_keeps_the_result_when_on_tick_raises(
    fake_thread: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """run_load (its own loop) returns the LoadResult although its on_tick raised."""
    result = run_load(
        Load.closed(concurrency=2, conversations=4),
        FIXED,
        client_settings=fake_thread,
        on_tick=Broken(),
    )
    assert result.summary["conversations_completed"] == 4
    assert len(_failures(caplog)) == 1


class FailingRecorder(Recorder):
    """An Observer whose request() raises after recording (a bug in someone's dashboard)."""

    def request(self, *args: Any) -> None:
        super().request(*args)
        raise ValueError("observer bug")


async def test_an_observer_that_raises_is_logged_once_and_the_conversation_goes_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two conversations whose observer raises: each runs its turns and is closed; one warning."""
    monkeypatch.setattr(_conversation, "_logged", set())  # once a process: this test's process
    scenario, persona = scenario_of(TurnSpec(say=("hi",)))
    observer = FailingRecorder()
    async with FakePolyAI() as fake, fake.client(retry=RetryPolicy(max_attempts=1)) as client:
        for _ in range(2):
            await run_conversation(client, scenario, persona, random.Random(1), observer)
        assert len(fake.conversations) == 2
        assert all(state.closed for state in fake.conversations.values())
    assert [r[0] for r in observer.requests] == ["create", "respond", "close"] * 2
    assert len(observer.conversations) == 2
    [record] = _failures(caplog)
    assert "FailingRecorder" in record.getMessage()


@pytest.mark.e2e
def test_run_load_over_processes_keeps_the_result_when_on_tick_raises(
    fake_thread: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """With worker processes, the parent's raising on_tick is logged once; the run is merged."""
    on_tick = Broken()
    result = run_load(
        Load.closed(concurrency=2, duration=2.5),
        FIXED,
        client_settings=fake_thread,
        processes=2,
        on_tick=on_tick,
    )
    assert result.summary["processes"] == 2
    assert result.summary["conversations_completed"] > 0
    assert on_tick.calls >= 2
    assert len(_failures(caplog)) == 1
