"""``polyai-async capacity``: the highest load an agent sustains within its SLOs.

This module only parses options, starts the embedded fake when there is no target, and
calls the capacity search (``polyai_async.load._capacity``), then shows its answer.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from .._config import PoolLimits
from .._errors import ConfigurationError
from .._redact import redact_value, safe_text
from .._retry import RetryPolicy
from ..testing import FakeServerProcess
from ._bench import import_extras, interrupt_on_sigterm, server_options
from ._common import (
    FAKE_CREDENTIALS,
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
    positive_number,
    positive_seconds,
    prog,
    whole,
)

# The demo: an embedded agent of 8 slots of 100 ms (80 turns a second), one-turn
# conversations, short steps: the whole search takes about a minute.
_DEMO_AGENT = {"agent_capacity": 8, "agent_latency": 0.1}
_DEMO_SLOS = ("respond.p99<500ms", "conversation_error_rate<0.01")
_DEMO_STEP = 4.0
_DEMO_WARMUP = 1.0
_DEMO_MIN, _DEMO_MAX = 10.0, 160.0
# Any other search: a step long enough for a queue to show.
_STEP = 20.0
_WARMUP = 5.0
_WINDOW = 5.0
_MIN = 1.0


def _precision(text: str) -> float:
    value = positive_number(text.removesuffix("%")) / (100 if text.endswith("%") else 1)
    if not value < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a precision between 0 and 1 (or 1%..99%)"
        )
    return value


def add_parser(commands: Any) -> None:
    """Add the ``capacity`` command to the subparsers ``commands``."""
    capacity = commands.add_parser(
        "capacity",
        help="find the highest load an agent sustains within its SLOs",
        description="Search the highest rate (--model open: conversations started a second) "
        "or concurrency (--model closed: conversations at once) at which every --slo holds: "
        "steps of steady load, the bounds first, then bisection to --precision, then a "
        "confirmation step at the answer. With no target, against an embedded fake agent of "
        f"{_DEMO_AGENT['agent_capacity']} slots of {_DEMO_AGENT['agent_latency']:g} s "
        "(80 turns a second) unless --agent-capacity says otherwise.",
    )
    add_scenario_options(capacity)
    search = capacity.add_argument_group("search")
    search.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="EXPR",
        help="what must hold, in bench's threshold grammar: respond.p99<2s, "
        "conversation_error_rate<0.01, expectations_failed==0; repeatable (default, against "
        f"the embedded fake: {' and '.join(_DEMO_SLOS)})",
    )
    search.add_argument(
        "--model",
        choices=("open", "closed"),
        default="open",
        help="open: search conversations started a second (max_rate); closed: conversations "
        "at once (max_concurrency) (default open)",
    )
    search.add_argument(
        "--min",
        type=positive_number,
        metavar="N",
        help=f"the lowest target tried (default {_MIN:g}; the demo {_DEMO_MIN:g})",
    )
    search.add_argument(
        "--max",
        type=positive_number,
        metavar="N",
        help="the highest target tried: required against --base-url or --real, so no agent "
        "is overloaded by accident (default against the embedded fake: twice its capacity)",
    )
    search.add_argument(
        "--step-duration",
        type=duration,
        metavar="TIME",
        help=f"each step's measured time, after its warm-up (default {_STEP:g}s; the demo "
        f"{_DEMO_STEP:g}s)",
    )
    search.add_argument(
        "--warmup",
        type=duration_or_zero,
        metavar="TIME",
        help=f"each step's first seconds, left out of its figures (default {_WARMUP:g}s; the "
        f"demo {_DEMO_WARMUP:g}s)",
    )
    search.add_argument(
        "--precision",
        type=_precision,
        default=0.05,
        metavar="F",
        help="stop when passing and failing targets are within this share: 0.05 or 5%% "
        "(default 5%%)",
    )
    search.add_argument(
        "--window",
        type=positive_seconds,
        metavar="SECONDS",
        help=f"a step stops early once an SLO fails over this sliding window twice in a row "
        f"(default {_WINDOW:g}; the demo 1)",
    )
    search.add_argument(
        "--max-steps", type=whole(1), default=20, metavar="N", help="steps at most (default 20)"
    )
    load = capacity.add_argument_group("load")
    add_generator_options(load)
    add_client_options(capacity)
    add_target_options(capacity, "search the capacity of")
    add_fault_options(capacity)
    add_agent_options(capacity)
    output = capacity.add_argument_group("output")
    output.add_argument(
        "--json",
        type=json_path,
        metavar="PATH",
        help="also write the answer and every step's bench summary as JSON (schema "
        "polyai-async-capacity/1) to PATH",
    )
    output.add_argument(
        "--html",
        type=json_path,
        metavar="PATH",
        help="also write the knee chart and the steps as a self-contained HTML report (opens "
        "offline) to PATH",
    )
    output.add_argument(
        "-q", "--quiet", action="store_true", help="no live view; print only the steps and answer"
    )
    capacity.set_defaults(run=run)


def _search_from(args: argparse.Namespace, embedded: bool, theory: float | None) -> Any:
    """The CapacitySearch the options describe; UsageError if they do not fit."""
    from ..load import (  # noqa: PLC0415 - the load extra
        CapacitySearch,
        ScenarioError,
        demo_scenario,
        load_scenario,
        parse_think_time,
    )

    if not embedded and args.max is None:
        flag = "--real" if args.real else "--base-url"
        raise UsageError(
            f"{flag} needs --max: the highest load to try, so no agent is overloaded by accident"
        )
    demo = embedded and not args.slo and args.scenario is None
    if args.scenario is not None:
        if args.turns is not None:
            raise UsageError("--turns shapes the demo scenario; a --scenario file has its turns")
        try:
            scenario = load_scenario(args.scenario)
        except ScenarioError as exc:
            raise UsageError(str(exc)) from None
    else:
        scenario = demo_scenario(turns=1 if args.turns is None else args.turns)
    slos = args.slo or (list(_DEMO_SLOS) if embedded else [])
    if not slos:
        raise UsageError("give at least one --slo, such as --slo 'respond.p99<2s'")
    closed = args.model == "closed"
    maximum = args.max
    if maximum is None and closed:
        maximum = 4.0 * args.agent_capacity  # conversations at once: a few per slot
    elif maximum is None:
        maximum = 2 * theory if theory is not None else _DEMO_MAX
    minimum = args.min if args.min is not None else (_DEMO_MIN if demo and not closed else _MIN)
    try:
        return scenario, CapacitySearch(
            slos=slos,
            model=args.model,
            minimum=minimum,
            maximum=maximum,
            step_duration=args.step_duration or (_DEMO_STEP if demo else _STEP),
            warmup=args.warmup if args.warmup is not None else (_DEMO_WARMUP if demo else _WARMUP),
            precision=args.precision,
            window=args.window or (1.0 if demo else _WINDOW),
            max_steps=args.max_steps,
            arrival=args.arrival,
            max_in_flight=args.max_in_flight,
            think_time=None if args.think_time is None else parse_think_time(args.think_time),
            seed=0 if args.seed is None else args.seed,
        )
    except ConfigurationError as exc:
        raise UsageError(_option_words(str(exc))) from None


def _option_words(message: str) -> str:
    """The search's field names as the options the user typed."""
    for field, option in (
        ("minimum", "--min"),
        ("maximum", "--max"),
        ("step_duration", "--step-duration"),
        ("max_steps", "--max-steps"),
        ("slos", "--slo"),
    ):
        message = message.replace(field, option)
    return message


