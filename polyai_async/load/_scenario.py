"""Scenarios: who the simulated users are and what they say.

A scenario file is YAML (``.yaml``/``.yml``, needs pyyaml from the ``load`` extra), JSON
(``.json``) or JSON Lines of recorded conversations (``.jsonl``, ``{"turns": [...]}`` a line,
each line replayed as a persona of its own). Every problem is a ScenarioError whose message
is one line naming the file and the path of the bad field, such as
``support.yaml: personas[1].turns[0].expect.handoff: must be true, false or a destination``.

Only a regular file of at most ``MAX_SCENARIO_BYTES`` is read; YAML aliases are refused (a
few hundred bytes of them expand to billions of nodes); ``metadata`` and
``integration_attributes`` must be what the client can send as JSON.
"""

from __future__ import annotations

import math
import os
import random
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson

from .._errors import ConfigurationError
from ._units import parse_duration

__all__ = [
    "MAX_SCENARIO_BYTES",
    "Expect",
    "Persona",
    "Scenario",
    "ScenarioError",
    "ThinkTime",
    "TurnSpec",
    "demo_scenario",
    "load_scenario",
    "parse_think_time",
]

# create_chat's keyword arguments and the JSON types each accepts.
_CREATE_FIELDS: dict[str, type] = {
    "channel": str,
    "variant_id": str,
    "integration_attributes": dict,
    "asr_lang_code": str,
    "tts_lang_code": str,
}
_TURN_FIELDS = frozenset({"say", "metadata", "expect"})
_EXPECT_FIELDS = frozenset({"ended", "handoff", "response_contains", "response_matches"})
_PERSONA_FIELDS = frozenset({"name", "weight", "turns"})
_SCENARIO_FIELDS = frozenset({"name", "create", "think_time", "personas"})
#: The largest scenario file read (16 MiB): far above any scenario, far below a memory error.
MAX_SCENARIO_BYTES = 16 * 1024 * 1024
# A request body holds metadata and integration_attributes one level down, and the client's
# encoder (orjson) stops at 254 nested arrays and objects: these mappings may nest 253.
_MAX_NESTING = 253


class ScenarioError(ConfigurationError):
    """A scenario that cannot be used; the message is one line: ``FILE: field.path: problem``."""


class _Bad(Exception):
    """A problem at a field path, before the file name is known."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)


def _type_name(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    names.update({int: "an integer", float: "a number"})
    return names.get(type(value), "null" if value is None else f"a {type(value).__name__}")


# -- the objects -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ThinkTime:
    """How long a simulated user pauses before each message.

    Args:
        distribution: ``fixed`` (always ``seconds``), ``exponential`` (mean ``seconds``) or
            ``uniform`` (between ``seconds`` and ``upper``).
        seconds: the fixed pause, the mean, or the lower bound.
        upper: the upper bound of ``uniform``.
    """

    distribution: str = attrs.field(
        default="fixed", validator=attrs.validators.in_(("fixed", "exponential", "uniform"))
    )
    seconds: float = attrs.field(default=0.0)
    upper: float = attrs.field(default=0.0)

    @seconds.validator
    @upper.validator
    def _check(self, attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ConfigurationError(f"{attribute.name} must be a number of seconds >= 0")
        if value == float("inf"):
            raise ConfigurationError(f"{attribute.name} must be finite")

    def __attrs_post_init__(self) -> None:
        if self.distribution == "uniform" and self.upper < self.seconds:
            raise ConfigurationError("upper must not be below seconds in a uniform think time")

    def sample(self, rng: random.Random) -> float:
        """One pause, in seconds, drawn from ``rng``."""
        if self.distribution == "exponential":
            return rng.expovariate(1 / self.seconds) if self.seconds > 0 else 0.0
        if self.distribution == "uniform":
            return rng.uniform(self.seconds, self.upper)
        return self.seconds

    def describe(self) -> str:
        """The think time as ``--think-time`` (and ``parse_think_time``) takes it.

        ``2s``, ``exponential:3s`` or ``uniform:1s..5s``.
        """
        seconds = _duration_text(self.seconds)
        if self.distribution == "exponential":
            return f"exponential:{seconds}"
        if self.distribution == "uniform":
            return f"uniform:{seconds}..{_duration_text(self.upper)}"
        return seconds


def _duration_text(seconds: float) -> str:
    """``500ms``, ``2s``, ``90s``: a duration as ``parse_duration`` reads it back."""
    return f"{seconds * 1000:g}ms" if 0 < seconds < 1 else f"{seconds:g}s"


@attrs.frozen(kw_only=True)
class Expect:
    """What the agent's reply to one turn should be; an unmet expectation is counted, not an error.

    Args:
        ended: the reply ends (True) or does not end (False) the conversation.
        handoff: the reply hands off (True), does not (False), or hands off to this destination.
        response_contains: text the reply must contain.
        response_matches: a regular expression the reply must match (``re.search``).
    """

    ended: bool | None = None
    handoff: bool | str | None = None
    response_contains: str | None = None
    response_matches: str | None = None
    _pattern: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        pattern = re.compile(self.response_matches) if self.response_matches is not None else None
        object.__setattr__(self, "_pattern", pattern)

    def checks(self) -> tuple[str, ...]:
        """The names of the expectations, as reports show them (``handoff=true``...)."""
        names = []
        if self.ended is not None:
            names.append(f"ended={str(self.ended).lower()}")
        if self.handoff is not None:
            value = self.handoff if isinstance(self.handoff, str) else str(self.handoff).lower()
            names.append(f"handoff={value}")
        if self.response_contains is not None:
            names.append(f"response_contains={self.response_contains!r}")
        if self.response_matches is not None:
            names.append(f"response_matches={self.response_matches!r}")
        return tuple(names)

    def check(
        self, *, response: str, ended: bool, handoff_destination: str | None, handed_off: bool
    ) -> list[tuple[str, bool]]:
        """Each expectation's name and whether the reply met it."""
        results = []
        names = iter(self.checks())
        if self.ended is not None:
            results.append((next(names), ended == self.ended))
        if self.handoff is not None:
            if isinstance(self.handoff, str):
                passed = handed_off and handoff_destination == self.handoff
            else:
                passed = handed_off == self.handoff
            results.append((next(names), passed))
        if self.response_contains is not None:
            results.append((next(names), self.response_contains in response))
        if self._pattern is not None:
            results.append((next(names), self._pattern.search(response) is not None))
        return results


