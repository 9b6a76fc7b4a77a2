"""polyai_async.load: the load tester behind ``polyai-async bench``, usable from Python.

Load a scenario, describe a load, run it, read the figures, write reports::

    from polyai_async.load import Load, demo_scenario, run_load

    result = run_load(demo_scenario(), Load.open(rate=20, duration=10), client_settings={...})

Needs the ``load`` extra (hdrhistogram, pyyaml). The client never imports this package.
"""

from ._conversation import Observer, run_conversation
from ._html import render_html, write_html
from ._metrics import Metrics
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

__all__ = [
    "Expect",
    "Metrics",
    "Observer",
    "Persona",
    "Scenario",
    "ScenarioError",
    "ThinkTime",
    "TurnSpec",
    "demo_scenario",
    "load_scenario",
    "parse_think_time",
    "render_html",
    "run_conversation",
    "write_html",
]
