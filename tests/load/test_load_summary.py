"""The JSON summary (polyai-async-bench/4): every key documented, with its documented type."""

from __future__ import annotations

import itertools
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema

from polyai_async import RetryPolicy, _errors
from polyai_async.load import (
    Load,
    Metrics,
    Summary,
    _summary,
    demo_scenario,
    run_load_async,
    summarize,
)
from polyai_async.testing import FakePolyAI, Faults

PAGE = Path(__file__).resolve().parents[2] / "docs" / "load-testing.md"
ROW = re.compile(r"^\| `([^`]+)` \| ([a-z|\\]+) \| .+ \|$")
PLACEHOLDERS = {
    "<endpoint>": ("create", "respond", "close"),
    "<source>": ("create", "respond", "close", "conversation"),
    "<stat>": ("p50", "p90", "p95", "p99", "p999", "max", "mean"),
}
TYPES = {
    "int": {"type": "integer"},
    "number": {"type": "number"},
    "string": {"type": "string"},
    "bool": {"type": "boolean"},
    "list": {"type": "array"},
    "object": {"type": "object"},
    "null": {"type": "null"},
}


def documented() -> dict[str, str]:
    """The key table of docs/load-testing.md: key (placeholders expanded) -> type."""
    keys: dict[str, str] = {}
    for line in PAGE.read_text().splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        key, kind = match.group(1), match.group(2).replace("\\", "")
        names = [p for p in PLACEHOLDERS if p in key]
        for values in itertools.product(*(PLACEHOLDERS[n] for n in names)):
            expanded = key
            for name, value in zip(names, values, strict=True):
                expanded = expanded.replace(name, value)
            keys[expanded] = kind
    return keys


def schema(keys: dict[str, str]) -> dict[str, Any]:
    """A JSON Schema from the documented types; error_<ClassName> is a pattern."""
    properties = {
        k: {"anyOf": [TYPES[t] for t in kind.split("|")]}
        for k, kind in keys.items()
        if "<ClassName>" not in k
    }
    return {
        "type": "object",
        "properties": properties,
        "patternProperties": {"^error_[A-Z][A-Za-z]+$": {"type": "integer"}},
        "required": sorted(properties),
        "additionalProperties": False,
    }


async def summary_of_a_run_with_errors() -> dict[str, Any]:
    """The summary, as JSON reads it back, of a run with errors, thresholds and handoffs."""
    faults = Faults(error_rate=0.2)
    async with FakePolyAI(faults=faults, seed=3) as fake:
        async with fake.client(retry=RetryPolicy(max_attempts=1)) as client:
            result = await run_load_async(
                client,
                Load.closed(concurrency=4, conversations=40),
                demo_scenario(turns=3),
                thresholds=["respond.p99<5s", "conversations_dropped==0"],
                max_error_rate=1.0,
            )
    summary: dict[str, Any] = json.loads(json.dumps(result.summary))
    return summary


async def test_every_key_is_documented_with_its_type() -> None:
    """A run with errors, thresholds and handoffs writes exactly the documented keys and types."""
    keys = documented()
    assert len(keys) > 80  # the table was found and expanded
    summary = await summary_of_a_run_with_errors()
    assert summary["errors_total"] > 0
    jsonschema.validate(summary, schema(keys))
    assert summary["schema"] == "polyai-async-bench/4"
    row = summary["timeseries"][0]
    assert set(row) == {
        "t", "target", "conversations_started", "requests", "errors", "in_flight",
        *(f"{e}_{p}_ms" for e in ("create", "respond", "close") for p in ("p50", "p99")),
        *(f"{e}_ok_{p}_ms" for e in ("create", "respond", "close") for p in ("p50", "p99")),
    }  # fmt: skip
    name, entry = next(iter(summary["errors_by_class"].items()))
    assert set(entry) == {"count", "example"}
    assert summary[f"error_{name}"] == entry["count"]
    point = summary["latency_spectrum"]["respond"][-1]
    assert set(point) == {"percentile", "ms"}
    assert point["percentile"] <= 99.999


async def test_write_reports_writes_each_asked_for_and_names_what_failed(tmp_path: Path) -> None:
    """write_reports writes JSON, CSV and HTML; one that cannot be written does not stop the
    others and is returned with why."""
    from polyai_async.load import write_reports

    load = Load.closed(concurrency=1, conversations=1)
    async with FakePolyAI() as fake, fake.client() as client:
        result = await run_load_async(client, load, demo_scenario(turns=1))
    written = write_reports(
        result, json=tmp_path / "r.json", csv=tmp_path / "r.csv", html=tmp_path / "r.html"
    )
    assert written == {}
    assert json.loads((tmp_path / "r.json").read_text())["conversations_completed"] == 1
    assert (tmp_path / "r.csv").read_text().startswith("t,")
    assert "<html" in (tmp_path / "r.html").read_text()
    missing = tmp_path / "no-such-folder" / "r.json"
    problems = write_reports(result.summary, json=missing, csv=tmp_path / "again.csv")
    assert list(problems) == ["json"]
    assert problems["json"].startswith(f"could not write {missing}: ")
    assert (tmp_path / "again.csv").exists()


# What each documented type is as a Python annotation (TypedDicts are objects).
KINDS: dict[object, str] = {
    int: "int", float: "number", str: "string", bool: "bool", type(None): "null",
    list: "list", dict: "object",
}  # fmt: skip


def kinds(annotation: object) -> set[str]:
    """The documented kinds an annotation allows: ``int | None`` -> {"int", "null"}."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return set().union(*(kinds(arg) for arg in typing.get_args(annotation)))
    return {KINDS[typing.get_origin(annotation) or annotation]}


def test_the_documented_keys_are_the_summary_type() -> None:
    """Every key of the docs' table is in the Summary type with its type, and nothing more."""
    keys = documented()
    classes = [name for name in _errors.__all__ if name != "PolyAIError"]
    kind = keys.pop("error_<ClassName>")
    keys.update({f"error_{name}": kind for name in classes})
    hints = typing.get_type_hints(Summary)
    assert sorted(hints) == sorted(keys)
    for key, documented_kind in keys.items():
        assert kinds(hints[key]) == set(documented_kind.split("|")), key


def test_the_worker_figures_are_the_flat_figures() -> None:
    """A worker reports the flat figures (no lists or tables) plus its index."""
    flat = summarize(Metrics(), detail=False)
    assert set(typing.get_type_hints(_summary.Figures)) == set(flat)
    assert set(typing.get_type_hints(_summary.WorkerFigures)) == set(flat) | {"worker"}


async def test_a_real_summarys_entries_have_the_typed_keys() -> None:
    """The lists and tables of a run's summary hold exactly the keys their types say."""
    summary = await summary_of_a_run_with_errors()
    assert set(summary) == set(typing.get_type_hints(Summary))
    entries: dict[Any, list[Any]] = {
        _summary.ThresholdVerdict: summary["thresholds"],
        _summary.TurnLatency: summary["respond_by_turn"],
        _summary.TimeseriesRow: summary["timeseries"],
        _summary.ErrorExample: list(summary["errors_by_class"].values()),
        _summary.PersonaFigures: list(summary["personas"].values()),
        _summary.SpectrumPoint: [p for s in summary["latency_spectrum"].values() for p in s],
    }
    for entry_type, items in entries.items():
        assert items, entry_type.__name__
        for item in items:
            assert set(item) == set(typing.get_type_hints(entry_type)), entry_type.__name__
