"""OpenTelemetry: spans, retry events and metrics, read back with the SDK's in-memory tools."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from polyai_async import (
    ConfigurationError,
    InternalServerError,
    PolyAIClient,
    RetryPolicy,
)
from polyai_async.testing import FakePolyAI, Faults
from tests.conftest import FAST_RETRY
from tests.recording_server import CORRELATION_ID, RecordingServer


class Telemetry:
    """An SDK tracer provider and meter provider that keep everything in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def options(self, **extra: Any) -> dict[str, Any]:
        return {
            "telemetry": True,
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.meter_provider,
            **extra,
        }

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        found: list[Any] = []
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


async def test_each_call_is_a_client_span_with_its_attributes(
    polyai_fake: FakePolyAI, otel: Telemetry
) -> None:
    """create, respond and close each give a CLIENT span named for the call, with attributes."""
    async with polyai_fake.client(**otel.options()) as client:
        created = await client.create_chat()
        reply = await client.respond(created.conversation_id, "hi")
        await client.close_chat(created.conversation_id)
    spans = otel.finished()
    assert [s.name for s in spans] == ["polyai.create_chat", "polyai.respond", "polyai.close_chat"]
    for span in spans:
        assert span.kind is SpanKind.CLIENT
        assert span.attributes is not None
        assert span.attributes["polyai.conversation_id"] == created.conversation_id
        assert span.attributes["polyai.attempts"] == 1
        assert span.attributes["http.response.status_code"] == 200
        assert span.attributes["server.address"] == "127.0.0.1"
        assert "error.type" not in span.attributes
        assert span.status.status_code is StatusCode.UNSET
    respond = spans[1].attributes
    assert respond is not None
    assert respond["polyai.correlation_id"] == reply.correlation_id


async def test_a_retry_is_an_event_and_a_count(polyai_fake: FakePolyAI, otel: Telemetry) -> None:
    """A retried call: one span, attempts 2, an event with reason and delay, retries counted."""
    async with polyai_fake.client(**otel.options(retry=FAST_RETRY)) as client:
        polyai_fake.faults = Faults(script=("503",))
        await client.create_chat()
    [span] = otel.finished()
    assert span.attributes is not None
    assert span.attributes["polyai.attempts"] == 2
    [event] = span.events
    assert event.name == "polyai.retry"
    assert event.attributes is not None
    assert event.attributes["polyai.retry.reason"] == "http_503"
    delay = event.attributes["polyai.retry.delay"]
    assert isinstance(delay, float)
    assert delay >= 0
    assert event.attributes["polyai.attempt"] == 1
    [retries] = otel.points("polyai.client.retries")
    assert retries.value == 1
    assert dict(retries.attributes) == {
        "polyai.endpoint": "create_chat",
        "polyai.retry.reason": "http_503",
    }


async def test_a_failed_call_has_error_type(polyai_fake: FakePolyAI, otel: Telemetry) -> None:
    """A call that fails: error.type is the error's class, the status is ERROR."""
    policy = RetryPolicy(max_attempts=1)
    async with polyai_fake.client(**otel.options(retry=policy)) as client:
        polyai_fake.faults = Faults(script=("500",))
        with pytest.raises(InternalServerError):
            await client.create_chat()
    [span] = otel.finished()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "InternalServerError"
    assert span.attributes["http.response.status_code"] == 500
    assert span.status.status_code is StatusCode.ERROR


async def test_call_duration_is_recorded_by_endpoint_and_outcome(
    polyai_fake: FakePolyAI, otel: Telemetry
) -> None:
    """The duration histogram has one point per call, in seconds, by endpoint and outcome."""
    async with polyai_fake.client(**otel.options(retry=RetryPolicy(max_attempts=1))) as client:
        created = await client.create_chat()
        await client.respond(created.conversation_id, "hi")
        polyai_fake.faults = Faults(script=("500",))
        with pytest.raises(InternalServerError):
            await client.respond(created.conversation_id, "again")
    points = {
        tuple(sorted(p.attributes.items())): p for p in otel.points("polyai.client.call.duration")
    }
    ok = points[(("polyai.endpoint", "respond"), ("polyai.outcome", "success"))]
    failed = points[
        (
            ("error.type", "InternalServerError"),
            ("polyai.endpoint", "respond"),
            ("polyai.outcome", "error"),
        )
    ]
    assert ok.count == 1
    assert failed.count == 1
    assert 0 < ok.sum < 5
    assert (("polyai.endpoint", "create_chat"), ("polyai.outcome", "success")) in points


