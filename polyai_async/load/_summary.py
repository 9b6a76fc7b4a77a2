"""What the JSON summary of a load run holds (schema ``polyai-async-bench/4``), as types.

``summarize`` writes a ``Summary``; ``--json`` writes it as it is, and docs/load-testing.md
documents every key (tests/load/test_load_summary.py checks that the table and these types list the
same keys with the same types, and that a run writes exactly them). ``Figures`` are the flat
numbers and names, what a threshold may name and what each worker reports
(``WorkerFigures``); ``Summary`` adds the lists and tables the reports draw.

A summary read back from a file is only as good as the file: the readers that take one from
outside (the HTML report) still check shapes and say which key is wrong.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "ErrorExample",
    "Figures",
    "MissingWorker",
    "PersonaFigures",
    "SpectrumPoint",
    "Summary",
    "ThresholdVerdict",
    "TimeseriesRow",
    "TurnLatency",
    "WorkerFigures",
]


class Figures(TypedDict):
    """The flat figures of a run (``summarize(detail=False)``): numbers, names and nulls."""

    schema: str
    target: str | None
    base_url: str | None
    scenario: str | None
    load_model: str
    processes: int
    conversations: int | None
    duration_seconds: float | None
    turns_per_conversation: int | None
    concurrency: int | None
    rate: float | None
    max_connections: int | None
    retry_attempts: int | None
    conversations_started: int
    conversations_completed: int
    conversations_failed: int
    conversations_dropped: int
    conversations_interrupted: int
    in_flight_max: int
    conversation_error_rate: float
    max_error_rate: float | None
    passed: bool
    turns_completed: int
    handoffs: int
    ended_by_agent: int
    expectations_checked: int
    expectations_failed: int
    calls: int
    calls_cancelled: int
    retries: int
    retries_create: int
    retries_respond: int
    retries_close: int
    requests: int
    requests_ok: int
    requests_failed: int
    requests_cancelled: int
    errors_total: int
    error_APIConnectionError: int
    error_APIStatusError: int
    error_APITimeoutError: int
    error_AuthenticationError: int
    error_BadRequestError: int
    error_ClientClosedError: int
    error_ConfigurationError: int
    error_ConversationEndedError: int
    error_InternalServerError: int
    error_NotFoundError: int
    error_PermissionDeniedError: int
    error_RateLimitError: int
    error_ResponseValidationError: int
    wall_seconds: float
    load_window_seconds: float
    client_cpu_seconds: float
    client_cpu_share: float
    conversations_per_second: float
    turns_per_second: float
    requests_per_second: float
    generator_lag_p50_ms: float | None
    generator_lag_p99_ms: float | None
    generator_lag_max_ms: float | None
    server_cpu_seconds: float | None
    server_requests: int | None
    server_faults: int | None
    server_max_open_connections: int | None
    create_count: int
    respond_count: int
    close_count: int
    create_ok_count: int
    respond_ok_count: int
    close_ok_count: int
    create_p50_ms: float | None
    create_p90_ms: float | None
    create_p95_ms: float | None
    create_p99_ms: float | None
    create_p999_ms: float | None
    create_max_ms: float | None
    create_mean_ms: float | None
    respond_p50_ms: float | None
    respond_p90_ms: float | None
    respond_p95_ms: float | None
    respond_p99_ms: float | None
    respond_p999_ms: float | None
    respond_max_ms: float | None
    respond_mean_ms: float | None
    close_p50_ms: float | None
    close_p90_ms: float | None
    close_p95_ms: float | None
    close_p99_ms: float | None
    close_p999_ms: float | None
    close_max_ms: float | None
    close_mean_ms: float | None
    conversation_p50_ms: float | None
    conversation_p90_ms: float | None
    conversation_p95_ms: float | None
    conversation_p99_ms: float | None
    conversation_p999_ms: float | None
    conversation_max_ms: float | None
    conversation_mean_ms: float | None
    create_ok_p50_ms: float | None
    create_ok_p90_ms: float | None
    create_ok_p95_ms: float | None
    create_ok_p99_ms: float | None
    create_ok_p999_ms: float | None
    create_ok_max_ms: float | None
    create_ok_mean_ms: float | None
    respond_ok_p50_ms: float | None
    respond_ok_p90_ms: float | None
    respond_ok_p95_ms: float | None
    respond_ok_p99_ms: float | None
    respond_ok_p999_ms: float | None
    respond_ok_max_ms: float | None
    respond_ok_mean_ms: float | None
    close_ok_p50_ms: float | None
    close_ok_p90_ms: float | None
    close_ok_p95_ms: float | None
    close_ok_p99_ms: float | None
    close_ok_p999_ms: float | None
    close_ok_max_ms: float | None
    close_ok_mean_ms: float | None
    conversation_ok_p50_ms: float | None
    conversation_ok_p90_ms: float | None
    conversation_ok_p95_ms: float | None
    conversation_ok_p99_ms: float | None
    conversation_ok_p999_ms: float | None
    conversation_ok_max_ms: float | None
    conversation_ok_mean_ms: float | None


class ThresholdVerdict(TypedDict):
    """One ``--threshold``: what it measured and whether it held."""

    expression: str
    value: float | None
    passed: bool
    #: ``"not measured in this run"`` when ``value`` is null, else null.
    reason: str | None


class ErrorExample(TypedDict):
    """Failed calls of one error class, with one example message."""

    count: int
    example: str


class PersonaFigures(TypedDict):
    """One persona's conversations and expectations."""

    started: int
    completed: int
    failed: int
    expectations_checked: int
    expectations_failed: int
    example_failure: str | None


