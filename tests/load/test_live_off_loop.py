"""The live figures and the live view are computed and drawn off the load's event loop."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest
from rich.console import Console

from polyai_async.load import LiveView, Load, _api, demo_scenario, run_load_async
from polyai_async.testing import FakePolyAI, Faults


async def test_figures_are_computed_in_a_thread_and_on_tick_called_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Percentiles (5-10 ms a second) never run on the loop; on_tick still does, every tick,
    and the last figures reach it before run_load_async returns."""
    loop_thread = threading.current_thread()
    computed_in: list[threading.Thread] = []
    real = _api.live_figures  # type: ignore[attr-defined]

    def recording(*args: Any, **kwargs: Any) -> dict[str, Any]:
        computed_in.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(_api, "live_figures", recording)
    called_in: list[threading.Thread] = []
    seen: list[Mapping[str, Any]] = []

    def on_tick(figures: Mapping[str, Any]) -> None:
        called_in.append(threading.current_thread())
        seen.append(figures)

    async with FakePolyAI(faults=Faults(latency=0.01)) as fake, fake.client() as client:
        result = await run_load_async(
            client, Load.closed(concurrency=5, duration=1.1), demo_scenario(turns=1),
            on_tick=on_tick,
        )  # fmt: skip
    assert computed_in
    assert all(t is not loop_thread for t in computed_in)
    assert called_in
    assert all(t is loop_thread for t in called_in)
    assert seen[-1]["started"] == result.figure("conversations_started")  # the final figures


def test_the_live_view_draws_in_its_own_thread_and_the_final_frame_at_once() -> None:
    """update() hands the drawing to the view's thread; final=True draws before returning."""
    console = Console(file=io.StringIO(), record=True, width=100, force_terminal=True)
    drawn_in: list[threading.Thread] = []
    view = LiveView(console, title="bench")
    real = view.render

    def render(figures: Any) -> Any:
        drawn_in.append(threading.current_thread())
        return real(figures)

    view.render = render  # type: ignore[method-assign]
    figures = _figures()
    with view:
        view.update(figures)
        view.update(figures, final=True)
        assert drawn_in[-1] is threading.current_thread()  # the final one, here and now
    assert drawn_in[0] is not threading.current_thread()


def _figures() -> dict[str, Any]:
    from tests.cli.test_cli_bench import figures

    return figures()


async def test_the_closed_models_lag_skips_the_wake_after_every_user_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first wake measures the plan's own burst of users, not the generator falling
    behind: no lag sample is taken there, and every later wake gives one."""
    from polyai_async.load import Metrics, _runner

    taken: list[float] = []  # when each sample was taken, from the run's start
    real = Metrics.lag

    def lag(self: Metrics, seconds: float) -> None:
        taken.append(time.perf_counter() - self.start)
        real(self, seconds)

    monkeypatch.setattr(Metrics, "lag", lag)
    monkeypatch.setattr(_runner, "_SUPERVISOR_SECONDS", 0.1)
    async with FakePolyAI(faults=Faults(latency=0.01)) as fake, fake.client() as client:
        await run_load_async(client, Load.closed(concurrency=3, duration=0.55), demo_scenario())
    assert len(taken) >= 3
    assert min(taken) > 0.15  # the wake at 0.1 s gave none; the one at 0.2 s the first
