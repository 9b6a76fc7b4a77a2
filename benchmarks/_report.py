"""The suite's output: ``benchmarks.json``, ``tables.md``, ``scale.png`` and a table on stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ._suite import CONTENDERS


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _spread(figure: dict[str, float | None], digits: int = 0) -> str:
    return (
        f"{_num(figure['median'], digits)} "
        f"({_num(figure['min'], digits)}-{_num(figure['max'], digits)})"
    )


def contender_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per contender: medians with (min-max) over the rounds."""
    summary = result["contenders"]["summary"]
    sizes = result["contenders"]["conversations"]
    rows = []
    for name in CONTENDERS:
        s = summary[name]
        rows.append(
            [
                name,
                f"{sizes[name]} x {result['contenders']['rounds']}",
                _spread(s["rps"]),
                _spread(s["p50_ms"], 1),
                _spread(s["p99_ms"], 1),
                _spread(s["cpu_s_per_1k"], 3),
                _spread(s["rss_peak_mb"], 1),
                _spread(s["server_cpu_per_wall"], 2),
            ]
        )
    return rows


CONTENDER_HEADER = [
    "contender",
    "conversations x rounds",
    "req/s",
    "p50 ms",
    "p99 ms",
    "client CPU s / 1k req",
    "peak RSS MiB",
    "server CPU / wall",
]


def ratio_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per ratio: throughput and CPU per request, medians with (min-max)."""
    return [
        [name, _spread(r["throughput"], 2), _spread(r["cpu_per_request"], 2)]
        for name, r in result["contenders"]["ratios"].items()
    ]


RATIO_HEADER = [
    "ratio",
    "throughput (higher: first is faster)",
    "CPU per request (lower: first is cheaper)",
]


def scale_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per concurrency level."""
    return [
        [
            f"{level['concurrency']:,}",
            f"{level['conversations']:,}",
            f"{level['conversations_completed']:,}",
            f"{level['conversations_failed']:,}",
            _num(level["rps"]),
            _num(level["p50_ms"], 1),
            _num(level["p99_ms"], 1),
            _num(level["cpu_s_per_1k"], 3),
            _num(level["rss_peak_mb"], 1),
            _num(level["memory_per_conversation_kb"], 1),
            _num(level["server_cpu_per_wall"], 2),
        ]
        for level in result["scale"]["levels"]
    ]


SCALE_HEADER = [
    "in flight",
    "conversations",
    "completed",
    "failed",
    "req/s",
    "p50 ms",
    "p99 ms",
    "client CPU s / 1k req",
    "peak RSS MiB",
    "KiB per conversation",
    "server CPU / wall",
]


def fault_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per fault run: retry_ambiguous on, then off."""
    rows = []
    for label in ("retry_ambiguous_on", "retry_ambiguous_off"):
        run = result["faults"][label]
        failed = ", ".join(f"{k} {v}" for k, v in sorted(run["failed_calls"].items())) or "none"
        rows.append(
            [
                label.replace("retry_ambiguous_", ""),
                f"{run['conversations_completed']:,} / {run['conversations']:,}",
                f"{run['failed_calls_total']:,} ({failed})",
                f"{sum(run['server_faults'].values()):,}",
                f"{run['turns_sent']:,}",
                f"{run['server_turns_recorded']:,}",
                f"{run['duplicated_turns']:,}",
            ]
        )
    return rows


FAULT_HEADER = [
    "retry_ambiguous",
    "conversations completed",
    "calls failed",
    "faults injected",
    "turns sent",
    "turns the server recorded",
    "turns duplicated",
]


def instruction_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per contender counted, then one per ratio (the phase ran: see ``tables``)."""
    phase = result["instructions"]
    rows = [
        [name, f"{figures['instructions_per_request']:,.0f}", ""]
        for name, figures in phase["contenders"].items()
    ]
    rows += [[name, "", f"{value:.3f}"] for name, value in phase["ratios"].items()]
    return rows


INSTRUCTION_HEADER = [
    "contender or ratio",
    "client instructions per request",
    "ratio (higher: first is cheaper)",
]


def target_rows(result: dict[str, Any]) -> list[list[str]]:
    return [
        [t["target"], _num(t["value"], 2), "met" if t["met"] else "NOT met"]
        for t in result["targets"]
    ]


TARGET_HEADER = ["target", "measured (median)", ""]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    c = result["contenders"]
    out = [
        (
            f"Contenders at {c['concurrency']} concurrent conversations "
            f"(median (min-max) of {c['rounds']} interleaved rounds)",
            CONTENDER_HEADER,
            contender_rows(result),
        ),
        ("Ratios, per round side by side", RATIO_HEADER, ratio_rows(result)),
        ("Scale: polyai_async alone", SCALE_HEADER, scale_rows(result)),
        (f"Fault run: {result['faults']['faults']}", FAULT_HEADER, fault_rows(result)),
    ]
    instructions = result.get("instructions", {})
    if "contenders" in instructions:
        small, large = instructions["conversations"]
        out.append(
            (
                "Instructions per request, counted by valgrind "
                f"({large} minus {small} conversations at {c['concurrency']} in flight)",
                INSTRUCTION_HEADER,
                instruction_rows(result),
            )
        )
    out.append(("Targets", TARGET_HEADER, target_rows(result)))
    return out


def write_markdown(result: dict[str, Any], path: Path) -> None:
    parts = []
    for title, header, rows in tables(result):
        parts.append(f"**{title}**\n\n{markdown_table(header, rows)}\n")
    path.write_text("\n".join(parts))


def print_tables(result: dict[str, Any]) -> None:
    """Print the tables with rich when it is installed, else as markdown."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is in the bench extra
        for title, header, rows in tables(result):
            print(f"\n{title}\n{markdown_table(header, rows)}")
        return
    console = Console(width=200)
    for title, header, rows in tables(result):
        table = Table(title=title, title_justify="left")
        for column in header:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        console.print(table)


def plot_scale(result: dict[str, Any], path: Path) -> None:
    """Throughput and p50/p99 latency against conversations in flight, log scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["scale"]["levels"]
    x = [level["concurrency"] for level in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    left.plot(x, [level["rps"] for level in levels], marker="o")
    left.set_xscale("log")
    left.set_xlabel("conversations in flight")
    left.set_ylabel("requests per second")
    left.set_ylim(bottom=0)
    left.set_title("Throughput")
    left.grid(True, which="both", alpha=0.3)
    right.plot(x, [level["p50_ms"] for level in levels], marker="o", label="p50")
    right.plot(x, [level["p99_ms"] for level in levels], marker="s", label="p99")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("conversations in flight")
    right.set_ylabel("latency per request, ms")
    right.set_title("Latency")
    right.legend()
    right.grid(True, which="both", alpha=0.3)
    limit = result["plan"]["max_connections"]
    fig.suptitle(
        f"polyai_async, create + {result['plan']['turns']} turns + close per conversation, "
        f"PoolLimits(max_connections={limit})"
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_all(result: dict[str, Any], out: Path) -> None:
    """Write benchmarks.json, tables.md and scale.png into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    write_markdown(result, out / "tables.md")
    plot_scale(result, out / "scale.png")
