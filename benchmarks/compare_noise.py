"""The figures of docs/compare.md: compare's false alarms, and the smallest regression it catches.

Runs ``polyai-async bench`` against its embedded fake (``--latency`` seconds a call), in pairs:

- ``same``: both runs of one setup; a rule that fails is a false alarm;
- ``slower``: the second run's fake slower by each share of ``--regressions``; a rule that
  fails caught the regression.

Each pair is compared with ``polyai-async compare`` and the rules of ``RULES`` (default
``--noise`` and ``--alpha``). Extra arguments after ``--`` go to bench (the run length: by
default bench's own, 1,000 conversations, 1,000 at a time). Prints one JSON line per pair and
a summary.

    python -m benchmarks.compare_noise same --pairs 20 -- --conversations 200 --concurrency 100
    python -m benchmarks.compare_noise slower --pairs 3 --regressions 0.05,0.1,0.2,0.3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

RULES = (
    "respond.p50>+10%",
    "respond.p99>+10%",
    "create.p99>+10%",
    "conversation_error_rate>+0.005",
    "respond.p50>+0%",
    "respond.p99>+0%",
)
COMMAND = [sys.executable, "-m", "polyai_async.cli"]


def bench(path: Path, latency: float, extra: list[str]) -> Path:
    args = [*COMMAND, "bench", "--latency", str(latency), "--json", str(path), "-q", *extra]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)  # noqa: S603 - our own CLI
    return path


def compare(base: Path, new: Path, out: Path) -> dict[str, Any]:
    args = [*COMMAND, "compare", str(base), str(new), "--json", str(out)]
    for rule in RULES:
        args += ["--fail-on", rule]
    # Exit 99 is a verdict, not an error: the verdicts are read from --json.
    subprocess.run(args, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def pair(directory: Path, latency: float, slower: float, extra: list[str]) -> dict[str, Any]:
    base = bench(directory / "base.json", latency, extra)
    new = bench(directory / "new.json", round(latency * (1 + slower), 6), extra)
    data = compare(base, new, directory / "compare.json")
    p50 = next(c for c in data["changes"] if c["figure"] == "respond_p50_ms")
    return {
        "slower": slower,
        "failed": [r["expression"] for r in data["rules"] if r["failed"]],
        "respond_p50_change": p50["relative"],
        "respond_p50_p": p50["p_value"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("same", "slower"))
    parser.add_argument("--pairs", type=int, default=20, help="pairs (per regression)")
    parser.add_argument("--latency", type=float, default=0.1, help="the fake's latency (s)")
    parser.add_argument("--regressions", default="0.05,0.1,0.2,0.3", help="slower by, shares")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: len(argv) - len(extra) - (1 if "--" in argv else 0)])
    shares = [0.0] if args.mode == "same" else [float(x) for x in args.regressions.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as directory:
        for share in shares:
            for _ in range(args.pairs):
                result = pair(Path(directory), args.latency, share, extra)
                results.append(result)
                print(json.dumps(result), flush=True)
    for share in shares:
        rows = [r for r in results if r["slower"] == share]
        failed = Counter(rule for r in rows for rule in r["failed"])
        spread = sorted(round(100 * r["respond_p50_change"], 1) for r in rows)
        print(f"slower by {share:.0%}: {len(rows)} pairs; respond p50 change % {spread}")
        for rule in RULES:
            print(f"  {rule}: failed in {failed[rule]} of {len(rows)}")


if __name__ == "__main__":
    main()