def run(args: argparse.Namespace) -> int:
    """Run ``polyai-async capacity`` with the parsed ``args``; returns the exit status."""
    import_extras()
    from rich.console import Console  # noqa: PLC0415 - rich is optional

    from .._client import PolyAIClient  # noqa: PLC0415
    from ..load import LiveView, find_capacity  # noqa: PLC0415

    embedded = not (args.base_url or args.real)
    theory = None
    if embedded:
        faults_from(args)
        agent = agent_capacity_from(args) or dict(_DEMO_AGENT)
        for name, value in agent.items():
            setattr(args, name, value)  # the embedded fake's command line takes them
        latency = agent.get("agent_latency", 0.1) + agent.get("agent_latency_jitter", 0.0) / 2
        theory = agent["agent_capacity"] / latency if latency > 0 else None
        settings: dict[str, Any] = {}
    else:
        settings = client_settings(args)
    scenario, search = _search_from(args, embedded, theory)
    console = Console(highlight=False)
    policy = RetryPolicy(
        max_attempts=args.retry_attempts,
        retry_ambiguous=not args.no_retry_ambiguous,
        deadline=args.deadline,
        retry_budget=args.retry_budget,
    )
    with interrupt_on_sigterm(), contextlib.ExitStack() as cleanup:
        if embedded:
            server = FakeServerProcess(*server_options(args))
            cleanup.callback(server.stop)
            settings = {"base_url": server.start(), **FAKE_CREDENTIALS}
        settings = {
            **settings,
            "retry": policy,
            "limits": PoolLimits(max_connections=args.max_connections),
            "adaptive_concurrency": args.adaptive_concurrency,
        }
        try:
            base_url = display_url(PolyAIClient(**settings).base_url)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
        where = base_url + (" (embedded fake)" if embedded else "")
        head = (
            f"polyai-async capacity: {search.answer_name} for "
            f"{' and '.join(t.expression for t in search.slos)}, {search.minimum:g} to "
            f"{search.maximum:g} {search.unit}, steps of {search.step_duration:g}s after "
            f"{search.warmup:g}s of warm-up, precision {search.precision:.0%}\n"
            f"target {where}"
        )
        if theory is not None:
            head += (
                f"; its agent takes {args.agent_capacity} turns at once, "
                f"{theory:g} turns a second at most"
            )
        print(safe_text(head), flush=True)
        view: Any = None
        if not args.quiet and console.is_terminal:
            view = LiveView(console, title="starting")
        progress = _Progress(search, view, quiet=args.quiet)
        with view if view is not None else contextlib.nullcontext():
            try:
                result = find_capacity(
                    search,
                    scenario,
                    client_settings=settings,
                    processes=args.processes,
                    loop=args.loop,
                    on_step=progress.step,
                    on_tick=None if view is None else view.update,
                )
            except ConfigurationError as exc:
                raise UsageError(str(exc)) from None
    _render(result, console)
    answer = result.as_dict()
    written = args.json is None or _write(args.json, answer, _json_text)
    written = (args.html is None or _write(args.html, answer, _html_text)) and written
    if not written and result.interrupted_by is None:
        return 1
    return _conclude(result)


