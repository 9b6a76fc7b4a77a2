"""The capacity search's HTML report: the knee chart's data, the steps, escaping, the CSP."""

from __future__ import annotations

import json
import re
from typing import Any

from polyai_async.load import render_capacity_html
from polyai_async.load._capacity import CapacitySearch, _Halt, _run_to_end, _search

from .test_capacity import interrupted_at, synthetic

EVIL = "</script><img src=x onerror=alert(1)>"


def answer() -> dict[str, Any]:
    """A search's JSON answer (a synthetic agent of capacity 40), as --json writes it."""
    search = CapacitySearch(
        slos=["respond.p99<2s", "conversation_error_rate<0.01"], minimum=1, maximum=200
    )
    result = _run_to_end(_search(search, synthetic(40)[0], None))
    data = result.as_dict()
    for step in data["steps"]:
        step["figures"].update(
            respond_p50_ms=step["target"] * 10,
            respond_p99_ms=step["target"] * 30,
            conversation_error_rate=0.0,
        )
    return data


def chart_data(page: str) -> dict[str, Any]:
    found = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S
    )
    assert found is not None
    parsed: dict[str, Any] = json.loads(found.group(1))
    return parsed


def test_the_knee_chart_draws_each_target_once_with_the_slo_and_the_answer() -> None:
    """x is each target once (sorted); p50, p99, the SLO line and the answer's marker."""
    data = answer()
    page = render_capacity_html(data)
    knee, errors = chart_data(page)["charts"]
    targets = sorted({s["target"] for s in data["steps"]})
    assert knee["xKind"] == "load"
    assert knee["x"] == targets
    labels = [s["label"] for s in knee["series"]]
    assert labels == ["respond p50", "respond p99", "SLO respond.p99<2s", "the answer"]
    assert set(knee["series"][2]["values"]) == {2000.0}
    marker = knee["series"][3]
    assert marker["points"] is True
    assert [x for x, v in zip(knee["x"], marker["values"], strict=True) if v is not None] == [
        data["max_rate"]
    ]
    assert [s["label"] for s in errors["series"]] == [
        "conversations failed",
        "SLO conversation_error_rate<0.01",
    ]
    assert f"max_rate: {data['max_rate']:.4g} conversations/s" in page


def test_every_string_is_escaped_and_the_page_is_offline() -> None:
    """A step's reason and a setting holding a script tag are text; the CSP fetches nothing."""
    data = answer()
    data["steps"][1]["first_failed"] = EVIL
    data["settings"]["slos"].append(EVIL)
    page = render_capacity_html(data)
    assert "<img src=x" not in page
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "default-src 'none'" in page
    assert "http://" not in page.replace("http://www.w3.org", "")
    assert chart_data(page)["charts"][0]["x"]


def test_no_answer_says_none() -> None:
    """A search where nothing passed shows max_rate none, and no answer marker."""
    search = CapacitySearch(slos=["respond.p99<2s"], minimum=1, maximum=200)
    data = _run_to_end(_search(search, synthetic(0.5)[0], None)).as_dict()
    page = render_capacity_html(data)
    assert "max_rate: none" in page
    knee = chart_data(page)["charts"][0]
    assert "the answer" not in [s["label"] for s in knee["series"]]


def test_an_interrupted_search_says_so_before_any_figure() -> None:
    """An interrupted search's page opens with the interruption, and its cut step says so."""
    search = CapacitySearch(slos=["respond.p99<2s"], minimum=1, maximum=200)
    halt = _Halt()
    data = _run_to_end(_search(search, interrupted_at(halt, 3, "SIGTERM")[0], None, halt))
    page = render_capacity_html(data.as_dict())
    assert 'data-stopped="interrupted"' in page
    assert page.index("INTERRUPTED (SIGTERM)") < page.index('data-chart="knee"')
    assert ">interrupted<" in page
