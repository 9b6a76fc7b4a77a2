"""What a person sees while a load runs.

``live_figures`` turns the workers' snapshots (``Metrics.snapshot``) into the figures of one
moment: elapsed and planned time, conversations started / in flight / done / failed /
dropped, turns and requests in the last second, p50/p99 per endpoint in the last second,
retries and errors by class, the generator's lag and the client's CPU.

Two views show them: ``LiveView`` (rich, redrawn every second, on a terminal) and
``PlainProgress`` (no terminal: one line every few seconds, never wider than 80 columns,
no trailing spaces).
"""

from __future__ import annotations

import concurrent.futures
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import IO, Any

from . import _format
from ._conversation import guarded
from ._metrics import ENDPOINTS, decode
from ._result import CPU_WARNING_SHARE, LAG_WARNING_MS
from ._units import format_duration

__all__ = ["LiveView", "PlainProgress", "live_figures"]

#: Columns a plain progress line never exceeds.
PLAIN_WIDTH = 80
#: Seconds between two plain progress lines.
PLAIN_EVERY = 5.0


def live_figures(
    snapshots: Sequence[Mapping[str, Any]], *, planned: float | None
) -> dict[str, Any]:
    """One moment of a run, summed over the workers' snapshots."""
    counters: Counter[str] = Counter()
    retries: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    last: Counter[str] = Counter()
    histograms: dict[str, Any] = {}
    lag = None
    in_flight = 0
    cpu = 0.0
    elapsed = 0.0
    for snapshot in snapshots:
        counters.update(snapshot["counters"])
        retries.update(snapshot["retries"])
        errors.update(snapshot["errors"])
        in_flight += snapshot["in_flight"]
        cpu += snapshot.get("cpu_seconds", 0.0)
        elapsed = max(elapsed, snapshot.get("elapsed", 0.0))
        if snapshot["generator_lag"] is not None:
            theirs = decode(snapshot["generator_lag"])
            if lag is None:
                lag = theirs
            else:
                lag.add(theirs)
        if snapshot["last"] is not None:
            last.update(snapshot["last"]["counters"])
            for endpoint, text in snapshot["last"]["histograms"].items():
                theirs = decode(text)
                if endpoint in histograms:
                    histograms[endpoint].add(theirs)
                else:
                    histograms[endpoint] = theirs
    figures: dict[str, Any] = {
        "elapsed": elapsed,
        "planned": planned,
        "started": counters["conversations_started"],
        "in_flight": in_flight,
        "completed": counters["conversations_completed"],
        "failed": counters["conversations_failed"],
        "done": counters["conversations_completed"] + counters["conversations_failed"],
        "dropped": counters["conversations_dropped"],
        "turns_per_second": last["turns"],
        "requests_per_second": last["requests"],
        "retries": dict(retries),
        "errors": dict(errors),
        "generator_lag_p99_ms": None if lag is None else lag.get_value_at_percentile(99) / 1000,
        "cpu_share": cpu / elapsed / max(1, len(snapshots)) if elapsed > 0 else None,
    }
    for endpoint in ENDPOINTS:
        histogram = histograms.get(endpoint)
        for name, p in (("p50", 50.0), ("p99", 99.0)):
            value = None
            if histogram is not None and histogram.get_total_count():
                value = histogram.get_value_at_percentile(p) / 1000
            figures[f"{endpoint}_{name}_ms"] = value
    return figures


def warnings_of(figures: Mapping[str, Any]) -> list[str]:
    """The live warnings: generator lag or client CPU past their limits."""
    found = []
    lag = figures["generator_lag_p99_ms"]
    if lag is not None and lag > LAG_WARNING_MS:
        found.append(f"generator lag {lag:.0f} ms > {LAG_WARNING_MS:g} ms")
    cpu = figures["cpu_share"]
    if cpu is not None and cpu > CPU_WARNING_SHARE:
        found.append(f"client CPU {cpu:.0%} > {CPU_WARNING_SHARE:.0%}")
    return found


def _ms(value: float | None) -> str:
    return "-" if value is None else _format.figure(value)


def _short(warning: str) -> str:
    """``generator lag 45 ms > 10 ms`` as ``lag 45 ms``: room on an 80-column line."""
    return warning.partition(" > ")[0].removeprefix("generator ").removeprefix("client ")


def _clock(figures: Mapping[str, Any]) -> str:
    elapsed = format_duration(round(figures["elapsed"]))
    planned = figures["planned"]
    return f"{elapsed}/{format_duration(planned)}" if planned is not None else elapsed


