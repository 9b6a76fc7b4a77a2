"""What a load run measured, in a form that adds up exactly across processes.

Latencies go into HDR histograms (``hdrhistogram``: 1 us .. 1 h at 3 significant digits,
recorded in microseconds): per endpoint (``create``, ``respond``, ``close``), per respond turn
(``respond[0]``, ``respond[1]``...), per whole ``conversation``, and the generator's own
``generator_lag``. As k6's ``http_req_duration``, an endpoint's histogram holds every call that
ended, a failed one with the time it took to fail; ``<endpoint>.ok`` holds the successful calls
alone (``conversation``: every conversation that ended; ``conversation.ok``: completed ones).
Two Metrics merge by adding histograms, summing counters and adding the per-second series
second by second: never by averaging percentiles. ``to_dict``/``from_dict``
carry a Metrics between processes as JSON-safe data (histograms as HdrHistogram.encode()).

The per-second series keeps, for each second since the start, the conversations started,
requests, errors, conversations in flight when the second ended, and two histograms per
endpoint (every call that ended in it, and the successful ones: ``SERIES_HISTOGRAMS``). The
current second's histograms are live; a finished second's are kept encoded (a few hundred
bytes each instead of the ~190 KiB of a live histogram).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from .._errors import PolyAIError
from .._models import Handoff

try:
    from hdrh.histogram import HdrHistogram
except ImportError:  # pragma: no cover - the load extra is missing
    HdrHistogram = None

__all__ = [
    "ENDPOINTS",
    "HIGHEST_US",
    "HISTOGRAM_ENCODING",
    "LOWEST_US",
    "SERIES_HISTOGRAMS",
    "SIGNIFICANT_DIGITS",
    "Metrics",
    "new_histogram",
]

ENDPOINTS = ("create", "respond", "close")
#: The per-second histograms: each endpoint's calls that ended, and its successful ones.
SERIES_HISTOGRAMS = (*ENDPOINTS, *(f"{e}.ok" for e in ENDPOINTS))
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
#: How ``to_dict`` (and bench's JSON) writes histograms: what any HdrHistogram library needs.
HISTOGRAM_ENCODING = {
    "format": "HdrHistogram compressed (V2), base64",
    "unit": "us",
    "lowest_trackable_value": LOWEST_US,
    "highest_trackable_value": HIGHEST_US,
    "significant_figures": SIGNIFICANT_DIGITS,
}
_VERSION = 2


def new_histogram() -> Any:
    """An empty histogram: 1 us .. 1 h, 3 significant digits."""
    if HdrHistogram is None:
        from .._errors import ConfigurationError  # noqa: PLC0415

        raise ConfigurationError("the load tester needs hdrhistogram: install polyai-async[load]")
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def _mean(histogram: Any) -> float:
    """``histogram.get_mean_value()``, the same figure, visiting only the non-empty counts.

    hdrh's own walks every sub-bucket in pure Python: tens of milliseconds a histogram, four
    histograms a summary.
    """
    total = 0
    for index, count in enumerate(histogram.counts):
        if count:
            # The middle of the index's range of equivalent values, as hdrh's mean takes it.
            lowest = histogram.get_value_from_index(index)
            highest = histogram.get_highest_equivalent_value(lowest)
            total += count * (lowest + ((highest - lowest + 1) >> 1))
    count_total: int = histogram.get_total_count()
    return float(total) / count_total


def _micros(seconds: float) -> int:
    return min(HIGHEST_US, max(0, round(seconds * 1_000_000)))


def _encode(histogram: Any) -> str:
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


def decode(text: str) -> Any:
    return HdrHistogram.decode(text.encode("ascii"))


class _Names:
    """The counter and histogram names of one endpoint, made once."""

    __slots__ = ("count", "endpoint", "ok", "ok_count", "turns")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.count = f"{endpoint}_count"
        self.ok_count = f"{endpoint}_ok_count"
        self.ok = f"{endpoint}.ok"
        self.turns: dict[int, str] = {}

    def turn(self, index: int) -> str:
        name = self.turns.get(index)
        if name is None:
            name = self.turns[index] = f"{self.endpoint}[{index}]"
        return name


_NAMES: dict[str, _Names] = {}


def _histogram_of(histograms: dict[str, Any], name: str) -> Any:
    """``histograms[name]``, made empty first if missing."""
    histogram = histograms.get(name)
    if histogram is None:
        histogram = histograms[name] = new_histogram()
    return histogram


@attrs.define(eq=False)
class _Second:
    """One second of the series: counters, a gauge and per-endpoint histograms.

    While it is current, a call is recorded once: a successful one into ``live``
    (``create.ok``...), a failed one into ``failed`` (by endpoint); an endpoint's histogram of
    every call is the two added (``live_histograms``), made as the second is sealed.
    """

    t: int
    counters: Counter[str] = attrs.Factory(Counter)
    in_flight: int = 0
    live: dict[str, Any] = attrs.Factory(dict)
    encoded: dict[str, str] = attrs.Factory(dict)
    failed: dict[str, Any] = attrs.Factory(dict)

    def live_histograms(self) -> dict[str, Any]:
        """The series' histograms of what this second recorded live, by name."""
        result: dict[str, Any] = {}
        endpoints = dict.fromkeys([*(n.removesuffix(".ok") for n in self.live), *self.failed])
        for endpoint in endpoints:
            ok = self.live.get(f"{endpoint}.ok")
            bad = self.failed.get(endpoint)
            if bad is None:
                result[endpoint] = ok
            elif ok is None:
                result[endpoint] = bad
            else:
                result[endpoint] = whole = new_histogram()
                whole.add(ok)
                whole.add(bad)
            if ok is not None:
                result[f"{endpoint}.ok"] = ok
        return result

    def histogram(self, endpoint: str) -> Any | None:
        if self.live or self.failed:
            live = self.live_histograms().get(endpoint)
            if live is not None:
                return live
        text = self.encoded.get(endpoint)
        return None if text is None else decode(text)

    def add(self, other: _Second) -> None:
        """Add ``other``'s counters, gauge and histograms (the same second of another run)."""
        self.counters.update(other.counters)
        self.in_flight += other.in_flight
        for name in SERIES_HISTOGRAMS:
            histogram = other.histogram(name)
            if histogram is None:
                continue
            ours = self.histogram(name)
            if ours is None:
                ours = new_histogram()
            ours.add(histogram)
            self.encoded[name] = _encode(ours)  # merged into is sealed: see Metrics.merge

    def seal(self) -> None:
        texts: dict[int, str] = {}  # an endpoint without failures: the same as its .ok
        for name, histogram in self.live_histograms().items():
            text = texts.get(id(histogram))
            if text is None:
                text = texts[id(histogram)] = _encode(histogram)
            self.encoded[name] = text
        self.live.clear()
        self.failed.clear()


