"""Reports of a LoadResult: JSON, CSV and the terminal tables.

rich is imported inside ``render`` alone, so the engine and the file reports run without it.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .._redact import redact_value
from . import _format
from ._interrupt import stop_notes
from ._metrics import ENDPOINTS
from ._result import LoadResult
from ._thresholds import measured_text

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "CSV_COLUMNS",
    "connection_note",
    "output_path_problem",
    "render",
    "write_csv",
    "write_json",
]

#: The columns of ``write_csv``: the time series, one row a second (``<endpoint>_...``: every
#: call that ended in that second; ``<endpoint>_ok_...``: the successful ones).
CSV_COLUMNS = (
    "t",
    "conversations_started",
    "requests",
    "errors",
    "in_flight",
    *(f"{e}_{p}_ms" for e in ENDPOINTS for p in ("p50", "p99")),
    *(f"{e}_ok_{p}_ms" for e in ENDPOINTS for p in ("p50", "p99")),
    # Last, so that the columns before it keep their places.
    "target",
)
# The terminal's columns (p95 and the mean are in the JSON): they fit in 80 columns.
_LATENCY_KEYS = ("p50", "p90", "p99", "p999", "max")


def _summary(result: LoadResult | Mapping[str, Any]) -> Mapping[str, Any]:
    """The summary to write: every string redacted before it is encoded (see ``_redact``)."""
    return redact_value(result.summary if isinstance(result, LoadResult) else result)


def write_json(result: LoadResult | Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the run's summary (schema ``polyai-async-bench/4``) as indented JSON to ``path``."""
    Path(path).write_bytes(orjson.dumps(_summary(result), option=orjson.OPT_INDENT_2) + b"\n")


def output_path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a report could not be written to ``path`` (None: it can), found by trying.

    Checked before a run, so a bad ``--json`` costs no load: the path must not be a folder,
    and its folder must exist and let us create (or open for writing) the file. Nothing is
    written: an existing file is opened for appending and closed unchanged, a new one is
    created and removed. Trying, rather than asking ``os.access``, holds for root too.
    """
    target = Path(path)
    if target.is_dir():
        return "is a directory"
    folder = target.absolute().parent
    if not folder.is_dir():
        return f"its folder {str(folder)!r} does not exist"
    existed = target.exists()
    try:
        with target.open("a" if existed else "x", encoding="utf-8"):
            pass
    except OSError as exc:
        return f"cannot be written ({exc.strerror or exc})"
    if not existed:
        with contextlib.suppress(OSError):
            target.unlink()
    return None


def write_csv(result: LoadResult | Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the run's time series to ``path`` as CSV, one row a second (``CSV_COLUMNS``).

    A figure with no value that second (no successful call) is an empty cell.
    """
    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in _summary(result)["timeseries"]:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})


def _count(value: int | None) -> str:
    return "-" if value is None else _format.count(value)


def _millis(value: float | None) -> str:
    """A latency in a column headed "ms": three significant digits, or "-" for no data."""
    return "-" if value is None else _format.figure(value)


def connection_note(summary: Mapping[str, Any]) -> str | None:
    """Why latency may include waiting for a connection, or None; per process with several.

    ``max_connections`` is each process's pool, so with processes the comparison is made
    with each worker's own peak of conversations in flight.
    """
    limit = summary.get("max_connections")
    if limit is None:
        return None
    workers = [w for w in summary.get("workers") or () if isinstance(w, Mapping)]
    processes = summary.get("processes") or 1
    if processes > 1 and workers:
        peak = max(int(w.get("in_flight_max") or 0) for w in workers)
        if peak <= limit:
            return None
        return (
            f"note: each of the {processes} processes had {limit:,} connections, and up to "
            f"{peak:,} conversations in flight in one process shared them, so latency includes "
            "waiting for a free connection (see --max-connections)"
        )
    in_flight = summary["in_flight_max"]
    if in_flight <= limit:
        return None
    return (
        f"note: {in_flight:,} conversations shared {limit:,} connections, so latency includes "
        "waiting for a free connection (see --max-connections)"
    )


