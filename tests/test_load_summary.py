"""The JSON summary (polyai-async-bench/4): every key documented, with its documented type."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from polyai_async import RetryPolicy
from polyai_async.load import Load, demo_scenario, run_load_async
from polyai_async.testing import FakePolyAI, Faults

PAGE = Path(__file__).resolve().parent.parent / "docs" / "load-testing.md"
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


async def test_every_key_is_documented_with_its_type() -> None:
    """A run with errors, thresholds and handoffs writes exactly the documented keys and types."""
    keys = documented()
    assert len(keys) > 80  # the table was found and expanded
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
    summary = json.loads(json.dumps(result.summary))
    assert summary["errors_total"] > 0
    jsonschema.validate(summary, schema(keys))
    assert summary["schema"] == "polyai-async-bench/4"
    row = summary["timeseries"][0]
    assert set(row) == {
        "t", "conversations_started", "requests", "errors", "in_flight",
        *(f"{e}_{p}_ms" for e in ("create", "respond", "close") for p in ("p50", "p99")),
        *(f"{e}_ok_{p}_ms" for e in ("create", "respond", "close") for p in ("p50", "p99")),
    }  # fmt: skip
    name, entry = next(iter(summary["errors_by_class"].items()))
    assert set(entry) == {"count", "example"}
    assert summary[f"error_{name}"] == entry["count"]
    point = summary["latency_spectrum"]["respond"][-1]
    assert set(point) == {"percentile", "ms"}
    assert point["percentile"] <= 99.999
