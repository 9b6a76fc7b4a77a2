"""Comparing load runs: is the new one slower than the base, beyond noise?

A bench summary (schema ``polyai-async-bench/4``) carries its histograms losslessly (HdrHistogram's
compressed base64) and its raw measurements, so:

- ``merge_summaries`` adds several runs of one setup exactly, through ``Metrics.merge``
  (``after=True``: histograms added, counters summed, series one after the other), then
  summarizes the merged Metrics again;
- ``compare`` lays every figure of two summaries side by side (base, new, absolute and relative
  change) and says of each whether its change is real: statistically significant (the
  Mann-Whitney U test on the two latency histograms' counts, a two-proportion z-test on the
  conversation error rate) *and* beyond a practical noise floor;
- ``--fail-on`` rules (``respond.p99>+10%``, ``respond.p50>+20ms``, ``max_rate<-10%``) fail a
  comparison only when their change is real: exit 99.

A capacity result (schema ``polyai-async-capacity/1``) compares figure by figure (``max_rate``,
``max_concurrency``...), and from its histograms when it carries them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson

from .._errors import ConfigurationError
from . import _format
from ._metrics import Metrics
from ._result import summarize
from ._thresholds import LATENCY_SOURCES, STATISTICS

__all__ = [
    "COMPARE_SCHEMA",
    "Change",
    "Comparison",
    "Rule",
    "RuleVerdict",
    "compare",
    "mann_whitney",
    "merge_summaries",
    "read_summary",
    "render_comparison",
]

COMPARE_SCHEMA = "polyai-async-compare/1"
BENCH_SCHEMA = "polyai-async-bench/4"
CAPACITY_SCHEMA = "polyai-async-capacity/1"
_READABLE = (BENCH_SCHEMA, CAPACITY_SCHEMA)
#: A change smaller than this share of the base is noise, however significant (``--noise``).
DEFAULT_NOISE = 0.05
#: The significance level of the tests (``--alpha``).
DEFAULT_ALPHA = 0.01

# What describes the setup of a run rather than its outcome: listed first when they differ.
_SETUP_KEYS = (
    "scenario",
    "load_model",
    "target",
    "base_url",
    "processes",
    "conversations",
    "duration_seconds",
    "turns_per_conversation",
    "concurrency",
    "rate",
    "max_connections",
    "retry_attempts",
)
# Settings that judge a run rather than shape it.
_NOT_SETUP = frozenset({"threshold", "max_error_rate", "fail_on", "baseline", "noise"})
# Runs of one setup may differ in these and still merge: their length, the fake's seed, and
# the embedded fake's port.
_MERGE_FREE = frozenset({"conversations", "duration_seconds", "duration", "seed"})
# Not figures: strings, or what the table of differences shows.
_NOT_FIGURES = frozenset({"schema", "passed", "max_error_rate", *_SETUP_KEYS})
_LATENCY_KEY = re.compile(
    rf"^(?P<source>{'|'.join(LATENCY_SOURCES)})(?P<ok>_ok)?_(?P<stat>{'|'.join(STATISTICS)})_ms$"
)
_RULE = re.compile(
    r"\s*(?P<figure>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9]+){0,2})\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>%|ms|s)?\s*"
)
_TURN_STATISTICS = {"p50": 50.0, "p99": 99.0}


# --- reading and merging ------------------------------------------------------------------------


def read_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a result written by ``bench --json`` (or a capacity search) for comparing.

    Raises:
        ConfigurationError: one line naming the file and what is wrong with it.
    """
    try:
        data = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: not a result (a JSON object with a schema)")
    check_summary(data, str(path))
    return data


def check_summary(summary: Mapping[str, Any], name: str = "the result") -> None:
    """Refuse what ``compare`` cannot read, in one line naming ``name`` and what to do."""
    schema = summary.get("schema")
    if (
        isinstance(schema, str)
        and schema.startswith("polyai-async-bench/")
        and schema not in (_READABLE)
    ):
        raise ConfigurationError(
            f"{name}: schema {schema} carries no histograms; run bench again with this "
            f"version (schema {BENCH_SCHEMA}) to compare it"
        )
    if schema not in _READABLE:
        raise ConfigurationError(
            f"{name}: schema {schema!r} is not a result compare reads ({' or '.join(_READABLE)})"
        )
    if schema == BENCH_SCHEMA and not (
        isinstance(summary.get("histograms"), Mapping)
        and isinstance(summary.get("metrics"), Mapping)
    ):
        raise ConfigurationError(
            f"{name}: its histograms or metrics are missing (a summary written with detail)"
        )


