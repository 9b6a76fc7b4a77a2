"""The docs' knee chart: a capacity search against the embedded fake, and a ramp beside it.

Runs ``polyai-async capacity`` (by default its demo: an agent of 8 slots of 100 ms, 80 turns a
second at most; one-turn conversations; respond p99 < 500 ms and under 1% failed) with
``--json``, then, unless ``--no-ramp``, ``polyai-async bench`` ramping the rate from 0 to the
search's maximum against the same agent, and finds the rate at which the ramp's per-second
respond p99 first crossed the SLO. Draws each step's p50 and p99 against the offered rate, the
error rate, the SLO line, the answer and the theoretical capacity, and the ramp's p99 over its
rate, into ``--out``/capacity-knee.png; writes the figures into ``--figures``; prints them.

    python -m benchmarks.capacity [--out docs/assets] [--figures benchmarks/results/capacity.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SLO_MS = 500.0
CAPACITY, LATENCY = 8, 0.1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "polyai_async.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def search(extra: list[str]) -> tuple[dict[str, Any], float]:
    """Run the capacity search; return its JSON answer and how long the command took."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "capacity.json"
        started = time.perf_counter()
        done = _cli("capacity", "--quiet", "--json", str(path), *extra)
        seconds = time.perf_counter() - started
        if done.returncode not in (0, 99):
            raise SystemExit(f"capacity failed ({done.returncode}): {done.stderr.strip()}")
        print(done.stdout)
        return json.loads(path.read_text()), seconds


def ramp(top: float, seconds: float) -> dict[str, Any]:
    """bench ramping the rate from 0 to ``top`` in ``seconds``; where its p99 crossed the SLO."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ramp.json"
        done = _cli(
            "bench",
            *("--rate", "0", "--stages", f"{seconds:g}s:{top:g}", "--turns", "1", "--quiet"),
            *("--agent-capacity", str(CAPACITY), "--agent-latency", str(LATENCY)),
            *("--graceful-stop", "1s", "--max-error-rate", "1", "--json", str(path)),
        )
        if not path.exists():
            raise SystemExit(f"the ramp failed ({done.returncode}): {done.stderr.strip()}")
        summary = json.loads(path.read_text())
    points = []
    for row in summary["timeseries"]:
        rate = top * min(1.0, (row["t"] + 0.5) / seconds)
        if row["respond_p99_ms"] is not None:
            points.append((rate, row["respond_p99_ms"]))
    crossed = next((rate for rate, p99 in points if p99 >= SLO_MS), None)
    return {"top": top, "seconds": seconds, "points": points, "crossed_slo_at": crossed}


def chart(answer: dict[str, Any], ramped: dict[str, Any] | None, out: Path) -> Path:
    """Draw the knee chart into ``out``/capacity-knee.png."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for s in answer["steps"] if s["figures"].get("respond_p99_ms") is not None]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for key, label, style in (
        ("respond_p50_ms", "step p50", "o"),
        ("respond_p99_ms", "step p99", "s"),
    ):
        points = sorted((s["target"], s["figures"][key]) for s in steps)
        top.plot([p[0] for p in points], [p[1] for p in points], style + "-", label=label)
    for s in steps:
        if s["stopped_early"]:
            top.annotate(
                "stopped early",
                (s["target"], s["figures"]["respond_p99_ms"]),
                textcoords="offset points",
                xytext=(-30, 8),
                fontsize=8,
            )
    if ramped is not None:
        top.plot(
            [p[0] for p in ramped["points"]],
            [p[1] for p in ramped["points"]],
            ":",
            color="grey",
            label=f"ramp 0 -> {ramped['top']:g}/s in {ramped['seconds']:g}s, p99 each second",
        )
    top.axhline(SLO_MS, color="red", linestyle="--", label=f"SLO respond.p99 < {SLO_MS:g} ms")
    theory = CAPACITY / LATENCY
    for ax in (top, bottom):
        ax.axvline(theory, color="black", linestyle=":", linewidth=1)
        if answer.get("max_rate") is not None:
            ax.axvline(answer["max_rate"], color="green", linewidth=2)
    if answer.get("max_rate") is not None:
        top.text(
            answer["max_rate"], SLO_MS * 2.2, f" max_rate {answer['max_rate']:.1f}/s", color="green"
        )
    top.text(theory, SLO_MS * 4, f" theory {theory:g}/s", color="black")
    top.set_yscale("log")
    top.set_ylabel("respond latency (ms)")
    top.legend(loc="upper left", fontsize=8)
    top.set_title("Capacity search: each step's respond latency against the offered rate")
    points = sorted((s["target"], s["figures"].get("conversation_error_rate") or 0) for s in steps)
    bottom.plot([p[0] for p in points], [100 * p[1] for p in points], "o-", color="purple")
    bottom.set_ylabel("conversations failed (%)")
    bottom.set_xlabel("offered rate (conversations started a second)")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "capacity-knee.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Search, ramp, draw, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/assets"))
    parser.add_argument("--figures", type=Path, default=Path("benchmarks/results/capacity.json"))
    parser.add_argument("--no-ramp", action="store_true")
    parser.add_argument("--ramp-seconds", type=float, default=60.0)
    parser.add_argument("capacity_options", nargs="*", help="more options for capacity (after --)")
    args = parser.parse_args(argv)
    answer, seconds = search(args.capacity_options)
    ramped = None if args.no_ramp else ramp(answer["settings"]["maximum"], args.ramp_seconds)
    path = chart(answer, ramped, args.out)
    figures = {
        "theoretical_max_rate": CAPACITY / LATENCY,
        "max_rate": answer["max_rate"],
        "confirmed": answer["confirmed"],
        "limited_by": answer["limited_by"],
        "in_flight_at_max": answer["in_flight_at_max"],
        "littles_law_in_flight": answer["littles_law_in_flight"],
        "steps": len(answer["steps"]),
        "steps_stopped_early": sum(s["stopped_early"] for s in answer["steps"]),
        "search_seconds": round(answer["seconds"], 1),
        "command_seconds": round(seconds, 1),
        "ramp_crossed_slo_at": None if ramped is None else ramped["crossed_slo_at"],
        "chart": str(path),
    }
    args.figures.parent.mkdir(parents=True, exist_ok=True)
    args.figures.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