class _Progress:
    """Names each step as it starts: the live view's title, or a line when not a terminal."""

    def __init__(self, search: Any, view: Any, *, quiet: bool) -> None:
        self.search = search
        self.view = view
        self.quiet = quiet

    def step(self, index: int, target: float, phase: str, state: str) -> None:
        text = f"step {index} ({phase}): {target:.4g} {self.search.unit}; {state}"
        if self.view is not None:
            self.view.title = safe_text(text)
        elif not self.quiet:
            print(safe_text(text), flush=True)


def _render(result: Any, console: Any) -> None:
    """The table of steps and the answer."""
    from rich import box  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(
        box=box.SIMPLE_HEAD,
        title="steps (each step's measured window; p50 and p99 of respond)",
        title_justify="left",
        pad_edge=False,
    )
    for column in ("#", "phase", "target", "result", "conv/s", "p50", "p99", "failed"):
        table.add_column(
            column, justify="left" if column in ("phase", "result") else "right", no_wrap=True
        )
    table.add_column("first SLO to fail", overflow="fold")
    for step in result.steps:
        f = step.figures
        if step.interrupted_by is not None:
            verdict = "[yellow]interrupted[/]"
        elif step.passed is None:
            verdict = "[yellow]generator[/]"
        elif step.passed:
            verdict = "[green]pass[/]"
        else:
            verdict = "[red]fail[/]" + ("*" if step.stopped_early else "")
        table.add_row(
            str(step.index),
            step.phase,
            f"{step.target:.4g}",
            verdict,
            _number(f.get("conversations_per_second")),
            _ms(f.get("respond_p50_ms")),
            _ms(f.get("respond_p99_ms")),
            _share(f.get("conversation_error_rate")),
            safe_text(step.first_failed or step.generator_limited or ""),
        )
    for note in result.notes:
        console.print(f"[bold yellow]{note}[/]")
    console.print(table)
    if any(step.stopped_early for step in result.steps):
        console.print("* stopped early: the SLO failed twice in a row over the sliding window")
    console.print(safe_text(_answer_text(result)))