class PlainProgress:
    """Progress for logs and pipes: one line every ``every`` seconds, at most 80 columns."""

    def __init__(self, out: IO[str] | None = None, *, every: float = PLAIN_EVERY) -> None:
        self.out = out if out is not None else sys.stderr
        self.every = every
        self._last = time.monotonic()

    def line(self, figures: Mapping[str, Any]) -> str:
        """The line for ``figures``: the most important pieces that fit in 80 columns."""
        f = figures
        # Warnings first: they say the other figures are the generator's, not the agent's.
        pieces = [f"started {f['started']:,}"]
        pieces += [f"WARNING {_short(w)}" for w in warnings_of(f)]
        if f.get("target") is not None:
            stage = f" (stage {f['stage']})" if f.get("stage") else ""
            pieces.append(f"target {f['target']:.3g}{f.get('target_unit', '')}{stage}")
        pieces += [
            f"in flight {f['in_flight']:,}",
            f"done {f['done']:,}",
            f"failed {f['failed']:,}",
            f"dropped {f['dropped']:,}",
            f"{f['requests_per_second']:,} req/s",
            f"respond p99 {_ms(f['respond_p99_ms'])} ms",
            f"lag p99 {_ms(f['generator_lag_p99_ms'])} ms",
        ]
        head = f"[{_clock(f)}]"
        body: list[str] = []
        for piece in pieces:
            if len(head) + 1 + len(", ".join([*body, piece])) <= PLAIN_WIDTH:
                body.append(piece)
        return f"{head} {', '.join(body)}".rstrip()

    def update(self, figures: Mapping[str, Any], *, final: bool = False) -> None:
        """Print a line if ``every`` seconds have passed since the last (or the start)."""
        now = time.monotonic()
        if final or now - self._last >= self.every:
            self._last = now
            print(self.line(figures), file=self.out, flush=True)


class LiveView:
    """The rich live view of a run on a terminal, redrawn once a second."""

    def __init__(self, console: Any, *, title: str) -> None:
        from rich.live import Live  # noqa: PLC0415 - rich is optional: the cli extra

        self.console = console
        self.title = title
        self._live = Live(console=console, auto_refresh=False, transient=True)
        # Drawing takes 5-20 ms: in a thread of its own, not on the load's event loop, where
        # it would be the generator's lag (see load._api.Ticker).
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "polyai-live-view")
        self._pending: concurrent.futures.Future[None] | None = None
        self._draw = guarded(self._redraw, "the live view")

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True)
        self._live.__exit__(None, None, None)

    def update(self, figures: Mapping[str, Any], *, final: bool = False) -> None:
        """Redraw with ``figures``, in the view's thread; a redraw still running skips this one.

        ``final``: drawn before this returns, after any redraw still running.
        """
        if final:
            if self._pending is not None:
                self._pending.result()
            self._draw(figures)
        elif self._pending is None or self._pending.done():
            self._pending = self._pool.submit(self._draw, figures)

    def _redraw(self, figures: Mapping[str, Any]) -> None:
        self._live.update(self.render(figures), refresh=True)

    def render(self, figures: Mapping[str, Any]) -> Any:
        """The view as a rich renderable."""
        from rich import box  # noqa: PLC0415
        from rich.console import Group  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        f = figures
        # Text, not str: a scenario's name holding "[/]" is shown, not read as markup.
        head = Table(
            box=box.SIMPLE_HEAD, show_header=False, title=Text(self.title), title_justify="left"
        )
        for _ in range(4):
            head.add_column()
        failed = f"[red]{f['failed']:,}[/]" if f["failed"] else "0"
        dropped = f"[red]{f['dropped']:,}[/]" if f["dropped"] else "0"
        head.add_row("elapsed", _clock(f), "started", f"{f['started']:,}")
        if f.get("target") is not None:
            head.add_row(
                "target",
                f"{f['target']:.3g}{f.get('target_unit', '')}",
                "stage",
                f.get("stage") or "-",
            )
        head.add_row("in flight", f"{f['in_flight']:,}", "done", f"{f['done']:,}")
        head.add_row("failed", failed, "dropped", dropped)
        head.add_row(
            "turns/s", f"{f['turns_per_second']:,}", "requests/s", f"{f['requests_per_second']:,}"
        )
        lag = f["generator_lag_p99_ms"]
        cpu = f["cpu_share"]
        head.add_row(
            "generator lag p99",
            f"{_ms(lag)} ms",
            "client CPU",
            "-" if cpu is None else f"{cpu:.0%}",
        )
        latency = Table(
            title="last second (ms)", box=box.SIMPLE_HEAD, title_justify="left", expand=False
        )
        latency.add_column("endpoint")
        latency.add_column("p50", justify="right")
        latency.add_column("p99", justify="right")
        latency.add_column("retries", justify="right")
        for endpoint in ENDPOINTS:
            latency.add_row(
                endpoint,
                _ms(f[f"{endpoint}_p50_ms"]),
                _ms(f[f"{endpoint}_p99_ms"]),
                f"{f['retries'].get(endpoint, 0):,}",
            )
        parts: list[Any] = [head, latency]
        if f["errors"]:
            errors = ", ".join(f"{name} {n:,}" for name, n in sorted(f["errors"].items()))
            parts.append(Text(f"errors: {errors}", style="red"))
        for warning in warnings_of(f):
            parts.append(
                Text(f"warning: {warning}: the figures describe the generator", style="bold red")
            )
        return Group(*parts)
