"""polyai_async.load: the load tester behind ``polyai-async bench``, usable from Python.

Load a scenario, describe a load, run it, read the figures, write reports::

    from polyai_async.load import Load, load_scenario, run_load, write_json

    result = run_load(Load.open(rate=20, duration=60), load_scenario("support.yaml"))
    print(result.figure("create_p99_ms"), result.passed)
    write_json(result, "bench.json")  # or write_reports(result, json=..., csv=..., html=...)

Inside a running event loop (pytest-asyncio, a notebook) use ``await run_load_async(client,
load, scenario)``. Needs the ``load`` extra (hdrhistogram, pyyaml). The client never imports
this package.
"""

from ._abort import AbortOnFail
from ._api import check_processes, parse_thresholds, run_load, run_load_async
from ._capacity import (
    CAPACITY_SCHEMA,
    CapacityResult,
    CapacitySearch,
    CapacityStep,
    find_capacity,
    find_capacity_async,
)
from ._capacity_html import render_capacity_html, write_capacity_html
from ._compare import (
    Change,
    Comparison,
    Rule,
    RuleVerdict,
    compare,
    merge_summaries,
    read_summary,
    render_comparison,
)
from ._compare_html import render_comparison_html, write_comparison_html
from ._conversation import Observer, run_conversation
from ._html import render_html, write_html
from ._live import LiveView, PlainProgress
from ._metrics import Metrics
from ._output import write_reports
from ._report import output_path_problem, render, write_csv, write_json
from ._result import SCHEMA, LoadResult, summarize
from ._runner import choose_loop
from ._scenario import (
    Expect,
    Persona,
    Scenario,
    ScenarioError,
    ThinkTime,
    TurnSpec,
    demo_scenario,
    load_scenario,
    parse_think_time,
)
from ._shape import Load, Stage, arrivals, parse_stages
from ._summary import Summary
from ._thresholds import Threshold, ThresholdResult
from ._units import parse_duration
from ._workers import WorkerError

__all__ = [
    "CAPACITY_SCHEMA",
    "SCHEMA",
    "AbortOnFail",
    "CapacityResult",
    "CapacitySearch",
    "CapacityStep",
    "Change",
    "Comparison",
    "Expect",
    "LiveView",
    "Load",
    "LoadResult",
    "Metrics",
    "Observer",
    "Persona",
    "PlainProgress",
    "Rule",
    "RuleVerdict",
    "Scenario",
    "ScenarioError",
    "Stage",
    "Summary",
    "ThinkTime",
    "Threshold",
    "ThresholdResult",
    "TurnSpec",
    "WorkerError",
    "arrivals",
    "check_processes",
    "choose_loop",
    "compare",
    "demo_scenario",
    "find_capacity",
    "find_capacity_async",
    "load_scenario",
    "merge_summaries",
    "output_path_problem",
    "parse_duration",
    "parse_stages",
    "parse_think_time",
    "parse_thresholds",
    "read_summary",
    "render",
    "render_capacity_html",
    "render_comparison",
    "render_comparison_html",
    "render_html",
    "run_conversation",
    "run_load",
    "run_load_async",
    "summarize",
    "write_capacity_html",
    "write_comparison_html",
    "write_csv",
    "write_html",
    "write_json",
    "write_reports",
]
