"""Event hooks: what each event reports, in what order, and that no credential is in it."""

from __future__ import annotations

import asyncio
import logging

import attrs
import pytest

from polyai_async import (
    CallEvent,
    ConfigurationError,
    InternalServerError,
    PolyAIClient,
    PolyAIError,
    RetryPolicy,
)
from polyai_async.testing import FakePolyAI, Faults
from tests.conftest import FAST_RETRY
from tests.recording_server import RecordingServer


class Recorder:
    """Records every event, for any hook name."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    def __call__(self, event: CallEvent) -> None:
        self.events.append(event)

    def hooks(self) -> dict[str, list[Recorder]]:
        return {
            name: [self]
            for name in ("request_sent", "answer_received", "retry_scheduled", "call_failed")
        }

    def names(self) -> list[str]:
        return [event.name for event in self.events]


async def test_a_successful_call_sends_then_receives(polyai_fake: FakePolyAI) -> None:
    """A call that succeeds: request_sent, then answer_received with status and correlation id."""
    seen = Recorder()
    async with polyai_fake.client(event_hooks=seen.hooks()) as client:
        created = await client.create_chat()
        reply = await client.respond(created.conversation_id, "hi")
    assert seen.names() == ["request_sent", "answer_received"] * 2
    sent, answered = seen.events[2], seen.events[3]
    assert sent.endpoint == answered.endpoint == "respond"
    assert sent.conversation_id == answered.conversation_id == created.conversation_id
    assert sent.attempt == answered.attempt == 1
    assert sent.status is None
    assert answered.status == 200
    assert answered.error is None
    assert answered.correlation_id == reply.correlation_id is not None
    assert 0 <= sent.elapsed <= answered.elapsed < 5
    assert sent.call_id == answered.call_id != seen.events[0].call_id
    # create's conversation id is known once its answer came.
    assert seen.events[0].conversation_id is None
    assert seen.events[1].conversation_id == created.conversation_id


async def test_a_retried_call_reports_each_attempt(polyai_fake: FakePolyAI) -> None:
    """A 503 then success: the 503 answer (with its error), the retry and its delay, attempt 2."""
    seen = Recorder()
    async with polyai_fake.client(event_hooks=seen.hooks(), retry=FAST_RETRY) as client:
        created = await client.create_chat()
        seen.events.clear()
        polyai_fake.faults = Faults(script=("503",))
        await client.respond(created.conversation_id, "hi")
    assert seen.names() == [
        "request_sent",
        "answer_received",
        "retry_scheduled",
        "request_sent",
        "answer_received",
    ]
    failed, retry, last = seen.events[1], seen.events[2], seen.events[4]
    assert failed.status == 503
    assert isinstance(failed.error, InternalServerError)
    assert failed.reason == "http_503"
    assert retry.attempt == 1
    assert retry.delay is not None
    assert retry.delay >= 0
    assert retry.reason == "http_503"
    assert last.attempt == 2
    assert last.status == 200
    assert last.error is None


async def test_a_failed_call_ends_with_call_failed(polyai_fake: FakePolyAI) -> None:
    """Every attempt failing ends with call_failed, carrying the error and the attempts made."""
    seen = Recorder()
    policy = RetryPolicy(max_attempts=2, initial_backoff=0, max_backoff=0)
    async with polyai_fake.client(event_hooks=seen.hooks(), retry=policy) as client:
        polyai_fake.faults = Faults(script=("500", "500"))
        with pytest.raises(InternalServerError) as raised:
            await client.create_chat()
    assert seen.names()[-1] == "call_failed"
    assert seen.names().count("request_sent") == 2
    last = seen.events[-1]
    assert last.error is raised.value
    assert last.attempt == 2 == raised.value.attempts
    assert last.status == 500


async def test_a_transport_failure_has_no_answer_event() -> None:
    """A refused connection: request_sent, then call_failed with no status and its reason."""
    seen = Recorder()
    client = PolyAIClient(
        base_url="http://127.0.0.1:9",
        api_key="key-123",
        token="tok-456",
        account_id="A",
        project_id="P",
        retry=RetryPolicy(max_attempts=1),
        event_hooks=seen.hooks(),
    )
    async with client:
        with pytest.raises(PolyAIError):
            await client.close_chat("CONV-1")
    assert seen.names() == ["request_sent", "call_failed"]
    assert seen.events[-1].status is None
    assert seen.events[-1].reason == "connection_error"
    assert seen.events[-1].conversation_id == "CONV-1"


@pytest.mark.polyai(faults=Faults(latency=5.0))
async def test_a_cancelled_call_ends_with_call_failed(polyai_fake: FakePolyAI) -> None:
    """Cancelling a call still gives its last event: call_failed with the CancelledError."""
    seen = Recorder()
    async with polyai_fake.client(event_hooks={"call_failed": [seen]}) as client:
        task = asyncio.create_task(client.create_chat())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert seen.names() == ["call_failed"]
    assert isinstance(seen.events[0].error, asyncio.CancelledError)
    assert seen.events[0].reason == "cancelled"


async def test_events_hold_no_credential(polyai_fake: FakePolyAI) -> None:
    """No event field, repr or header holds the API key or the token."""
    seen = Recorder()
    async with polyai_fake.client(event_hooks=seen.hooks(), retry=FAST_RETRY) as client:
        polyai_fake.faults = Faults(script=("503",))
        await client.create_chat()
    assert seen.events
    for event in seen.events:
        text = repr(event) + repr(attrs.asdict(event, recurse=False))
        assert polyai_fake.api_key not in text
        assert polyai_fake.token not in text


async def test_a_hook_adds_headers_but_cannot_replace_credentials() -> None:
    """extra_headers reach the server; an X-API-KEY or Content-Type set there is ignored."""

    def add(event: CallEvent) -> None:
        assert event.extra_headers is not None
        event.extra_headers["X-Request-Tag"] = f"attempt-{event.attempt}"
        event.extra_headers["x-api-key"] = "stolen"
        event.extra_headers["CONTENT-TYPE"] = "text/plain"

    async with RecordingServer() as server:
        options = server.client_options()
        async with PolyAIClient(**options, event_hooks={"request_sent": [add]}) as client:
            await client.create_chat()
    [lines] = server.header_lines
    assert ("X-Request-Tag", "attempt-1") in lines
    assert [v for k, v in lines if k.lower() == "x-api-key"] == ["key-123"]
    assert [v for k, v in lines if k.lower() == "content-type"] == ["application/json"]


async def test_a_hook_that_raises_is_logged_and_the_call_goes_on(
    polyai_fake: FakePolyAI, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken hook does not fail the call; the failure is logged with its traceback."""

    def broken(event: CallEvent) -> None:
        raise RuntimeError("hook bug")

    async with polyai_fake.client(event_hooks={"answer_received": [broken]}) as client:
        with caplog.at_level(logging.WARNING, logger="polyai_async"):
            created = await client.create_chat()
    assert created.conversation_id
    [record] = [r for r in caplog.records if "hook" in r.getMessage()]
    assert "answer_received" in record.getMessage()
    assert record.exc_info is not None


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ("retry_scheduled", "must be a dict"),
        ({"on_retry": [print]}, "unknown event 'on_retry'"),
        ({"call_failed": [42]}, "not callable"),
        ({"call_failed": "print"}, "must be a list of functions"),
    ],
)
def test_bad_event_hooks_are_refused(hooks: object, message: str) -> None:
    """A wrong event_hooks argument is a ConfigurationError that says what to pass."""
    with pytest.raises(ConfigurationError, match=message):
        PolyAIClient(
            api_key="k",
            token="t",
            account_id="A",
            project_id="P",
            event_hooks=hooks,  # type: ignore[arg-type]
        )