def _metrics_of(summary: Mapping[str, Any], name: str) -> Metrics:
    try:
        return Metrics.from_dict({**summary["metrics"], "histograms": summary["histograms"]})
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigurationError(f"{name}: its histograms cannot be read ({exc})") from None


def setup_of(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What describes how a run was made (scenario, load model, target, client settings)."""
    setup = {key: summary.get(key) for key in _SETUP_KEYS if key in summary}
    settings = summary.get("settings")
    if isinstance(settings, Mapping):
        for key, value in settings.items():
            if key not in setup and key not in _NOT_SETUP:
                setup[key] = value
    return setup


def setup_differences(
    base: Mapping[str, Any], new: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """``(key, base, new)`` for each setting in which the two runs differ.

    The embedded fake's URL is left out: it listens on a new port each run.
    """
    ours, theirs = setup_of(base), setup_of(new)
    keys = [*ours, *(k for k in theirs if k not in ours)]
    if ours.get("target") == theirs.get("target") == "embedded":
        keys = [k for k in keys if k != "base_url"]
    return [(k, ours.get(k), theirs.get(k)) for k in keys if ours.get(k) != theirs.get(k)]


def merge_summaries(
    summaries: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Several runs of one setup as one, exactly: histograms added, counters summed.

    The runs count as made one after the other: rates are those of one run, over the load
    windows added up (``Metrics.merge(after=True)``). The merged summary has ``runs``.

    Raises:
        ConfigurationError: the runs' setups differ (naming the setting), or one cannot be
            merged (a capacity result).
    """
    if not summaries:
        raise ConfigurationError("nothing to merge: give at least one result")
    labels = (
        list(names) if names is not None else [f"result {i + 1}" for i in range(len(summaries))]
    )
    for summary, label in zip(summaries, labels, strict=True):
        check_summary(summary, label)
    if len(summaries) == 1:
        return {**summaries[0], "runs": summaries[0].get("runs", 1)}
    first = summaries[0]
    if first["schema"] != BENCH_SCHEMA:
        raise ConfigurationError(
            f"{labels[0]}: {first['schema']} results do not merge; give one of them per side"
        )
    for summary, label in zip(summaries[1:], labels[1:], strict=True):
        if summary["schema"] != first["schema"]:
            raise ConfigurationError(
                f"{label}: schema {summary['schema']} differs from {labels[0]}'s"
            )
        for key, mine, theirs in setup_differences(first, summary):
            if key in _MERGE_FREE:
                continue
            raise ConfigurationError(
                f"{label}: {key} is {theirs!r} where {labels[0]} has {mine!r}; only runs of "
                "one setup merge"
            )
    metrics = Metrics(start=0.0)
    for summary, label in zip(summaries, labels, strict=True):
        metrics.merge(_metrics_of(summary, label), after=True)
    context: dict[str, Any] = {key: first.get(key) for key in _SETUP_KEYS}
    for key in ("conversations", "duration_seconds"):
        values = [s.get(key) for s in summaries]
        context[key] = None if None in values else sum(values)
    for key in ("server_cpu_seconds", "server_requests", "server_faults"):
        values = [s.get(key) for s in summaries]
        context[key] = None if None in values else sum(values)
    peaks: list[Any] = [s.get("server_max_open_connections") for s in summaries]
    context["server_max_open_connections"] = None if None in peaks else max(peaks)
    merged = summarize(
        metrics,
        wall_seconds=sum(float(s["wall_seconds"]) for s in summaries),
        client_cpu_seconds=sum(float(s["client_cpu_seconds"]) for s in summaries),
        max_error_rate=first.get("max_error_rate"),
        processes=int(first.get("processes") or 1),
        settings=first.get("settings") or {},
        context=context,
    )
    merged["runs"] = sum(int(s.get("runs", 1)) for s in summaries)
    return merged


# --- the statistics ---------------------------------------------------------------------------


def mann_whitney(base: Any, new: Any) -> tuple[float, float] | None:
    """The Mann-Whitney U test of two HDR histograms of the same settings, from their counts.

    Values in one HDR bucket are equal (ties, with the usual tie correction); the p-value is
    two-sided, from the normal approximation with continuity correction (the runs hold
    hundreds of samples at least).

    Returns:
        ``(p_value, superiority)``, superiority being P(new > base) + P(tie) / 2 (0.5: no
        shift; above: new is slower); None when either histogram is empty.
    """
    n1, n2 = base.get_total_count(), new.get_total_count()
    if not n1 or not n2:
        return None
    below = 0  # samples of both in lower buckets
    rank_sum = 0.0  # ranks of the new run's samples
    ties = 0
    for a, b in zip(base.counts, new.counts, strict=False):
        t = a + b
        if not t:
            continue
        rank_sum += b * (below + (t + 1) / 2)
        ties += t**3 - t
        below += t
    u = rank_sum - n2 * (n2 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:  # every sample of both in one bucket: no difference at all
        return 1.0, 0.5
    z = max(0.0, abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    return math.erfc(z / math.sqrt(2)), u / (n1 * n2)


def two_proportions(failed1: int, total1: int, failed2: int, total2: int) -> float | None:
    """The two-sided p-value of the two-proportion z-test; None without samples."""
    if not total1 or not total2:
        return None
    pooled = (failed1 + failed2) / (total1 + total2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / total1 + 1 / total2))
    if se == 0:
        return 1.0
    z = abs(failed2 / total2 - failed1 / total1) / se
    return math.erfc(z / math.sqrt(2))


# --- the comparison --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Change:
    """One figure of two runs side by side, and whether its change is real.

    Attributes:
        figure: the summary key (``respond_p99_ms``; ``respond[0]_p50_ms`` per turn).
        base: its value in the base run(s), None if not measured.
        new: its value in the new run(s).
        absolute: new - base.
        relative: (new - base) / base, None when base is 0 or a value is missing.
        test: the significance test that applies (``Mann-Whitney U``, ``two-proportion z``),
            None when none does (a count, a rate, a capacity).
        p_value: the test's two-sided p-value.
        significant: p_value < alpha; None when no test applies.
        beyond_noise: the relative change is larger than the noise floor.
        real: significant (or untestable) and beyond the noise floor.
    """

    figure: str
    base: float | None
    new: float | None
    absolute: float | None
    relative: float | None
    test: str | None = None
    p_value: float | None = None
    significant: bool | None = None
    beyond_noise: bool = False
    real: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The change as ``compare --json`` writes it."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class Rule:
    """A ``--fail-on`` rule: the change of one figure that counts as a regression.

    Attributes:
        expression: as written (``respond.p99>+10%``).
        figure: the summary key it reads (``respond_p99_ms``).
        op: ``>``, ``>=``, ``<`` or ``<=``.
        limit: the change compared with: a fraction when ``relative``, else in the figure's
            unit (ms for latencies).
        relative: the limit is a share of the base (``%``).
    """

    expression: str
    figure: str
    op: str
    limit: float
    relative: bool

    @classmethod
    def parse(cls, text: str) -> Rule:
        """Read ``respond.p99>+10%``, ``respond.p50>+20ms``, ``max_rate<-10%``...

        Raises:
            ConfigurationError: naming the expression and what is expected.
        """
        match = _RULE.fullmatch(text)
        if match is None:
            raise ConfigurationError(
                f"--fail-on {text!r}: write FIGURE OP CHANGE, such as respond.p99>+10%, "
                "respond.p50>+20ms, conversation_error_rate>+0.005 or max_rate<-10% "
                "(OP one of > >= < <=)"
            )
        figure, unit = match.group("figure"), match.group("unit")
        limit = float(match.group("number"))
        if "." in figure:
            source, *ok, statistic = figure.split(".")
            if (
                source not in LATENCY_SOURCES
                or statistic not in STATISTICS
                or ok not in ([], ["ok"])
            ):
                raise ConfigurationError(
                    f"--fail-on {text!r}: {figure!r} is not a latency; use "
                    f"{'|'.join(LATENCY_SOURCES)} with .{'|.'.join(STATISTICS)}, or with .ok "
                    "before it (respond.ok.p99)"
                )
            key = "_".join((source, *ok, statistic, "ms"))
        else:
            key = figure
        latency = key.endswith("_ms")
        if unit in ("ms", "s") and not latency:
            raise ConfigurationError(
                f"--fail-on {text!r}: {unit!r} belongs to latencies (such as respond.p99), "
                f"not to {figure}"
            )
        relative = unit == "%"
        if relative:
            limit /= 100
        elif unit == "s":
            limit *= 1000
        return cls(
            expression=text.strip(),
            figure=key,
            op=match.group("op"),
            limit=limit,
            relative=relative,
        )

    def triggered(self, change: Change) -> bool | None:
        """Whether the change is past the limit; None when it cannot be said."""
        value = change.relative if self.relative else change.absolute
        if value is None:
            if self.relative and change.absolute is not None and change.absolute != 0:
                value = math.copysign(math.inf, change.absolute)  # from 0 to something
            elif self.relative and change.absolute == 0:
                value = 0.0
            else:
                return None
        return {
            ">": value > self.limit,
            ">=": value >= self.limit,
            "<": value < self.limit,
            "<=": value <= self.limit,
        }[self.op]


@attrs.frozen(kw_only=True)
class RuleVerdict:
    """A rule's verdict: it fails when its change is past the limit and real.

    Attributes:
        expression: the rule as written.
        figure: the summary key it reads.
        triggered: the change is past the limit (None: a value is missing).
        real: the change is significant and beyond the noise floor.
        failed: both: the comparison exits 99.
        reason: the verdict in words.
    """

    expression: str
    figure: str
    triggered: bool | None
    real: bool
    failed: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The verdict as ``compare --json`` writes it."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class Comparison:
    """Two runs (or two merged sets of runs) side by side; build it with ``compare``.

    Attributes:
        base: the base summary (merged when there were several).
        new: the new summary.
        differences: ``(setting, base, new)`` where the setups differ: read them first.
        changes: every figure, base and new.
        verdicts: each ``--fail-on`` rule's verdict.
        noise: the noise floor, a share of the base.
        alpha: the significance level.
    """

    base: Mapping[str, Any]
    new: Mapping[str, Any]
    differences: tuple[tuple[str, Any, Any], ...]
    changes: tuple[Change, ...]
    verdicts: tuple[RuleVerdict, ...]
    noise: float
    alpha: float

    @property
    def failed(self) -> bool:
        """A rule failed: its change is past the limit and real."""
        return any(v.failed for v in self.verdicts)

    @property
    def exit_code(self) -> int:
        """99 when a rule failed, else 0."""
        return 99 if self.failed else 0

    def change(self, figure: str) -> Change:
        """The change of one figure, such as ``respond_p99_ms``.

        Raises:
            KeyError: no such figure in either run.
        """
        for change in self.changes:
            if change.figure == figure:
                return change
        raise KeyError(f"no figure {figure!r} in either run")

    def to_dict(self) -> dict[str, Any]:
        """What ``compare --json`` writes (schema ``polyai-async-compare/1``)."""
        return {
            "schema": COMPARE_SCHEMA,
            "noise": self.noise,
            "alpha": self.alpha,
            "base_runs": self.base.get("runs", 1),
            "new_runs": self.new.get("runs", 1),
            "differences": [{"setting": k, "base": b, "new": n} for k, b, n in self.differences],
            "changes": [c.as_dict() for c in self.changes],
            "rules": [v.as_dict() for v in self.verdicts],
            "failed": self.failed,
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def figures_of(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The summary's figures (numbers, or null when not measured), setup excluded."""
    figures: dict[str, float | None] = {}
    for key, value in summary.items():
        if key in _NOT_FIGURES or key == "runs":
            continue
        if value is None or _number(value) is not None:
            figures[key] = _number(value)
    return figures


class _Histograms:
    """The decoded histograms of one side, decoded once each."""

    def __init__(self, summary: Mapping[str, Any]) -> None:
        encoded = summary.get("histograms")
        self._encoded: Mapping[str, Any] = encoded if isinstance(encoded, Mapping) else {}
        self._decoded: dict[str, Any] = {}

    def names(self) -> list[str]:
        return list(self._encoded)

    def get(self, name: str) -> Any | None:
        if name not in self._decoded:
            from hdrh.histogram import HdrHistogram  # noqa: PLC0415 - the load extra

            text = self._encoded.get(name)
            histogram = None
            if isinstance(text, str):
                try:
                    histogram = HdrHistogram.decode(text.encode("ascii"))
                except Exception as exc:  # hdrh raises bare errors on corrupt data
                    raise ConfigurationError(
                        f"histogram {name!r} cannot be decoded ({type(exc).__name__})"
                    ) from None
            self._decoded[name] = histogram
        return self._decoded[name]


def _turn_figures(histograms: _Histograms) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    for name in histograms.names():
        if not name.startswith("respond["):
            continue
        histogram = histograms.get(name)
        for stat, percentile in _TURN_STATISTICS.items():
            value = None
            if histogram is not None and histogram.get_total_count():
                value = round(histogram.get_value_at_percentile(percentile) / 1000, 3)
            figures[f"{name}_{stat}_ms"] = value
    return figures


def _source(figure: str) -> str | None:
    """The histogram a latency figure is read from: ``respond_ok_p99_ms`` -> ``respond.ok``."""
    match = _LATENCY_KEY.match(figure)
    if match is not None:
        return match.group("source") + (".ok" if match.group("ok") else "")
    if figure.startswith("respond[") and figure.endswith("_ms"):
        return figure.rsplit("_", 2)[0]
    return None


def _error_counts(summary: Mapping[str, Any]) -> tuple[int, int]:
    failed = int(summary.get("conversations_failed") or 0)
    failed += int(summary.get("conversations_interrupted") or 0)
    return failed, failed + int(summary.get("conversations_completed") or 0)


def compare(
    base: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    rules: Sequence[str | Rule] = (),
    noise: float = DEFAULT_NOISE,
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """Compare the ``new`` run with the ``base`` one (summaries, merged or not).

    Args:
        base: the base summary (``read_summary``, ``merge_summaries`` or a LoadResult's).
        new: the new one, of the same schema.
        rules: ``--fail-on`` expressions (or Rules).
        noise: the noise floor: a smaller relative change is not real (default 0.05).
        alpha: the significance level of the tests (default 0.01).

    Raises:
        ConfigurationError: the schemas differ, a rule is malformed or names a figure neither
            run has, or noise or alpha is out of range.
    """
    if not (isinstance(noise, int | float) and 0 <= noise < 10):
        raise ConfigurationError(f"noise must be a share >= 0 (0.05 for 5%), got {noise!r}")
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise ConfigurationError(f"alpha must be between 0 and 1, got {alpha!r}")
    check_summary(base, "the base")
    check_summary(new, "the new result")
    if base["schema"] != new["schema"]:
        raise ConfigurationError(
            f"the base is {base['schema']} and the new result {new['schema']}: compare "
            "results of one kind"
        )
    parsed = tuple(r if isinstance(r, Rule) else Rule.parse(r) for r in rules)
    base_histograms, new_histograms = _Histograms(base), _Histograms(new)
    base_figures = {**figures_of(base), **_turn_figures(base_histograms)}
    new_figures = {**figures_of(new), **_turn_figures(new_histograms)}
    for rule in parsed:
        if rule.figure not in base_figures and rule.figure not in new_figures:
            raise ConfigurationError(
                f"--fail-on {rule.expression!r}: {rule.figure!r} is not a figure of these "
                "results (such as respond.p99, conversation_error_rate, max_rate)"
            )
    tests: dict[str, tuple[float, float] | None] = {}

    def latency_test(source: str) -> tuple[float, float] | None:
        if source not in tests:
            a, b = base_histograms.get(source), new_histograms.get(source)
            tests[source] = None if a is None or b is None else mann_whitney(a, b)
        return tests[source]

    error_p = two_proportions(*_error_counts(base), *_error_counts(new))
    changes = []
    for figure in [*base_figures, *(k for k in new_figures if k not in base_figures)]:
        a, b = base_figures.get(figure), new_figures.get(figure)
        absolute = None if a is None or b is None else b - a
        relative = None if a is None or absolute is None or a == 0 else absolute / abs(a)
        test: str | None = None
        p_value: float | None = None
        source = _source(figure)
        if source is not None:
            result = latency_test(source)
            if result is not None:
                test, p_value = "Mann-Whitney U", result[0]
        elif figure == "conversation_error_rate" and error_p is not None:
            test, p_value = "two-proportion z", error_p
        significant = None if p_value is None else p_value < alpha
        if absolute is None:
            beyond = False
        elif relative is None:
            beyond = absolute != 0
        else:
            beyond = abs(relative) > noise
        changes.append(
            Change(
                figure=figure,
                base=a,
                new=b,
                absolute=None if absolute is None else round(absolute, 6),
                relative=None if relative is None else round(relative, 6),
                test=test,
                p_value=p_value,
                significant=significant,
                beyond_noise=beyond,
                real=beyond and significant is not False,
            )
        )
    by_figure = {c.figure: c for c in changes}
    verdicts = tuple(_judge(rule, by_figure[rule.figure], noise, alpha) for rule in parsed)
    return Comparison(
        base=base,
        new=new,
        differences=tuple(setup_differences(base, new)),
        changes=tuple(changes),
        verdicts=verdicts,
        noise=noise,
        alpha=alpha,
    )


def _judge(rule: Rule, change: Change, noise: float, alpha: float) -> RuleVerdict:
    triggered = rule.triggered(change)
    failed = bool(triggered) and change.real
    moved = _describe_change(change)
    if triggered is None:
        reason = f"not measured in both runs ({moved})"
    elif not triggered:
        reason = f"holds: {moved}"
    elif failed:
        reason = f"regression: {moved}, {_why_real(change, alpha, noise)}"
    elif not change.beyond_noise:
        reason = f"within the {noise:.0%} noise floor: {moved}"
    else:
        reason = f"not significant ({_p_is(change.p_value)}, alpha {alpha:g}): {moved}"
    return RuleVerdict(
        expression=rule.expression,
        figure=rule.figure,
        triggered=triggered,
        real=change.real,
        failed=failed,
        reason=reason,
    )


def _why_real(change: Change, alpha: float, noise: float) -> str:
    test = (
        "no significance test applies"
        if change.test is None
        else f"significant ({change.test}, {_p_is(change.p_value)}, alpha {alpha:g})"
    )
    return f"{test}, beyond the {noise:.0%} noise floor"


def p_text(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.0001" if value < 0.0001 else f"{value:.4f}"


def _p_is(value: float | None) -> str:
    """``p<0.0001`` or ``p=0.0123``."""
    text = p_text(value)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def value_text(value: float | None, figure: str) -> str:
    if value is None:
        return "-"
    return _format.milliseconds(value) if figure.endswith("_ms") else _format.number(value)


def signed_text(value: float | None, figure: str) -> str:
    if value is None:
        return "-"
    return ("+" if value >= 0 else "-") + value_text(abs(value), figure)


def percent_text(value: float | None) -> str:
    if value is None:
        return "-"
    return ("+" if value >= 0 else "-") + _format.percent(abs(value), digits=1)


def _describe_change(change: Change) -> str:
    return (
        f"{change.figure} {value_text(change.base, change.figure)} -> "
        f"{value_text(change.new, change.figure)} ({percent_text(change.relative)})"
    )


def mark(change: Change) -> str:
    if change.real:
        # A count or a rate has no test here: its change passed the noise floor alone.
        return "REAL" if change.test is not None else "changed"
    if change.significant and not change.beyond_noise:
        return "noise"
    return ""


def render_comparison(comparison: Comparison) -> str:
    """The comparison as plain text: setup differences, the table of figures, the rules."""
    base_runs, new_runs = comparison.base.get("runs", 1), comparison.new.get("runs", 1)
    lines = [
        f"compare: base ({base_runs} run{'s' if base_runs != 1 else ''}) against new "
        f"({new_runs} run{'s' if new_runs != 1 else ''}); a change is real when significant "
        f"(alpha {comparison.alpha:g}) and beyond the {comparison.noise:.0%} noise floor",
    ]
    if comparison.differences:
        lines.append("")
        lines.append("the setups differ (compare like with like):")
        for key, a, b in comparison.differences:
            lines.append(f"  {key}: {a!r} -> {b!r}")
    rows = [("figure", "base", "new", "change", "rel", "p", "")]
    for c in comparison.changes:
        if c.base is None and c.new is None:
            continue
        rows.append(
            (
                c.figure,
                value_text(c.base, c.figure),
                value_text(c.new, c.figure),
                signed_text(c.absolute, c.figure),
                percent_text(c.relative),
                p_text(c.p_value),
                mark(c),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(7)]
    lines.append("")
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [row[i].rjust(widths[i]) for i in range(1, 6)]
        cells.append(row[6])
        lines.append("  ".join(cells).rstrip())
    if comparison.verdicts:
        lines.append("")
        lines.append("rules:")
        for verdict in comparison.verdicts:
            status = "FAIL" if verdict.failed else "pass"
            lines.append(f"  {status}  {verdict.expression}: {verdict.reason}")
    return "\n".join(lines) + "\n"
