"""``polyai-async bench``: a load test of a PolyAI agent (by default, the embedded fake's).

This module only parses options, starts the embedded server when there is no target, and
calls the load engine (``polyai_async.load``), which runs the load, shows it live and
reports it.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._commandline import option_names
from .._config import PoolLimits
from .._errors import ConfigurationError
from .._redact import safe_text
from .._retry import RetryPolicy
from ..testing import FakeServerProcess
from ._common import (
    AGENT_OPTIONS,
    FAKE_CREDENTIALS,
    FAULT_OPTIONS,
    UsageError,
    add_agent_options,
    add_client_options,
    add_fault_options,
    add_generator_options,
    add_scenario_options,
    add_target_options,
    agent_capacity_from,
    client_settings,
    display_url,
    duration,
    duration_or_zero,
    fail,
    faults_from,
    json_path,
    non_negative_number,
    prog,
    rate,
    whole,
)
from ._compare import add_rule_options, load_side

# The README's first command: 1,000 conversations, 100 at a time (one connection each), against
# an embedded fake that answers in 100 ms. Light enough (about a fifth of a core) that on a
# shared 2-core machine the figures describe the agent, not a saturated generator.
_DEFAULT_CONVERSATIONS = 1000
_DEFAULT_CONCURRENCY = 100
#: The embedded fake's delay on every request, unless --latency or --agent-capacity is given.
_DEMO_LATENCY = 0.1


def add_parser(commands: Any) -> None:
    """Add the ``bench`` command to the subparsers ``commands``."""
    bench = commands.add_parser(
        "bench",
        help="load-test an agent: scenarios, open or closed load, latency, thresholds",
        description="Drive conversations (create, turns, close) and report throughput, latency "
        "percentiles per endpoint, outcomes, expectations and thresholds. Closed model by "
        "default (--concurrency users, each starting a conversation when the last ends); "
        "--rate gives the open model (new conversations a second, latency counted from each "
        "one's scheduled start). By default against a fake server started in its own process.",
    )
    add_scenario_options(bench)
    load = bench.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        type=whole(1),
        metavar="N",
        help=f"closed model: conversations in flight at once (default {_DEFAULT_CONCURRENCY})",
    )
    load.add_argument(
        "--rate",
        type=non_negative_number,
        metavar="R",
        help="open model: new conversations a second (with --stages, the starting rate)",
    )
    load.add_argument(
        "--stages",
        metavar="D:T,...",
        help="ramp linearly through targets, such as 30s:10,2m:50,30s:0: the rate with "
        "--rate (give --rate 0 to start from nothing), else the concurrency",
    )
    load.add_argument(
        "--conversations",
        type=whole(1),
        metavar="N",
        help=f"conversations to start in all (default {_DEFAULT_CONVERSATIONS} when there is "
        "no --duration or --stages)",
    )
    load.add_argument(
        "--duration",
        type=duration,
        metavar="TIME",
        help="how long to apply the load: 500ms, 6s, 2m, 1h or plain seconds",
    )
    add_generator_options(load)
    load.add_argument(
        "--graceful-stop",
        type=duration,
        default=30.0,
        metavar="TIME",
        help="after --duration, wait this long for conversations in flight, then cancel "
        "them (default 30s)",
    )
    add_client_options(bench)
    add_target_options(bench, "load-test")
    add_fault_options(bench)
    add_agent_options(bench)
    output = bench.add_argument_group("pass/fail and output")
    output.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="EXPR",
        help="fail the run (exit 99) unless EXPR holds, such as respond.p99<1500ms, "
        "create.p95<=2s, conversation_error_rate<0.01, expectations_failed==0; repeatable",
    )
    output.add_argument(
        "--abort-on-fail",
        action="store_true",
        help="judge the thresholds every second over a sliding window (after --abort-grace) and "
        "stop the run at the first that fails twice in a row: exit 99, reports written and "
        "marked with when and why (one process only)",
    )
    output.add_argument(
        "--abort-grace",
        type=duration_or_zero,
        default=10.0,
        metavar="TIME",
        help="with --abort-on-fail, nothing is judged before this (default 10s)",
    )
    output.add_argument(
        "--abort-window",
        type=duration,
        default=5.0,
        metavar="TIME",
        help="with --abort-on-fail, the sliding window judged every second (default 5s)",
    )
    output.add_argument(
        "--max-error-rate",
        type=rate,
        default=0.01,
        metavar="F",
        help="exit 1 when the share of failed conversations is above this (default 0.01)",
    )
    output.add_argument(
        "--json",
        type=json_path,
        metavar="PATH",
        help="also write the summary as JSON (schema polyai-async-bench/3) to PATH",
    )
    output.add_argument(
        "--csv",
        type=json_path,
        metavar="PATH",
        help="also write the time series as CSV (one row a second) to PATH",
    )
    output.add_argument(
        "--html",
        type=json_path,
        metavar="PATH",
        help="also write a self-contained HTML report (charts over time, latency spectrum, "
        "outcomes, thresholds, settings; opens offline) to PATH",
    )
    output.add_argument(
        "-q", "--quiet", action="store_true", help="no live view; print only the report"
    )
    gate = bench.add_argument_group("comparing with a baseline (as polyai-async compare)")
    gate.add_argument(
        "--baseline",
        type=Path,
        metavar="FILE",
        help="after the run, compare it with this earlier --json result and apply --fail-on",
    )
    add_rule_options(gate)
    bench.set_defaults(run=run)


def _demo_latency(args: argparse.Namespace) -> list[str]:
    """The embedded fake's demo delay, when the options set none of their own."""
    if args.latency is not None or args.agent_capacity is not None:
        return []
    return ["--latency", f"{_DEMO_LATENCY:g}"]


