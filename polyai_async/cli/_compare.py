"""``polyai-async compare``: is the new run slower than the base, beyond noise?

This module only parses options and calls the load engine (``polyai_async.load``: read and
merge the results, compare them, render the comparison); exit 99 when a ``--fail-on`` rule
fails on a real change, 0 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from .._errors import ConfigurationError
from .._redact import redact_value, safe_text
from ._common import UsageError, fail, json_path


def noise_share(text: str) -> float:
    """``5%`` or ``0.05``: a share of the base, >= 0."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share such as 5% or 0.05") from None
    if not 0 <= value < 10:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share >= 0 such as 5% or 0.05")
    return value


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 1")
    return value


def add_rule_options(group: Any, *, noise_default: float = 0.05) -> None:
    """``--fail-on`` and ``--noise``: shared with ``bench --baseline``."""
    group.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="EXPR",
        help="exit 99 when this change happens and is real (significant and beyond --noise): "
        "respond.p99>+10%%, respond.p50>+20ms, conversation_error_rate>+0.005, "
        "max_rate<-10%%; repeatable",
    )
    group.add_argument(
        "--noise",
        type=noise_share,
        default=noise_default,
        metavar="SHARE",
        help="the noise floor: a relative change smaller than this is not real, however "
        f"significant (default {noise_default:.0%})".replace("%", "%%"),
    )


def add_parser(commands: Any) -> None:
    """Add the ``compare`` command to the subparsers ``commands``."""
    command = commands.add_parser(
        "compare",
        help="compare two bench results: every figure, what changed for real, CI rules",
        description="Compare a new bench result (--json) with a base one: every figure side "
        "by side (base, new, absolute and relative change), and for each latency whether the "
        "change is real: statistically significant (Mann-Whitney U on the two histograms) and "
        "beyond the --noise floor. --fail-on rules turn it into a CI gate (exit 99).",
    )
    command.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="BASE.json NEW.json",
        help="the base result, then the new one (or give --base and --new)",
    )
    sides = command.add_argument_group("several runs a side (merged exactly)")
    sides.add_argument(
        "--base", action="append", type=Path, default=[], metavar="FILE", help="a base run"
    )
    sides.add_argument(
        "--new", action="append", type=Path, default=[], metavar="FILE", help="a new run"
    )
    judging = command.add_argument_group("judging")
    add_rule_options(judging)
    judging.add_argument(
        "--alpha",
        type=_alpha,
        default=0.01,
        metavar="P",
        help="the significance level of the tests (default 0.01)",
    )
    output = command.add_argument_group("output")
    output.add_argument(
        "--json", type=json_path, metavar="PATH", help="also write the comparison as JSON"
    )
    output.add_argument(
        "--html",
        type=json_path,
        metavar="PATH",
        help="also write a self-contained HTML report (spectra overlaid, series side by side)",
    )
    command.set_defaults(run=run)


def _sides(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    if args.base or args.new:
        if args.files:
            raise UsageError("give BASE.json NEW.json, or --base and --new, not both")
        if not args.base or not args.new:
            raise UsageError("give at least one --base FILE and one --new FILE")
        return list(args.base), list(args.new)
    if len(args.files) != 2:
        raise UsageError(
            f"give two results, BASE.json NEW.json (got {len(args.files)}), or --base and --new"
        )
    return [args.files[0]], [args.files[1]]


def load_side(paths: Sequence[Path]) -> dict[str, Any]:
    """Read and merge one side's results; UsageError naming the file that is wrong."""
    from ..load import merge_summaries, read_summary  # noqa: PLC0415 - the load extra

    try:
        summaries = [read_summary(path) for path in paths]
        return merge_summaries(summaries, [str(p) for p in paths])
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _import_extras() -> None:
    try:
        import hdrh  # noqa: F401, PLC0415 - the load extra
    except ImportError:
        raise UsageError(
            "compare needs hdrhistogram to read the histograms: install polyai-async[cli]"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Run ``polyai-async compare`` with the parsed ``args``; returns the exit status."""
    _import_extras()
    from ..load import compare, render_comparison  # noqa: PLC0415

    base_paths, new_paths = _sides(args)
    base, new = load_side(base_paths), load_side(new_paths)
    try:
        comparison = compare(base, new, rules=args.fail_on, noise=args.noise, alpha=args.alpha)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    print(safe_text(render_comparison(comparison)), end="", flush=True)
    if not write_outputs(comparison, args.json, args.html):
        return 1
    if comparison.failed:
        failed = [v.expression for v in comparison.verdicts if v.failed]
        fail("regression: " + "; ".join(failed))
    return comparison.exit_code


def write_outputs(comparison: Any, json_path: Path | None, html_path: Path | None) -> bool:
    """Write ``--json`` and ``--html``; False (after one error line) if one could not be."""
    from ..load import write_comparison_html  # noqa: PLC0415

    def write_json(path: Path) -> None:
        data = orjson.dumps(redact_value(comparison.to_dict()), option=orjson.OPT_INDENT_2)
        path.write_bytes(data + b"\n")

    for path, write in (
        (json_path, write_json),
        (html_path, lambda p: write_comparison_html(comparison, p)),
    ):
        if path is None:
            continue
        try:
            write(path)
        except OSError as exc:
            fail(f"could not write {path}: {exc.strerror or exc}")
            return False
    return True