async def test_a_single_function_is_accepted_for_an_event(polyai_fake: FakePolyAI) -> None:
    """event_hooks={"answer_received": fn} works like a list of one function."""
    seen = Recorder()
    async with polyai_fake.client(event_hooks={"answer_received": seen}) as client:
        await client.create_chat()
    assert seen.names() == ["answer_received"]


async def test_without_hooks_no_event_is_built(
    polyai_fake: FakePolyAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no hooks, no telemetry and no debug log, a call builds no call state nor event."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hot path built event machinery")

    monkeypatch.setattr("polyai_async._client.CallState", refuse)
    monkeypatch.setattr("polyai_async._hooks.CallEvent", refuse)
    async with polyai_fake.client(retry=FAST_RETRY) as client:
        assert client._hooks is None
        polyai_fake.faults = Faults(script=("503",))  # the retry path too
        created = await client.create_chat()
        await client.respond(created.conversation_id, "hi")


async def test_with_options_shares_the_hooks(polyai_fake: FakePolyAI) -> None:
    """A client made by with_options reports to the original's hooks."""
    seen = Recorder()
    async with polyai_fake.client(event_hooks={"answer_received": [seen]}) as client:
        await client.with_options(timeout=5).create_chat()
    assert seen.names() == ["answer_received"]


async def test_hooks_can_be_added_and_removed_later(polyai_fake: FakePolyAI) -> None:
    """add_event_hook on a client made without hooks (and its with_options clients), then off."""
    seen = Recorder()
    async with polyai_fake.client() as client:
        derived = client.with_options(timeout=5)  # made before the hook was added
        assert client._hooks is None
        client.add_event_hook("answer_received", seen)
        await client.create_chat()
        await derived.create_chat()
        await client.with_options(timeout=5).create_chat()
        assert seen.names() == ["answer_received"] * 3
        derived.remove_event_hook("answer_received", seen)
        await client.create_chat()
        await derived.create_chat()
        assert len(seen.events) == 3
        assert client._hooks is None  # nothing listens: the hot path is back
        assert derived._hooks is None


def test_adding_or_removing_a_wrong_hook_is_refused() -> None:
    """An unknown event, a hook that is not callable, or one never added: ConfigurationError."""
    client = PolyAIClient(api_key="k", token="t", account_id="A", project_id="P")
    with pytest.raises(ConfigurationError, match="unknown event 'on_retry'"):
        client.add_event_hook("on_retry", print)
    with pytest.raises(ConfigurationError, match="not callable"):
        client.add_event_hook("call_failed", 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="is not subscribed to call_failed"):
        client.remove_event_hook("call_failed", print)
