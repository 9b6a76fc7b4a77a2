"""Conversations and expectations, in statistics of their own beside Locust's.

Locust's request statistics (its table, its Aggregated row, its total RPS, its failures) hold
the HTTP calls only: ``create``, ``respond`` and ``close``. A whole conversation (seconds
long) and an expectation check (no request at all) would inflate the RPS and mix 0 ms checks
with 4 s conversations, so each process keeps them in a second ``RequestStats``:

- a worker sends it to the master with its periodic report (``report_to_master``, under
  ``polyai_checks``), as Locust sends its own, and the master merges it (``worker_report``);
- the web UI shows it in a tab of its own ("PolyAI conversations", Locust's
  ``extended_tabs``), with a CSV download (``/polyai/checks.csv``);
- ``--csv PREFIX`` writes it to ``PREFIX_polyai_checks.csv`` when Locust quits;
- an unmet expectation still fails the run (exit code ``--exit-code-on-error``), as it did
  when it was a request failure.

Failures are named by kind and status (``RequestFailed``), never with a request's own
correlation id, so that Locust's failure table has one row per kind of failure.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import weakref
from typing import TYPE_CHECKING, Any

from locust.stats import RequestStats, StatsEntry, StatsError

from .._errors import APIStatusError, PolyAIError
from .._hooks import failure_reason

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["CHECKS_CSV", "Checks", "RequestFailed", "checks_of"]

logger = logging.getLogger("polyai_async.locust")

#: What ``--csv PREFIX`` adds to the prefix for the conversations and expectations.
CHECKS_CSV = "_polyai_checks.csv"
_KEY = "polyai_checks"
_COLUMNS = (
    ("method", "Type"),
    ("name", "Name"),
    ("num_requests", "Count"),
    ("num_failures", "Failures"),
    ("median", "Median (ms)"),
    ("p95", "95%ile (ms)"),
    ("p99", "99%ile (ms)"),
    ("average", "Average (ms)"),
    ("max", "Max (ms)"),
)


class RequestFailed(Exception):
    """A failed call as Locust's tables show it: its kind and status, one row per kind.

    ``InternalServerError: http_500 INTERNAL_SERVER_ERROR``, not the error's own message
    (which quotes the request's correlation id). The PolyAIError itself, with its
    correlation id, is ``error`` (and ``__cause__``).
    """

    def __init__(self, error: PolyAIError) -> None:
        kind = f"{type(error).__name__}: {failure_reason(error)}"
        if isinstance(error, APIStatusError) and error.error_code:
            kind += f" {error.error_code}"
        super().__init__(kind)
        self.error = error
        self.__cause__ = error


class Checks:
    """One process's conversations and expectations (see the module docstring)."""

    def __init__(self) -> None:
        self.stats = RequestStats(use_response_times_cache=False)

    def log(self, method: str, name: str, ms: float, failure: Exception | None) -> None:
        """One conversation ended, or one expectation was checked (gevent thread)."""
        self.stats.log_request(method, name, round(ms), 0)
        if failure is not None:
            self.stats.log_error(method, name, failure)

    def reset(self, **_: Any) -> None:
        """A new test starts, or the web UI's reset button."""
        self.stats.reset_all()

    # -- worker to master, as Locust's own statistics go ----------------------------------

    def report(self, client_id: str, data: dict[str, Any]) -> None:
        """A worker's periodic report: the checks since the last one."""
        stats = self.stats
        data[_KEY] = {
            "stats": stats.serialize_stats(),
            "total": stats.total.get_stripped_report(),
            "errors": stats.serialize_errors(),
        }
        stats.errors = {}

    def merge(self, client_id: str, data: dict[str, Any]) -> None:
        """A worker's report reached the master: add its checks."""
        theirs = data.get(_KEY)
        if not theirs:
            return
        stats = self.stats
        for entry_data in theirs["stats"]:
            entry = StatsEntry.unserialize(entry_data, stats)
            key = (entry.name, entry.method)
            if key not in stats.entries:
                stats.entries[key] = StatsEntry(stats, entry.name, entry.method)
            stats.entries[key].extend(entry)
        for key, error in theirs["errors"].items():
            if key in stats.errors:
                stats.errors[key].occurrences += error["occurrences"]
            else:
                stats.errors[key] = StatsError.unserialize(error)
        stats.total.extend(StatsEntry.unserialize(theirs["total"], stats))

    # -- what a person reads --------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """One row per entry (``CHAT conversation``, ``CHECK expectation``), sorted."""
        rows = []
        for (name, method), entry in sorted(self.stats.entries.items()):
            count = entry.num_requests
            rows.append(
                {
                    "method": method,
                    "name": name,
                    "num_requests": count,
                    "num_failures": entry.num_failures,
                    "median": entry.median_response_time if count else None,
                    "p95": entry.get_response_time_percentile(0.95) if count else None,
                    "p99": entry.get_response_time_percentile(0.99) if count else None,
                    "average": round(entry.avg_response_time, 1) if count else None,
                    "max": round(entry.max_response_time, 1) if count else None,
                }
            )
        return rows

    def failures(self) -> list[dict[str, Any]]:
        """One row per kind of failure: where, what, how many times."""
        return [
            {"method": e.method, "name": e.name, "error": e.to_name(), "occurrences": e.occurrences}
            for e in sorted(self.stats.errors.values(), key=lambda e: (e.name, e.to_name()))
        ]

    def csv_text(self) -> str:
        """The rows as CSV, then the failures."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([title for _, title in _COLUMNS])
        for row in self.rows():
            writer.writerow(["" if row[key] is None else row[key] for key, _ in _COLUMNS])
        for failure in self.failures():
            writer.writerow(
                [failure["method"], failure["name"], failure["occurrences"], failure["error"]]
            )
        return out.getvalue()

    # -- hooking it into Locust ------------------------------------------------------------

    def attach(self, environment: Environment, *, master: bool, worker: bool) -> None:
        """Listen to the events that feed, reset, show and write these statistics."""
        events = environment.events
        events.test_start.add_listener(self.reset)
        events.reset_stats.add_listener(self.reset)
        if worker:
            events.report_to_master.add_listener(self.report)
            return
        if master:
            events.worker_report.add_listener(self.merge)
        events.quitting.add_listener(lambda **_: self._at_quit(environment))
        if environment.web_ui is not None:
            self._extend_web_ui(environment)

    def _at_quit(self, environment: Environment) -> None:
        failed = self.stats.total.num_failures
        if failed and environment.process_exit_code is None:
            # An unmet expectation fails the run, as Locust's own failures do.
            code = getattr(environment.parsed_options, "exit_code_on_error", 1)
            environment.process_exit_code = code
        prefix = getattr(environment.parsed_options, "csv_prefix", None)
        if prefix:
            path = f"{prefix}{CHECKS_CSV}"
            try:
                with open(path, "w", newline="", encoding="utf-8") as out:
                    out.write(self.csv_text())
            except OSError as exc:
                logger.error("could not write %s: %s", path, exc.strerror or exc)

    def _extend_web_ui(self, environment: Environment) -> None:
        from flask import Response, request  # noqa: PLC0415 - locust's own dependency

        web_ui = environment.web_ui
        assert web_ui is not None  # noqa: S101 - checked by the caller
        web_ui.template_args.update(
            extended_tabs=[{"title": "PolyAI conversations", "key": _KEY}],
            extended_tables=[
                {
                    "key": _KEY,
                    "structure": [{"key": key, "title": title} for key, title in _COLUMNS],
                }
            ],
            extended_csv_files=[
                {"href": "./polyai/checks.csv", "title": "Download PolyAI conversations CSV"}
            ],
        )
        app = web_ui.app
        if app is None:  # pragma: no cover - a web UI always has its app
            return

        @app.after_request
        def add_checks(response: Response) -> Response:
            if request.path.rstrip("/").endswith("/stats/requests") and response.is_json:
                body = response.get_json()
                body["extended_stats"] = [{"key": _KEY, "data": self.rows()}]
                response.set_data(json.dumps(body))
            return response

        def checks_csv() -> Response:
            return Response(
                self.csv_text(),
                mimetype="text/csv",
                headers={"Content-Disposition": "attachment; filename=polyai_checks.csv"},
            )

        app.add_url_rule("/polyai/checks.csv", "polyai_checks_csv", checks_csv)


_checks: weakref.WeakKeyDictionary[Environment, Checks] = weakref.WeakKeyDictionary()


def checks_of(environment: Environment) -> Checks:
    """The Checks of this Locust process's environment, made on first use."""
    checks = _checks.get(environment)
    if checks is None:
        checks = _checks[environment] = Checks()
    return checks