def server_options(args: argparse.Namespace) -> list[str]:
    """The embedded fake's options: the demo agent, its credentials, fault and agent options."""
    options = ["--agent", "demo"]
    for name, value in FAKE_CREDENTIALS.items():
        options += ["--" + name.replace("_", "-"), value]
    for name in (*FAULT_OPTIONS, *AGENT_OPTIONS):
        given = getattr(args, name, None)
        if given is not None:
            options += ["--" + name.replace("_", "-"), str(given)]
    return options


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the load (run_load handles it during the load): exit 143."""


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Treat SIGTERM as Ctrl-C in the block, so cleanups run (the server is stopped).

    During the load itself, run_load handles both signals and keeps the run.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def import_extras() -> None:
    try:
        import rich  # noqa: F401, PLC0415 - only bench needs rich: the cli extra
    except ImportError:
        raise UsageError(
            "bench needs rich for its live view and report: install polyai-async[cli]"
        ) from None
    try:
        import hdrh  # noqa: F401, PLC0415 - the load extra
    except ImportError:
        raise UsageError(
            "bench needs hdrhistogram for its latency histograms: install polyai-async[cli]"
        ) from None


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    """A ConfigurationError out of the engine is a bad option, found before anything ran."""
    try:
        yield
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _plan(args: argparse.Namespace) -> tuple[Any, Any, tuple[Any, ...]]:
    """The scenario, the Load and the thresholds the options describe; UsageError if not."""
    from ..load import (  # noqa: PLC0415 - the load extra is checked first
        Load,
        ScenarioError,
        demo_scenario,
        load_scenario,
        parse_stages,
        parse_think_time,
        parse_thresholds,
    )

    if args.scenario is not None:
        if args.turns is not None:
            raise UsageError("--turns shapes the demo scenario; a --scenario file has its turns")
        try:
            scenario = load_scenario(args.scenario)
        except ScenarioError as exc:
            raise UsageError(str(exc)) from None
    else:
        scenario = demo_scenario(turns=5 if args.turns is None else args.turns)
    try:
        think = None if args.think_time is None else parse_think_time(args.think_time)
        stages = () if args.stages is None else parse_stages(args.stages)
        thresholds = parse_thresholds(args.threshold)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    open_model = args.rate is not None
    if open_model and args.concurrency is not None:
        raise UsageError(
            "--concurrency (closed model) and --rate (open model) do not go together: give one"
        )
    conversations, duration = args.conversations, args.duration
    if conversations is None and duration is None and not stages:
        if open_model:
            raise UsageError("--rate needs --duration or --conversations: how long to apply it")
        conversations = _DEFAULT_CONVERSATIONS
    options: dict[str, Any] = {
        # --seed seeds the fake's faults and, here, the users' choices (default 0: repeatable).
        "seed": 0 if args.seed is None else args.seed,
        "stages": stages,
        "conversations": conversations,
        "duration": duration,
        "think_time": think,
        "graceful_stop": args.graceful_stop,
    }
    try:
        if open_model:
            load = Load.open(
                rate=args.rate,
                arrival=args.arrival,
                max_in_flight=args.max_in_flight,
                **options,
            )
        else:
            default = 0 if stages else _DEFAULT_CONCURRENCY
            concurrency = args.concurrency if args.concurrency is not None else default
            load = Load.closed(concurrency=concurrency, **options)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    return scenario, load, thresholds


def _describe(args: argparse.Namespace, scenario: Any, load: Any, where: str) -> str:
    """What is run against what, in two lines (the load in ``Load.describe()``'s words)."""
    if args.scenario is None:
        turns = 5 if args.turns is None else args.turns
        what = f"the demo scenario ({turns} turns at most)"
    else:
        what = f"scenario {scenario.name!r} ({len(scenario.personas)} personas)"
    processes = "" if args.processes == 1 else f", {args.processes} processes"
    return (
        f"polyai-async bench: {what}, {load.describe()}{processes}\n"
        f"target {where}; client: {args.max_connections:,} connections, "
        f"{args.retry_attempts} attempts per call"
    )


def _report_settings(
    args: argparse.Namespace, target: str, base_url: str, scenario: Any = None
) -> dict[str, Any]:
    """The run's options for the report: plain values, never a credential.

    ``think_time`` is the one the run used: ``--think-time``, else the scenario's.
    """
    think = args.think_time
    if think is None and scenario is not None and scenario.think_time is not None:
        think = scenario.think_time.describe()
    settings: dict[str, Any] = {
        "target": target,
        "base_url": base_url,
        "scenario": "demo" if args.scenario is None else str(args.scenario),
        "turns": args.turns,
        "think_time": think,
        "model": "open" if args.rate is not None else "closed",
        "concurrency": args.concurrency,
        "rate": args.rate,
        "arrival": args.arrival if args.rate is not None else None,
        "max_in_flight": args.max_in_flight if args.rate is not None else None,
        "stages": args.stages,
        "conversations": args.conversations,
        "duration": args.duration,
        "graceful_stop": args.graceful_stop,
        "max_connections": args.max_connections,
        "retry_attempts": args.retry_attempts,
        "retry_ambiguous": not args.no_retry_ambiguous,
        "deadline": args.deadline,
        "retry_budget": args.retry_budget,
        "adaptive_concurrency": args.adaptive_concurrency,
        "threshold": "; ".join(args.threshold) or None,
        "max_error_rate": args.max_error_rate,
    }
    for name in (*FAULT_OPTIONS, *AGENT_OPTIONS):
        settings[name] = getattr(args, name, None)
    return settings


def _check_processes_and_loop(args: argparse.Namespace, load: Any) -> None:
    """Refuse a bad --processes, --rate or --loop before the embedded fake starts.

    run_load checks both again, for its other callers.
    """
    from ..load import check_processes, choose_loop  # noqa: PLC0415 - the load extra

    try:
        check_processes(load, args.processes)
        choose_loop(args.loop)
    except ConfigurationError as exc:
        raise UsageError(option_names(str(exc), ("processes", "rate"))) from None


def run(args: argparse.Namespace) -> int:
    """Run ``polyai-async bench`` with the parsed ``args``; returns the exit status."""
    import_extras()
    from rich.console import Console  # noqa: PLC0415 - rich is optional

    from .._client import PolyAIClient  # noqa: PLC0415
    from ..load import LiveView, PlainProgress, render, run_load  # noqa: PLC0415

    scenario, load, thresholds = _plan(args)
    _check_processes_and_loop(args, load)
    baseline = _baseline(args)
    embedded = not (args.base_url or args.real)
    if not embedded:
        _refuse_server_thresholds(thresholds)
    policy = RetryPolicy(
        max_attempts=args.retry_attempts,
        retry_ambiguous=not args.no_retry_ambiguous,
        deadline=args.deadline,
        retry_budget=args.retry_budget,
    )
    limits = PoolLimits(max_connections=args.max_connections)
    server: FakeServerProcess | None = None
    if embedded:
        faults_from(args)  # refuse rates that add up to more than 1 before starting anything
        agent_capacity_from(args)
        target, settings = "embedded", {}
    else:
        target, settings = ("real" if args.real else "base_url"), client_settings(args)
    console = Console(highlight=False)
    with interrupt_on_sigterm(), contextlib.ExitStack() as cleanup:
        if embedded:
            server = FakeServerProcess(*server_options(args), *_demo_latency(args))
            # Stopped however the run ends: failure, Ctrl-C or SIGTERM.
            cleanup.callback(server.stop)
            settings = {"base_url": server.start(), **FAKE_CREDENTIALS}
        settings = {
            **settings,
            "retry": policy,
            "limits": limits,
            "adaptive_concurrency": args.adaptive_concurrency,
        }
        try:
            base_url = display_url(PolyAIClient(**settings).base_url)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
        where = base_url + (
            (
                " (embedded fake"
                + (f", {_DEMO_LATENCY * 1000:g} ms a request" if _demo_latency(args) else "")
                + (f", seed {args.seed})" if args.seed is not None else ")")
            )
            if embedded
            else ""
        )
        description = _describe(args, scenario, load, where)
        view: Any = None
        if not args.quiet:
            if console.is_terminal:
                view = LiveView(console, title=safe_text(description.splitlines()[0]))
            else:
                view = PlainProgress(sys.stdout)
        context: dict[str, Any] = {
            "target": target,
            "base_url": base_url,
            "max_connections": args.max_connections,
            "retry_attempts": args.retry_attempts,
            "turns_per_conversation": (5 if args.turns is None else args.turns)
            if args.scenario is None
            else None,
        }
        with (
            view if isinstance(view, LiveView) else contextlib.nullcontext(),
            _usage_errors(),
        ):
            result = run_load(
                load,
                scenario,
                client_settings=settings,
                processes=args.processes,
                loop=args.loop,
                thresholds=thresholds,
                max_error_rate=args.max_error_rate,
                on_tick=None if view is None else view.update,
                settings=_report_settings(args, target, base_url, scenario),
                context=context,
                abort_on_fail=_abort_on_fail(args, thresholds),
            )
    if server is not None:
        # Known only once the fake has stopped: added here, then everything is judged again on
        # the final summary (thresholds on server_* included).
        result = result.with_server(server.counters, server.cpu_seconds)
    summary = result.summary
    render(summary, console, description=description)
    written = write_outputs(args, result)
    return conclude(args, result, written, baseline)


def _abort_on_fail(args: argparse.Namespace, thresholds: Sequence[Any]) -> Any:
    """The AbortOnFail of --abort-on-fail, None without it; UsageError if it cannot apply."""
    if not args.abort_on_fail:
        return None
    from ..load import AbortOnFail  # noqa: PLC0415 - the load extra

    if not thresholds:
        raise UsageError("--abort-on-fail needs a --threshold to judge")
    if args.processes > 1:
        raise UsageError("--abort-on-fail judges one process's figures: drop --processes")
    try:
        return AbortOnFail(grace=args.abort_grace, window=args.abort_window)
    except ConfigurationError as exc:
        raise UsageError(
            option_names(str(exc).replace("window", "abort_window"), ("abort_window",))
        ) from None


def conclude(
    args: argparse.Namespace,
    result: Any,
    written: bool,
    baseline: Mapping[str, Any] | None = None,
) -> int:
    """The exit status, and the line on stderr that says why it is not 0."""
    summary = result.summary
    code: int = result.exit_code
    aborted = result.aborted
    if aborted is not None:
        fail(
            f"aborted at {aborted['at_seconds']:.0f}s: {aborted['threshold']} failed over the "
            f"last {aborted['window_seconds']:g}s (measured {aborted['value']:g}); the report "
            "covers the run up to there"
        )
        return code
    if result.interrupted:
        print(
            f"{prog()}: interrupted ({result.interrupted_by}): the load was stopped early; the "
            "report covers what was measured",
            file=sys.stderr,
            flush=True,
        )
        return code
    if result.partial:
        lost = ", ".join(f"worker {w['worker']}" for w in summary["workers_missing"])
        fail(f"partial run: no result from {lost}; the report has the other workers' figures")
        return code
    if not written:
        return 1
    regressed = baseline is not None and _compare_with_baseline(args, baseline, summary)
    if code == 1 and not result.completed_any:
        fail(
            f"no conversation completed ({summary['conversations_started']:,} started, "
            f"{summary['conversations_failed']:,} failed, "
            f"{summary['conversations_interrupted']:,} interrupted): the run cannot pass"
        )
    elif code == 1:
        fail(
            f"{summary['conversation_error_rate']:.2%} of conversations failed, above "
            f"--max-error-rate {args.max_error_rate:g}"
        )
    elif code == 99:
        failed = [t for t in result.thresholds if not t.passed]
        measured = [f"{t.expression} ({t.detail()})" for t in failed]
        fail("threshold failed: " + "; ".join(measured))
    # The run's own failures come first; else a regression against the baseline exits 99.
    return 99 if code == 0 and regressed else code


def _baseline(args: argparse.Namespace) -> dict[str, Any] | None:
    """The --baseline result, read and checked with the --fail-on rules before the run."""
    from ..load import compare  # noqa: PLC0415 - the load extra is checked first

    if args.baseline is None:
        if args.fail_on:
            raise UsageError("--fail-on compares with a baseline: give --baseline FILE too")
        return None
    baseline = load_side([args.baseline])
    try:
        compare(baseline, baseline, rules=args.fail_on, noise=args.noise)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    return baseline


def _compare_with_baseline(
    args: argparse.Namespace, baseline: Mapping[str, Any], summary: Mapping[str, Any]
) -> bool:
    """Print the comparison with the baseline; True when a rule failed on a real change."""
    from ..load import compare, render_comparison  # noqa: PLC0415

    comparison = compare(baseline, summary, rules=args.fail_on, noise=args.noise)
    print(safe_text(render_comparison(comparison)), end="", flush=True)
    if comparison.failed:
        failed = [v.expression for v in comparison.verdicts if v.failed]
        fail("regression against the baseline: " + "; ".join(failed))
    return comparison.failed


def _refuse_server_thresholds(thresholds: Sequence[Any]) -> None:
    """Another target than the embedded fake never reports server_*: refuse them up front."""
    unmeasurable = [t.expression for t in thresholds if t.key.startswith("server_")]
    if unmeasurable:
        raise UsageError(
            f"--threshold {unmeasurable[0]!r}: the server_* figures come from the embedded "
            "fake; a --base-url or --real target does not report them"
        )


def write_outputs(args: argparse.Namespace, result: Any) -> bool:
    """Write --json, --csv and --html; False if one could not be (one error line each)."""
    from ..load import write_reports  # noqa: PLC0415 - the load extra

    problems = write_reports(result, json=args.json, csv=args.csv, html=args.html)
    for name, problem in problems.items():
        fail(f"--{name}: {problem}")
    return not problems