async def test_spans_are_children_of_the_callers_span(
    polyai_fake: FakePolyAI, otel: Telemetry
) -> None:
    """A call made inside the application's span is its child, in the same trace."""
    tracer = otel.tracer_provider.get_tracer("app")
    async with polyai_fake.client(**otel.options()) as client:
        with tracer.start_as_current_span("handle-message") as parent:
            await client.create_chat()
    child = next(s for s in otel.finished() if s.name == "polyai.create_chat")
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id
    assert child.context is not None
    assert child.context.trace_id == parent.get_span_context().trace_id


@pytest.mark.parametrize("propagate", [False, True])
async def test_traceparent_is_sent_only_when_asked(otel: Telemetry, propagate: bool) -> None:
    """propagate_traceparent=True sends the span's W3C traceparent; the default sends none."""
    async with RecordingServer() as server:
        options = otel.options(propagate_traceparent=propagate)
        async with PolyAIClient(**server.client_options(), **options) as client:
            await client.create_chat()
    [headers] = server.headers
    if not propagate:
        assert "traceparent" not in {k.lower() for k in headers}
        return
    [span] = otel.finished()
    assert span.context is not None
    version, trace_id, span_id, _ = headers["traceparent"].split("-")
    assert version == "00"
    assert int(trace_id, 16) == span.context.trace_id
    assert int(span_id, 16) == span.context.span_id
    assert span.attributes is not None
    assert span.attributes["polyai.correlation_id"] == CORRELATION_ID


async def test_no_credential_reaches_a_span(polyai_fake: FakePolyAI, otel: Telemetry) -> None:
    """No span attribute or event holds the API key or the token."""
    async with polyai_fake.client(**otel.options(retry=FAST_RETRY)) as client:
        polyai_fake.faults = Faults(script=("503",))
        await client.create_chat()
    for span in otel.finished():
        text = span.to_json()
        assert polyai_fake.api_key not in text
        assert polyai_fake.token not in text


def test_providers_need_telemetry_on() -> None:
    """Passing a provider without telemetry=True is a mistake, and said so."""
    with pytest.raises(ConfigurationError, match="need telemetry=True"):
        PolyAIClient(
            api_key="k",
            token="t",
            account_id="A",
            project_id="P",
            tracer_provider=TracerProvider(),
        )


def test_telemetry_must_be_a_bool() -> None:
    """telemetry="yes" is refused, not taken as true."""
    with pytest.raises(ConfigurationError, match="telemetry must be True or False"):
        PolyAIClient(api_key="k", token="t", account_id="A", project_id="P", telemetry="yes")  # type: ignore[arg-type]


async def test_the_global_providers_are_used_by_default(polyai_fake: FakePolyAI) -> None:
    """With telemetry=True and no providers, the API's global (here no-op) providers serve."""
    async with polyai_fake.client(telemetry=True) as client:
        assert (await client.create_chat()).conversation_id


@pytest.mark.polyai(faults=Faults(latency=5.0))
async def test_a_cancelled_call_ends_its_span(polyai_fake: FakePolyAI, otel: Telemetry) -> None:
    """A cancelled call's span ends with error.type CancelledError; no span is left open."""
    async with polyai_fake.client(**otel.options()) as client:
        task = asyncio.create_task(client.create_chat())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client._hooks is not None
        telemetry = client._hooks.call_failed[0].__self__  # type: ignore[attr-defined]
        assert telemetry._spans == {}
    [span] = otel.finished()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "CancelledError"
