"""``python -m benchmarks [--smoke] [--out DIR]``: run the suite, write its results, print them."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import attrs

from ._report import print_tables, write_all
from ._suite import Plan, run_suite
from .generator import run_generator, table
from .generators import ROUNDS, chart, markdown, run_generators

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="polyai_async against hand-written aiohttp and httpx; scale; fault run.",
    )
    parser.add_argument("--smoke", action="store_true", help="a very short run (CI, tests)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"where results go (default {DEFAULT_OUT}; a temporary directory with --smoke)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved contender rounds")
    args = parser.parse_args(argv)
    plan = Plan.smoke_plan() if args.smoke else Plan()
    if args.rounds is not None:
        plan = attrs.evolve(plan, rounds=args.rounds)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    # A smoke run must never overwrite the shipped results.
    out: Path = args.out or (Path(tempfile.mkdtemp(prefix="bench-")) if args.smoke else DEFAULT_OUT)
    if plan.smoke:
        # A smoke run's timings mean nothing: the generator's phase runs beside the suite, as
        # its instruction count does, so the run takes as long as its longest phase.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as beside:
            generating = beside.submit(run_generator, True, log)
            side_by_side = beside.submit(run_generators, smoke=True, rounds=1, log=log)
            result = run_suite(plan, log)
            generator = generating.result()
            generators = side_by_side.result()
    else:
        result = run_suite(plan, log)
    write_all(result, out)
    print_tables(result)
    if not plan.smoke:
        # The load generator's own ceiling (benchmarks/generator.py), after the suite: one
        # thing measured at a time.
        generator = run_generator(False, log)
        # The generators side by side against nginx (benchmarks/generators.py).
        generators = run_generators(smoke=False, rounds=ROUNDS, log=log)
    (out / "generator.json").write_text(json.dumps(generator, indent=2) + "\n")
    (out / "generator.md").write_text(table(generator) + "\n")
    print(table(generator))
    (out / "generators.json").write_text(json.dumps(generators, indent=2) + "\n")
    (out / "generators.md").write_text(markdown(generators) + "\n")
    chart(generators, out / "generators.png")
    print(markdown(generators))
    print(f"results in {out} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
