"""The target of each second: in the JSON series, the CSV, the live view and the HTML charts."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from polyai_async.load import Load, LoadResult, PlainProgress, render_html, summarize, write_csv
from polyai_async.load._api import with_target
from polyai_async.load._metrics import Metrics, _Second

from .test_html_report import chart_data


def series_of(load: Load, seconds: int) -> dict[str, Any]:
    """The summary of a run of ``seconds`` seconds in which nothing happened."""
    metrics = Metrics()
    metrics.series = {t: _Second(t) for t in range(seconds)}
    return summarize(metrics, load=load)


def test_each_second_has_the_target_of_the_stages() -> None:
    """A ramp 0 -> 10/s in 2 s, then 10/s: the middle of each second's planned rate."""
    summary = series_of(Load.open(rate=0, stages="2s:10,2s:10"), 4)
    assert [row["target"] for row in summary["timeseries"]] == [2.5, 7.5, 10.0, 10.0]


def test_the_closed_model_target_is_the_concurrency() -> None:
    """Without stages the closed model's target is its concurrency every second."""
    summary = series_of(Load.closed(concurrency=7, duration=3), 3)
    assert {row["target"] for row in summary["timeseries"]} == {7}


def test_the_csv_has_the_target(tmp_path: Path) -> None:
    """The CSV's last column is the target (the others keep their places)."""
    summary = series_of(Load.open(rate=0, stages="2s:10"), 2)
    path = tmp_path / "series.csv"
    write_csv(summary, path)
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["target"]) for r in rows] == [2.5, 7.5]
    assert next(iter(csv.reader(path.read_text().splitlines())))[-1] == "target"


def test_the_live_view_names_the_target_and_the_stage() -> None:
    """Live figures get the target now and the stage; the plain line shows both."""
    load = Load.open(rate=0, stages="10s:100,10s:100")
    figures = with_target({"elapsed": 12.0}, load)
    assert (figures["target"], figures["stage"]) == (100.0, "2/2")
    base: dict[str, Any] = {
        "elapsed": 5.0, "planned": 20.0, "started": 10, "in_flight": 1, "completed": 9,
        "failed": 0, "done": 9, "dropped": 0, "turns_per_second": 1, "requests_per_second": 3,
        "retries": {}, "errors": {}, "generator_lag_p99_ms": 1.0, "cpu_share": 0.1,
        "respond_p99_ms": 5.0,
    }  # fmt: skip
    line = PlainProgress(io.StringIO()).line(with_target(base, load))
    assert "target 50/s (stage 1/2)" in line


def test_the_html_throughput_chart_draws_the_target_rate() -> None:
    """Open model: the throughput chart has a dashed target rate beside what was started."""
    summary = series_of(Load.open(rate=0, stages="2s:10"), 2)
    result = LoadResult(metrics=Metrics(), summary=summary)
    charts = {c["id"]: c for c in chart_data(render_html(result.summary))["charts"]}
    target = next(s for s in charts["throughput"]["series"] if s["label"] == "target rate")
    assert target["values"] == [2.5, 7.5]
    assert target["dash"] is True


def test_each_stage_has_its_own_figures() -> None:
    """Two stages of 2 s: each counts the conversations started in its own seconds."""
    metrics = Metrics()
    metrics.series = {t: _Second(t) for t in range(4)}
    for t, started in ((0, 2), (1, 4), (2, 10), (3, 12)):
        metrics.series[t].counters["conversations_started"] = started
    metrics.series[3].counters.update(conversations_ended=4, conversations_failed=1)
    summary = summarize(metrics, load=Load.open(rate=0, stages="2s:5,2s:10"))
    first, second = summary["stages"]
    assert (first["stage"], first["start_seconds"], first["end_seconds"]) == (1, 0.0, 2.0)
    assert (first["target_from"], first["target_to"]) == (0.0, 5.0)
    assert first["conversations_per_second"] == 3.0
    assert first["conversation_error_rate"] is None
    assert (second["target_from"], second["target_to"]) == (5.0, 10.0)
    assert second["conversations_per_second"] == 11.0
    assert second["conversation_error_rate"] == 0.25
    page = render_html(summary)
    assert 'id="stages"' in page
    assert "5 -&gt; 10" in page


def test_no_stages_no_stage_figures() -> None:
    """Without --stages the list is empty and the HTML has no Stages section."""
    summary = series_of(Load.closed(concurrency=2, duration=2), 2)
    assert summary["stages"] == []
    assert 'id="stages"' not in render_html(summary)