@attrs.define(eq=False)
class _PersonaCounts:
    started: int = 0
    completed: int = 0
    failed: int = 0
    expectations_checked: int = 0
    expectations_failed: int = 0
    example_failure: str | None = None


class Metrics:
    """The figures of one load run, or of several merged; an Observer of conversations.

    Attributes:
        histograms: HDR histograms by name (``create``, ``respond[0]``, ``conversation``,
            ``generator_lag``...), values in microseconds; read them with ``histogram()``.
        counters: ``conversations_started``, ``calls`` (ended), ``calls_cancelled``,
            ``requests`` (sent) and ``requests_ok``/``_failed``/``_cancelled``,
            ``errors_total``, ``<endpoint>_count`` (ended), ``<endpoint>_ok_count``... (see
            ``count()``).
        retries: retries by endpoint.
        errors: ``[count, first message]`` by error class.
        personas: counts by persona.
        in_flight: conversations running now.
        series: the per-second series, by second since ``start`` (see ``seconds()``).

    Args:
        start: the ``time.perf_counter()`` value the series counts its seconds from
            (default: now).
    """

    def __init__(self, *, start: float | None = None) -> None:
        self.start = time.perf_counter() if start is None else start
        # The whole run's histograms, but for the endpoints' (``create``, ``create.ok``...):
        # those of the sealed seconds only. A call's latency is recorded once, into its second's
        # live histograms, which are added here as the second is sealed (two records a call
        # fewer, a few microseconds of a conversation's CPU); ``histograms`` adds the current
        # second's to what it returns.
        self._histograms: dict[str, Any] = {}
        self.counters: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.errors: dict[str, list[Any]] = {}
        self.handoff_destinations: Counter[str] = Counter()
        self.handoff_reasons: Counter[str] = Counter()
        self.turns_per_conversation: Counter[int] = Counter()
        self.personas: dict[str, _PersonaCounts] = {}
        self.expectation_examples: dict[str, str] = {}
        self.in_flight = 0
        #: The most conversations in flight at once (merged: the sum of each worker's peak).
        self.in_flight_peak = 0
        #: The load window in seconds: from the load's start to the end of its arrivals (set
        #: by the runner; merged: the longest worker's). None until the arrivals end.
        self.load_seconds: float | None = None
        self.series: dict[int, _Second] = {}
        self._current: _Second | None = None

    # -- recording ---------------------------------------------------------------------------

    @property
    def histograms(self) -> dict[str, Any]:
        """The histograms by name (see the class), the current second's calls included."""
        current = self._current
        if current is None or not (current.live or current.failed):
            return self._histograms
        names = dict.fromkeys([*self._histograms, *current.live_histograms()])
        return {name: self._whole(name) for name in names}

    @histograms.setter
    def histograms(self, value: dict[str, Any]) -> None:
        self._histograms = value

    def _whole(self, name: str) -> Any | None:
        """The histogram ``name`` of the whole run: the sealed seconds' and the current one's."""
        whole = self._histograms.get(name)
        current = self._current
        live = None
        if current is not None and (current.live or current.failed):
            live = current.live_histograms().get(name)
        if live is None:
            return whole
        total = new_histogram()  # a copy: the live one goes on recording
        if whole is not None:
            total.add(whole)
        total.add(live)
        return total

    def _fold(self, second: _Second) -> None:
        """Add the live histograms of ``second`` (about to be sealed) into the whole run's."""
        histograms = self._histograms
        for name, live in second.live_histograms().items():
            whole = histograms.get(name)
            if whole is None:
                whole = histograms[name] = new_histogram()
            whole.add(live)

    def _record(self, name: str, seconds: float) -> None:
        histogram = self._histograms.get(name)
        if histogram is None:
            histogram = self._histograms[name] = new_histogram()
        histogram.record_value(_micros(seconds))

    def _second(self) -> _Second:
        """The series' current second, after sealing those that have passed."""
        t = int(time.perf_counter() - self.start)
        current = self._current
        if current is not None and current.t == t:
            return current
        if current is not None:
            current.in_flight = self.in_flight
            self._fold(current)
            current.seal()
            for gap in range(current.t + 1, t):  # seconds in which nothing happened
                self.series[gap] = _Second(gap, in_flight=self.in_flight)
        current = self._current = self.series.setdefault(t, _Second(t))
        return current

    def tick(self) -> None:
        """Seal the seconds that have passed (call it about once a second during a run)."""
        self._second().in_flight = self.in_flight

    def finish(self) -> None:
        """Seal the last second: the run is over."""
        current = self._second()
        current.in_flight = self.in_flight
        self._fold(current)
        current.seal()
        self._current = None

    def started(self, persona: str) -> None:
        """A conversation of ``persona`` starts."""
        self.counters["conversations_started"] += 1
        self.in_flight += 1
        self.in_flight_peak = max(self.in_flight_peak, self.in_flight)
        self._persona(persona).started += 1
        self._second().counters["conversations_started"] += 1

    def interrupted(self, persona: str) -> None:
        """A conversation of ``persona`` was cancelled (the run's graceful stop ran out)."""
        self.in_flight -= 1
        self.counters["conversations_interrupted"] += 1

    def dropped(self, count: int = 1) -> None:
        """``count`` arrivals found no room (``max_in_flight``) and were not started."""
        self.counters["conversations_dropped"] += count

    def lag(self, seconds: float) -> None:
        """Work started ``seconds`` later than planned (the generator's own lag)."""
        self._record("generator_lag", max(0.0, seconds))

    def retry(self, endpoint: str) -> None:
        """The client retried a call of ``endpoint`` once."""
        self.retries[endpoint] += 1

    def request_sent(self, endpoint: str) -> None:
        """An HTTP request of ``endpoint`` left the client (a retry's included)."""
        self.counters["requests"] += 1
        self._second().counters["requests"] += 1

    def request_ended(self, endpoint: str, outcome: str) -> None:
        """A request sent ended: ``ok``, ``failed`` or ``cancelled`` (see ``_sent``)."""
        self.counters[f"requests_{outcome}"] += 1

    def call_cancelled(self, endpoint: str) -> None:
        """A call of ``endpoint`` was cancelled before it ended (the graceful stop ran out)."""
        self.counters["calls_cancelled"] += 1

    def request(
        self,
        endpoint: str,
        method: str,
        seconds: float,
        error: PolyAIError | None,
        turn: int | None,
    ) -> None:
        """One API call ended (see Observer.request).

        Its latency goes into ``endpoint`` whatever the outcome (a failed call with the time it
        took to fail), and into ``endpoint.ok`` too when it succeeded.
        """
        # The hot path of a run (every call): the value is computed once, the names are
        # made once per endpoint, and each histogram is recorded into directly.
        micros = _micros(seconds)
        names = _NAMES.get(endpoint)
        if names is None:
            names = _NAMES[endpoint] = _Names(endpoint)
        counters = self.counters
        counters["calls"] += 1
        counters[names.count] += 1
        second = self._second()
        if turn is not None:
            _histogram_of(self._histograms, names.turn(turn)).record_value(micros)
        # Once, into the second's histograms (see _Second); the whole run's get them as it is
        # sealed.
        if error is not None:
            _histogram_of(second.failed, endpoint).record_value(micros)
            counters["errors_total"] += 1
            second.counters["errors"] += 1
            name = type(error).__name__
            entry = self.errors.get(name)
            if entry is None:
                self.errors[name] = [1, str(error)]
            else:
                entry[0] += 1
            return
        counters[names.ok_count] += 1
        if endpoint == "respond":
            second.counters["turns"] += 1
        _histogram_of(second.live, names.ok).record_value(micros)

    def expectation(self, persona: str, expectation: str, passed: bool, reply: str | None) -> None:
        """One expectation was checked (see Observer.expectation)."""
        counts = self._persona(persona)
        counts.expectations_checked += 1
        self.counters["expectations_checked"] += 1
        if not passed:
            counts.expectations_failed += 1
            self.counters["expectations_failed"] += 1
            if counts.example_failure is None:
                counts.example_failure = f"{expectation}: the agent said {reply!r}"
            key = f"{persona}: {expectation}"
            self.expectation_examples.setdefault(key, reply or "")

    def conversation(
        self,
        persona: str,
        seconds: float,
        error: PolyAIError | None,
        ended: bool,
        handoff: Handoff | None,
        turns: int,
    ) -> None:
        """A conversation ended (see Observer.conversation)."""
        self.in_flight -= 1
        counts = self._persona(persona)
        self.counters["turns_completed"] += turns
        self.turns_per_conversation[turns] += 1
        self._record("conversation", seconds)
        # Per second too, so a window of the run has its error rate and mean duration.
        second = self._second().counters
        second["conversations_ended"] += 1
        second["conversation_ms"] += round(seconds * 1000)
        if error is not None:
            second["conversations_failed"] += 1
        if error is None:
            self.counters["conversations_completed"] += 1
            counts.completed += 1
            self._record("conversation.ok", seconds)
        else:
            self.counters["conversations_failed"] += 1
            counts.failed += 1
        if ended:
            self.counters["ended_by_agent"] += 1
        if handoff is not None:
            self.counters["handoffs"] += 1
            self.handoff_destinations[handoff.destination or "(none)"] += 1
            self.handoff_reasons[handoff.reason or "(none)"] += 1

    def _persona(self, name: str) -> _PersonaCounts:
        counts = self.personas.get(name)
        if counts is None:
            counts = self.personas[name] = _PersonaCounts()
        return counts

    # -- reading -------------------------------------------------------------------------------

    def count(self, name: str) -> int:
        """A counter, such as ``conversations_completed`` (0 if never counted)."""
        return self.counters[name]

    def histogram(self, name: str) -> Any | None:
        """The histogram called ``name`` (``create``, ``respond[0]``...), None if empty."""
        return self._whole(name)

    def percentile_ms(self, name: str, percentile: float) -> float | None:
        """The ``percentile`` (0..100) of histogram ``name``, in ms; None without samples."""
        histogram = self._whole(name)
        if histogram is None or histogram.get_total_count() == 0:
            return None
        return float(histogram.get_value_at_percentile(percentile)) / 1000

    def max_ms(self, name: str) -> float | None:
        """The largest value of histogram ``name``, in ms (within HDR precision)."""
        histogram = self._whole(name)
        if histogram is None or histogram.get_total_count() == 0:
            return None
        return float(histogram.get_max_value()) / 1000

    def mean_ms(self, name: str) -> float | None:
        """The mean of histogram ``name``, in ms."""
        histogram = self._whole(name)
        if histogram is None or histogram.get_total_count() == 0:
            return None
        return _mean(histogram) / 1000

    def spectrum(self, name: str) -> list[dict[str, float]]:
        """The percentile spectrum of ``name``: ``[{"percentile", "ms"}, ...]`` from 0 to 99.999."""
        histogram = self._whole(name)
        if histogram is None or histogram.get_total_count() == 0:
            return []
        points = []
        lowest = histogram.get_min_value()
        for item in histogram.get_percentile_iterator(5):
            percentile = float(item.percentile_level_iterated_to)
            if percentile > 99.999:
                break
            # The iteration starts at the bottom bucket: never below the smallest value seen.
            value = max(item.value_iterated_to, lowest)
            points.append({"percentile": round(percentile, 4), "ms": value / 1000})
        return points

    def seconds(self) -> Iterator[tuple[int, Mapping[str, int], int, dict[str, Any]]]:
        """The series in order: (t, counters, in flight, histograms by endpoint)."""
        for t in sorted(self.series):
            second = self.series[t]
            histograms = {e: h for e in SERIES_HISTOGRAMS if (h := second.histogram(e)) is not None}
            yield t, second.counters, second.in_flight, histograms

    def snapshot(self) -> dict[str, Any]:
        """The figures a live view needs, small and JSON-safe (sent a second by workers).

        Counters, retries, error counts by class, the conversations in flight, the generator
        lag histogram and the latest finished second with its histograms (encoded).
        """
        finished = [t for t in self.series if self._current is None or t < self._current.t]
        last: dict[str, Any] | None = None
        if finished:
            second = self.series[max(finished)]
            last = {
                "t": second.t,
                "counters": dict(second.counters),
                "histograms": {
                    e: text
                    for e in SERIES_HISTOGRAMS
                    if (text := second.encoded.get(e)) is not None
                },
            }
        lag = self._histograms.get("generator_lag")  # recorded directly, never live
        return {
            "counters": dict(self.counters),
            "retries": dict(self.retries),
            "errors": {name: entry[0] for name, entry in self.errors.items()},
            "in_flight": self.in_flight,
            "generator_lag": None if lag is None else _encode(lag),
            "last": last,
        }

    # -- merging and transport -------------------------------------------------------------

    def merge(self, other: Metrics, *, after: bool = False) -> None:
        """Add ``other`` into this one, exactly: histograms added, counters summed, series by t.

        ``other`` ran beside this one (a worker process of the same run) by default. With
        ``after=True`` it ran after it (another run of the same setup, for ``compare``): its
        series follows this one's, the load windows add up and the peak in flight is the
        larger one, so the rates stay those of one run. A Metrics still recording is finished
        first (its current second sealed): else that second's live histograms would hold
        ``other``'s calls of it as well as its own, and count them twice once sealed.
        """
        if self._current is not None:
            self.finish()
        for name, histogram in other.histograms.items():
            mine = self._histograms.get(name)
            if mine is None:
                mine = self._histograms[name] = new_histogram()
            mine.add(histogram)
        self.counters.update(other.counters)
        self.retries.update(other.retries)
        for name, (count, example) in other.errors.items():
            entry = self.errors.setdefault(name, [0, example])
            entry[0] += count
        self.handoff_destinations.update(other.handoff_destinations)
        self.handoff_reasons.update(other.handoff_reasons)
        self.turns_per_conversation.update(other.turns_per_conversation)
        for name, theirs in other.personas.items():
            mine_p = self._persona(name)
            mine_p.started += theirs.started
            mine_p.completed += theirs.completed
            mine_p.failed += theirs.failed
            mine_p.expectations_checked += theirs.expectations_checked
            mine_p.expectations_failed += theirs.expectations_failed
            mine_p.example_failure = mine_p.example_failure or theirs.example_failure
        for key, reply in other.expectation_examples.items():
            self.expectation_examples.setdefault(key, reply)
        self.in_flight += other.in_flight
        offset = 0
        if after:
            self.in_flight_peak = max(self.in_flight_peak, other.in_flight_peak)
            if other.load_seconds is not None:
                self.load_seconds = (self.load_seconds or 0.0) + other.load_seconds
            offset = max(self.series, default=-1) + 1
        else:
            self.in_flight_peak += other.in_flight_peak
            if other.load_seconds is not None:
                self.load_seconds = max(self.load_seconds or 0.0, other.load_seconds)
        for t_other, theirs_s in other.series.items():
            t = t_other + offset
            mine_s = self.series.get(t)
            if mine_s is None:
                mine_s = self.series[t] = _Second(t)
            mine_s.add(theirs_s)

    def to_dict(self) -> dict[str, Any]:
        """This Metrics as JSON-safe data (for another process); ``from_dict`` reads it back."""
        series = []
        for t in sorted(self.series):
            second = self.series[t]
            encoded = dict(second.encoded)
            encoded.update({e: _encode(h) for e, h in second.live_histograms().items()})
            series.append(
                {
                    "t": t,
                    "counters": dict(second.counters),
                    "in_flight": second.in_flight,
                    "histograms": encoded,
                }
            )
        return {
            "version": _VERSION,
            "histogram_encoding": dict(HISTOGRAM_ENCODING),
            "histograms": {name: _encode(h) for name, h in self.histograms.items()},
            "counters": dict(self.counters),
            "retries": dict(self.retries),
            "errors": {name: list(entry) for name, entry in self.errors.items()},
            "handoff_destinations": dict(self.handoff_destinations),
            "handoff_reasons": dict(self.handoff_reasons),
            "turns_per_conversation": {str(k): v for k, v in self.turns_per_conversation.items()},
            "personas": {name: attrs.asdict(p) for name, p in self.personas.items()},
            "expectation_examples": dict(self.expectation_examples),
            "in_flight": self.in_flight,
            "in_flight_peak": self.in_flight_peak,
            "load_seconds": self.load_seconds,
            "series": series,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metrics:
        """A Metrics from what ``to_dict`` wrote.

        Raises:
            ValueError: ``data`` is not what to_dict writes.
        """
        if not isinstance(data, Mapping) or data.get("version") != _VERSION:
            raise ValueError("not the data of Metrics.to_dict (version 2)")
        metrics = cls()
        try:
            metrics.histograms = {n: decode(h) for n, h in data["histograms"].items()}
            metrics.counters = Counter(data["counters"])
            metrics.retries = Counter(data["retries"])
            metrics.errors = {n: [int(c), str(e)] for n, (c, e) in data["errors"].items()}
            metrics.handoff_destinations = Counter(data["handoff_destinations"])
            metrics.handoff_reasons = Counter(data["handoff_reasons"])
            metrics.turns_per_conversation = Counter(
                {int(k): v for k, v in data["turns_per_conversation"].items()}
            )
            metrics.personas = {n: _PersonaCounts(**p) for n, p in data["personas"].items()}
            metrics.expectation_examples = dict(data["expectation_examples"])
            metrics.in_flight = int(data["in_flight"])
            metrics.in_flight_peak = int(data["in_flight_peak"])
            window = data["load_seconds"]
            metrics.load_seconds = None if window is None else float(window)
            for entry in data["series"]:
                second = _Second(
                    int(entry["t"]),
                    Counter(entry["counters"]),
                    int(entry["in_flight"]),
                    encoded=dict(entry["histograms"]),
                )
                metrics.series[second.t] = second
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not the data of Metrics.to_dict: {exc!r}") from None
        return metrics