class TurnLatency(TypedDict):
    """The respond calls of one turn index (0 is the first user message)."""

    turn: int
    count: int
    p50_ms: float | None
    p99_ms: float | None


class SpectrumPoint(TypedDict):
    """One point of a latency spectrum."""

    percentile: float
    ms: float


class TimeseriesRow(TypedDict):
    """One second of the run (``t``: seconds since the start)."""

    t: int
    #: The rate (open model) or concurrency (closed) the load asked for in that second.
    target: float | None
    conversations_started: int
    requests: int
    errors: int
    in_flight: int
    create_p50_ms: float | None
    create_p99_ms: float | None
    create_ok_p50_ms: float | None
    create_ok_p99_ms: float | None
    respond_p50_ms: float | None
    respond_p99_ms: float | None
    respond_ok_p50_ms: float | None
    respond_ok_p99_ms: float | None
    close_p50_ms: float | None
    close_p99_ms: float | None
    close_ok_p50_ms: float | None
    close_ok_p99_ms: float | None


class MissingWorker(TypedDict):
    """A worker process that sent no result in time (bench; the Locust bridge lists ids)."""

    worker: int
    name: str
    reason: str


class WorkerFigures(Figures):
    """One worker process's own flat figures (``Summary.workers``, with ``--processes``)."""

    worker: int


class Summary(Figures):
    """The whole summary: the flat figures, how the run ended, the lists and tables."""

    #: Stopped early (Ctrl-C, SIGTERM, ``stop``): the figures cover what was measured until then.
    interrupted: bool
    #: ``SIGINT``, ``SIGTERM`` or ``stop`` when interrupted, else null.
    interrupted_by: str | None
    #: With ``--abort-on-fail``: when and why it stopped the run (``at_seconds``,
    #: ``threshold``, ``value``, ``window_seconds``), else null.
    aborted: dict[str, Any] | None
    #: A worker sent no result in time: the figures are the other workers' only.
    partial: bool
    workers_missing: list[MissingWorker | str]

    thresholds: list[ThresholdVerdict]
    warnings: list[str]
    #: The run's options, for the report (never a secret).
    settings: dict[str, Any]
    handoffs_by_destination: dict[str, int]
    handoffs_by_reason: dict[str, int]
    #: Conversations by turns completed; JSON object keys are strings (``"2": 180``).
    turns_by_count: dict[str, int]
    errors_by_class: dict[str, ErrorExample]
    personas: dict[str, PersonaFigures]
    respond_by_turn: list[TurnLatency]
    #: Per source (an endpoint or ``conversation``).
    latency_spectrum: dict[str, list[SpectrumPoint]]
    #: How ``histograms`` are encoded (HdrHistogram's compressed base64; unit, range, digits).
    histogram_encoding: dict[str, Any]
    #: Every latency histogram by name (``respond``, ``respond.ok``, ``respond[0]``...), lossless.
    histograms: dict[str, str]
    #: The rest of the raw measurements (``Metrics.to_dict()`` without its histograms).
    metrics: dict[str, Any]
    timeseries: list[TimeseriesRow]
    #: With ``--stages``: each stage's own figures, from the seconds it covered.
    stages: list[dict[str, Any]]
    workers: list[WorkerFigures]
