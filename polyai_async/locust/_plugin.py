"""Locust event hooks: the report options, the worker-to-master messages, the merged report.

Importing ``polyai_async.locust`` registers these listeners on ``locust.events``,
as Locust plugins do.

- Every process that runs users (a worker, or a plain ``locust`` run) has a Bridge. When its
  test stops (or it quits), it drains and sends its final figures (``Bridge.final_report``:
  exact HDR histograms and counters, ``Metrics.to_dict()``) to the master in a
  ``polyai_metrics`` message.
- The master, when its test stops (``--run-time``, the web UI's stop, Ctrl-C, SIGTERM),
  sends ``polyai_collect`` to every worker (a worker that is still running drains first),
  waits up to ``--polyai-report-timeout`` seconds for every worker that took part, merges
  their Metrics (histograms added, counters summed) and writes the load engine's JSON
  summary (``--polyai-json``) and HTML report (``--polyai-html``), with a ``workers`` entry
  per worker. A worker that never answered is listed in ``workers_missing``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

import gevent
from locust import events
from locust.runners import STATE_MISSING, LocalRunner, MasterRunner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

from .._client import PolyAIClient
from .._errors import ConfigurationError
from ..load import Metrics, summarize, write_html, write_json
from ..load._report import output_path_problem
from ._bridge import bridge_of
from ._checks import checks_of
from ._user import PolyAIUser
from ._webui import hide_host_password, remember_host_password

if TYPE_CHECKING:
    from locust.env import Environment
    from locust.rpc import Message

__all__ = ["COLLECT", "METRICS", "Collector", "report_summary"]

logger = logging.getLogger("polyai_async.locust")

#: The custom message a worker sends its final figures in.
METRICS = "polyai_metrics"
#: The custom message the master asks for them with.
COLLECT = "polyai_collect"
_HISTOGRAMS = ("create", "respond", "close", "conversation")


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    # On the parser itself: only Locust's add_argument knows include_in_web_ui.
    parser.add_argument(
        "--polyai-json",
        metavar="PATH",
        default=None,
        include_in_web_ui=False,
        help="write the merged JSON summary of PolyAIUser runs (polyai-async-bench/4) to PATH",
    )
    parser.add_argument(
        "--polyai-html",
        metavar="PATH",
        default=None,
        include_in_web_ui=False,
        help="write the merged HTML report of PolyAIUser runs to PATH",
    )
    parser.add_argument(
        "--polyai-report-timeout",
        metavar="SECONDS",
        type=float,
        default=10.0,
        include_in_web_ui=False,
        help="how long the master waits for the workers' figures when the test stops (10)",
    )


def _histogram_counts(metrics: Metrics) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in _HISTOGRAMS:
        histogram = metrics.histogram(name)
        counts[name] = 0 if histogram is None else int(histogram.get_total_count())
    return counts


def report_summary(
    reports: Mapping[str, Mapping[str, Any]],
    *,
    missing: list[str],
    base_url: str | None,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON summary of a Locust run from each worker's final report.

    The load engine's summary of the merged Metrics, plus ``workers`` (one flat summary per
    worker, with its ``worker`` id), ``workers_missing``, ``conversations_left_open``,
    ``creates_cancelled`` and ``histogram_counts`` (values in each exact histogram).
    """
    merged = Metrics()
    workers = []
    wall = 0.0
    cpu = 0.0
    left_open = cancelled = 0
    for index, (worker, report) in enumerate(sorted(reports.items())):
        metrics = Metrics.from_dict(report["metrics"])
        merged.merge(metrics)
        wall = max(wall, float(report["wall_seconds"]))
        cpu += float(report["cpu_seconds"])
        left_open += int(report["conversations_left_open"])
        cancelled += int(report["creates_cancelled"])
        context = {
            "worker": worker,
            "worker_index": index,
            "host": report["host"],
            "pid": report["pid"],
            "conversations_left_open": report["conversations_left_open"],
            "creates_cancelled": report["creates_cancelled"],
            "histogram_counts": _histogram_counts(metrics),
        }
        workers.append(
            summarize(
                metrics,
                wall_seconds=float(report["wall_seconds"]),
                client_cpu_seconds=float(report["cpu_seconds"]),
                context=context,
                detail=False,
            )
        )
    summary = summarize(
        merged,
        wall_seconds=wall,
        client_cpu_seconds=cpu,
        processes=max(1, len(reports)),
        settings=settings,
        context={
            "target": "locust",
            "base_url": base_url,
            "conversations_left_open": left_open,
            "creates_cancelled": cancelled,
            "histogram_counts": _histogram_counts(merged),
            "workers_missing": sorted(missing),
        },
    )
    summary["workers"] = workers
    if missing:
        summary["warnings"].append(
            f"{len(missing)} worker(s) sent no figures (lost, or too slow to stop): "
            "the merged figures leave them out"
        )
    return summary


