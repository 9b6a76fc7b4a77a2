"""OpenTelemetry spans and metrics for every call, as an event-hook subscriber.

Imported only when a client is made with ``telemetry=True``; needs ``opentelemetry-api``
alone (the ``telemetry`` extra). Without an SDK configured the API's no-op providers make
this cost little; with one, each call becomes:

- a span ``polyai.create_chat``, ``polyai.respond`` or ``polyai.close_chat`` (kind CLIENT),
  child of the caller's current span, with ``polyai.conversation_id``, ``polyai.attempts``,
  ``polyai.correlation_id``, ``http.response.status_code``, ``server.address`` and, on
  failure, ``error.type``; an event ``polyai.retry`` per retry with its reason and delay;
- a point in the histogram ``polyai.client.call.duration`` (seconds, by endpoint and
  outcome) and, per retry, one in the counter ``polyai.client.retries`` (by endpoint and
  reason); with adaptive concurrency, the gauge ``polyai.client.concurrency.limit`` (the
  cap, at each answer).
"""

from __future__ import annotations

import time
from typing import Any

from ._errors import ConfigurationError
from ._hooks import CallEvent, Hooks, failure_reason
from ._redact import redact
from ._version import __version__

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ConfigurationError(
        "telemetry=True needs OpenTelemetry: pip install 'polyai-async[telemetry]'"
    ) from exc

_SCOPE = "polyai_async"


class Telemetry:
    """Spans and metrics for one client's calls, fed by its event hooks."""

    def __init__(
        self,
        tracer_provider: Any,
        meter_provider: Any,
        *,
        server_address: str,
        propagate_traceparent: bool,
    ) -> None:
        try:
            self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
            meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        except (AttributeError, TypeError) as exc:
            raise ConfigurationError(
                "tracer_provider must be an OpenTelemetry TracerProvider and meter_provider a "
                f"MeterProvider ({exc})"
            ) from None
        self._duration = meter.create_histogram(
            "polyai.client.call.duration",
            unit="s",
            description="How long a call to the PolyAI Chat API took, retries included.",
        )
        self._retries = meter.create_counter(
            "polyai.client.retries",
            unit="{retry}",
            description="Retries of calls to the PolyAI Chat API, by endpoint and reason.",
        )
        self._concurrency_limit = meter.create_gauge(
            "polyai.client.concurrency.limit",
            unit="{call}",
            description="The client's adaptive concurrency cap: calls in flight at most.",
        )
        self._server_address = server_address
        self._propagator = TraceContextTextMapPropagator() if propagate_traceparent else None
        # Each call's open span, by call id; removed when the call ends (every call ends
        # with answer_received without an error, or call_failed).
        self._spans: dict[int, Any] = {}

    def subscribe(self, hooks: Hooks) -> None:
        """Listen to every event of the client's calls."""
        hooks.add("request_sent", self._request_sent)
        hooks.add("answer_received", self._answer_received)
        hooks.add("retry_scheduled", self._retry_scheduled)
        hooks.add("call_failed", self._call_failed)

    def _span(self, event: CallEvent) -> Any:
        span = self._spans.get(event.call_id)
        if span is None:
            # The span starts when the call did (the wait for a connection included).
            started = time.time_ns() - int(event.elapsed * 1e9)
            span = self._spans[event.call_id] = self._tracer.start_span(
                f"polyai.{event.endpoint}",
                kind=trace.SpanKind.CLIENT,
                start_time=started,
                attributes={"server.address": self._server_address},
            )
        return span

    def _request_sent(self, event: CallEvent) -> None:
        span = self._span(event)
        if self._propagator is not None and event.extra_headers is not None:
            self._propagator.inject(event.extra_headers, context=trace.set_span_in_context(span))

    def _answer_received(self, event: CallEvent) -> None:
        if event.concurrency_limit is not None:
            attributes = {"server.address": self._server_address}
            self._concurrency_limit.set(event.concurrency_limit, attributes)
        if event.error is None:
            self._end(event, None)

    def _retry_scheduled(self, event: CallEvent) -> None:
        reason = failure_reason(event.error) or "unknown"
        self._span(event).add_event(
            "polyai.retry",
            {
                "polyai.attempt": event.attempt,
                "polyai.retry.reason": reason,
                "polyai.retry.delay": event.delay or 0.0,
            },
        )
        self._retries.add(1, {"polyai.endpoint": event.endpoint, "polyai.retry.reason": reason})

    def _call_failed(self, event: CallEvent) -> None:
        self._end(event, event.error)

    def _end(self, event: CallEvent, error: BaseException | None) -> None:
        span = self._span(event)
        del self._spans[event.call_id]
        # Ids come from the server, which may put anything in them: no secret reaches a span.
        if event.conversation_id is not None:
            span.set_attribute("polyai.conversation_id", redact(event.conversation_id))
        span.set_attribute("polyai.attempts", event.attempt)
        if event.correlation_id is not None:
            span.set_attribute("polyai.correlation_id", redact(event.correlation_id))
        if event.status is not None:
            span.set_attribute("http.response.status_code", event.status)
        outcome = "success"
        if error is not None:
            outcome = "error"
            error_type = type(error).__name__
            span.set_attribute("error.type", error_type)
            span.set_status(trace.Status(trace.StatusCode.ERROR, failure_reason(error)))
        span.end()
        attributes = {"polyai.endpoint": event.endpoint, "polyai.outcome": outcome}
        if error is not None:
            attributes["error.type"] = type(error).__name__
        self._duration.record(event.elapsed, attributes)