def _answer_text(result: Any) -> str:
    search = result.search
    steps = f"{len(result.steps)} steps in {result.seconds:.0f}s"
    by = result.interrupted_by
    if result.answer is None and by is not None:
        return (
            f"{search.answer_name}: none known: interrupted ({by}) before a step passed ({steps})"
        )
    if result.answer is None:
        why = (
            "the generator was the limit (use --processes, or a machine of its own)"
            if result.limited_by == "generator"
            else f"the SLOs fail even at --min {search.minimum:g}"
        )
        return f"{search.answer_name}: none: {why} ({steps})"
    text = f"{search.answer_name}: {result.answer:.4g} {search.unit}"
    if result.confirmed:
        text += " (confirmed)"
    elif by is not None:
        text += f" (NOT confirmed: interrupted ({by}); the highest step that passed so far)"
    elif any(s.phase == "confirm" and s.target == result.answer for s in result.steps):
        text += " (NOT confirmed: it failed its confirmation step)"
    elif search.confirm:
        text += " (NOT confirmed: --max-steps ran out first)"
    if result.limited_by is None and by is not None:
        text += "; no higher step had failed yet"
    elif result.limited_by is None:
        text += f"; the maximum passed: raise --max above {search.maximum:g} to learn more"
    elif result.limited_by == "generator":
        text += "; above it the generator, not the agent, was the limit"
    else:
        text += f"; above it {result.limited_by} failed first"
    if result.in_flight_at_max is not None:
        text += f"\nin flight at the answer: {result.in_flight_at_max:.3g} measured"
        if result.littles_law_in_flight is not None:
            agrees = "agrees" if result.littles_law_agrees else "DISAGREES"
            text += (
                f", {result.littles_law_in_flight:.3g} by Little's law (rate x mean "
                f"conversation duration): {agrees}"
            )
    return f"{text}\n{steps}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}ms"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _json_text(answer: Mapping[str, Any]) -> str:
    # Redacted as values, before encoding: a credential JSON escapes is still found.
    return orjson.dumps(redact_value(answer), option=orjson.OPT_INDENT_2).decode() + "\n"


def _html_text(answer: Mapping[str, Any]) -> str:
    from ..load import render_capacity_html  # noqa: PLC0415 - the load extra

    return render_capacity_html(answer)


def _write(path: Path, answer: Mapping[str, Any], text: Any) -> bool:
    try:
        path.write_text(text(answer), encoding="utf-8")
    except OSError as exc:
        fail(f"could not write {path}: {exc.strerror or exc}")
        return False
    return True


def _conclude(result: Any) -> int:
    code: int = result.exit_code
    if result.interrupted_by is not None:
        print(
            f"{prog()}: interrupted ({result.interrupted_by}): the search was stopped after "
            f"{len(result.steps)} steps; the reports cover the steps measured",
            file=sys.stderr,
            flush=True,
        )
    elif code == 99:
        fail(_answer_text(result).splitlines()[0])
    elif code == 1:
        fail(
            f"the answer {result.answer:.4g} was not confirmed by a step at full length "
            "(raise --max-steps, or a longer --step-duration if the agent is not steady there)"
        )
    return code