class Collector:
    """Gathers the workers' final figures on the master (or the one local process's).

    Args:
        environment: the Locust environment of the master (or local) process.
    """

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.reports: dict[str, dict[str, Any]] = {}
        self.participants: set[str] = set()
        self.written = False

    def reset(self, **_: Any) -> None:
        """A new test starts."""
        self.reports.clear()
        self.participants.clear()
        self.written = False

    def seen(self, client_id: str, **_: Any) -> None:
        """A worker reported (it takes part in this test)."""
        self.participants.add(client_id)

    def on_metrics(self, environment: Environment, msg: Message, **_: Any) -> None:
        """A worker's final figures arrived."""
        self.reports[msg.node_id] = msg.data
        self.participants.add(msg.node_id)

    def _option(self, name: str, default: Any = None) -> Any:
        return getattr(self.environment.parsed_options, name, default)

    def collect(self, **_: Any) -> None:
        """Ask the workers for their figures, wait for them, write the report (once a test)."""
        if self.written:
            return
        self.written = True
        runner = self.environment.runner
        if isinstance(runner, MasterRunner):
            for client in list(runner.clients.all):
                if client.state != STATE_MISSING:
                    self.participants.add(client.id)
                    runner.send_message(COLLECT, None, client_id=client.id)
            deadline = time.monotonic() + float(self._option("polyai_report_timeout", 10.0))
            while self._waiting_for(runner) and time.monotonic() < deadline:
                gevent.sleep(0.05)
        else:
            self.reports["local"] = bridge_of(self.environment).final_report()
        self.write()

    def _waiting_for(self, runner: MasterRunner) -> list[str]:
        clients = runner.clients
        return [
            worker
            for worker in self.participants
            if worker not in self.reports
            and worker in clients
            and clients[worker].state != STATE_MISSING
        ]

    def write(self) -> None:
        """Write the merged report to the paths the options name (and log a summary)."""
        json_path = self._option("polyai_json")
        html_path = self._option("polyai_html")
        missing = sorted(self.participants - set(self.reports))
        options = self.environment.parsed_options
        settings = {
            "runner": type(self.environment.runner).__name__,
            "users": getattr(options, "num_users", None),
            "spawn_rate": getattr(options, "spawn_rate", None),
            "run_time": getattr(options, "run_time", None),
            "user_classes": ",".join(c.__name__ for c in self.environment.user_classes),
        }
        scenarios = sorted(
            {c.scenario_of()[0].name for c in self.environment.user_classes if _ours(c)}
        )
        try:
            summary = report_summary(
                self.reports, missing=missing, base_url=self.environment.host, settings=settings
            )
            summary["scenario"] = ", ".join(scenarios) or None
        except (KeyError, TypeError, ValueError) as exc:
            logger.error("a worker's figures could not be read: %s", exc)
            return
        logger.info(
            "%d worker(s) reported%s: %d conversations, %d requests, "
            "create/respond/close p99 %s/%s/%s ms, %d chats left open",
            len(self.reports),
            f" ({len(missing)} missing)" if missing else "",
            summary["conversations_started"],
            summary["requests"],
            summary["create_p99_ms"],
            summary["respond_p99_ms"],
            summary["close_p99_ms"],
            summary["conversations_left_open"],
        )
        for option, path, write in (
            ("--polyai-json", json_path, write_json),
            ("--polyai-html", html_path, write_html),
        ):
            if not path:
                continue
            try:
                write(summary, path)
            except OSError as exc:  # checked at start, yet the disk may fill up: the others
                logger.error("%s: could not write %s: %s", option, path, exc.strerror or exc)
                self.environment.process_exit_code = 1
            else:
                logger.info("wrote %s", path)