@attrs.frozen(kw_only=True)
class TurnSpec:
    """One user message of a persona.

    Args:
        say: the message, or several: one is drawn at random for each conversation.
        metadata: respond's ``metadata`` for this turn.
        expect: what the agent's reply should be.
    """

    say: tuple[str, ...]
    metadata: Mapping[str, Any] | None = None
    expect: Expect | None = None


@attrs.frozen(kw_only=True)
class Persona:
    """A kind of user: a name, how often it is drawn, and what it says.

    Args:
        name: shown in the reports.
        weight: drawn with probability weight / (sum of the weights).
        turns: its messages, in order; the conversation stops early when the agent ends it.
    """

    name: str
    weight: float = 1.0
    turns: tuple[TurnSpec, ...] = ()


@attrs.frozen(kw_only=True)
class Scenario:
    """What the simulated users do: one persona is drawn per conversation, by weight.

    Args:
        name: shown in the reports.
        create: create_chat keyword arguments for every conversation.
        think_time: the pause before each user message (None: no pause).
        personas: at least one.
    """

    name: str
    create: Mapping[str, Any] = attrs.Factory(dict)
    think_time: ThinkTime | None = None
    personas: tuple[Persona, ...] = ()
    _weights: tuple[float, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.personas:
            raise ConfigurationError("personas: a scenario needs at least one persona")
        names = [persona.name for persona in self.personas]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ConfigurationError(
                f"personas: two personas are named {twice[0]!r}: give each its own name"
            )
        weights = []
        total = 0.0
        for persona in self.personas:
            total += persona.weight
            weights.append(total)
        object.__setattr__(self, "_weights", tuple(weights))

    def pick(self, rng: random.Random) -> Persona:
        """Draw a persona by weight from ``rng``."""
        if len(self.personas) == 1:
            return self.personas[0]
        return rng.choices(self.personas, cum_weights=self._weights)[0]


# -- reading -----------------------------------------------------------------------------------


def _mapping(value: object, path: str, fields: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(path, f"must be a mapping, not {_type_name(value)}")
    unknown = sorted(str(k) for k in value if k not in fields)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise _Bad(where, f"unknown field (expected one of {', '.join(sorted(fields))})")
    return value


def _text(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _Bad(path, f"must be a string, not {_type_name(value)}")
    return value


def _sendable(value: object, path: str) -> dict[str, Any]:
    """A mapping the client can send as JSON (metadata, integration_attributes), else _Bad.

    Refused, naming the path: a key that is not a string, NaN or an infinity (JSON has none;
    it would go as null), a value JSON has no type for (a YAML ``!!set`` or ``!!binary``, an
    integer beyond 64 bits), and nesting deeper than the encoder goes.
    """
    if not isinstance(value, dict):
        raise _Bad(path, f"must be a mapping, not {_type_name(value)}")
    stack: list[tuple[object, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > _MAX_NESTING:  # the field's path: the full one would fill a screen
                raise _Bad(
                    path, f"nests more than {_MAX_NESTING} levels deep, deeper than JSON is sent"
                )
            if isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str):
                        raise _Bad(
                            where,
                            f"has the key {key!r}, {_type_name(key)}: JSON keys are strings "
                            "(quote it)",
                        )
                inner = [(v, f"{where}.{k}") for k, v in item.items()]
            else:
                inner = [(v, f"{where}[{i}]") for i, v in enumerate(item)]
            # Reversed onto the stack, so the first bad value in the file is the one named.
            stack.extend((v, w, depth + 1) for v, w in reversed(inner))
        elif isinstance(item, float) and not math.isfinite(item):
            raise _Bad(where, f"is {item!r}, which JSON cannot carry: write a number or a string")
        else:
            try:
                orjson.dumps(item)
            except TypeError as exc:
                raise _Bad(where, f"cannot be sent as JSON ({_type_name(item)}: {exc})") from None
    return value


def _think_time(value: object, path: str) -> ThinkTime:
    try:
        if isinstance(value, dict) and len(value) == 1:
            ((kind, arg),) = value.items()
            if kind == "exponential":
                return ThinkTime(distribution="exponential", seconds=parse_duration(arg))
            if kind == "uniform":
                if not isinstance(arg, list) or len(arg) != 2:
                    raise _Bad(f"{path}.uniform", "must be a list of two durations: [1s, 5s]")
                low, high = (parse_duration(a) for a in arg)
                if high < low:
                    raise _Bad(f"{path}.uniform", "the second duration is below the first")
                return ThinkTime(distribution="uniform", seconds=low, upper=high)
            raise _Bad(f"{path}.{kind}", "unknown distribution (expected exponential or uniform)")
        if isinstance(value, dict):
            raise _Bad(path, "must be a duration, {exponential: 3s} or {uniform: [1s, 5s]}")
        return ThinkTime(seconds=parse_duration(value))
    except ValueError as exc:
        if isinstance(exc, ConfigurationError):
            raise _Bad(path, exc.message) from None
        raise _Bad(path, str(exc)) from None


def parse_think_time(value: object) -> ThinkTime:
    """A ThinkTime from ``--think-time`` or a scenario file.

    Takes a duration (``2s``), ``exponential:3s``, ``uniform:1s..5s``, or the scenario file's
    mappings (``{exponential: 3s}``, ``{uniform: [1s, 5s]}``).

    Raises:
        ConfigurationError: what is wrong with it.
    """
    if isinstance(value, str) and ":" in value:
        kind, _, arg = value.partition(":")
        if kind == "uniform":
            low, sep, high = arg.partition("..")
            value = {"uniform": [low, high]} if sep else {"uniform": arg}
        else:
            value = {kind: arg}
    try:
        return _think_time(value, "")
    except _Bad as exc:
        raise ConfigurationError(f"think time: {exc}") from None


def _expect(value: object, path: str) -> Expect:
    fields = _mapping(value, path, _EXPECT_FIELDS)
    ended = fields.get("ended")
    if ended is not None and not isinstance(ended, bool):
        raise _Bad(f"{path}.ended", f"must be true or false, not {_type_name(ended)}")
    handoff = fields.get("handoff")
    if handoff is not None and not isinstance(handoff, bool | str):
        raise _Bad(
            f"{path}.handoff",
            f'must be true, false or a destination such as "live_agent_queue", not '
            f"{_type_name(handoff)}",
        )
    contains = fields.get("response_contains")
    if contains is not None:
        _text(contains, f"{path}.response_contains")
    matches = fields.get("response_matches")
    if matches is not None:
        _text(matches, f"{path}.response_matches")
        try:
            re.compile(matches)
        except re.error as exc:
            raise _Bad(f"{path}.response_matches", f"not a regular expression: {exc}") from None
    if not fields:
        raise _Bad(path, "is empty: expect ended, handoff, response_contains or response_matches")
    return Expect(
        ended=ended, handoff=handoff, response_contains=contains, response_matches=matches
    )


def _turn(value: object, path: str) -> TurnSpec:
    if isinstance(value, str):
        return TurnSpec(say=(value,))
    fields = _mapping(value, path, _TURN_FIELDS)
    if "say" not in fields:
        raise _Bad(f"{path}.say", "missing: every turn says something")
    say = fields["say"]
    if isinstance(say, list):
        if not say:
            raise _Bad(f"{path}.say", "is an empty list: give at least one message")
        lines = tuple(_text(s, f"{path}.say[{i}]") for i, s in enumerate(say))
    else:
        lines = (_text(say, f"{path}.say"),)
    metadata = fields.get("metadata")
    if metadata is not None:
        _sendable(metadata, f"{path}.metadata")
    expect = fields.get("expect")
    return TurnSpec(
        say=lines,
        metadata=metadata,
        expect=None if expect is None else _expect(expect, f"{path}.expect"),
    )


def _turns(value: object, path: str) -> tuple[TurnSpec, ...]:
    if not isinstance(value, list):
        raise _Bad(path, f"must be a list of turns, not {_type_name(value)}")
    if not value:
        raise _Bad(path, "is empty: a persona needs at least one turn")
    return tuple(_turn(t, f"{path}[{i}]") for i, t in enumerate(value))


def _persona(value: object, path: str, index: int) -> Persona:
    fields = _mapping(value, path, _PERSONA_FIELDS)
    name = _text(fields.get("name", f"persona-{index + 1}"), f"{path}.name")
    weight = fields.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < 1e300:
        raise _Bad(f"{path}.weight", f"must be a positive number, not {weight!r}")
    if "turns" not in fields:
        raise _Bad(f"{path}.turns", "missing: a persona needs turns")
    return Persona(name=name, weight=float(weight), turns=_turns(fields["turns"], f"{path}.turns"))


def _create(value: object) -> dict[str, Any]:
    fields = _mapping(value, "create", frozenset(_CREATE_FIELDS))
    for key, kind in _CREATE_FIELDS.items():
        if key in fields and not isinstance(fields[key], kind):
            raise _Bad(
                f"create.{key}", f"must be {_type_name(kind())}, not {_type_name(fields[key])}"
            )
    channel = fields.get("channel")
    if channel is not None and channel not in ("webchat", "whatsapp", "sms", "api"):
        raise _Bad("create.channel", f"{channel!r} is not one of webchat, whatsapp, sms, api")
    if "integration_attributes" in fields:
        _sendable(fields["integration_attributes"], "create.integration_attributes")
    return dict(fields)


def _unique_names(personas: tuple[Persona, ...], paths: list[str]) -> None:
    """Two personas of one name would be merged in every report: refuse the second.

    ``paths[i]`` is where persona ``i``'s name is written (``personas[1].name``).
    """
    first: dict[str, int] = {}
    for index, persona in enumerate(personas):
        if persona.name in first:
            raise _Bad(
                paths[index],
                f"{persona.name!r} is already the name at {paths[first[persona.name]]}: "
                "give each persona its own",
            )
        first[persona.name] = index


def _scenario(data: object, default_name: str) -> Scenario:
    fields = _mapping(data, "", _SCENARIO_FIELDS)
    name = _text(fields.get("name", default_name), "name")
    create = _create(fields.get("create") or {})
    think = fields.get("think_time")
    think_time = None if think is None else _think_time(think, "think_time")
    personas = fields.get("personas")
    if personas is None:
        raise _Bad("personas", "missing: a scenario needs at least one persona")
    if not isinstance(personas, list) or not personas:
        raise _Bad("personas", "must be a non-empty list of personas")
    parsed = tuple(_persona(p, f"personas[{i}]", i) for i, p in enumerate(personas))
    _unique_names(parsed, [f"personas[{i}].name" for i in range(len(parsed))])
    return Scenario(name=name, create=create, think_time=think_time, personas=parsed)


def _recorded(text: str, name: str) -> Scenario:
    personas = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _Bad(where, f"is not JSON: {exc}") from None
        fields = _mapping(data, where, frozenset({"turns", "name"}))
        if "turns" not in fields:
            raise _Bad(f"{where}: turns", 'missing: each line is {"turns": [...]}')
        turns = _turns(fields["turns"], f"{where}: turns")
        name = _text(fields.get("name", f"recorded-{number}"), f"{where}: name")
        personas.append(Persona(name=name, turns=turns))
        lines.append(number)
    if not personas:
        raise _Bad("", 'holds no conversation: write one {"turns": [...]} a line')
    _unique_names(tuple(personas), [f"line {n}: name" for n in lines])
    return Scenario(name=name, personas=tuple(personas))


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read a scenario file: YAML, JSON, or JSON Lines of recorded conversations.

    Only a regular file of at most ``MAX_SCENARIO_BYTES`` (16 MiB) is read.

    Raises:
        ScenarioError: the file cannot be read or parsed, or a field is wrong; the message is
            one line naming the file and the field.
    """
    file = Path(path)
    try:
        text = _read(file).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError(f"{file}: cannot read it: {reason}") from None
    except _Bad as exc:
        raise ScenarioError(f"{file}: {exc}") from None
    suffix = file.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _recorded(text, file.stem)
        if suffix == ".json":
            try:
                data = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise _Bad("", f"is not JSON: {exc}") from None
        elif suffix in (".yaml", ".yml"):
            data = _read_yaml(text)
        else:
            raise _Bad("", "unknown kind of file: name it .yaml, .yml, .json or .jsonl")
        return _scenario(data, file.stem)
    except _Bad as exc:
        raise ScenarioError(f"{file}: {' '.join(str(exc).split())}") from None


def _read(file: Path) -> bytes:
    """The bytes of ``file`` if it is a regular file of at most MAX_SCENARIO_BYTES, else _Bad."""
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    # Non-blocking, so that opening a FIFO returns at once, to be refused below.
    with open(file, "rb", opener=lambda name, flags: os.open(name, flags | nonblocking)) as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise _Bad("", "is not a regular file: give the path of a scenario file")
        data = f.read(MAX_SCENARIO_BYTES + 1)
    if len(data) > MAX_SCENARIO_BYTES:
        raise _Bad("", f"is larger than {MAX_SCENARIO_BYTES // (1024 * 1024)} MiB")
    return data


def _read_yaml(text: str) -> object:
    try:
        import yaml  # noqa: PLC0415 - optional: the load extra
    except ImportError:
        raise _Bad("", "reading YAML needs pyyaml: install polyai-async[load]") from None

    class Loader(yaml.SafeLoader):  # type: ignore[misc] # pyyaml has no type hints here
        """safe_load without aliases: a few hundred bytes of them expand to billions of nodes."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _Bad(
                    f"line {event.start_mark.line + 1}",
                    f"the alias *{event.anchor} is refused (aliases can expand a small file "
                    "into billions of values): write the value out",
                )
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader, aliases refused
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise _Bad(where, f"does not parse as YAML: {problem}") from None


# -- the demo ----------------------------------------------------------------------------------

_SMALL_TALK = (
    "Hello there",
    "What are your opening hours?",
    "Can you check the status of my order?",
    "Do you deliver on weekends?",
    "Thanks, that helps",
)
_HANDOFF = "I'd like to speak to a human, please"
_GOODBYE = "That's all, goodbye"


def demo_scenario(*, turns: int = 5) -> Scenario:
    """The built-in scenario of ``polyai-async bench`` for the fake's demo agent.

    Small talk the agent answers without ending anything, except that one conversation in 20
    asks for a human half-way (the agent hands off, which ends it) and one in 20 says goodbye
    on its last turn (the agent ends it).

    Args:
        turns: user messages per conversation, at most (0: create and close only).
    """
    if isinstance(turns, bool) or not isinstance(turns, int) or turns < 0:
        raise ConfigurationError(f"turns must be a whole number >= 0, got {turns!r}")
    talk = TurnSpec(say=_SMALL_TALK, expect=Expect(ended=False))
    goodbye = TurnSpec(say=(_GOODBYE,), expect=Expect(ended=True))
    personas = [Persona(name="small-talk", weight=18, turns=(talk,) * turns)]
    if turns:
        half = turns // 2
        personas.append(
            Persona(
                name="wants-human",
                weight=1,
                turns=(talk,) * half
                + (TurnSpec(say=(_HANDOFF,), expect=Expect(handoff="live_agent_queue")),),
            )
        )
        personas.append(
            Persona(
                name="says-goodbye",
                weight=1,
                turns=(talk,) * (turns - 1) + (goodbye,),
            )
        )
    return Scenario(name="demo", personas=tuple(personas))
