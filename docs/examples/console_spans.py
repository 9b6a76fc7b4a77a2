"""Print the client's OpenTelemetry spans and metrics to the console, and count retries.

Run it: ``python console_spans.py`` (needs ``opentelemetry-sdk``; the client itself needs only
the ``telemetry`` extra). With POLYAI_API_KEY set it talks to the API configured by the
POLYAI_* variables; without, to a fake PolyAI server it starts itself, told to fail the first
respond with a 503 so that a retry shows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from polyai_async import CallEvent, PolyAIClient, RetryPolicy

retries: collections.Counter[str] = collections.Counter()


def count_retry(event: CallEvent) -> None:
    """An event hook: count the retries of each endpoint (the telemetry sees them too)."""
    retries[event.endpoint] += 1


@contextlib.asynccontextmanager
async def polyai_client(**options: Any) -> AsyncIterator[PolyAIClient]:
    """The API the POLYAI_* variables name, or a fake PolyAI server when POLYAI_API_KEY is unset."""
    if os.environ.get("POLYAI_API_KEY"):
        async with PolyAIClient(**options) as client:
            yield client
        return
    from polyai_async.testing import FakePolyAI, Faults  # noqa: PLC0415 - only without credentials

    # The first request (create) succeeds, the second (the first respond) is a 503.
    async with FakePolyAI(faults=Faults(script=("ok", "503"))) as fake:
        print(f"POLYAI_API_KEY is not set: using a fake PolyAI server at {fake.url}")
        async with fake.client(**options) as client:
            yield client


async def main() -> None:
    """One conversation with spans printed as they end, then the metrics and the retry count."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter())
    meter_provider = MeterProvider(metric_readers=[reader])
    async with polyai_client(
        telemetry=True,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        event_hooks={"retry_scheduled": [count_retry]},
        retry=RetryPolicy(initial_backoff=0.05),
    ) as client:
        # The client's spans are children of the application's current span.
        with tracer_provider.get_tracer("example").start_as_current_span("handle-user"):
            async with client.conversation() as chat:
                reply = await chat.send("What are your opening hours?")
                print(f"agent: {reply.response} (correlation id {reply.correlation_id})")
    meter_provider.shutdown()  # exports the metrics once more, to the console
    tracer_provider.shutdown()
    print(f"retries: {dict(retries)}")


if __name__ == "__main__":
    asyncio.run(main())