def _send_final(environment: Environment) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        report = bridge_of(environment).final_report()
        runner.send_message(METRICS, report)


def _ours(user_class: type) -> TypeGuard[type[PolyAIUser]]:
    return issubclass(user_class, PolyAIUser)


def _check(environment: Environment) -> None:
    """Fail at start, in one line and with exit code 2, on a bad scenario or bad settings."""
    # --host may hold a password: every process hides it from its reports and logs (a worker
    # remembers it again when it makes its client).
    remember_host_password(environment.host)
    try:
        for user_class in environment.user_classes:
            if _ours(user_class):
                user_class.scenario_of()
        if not isinstance(environment.runner, MasterRunner):
            # The client is made on the loop's thread at the first conversation; making one
            # here (no connection yet) checks the POLYAI_* credentials and --host now.
            PolyAIClient(base_url=environment.host)
        if not isinstance(environment.runner, WorkerRunner):  # the process that writes them
            _check_output_paths(environment)
    except ConfigurationError as exc:
        logger.error("%s", exc)
        raise SystemExit(2) from None


def _check_output_paths(environment: Environment) -> None:
    """Refuse a --polyai-json or --polyai-html that could not be written, before any load."""
    for name in ("polyai_json", "polyai_html"):
        path = getattr(environment.parsed_options, name, None)
        if path:
            problem = output_path_problem(path)
            if problem is not None:
                option = "--" + name.replace("_", "-")
                raise ConfigurationError(f"{option}: {path!r} {problem}")


def _let_locust_write_its_csv(environment: Environment) -> None:
    """Give Locust's CSV writer one more turn before it closes its files.

    It rewrites the --csv files once a second and closes them right after ``events.quit``
    without a last write, so the calls answered in the run's last second (and the workers'
    final stats) would be missing from them.
    """

    def wait(**_: Any) -> None:
        if getattr(environment.parsed_options, "csv_prefix", None):
            gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.25)

    environment.events.quit.add_listener(wait)


@events.init.add_listener
def _on_init(environment: Environment, runner: Any = None, **_: Any) -> None:
    runner = environment.runner
    _check(environment)
    if isinstance(runner, (MasterRunner, LocalRunner)):
        # Locust's own web UI and HTML report: the host without its password.
        hide_host_password(environment)
    checks_of(environment).attach(
        environment,
        master=isinstance(runner, MasterRunner),
        worker=isinstance(runner, WorkerRunner),
    )
    if isinstance(runner, MasterRunner):
        collector = Collector(environment)
        runner.register_message(METRICS, collector.on_metrics)
        environment.events.test_start.add_listener(collector.reset)
        environment.events.worker_report.add_listener(collector.seen)
        environment.events.test_stop.add_listener(collector.collect)
        environment.events.quitting.add_listener(collector.collect)
        _let_locust_write_its_csv(environment)
    elif isinstance(runner, WorkerRunner):
        bridge = bridge_of(environment)

        def on_collect(environment: Environment, msg: Message, **_: Any) -> None:
            _send_final(environment)

        def on_stop(environment: Environment, **_: Any) -> None:
            _send_final(environment)

        def on_quit(environment: Environment, **_: Any) -> None:
            _send_final(environment)
            bridge.shutdown()

        runner.register_message(COLLECT, on_collect, concurrent=True)
        environment.events.test_start.add_listener(lambda **_: bridge.reset())
        environment.events.test_stop.add_listener(on_stop)
        environment.events.quitting.add_listener(on_quit)
    elif isinstance(runner, LocalRunner):
        bridge = bridge_of(environment)
        local = Collector(environment)

        def on_local_start(**_: Any) -> None:
            bridge.reset()
            local.reset()

        def on_local_quit(**_: Any) -> None:
            local.collect()
            bridge.shutdown()

        environment.events.test_start.add_listener(on_local_start)
        environment.events.test_stop.add_listener(local.collect)
        environment.events.quitting.add_listener(on_local_quit)
        _let_locust_write_its_csv(environment)