def render(  # noqa: PLR0912, PLR0915 - one table after the other, in reading order
    summary: Mapping[str, Any],
    console: Console,
    *,
    description: str,
    examples: Mapping[str, str] | None = None,
) -> None:
    """Print the summary as rich tables.

    Totals and outcomes, latency, expectations by persona, thresholds, errors by class.

    Args:
        summary: ``LoadResult.summary``.
        console: where to print.
        description: printed first: what was run against what.
        examples: one message per error class, beside its count; default: the summary's
            own examples.

    Every string shown is redacted and its control characters shown as escapes.
    """
    from rich import box  # noqa: PLC0415 - rich is optional: the cli extra
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    # Names, replies and error texts come from outside: each goes in as a Text, never as a
    # markup string, so "[/]" in a persona's name or an agent's reply is printed as written.
    s = redact_value(summary, terminal=True)
    examples = redact_value(examples, terminal=True)
    console.print(Text(redact_value(description, terminal=True)), soft_wrap=True)
    for line in stop_notes(s):
        console.print(line, style="bold red", markup=False, soft_wrap=True)
    totals = Table(box=box.SIMPLE_HEAD, show_header=False)
    totals.add_column("figure", style="bold")
    totals.add_column("value", justify="right")
    totals.add_column("detail")
    totals.add_row("conversations started", _count(s["conversations_started"]), "")
    completed = s["conversations_completed"]
    totals.add_row(
        "conversations completed",
        _count(completed) if completed else "[red]0[/]",
        "" if completed else "[red]none: the run cannot pass[/]",
    )
    rate = f"{_format.percent(s['conversation_error_rate'])} of those ended or interrupted"
    if s["max_error_rate"] is not None:
        ok = s["conversation_error_rate"] <= s["max_error_rate"]
        rate += f" (max {_format.percent(s['max_error_rate'])}: " + (
            "passed)" if ok else "[red]FAILED[/])"
        )
    failed = s["conversations_failed"]
    totals.add_row("conversations failed", f"[red]{failed:,}[/]" if failed else "0", rate)
    dropped = s["conversations_dropped"]
    totals.add_row(
        "conversations dropped",
        f"[red]{dropped:,}[/]" if dropped else "0",
        "arrivals not started: late, pool full or --max-in-flight",
    )
    if s["conversations_interrupted"]:
        totals.add_row(
            "conversations interrupted",
            f"{s['conversations_interrupted']:,}",
            "cut off by the graceful stop: counted as failed in the error rate",
        )
    totals.add_row("in flight at most", _count(s["in_flight_max"]), "conversations at once")
    totals.add_row("turns completed", _count(s["turns_completed"]), "")
    totals.add_row(
        "ended by the agent",
        _count(s["ended_by_agent"]),
        f"{s['handoffs']:,} handoffs included",
    )
    if s.get("handoffs_by_destination"):
        where = ", ".join(f"{d} {n:,}" for d, n in s["handoffs_by_destination"].items())
        totals.add_row("handoffs by destination", "", Text(where))
    totals.add_row(
        "requests",
        _count(s["requests"]),
        f"sent: {s['requests_ok']:,} ok, {s['requests_failed']:,} failed, "
        f"{s['requests_cancelled']:,} cancelled",
    )
    totals.add_row(
        "retries",
        _count(s["retries"]),
        ", ".join(f"{e} {s[f'retries_{e}']:,}" for e in ENDPOINTS),
    )
    totals.add_row(
        "throughput",
        _format.figure(s["conversations_per_second"]),
        "conversations/s over the load window",
    )
    totals.add_row("", _format.figure(s["turns_per_second"]), "turns/s")
    totals.add_row("", _format.figure(s["requests_per_second"]), "requests/s")
    totals.add_row(
        "load window",
        f"{s['load_window_seconds']:.2f}",
        "s: from the load's start to the end of its arrivals",
    )
    totals.add_row("wall time", f"{s['wall_seconds']:.2f}", "s: the load window and the drain")
    cpu = s["client_cpu_seconds"]
    processes = s["processes"]
    per = "" if processes == 1 else f" over {processes} processes"
    totals.add_row("client CPU", f"{cpu:.2f}", f"s ({s['client_cpu_share']:.0%} of one core{per})")
    totals.add_row(
        "generator lag p99",
        _millis(s["generator_lag_p99_ms"]),
        "ms behind plan",
    )
    if s["server_cpu_seconds"] is not None:
        totals.add_row("server CPU", f"{s['server_cpu_seconds']:.2f}", "s (embedded fake)")
    if s["server_faults"] is not None:
        totals.add_row(
            "server faults injected",
            _count(s["server_faults"]),
            f"of {s['server_requests']:,} requests",
        )
        totals.add_row(
            "server connections", _count(s["server_max_open_connections"]), "open at most"
        )
    console.print(totals)

    latency = Table(
        title="latency (ms): every call that ended; ok: the successful ones",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    latency.add_column("endpoint", style="bold")
    for header in ("calls", *_LATENCY_KEYS):
        latency.add_column(header.replace("p999", "p99.9"), justify="right")
    for source in (*ENDPOINTS, "conversation"):
        if source == "conversation":
            ok_count = s["conversations_completed"]
            count = ok_count + s["conversations_failed"]
        else:
            count, ok_count = s[f"{source}_count"], s[f"{source}_ok_count"]
        latency.add_row(
            source, _count(count), *(_millis(s[f"{source}_{k}_ms"]) for k in _LATENCY_KEYS)
        )
        if ok_count != count:  # some failed: the successful ones apart
            latency.add_row(
                f"{source}.ok",
                _count(ok_count),
                *(_millis(s[f"{source}_ok_{k}_ms"]) for k in _LATENCY_KEYS),
            )
    console.print(latency)
    if s["load_model"] == "open":
        console.print(
            "create and conversation latency count from each conversation's scheduled start\n"
        )
    note = connection_note(s)
    if note:
        console.print(note + "\n")

    personas = s.get("personas") or {}
    if s["expectations_checked"]:
        expectations = Table(title="expectations", box=box.SIMPLE_HEAD, title_justify="left")
        # Never cut: without a terminal rich has 80 columns, and a name is what a reader looks up.
        longest = max((len(name) for name in personas), default=0)
        expectations.add_column(
            "persona", style="bold", min_width=min(longest, 40), overflow="fold"
        )
        for header in ("started", "completed", "failed", "checked", "unmet"):
            expectations.add_column(header, justify="right")
        expectations.add_column("example of an unmet one", overflow="fold")
        for name, p in personas.items():
            unmet = p["expectations_failed"]
            expectations.add_row(
                Text(name),
                _count(p["started"]),
                _count(p["completed"]),
                _count(p["failed"]),
                _count(p["expectations_checked"]),
                f"[red]{unmet:,}[/]" if unmet else "0",
                Text(p["example_failure"] or ""),
            )
        console.print(expectations)

    if s.get("thresholds"):
        thresholds = Table(title="thresholds", box=box.SIMPLE_HEAD, title_justify="left")
        thresholds.add_column("threshold", style="bold")
        thresholds.add_column("measured", justify="right")
        thresholds.add_column("verdict")
        for t in s["thresholds"]:
            if t["value"] is None:
                value = t.get("reason") or "no value"
            else:
                value = measured_text(t["expression"], t["value"])
            thresholds.add_row(
                Text(t["expression"]), Text(value), "passed" if t["passed"] else "[red]FAILED[/]"
            )
        console.print(thresholds)

    errors_by_class = s.get("errors_by_class") or {}
    if errors_by_class:
        errors = Table(title="errors by class", box=box.SIMPLE_HEAD, title_justify="left")
        errors.add_column("class", style="bold red")
        errors.add_column("count", justify="right")
        errors.add_column("first message", overflow="fold")
        for name, entry in errors_by_class.items():
            example = (examples or {}).get(name, entry["example"])
            errors.add_row(Text(name), f"{entry['count']:,}", Text(example))
        console.print(errors)
    for warning in s.get("warnings") or ():
        console.print(Text.assemble(("warning:", "bold red"), " ", warning))
