"""Scenario files: YAML, JSON and JSON Lines read into Scenarios; bad ones named to the field."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from polyai_async import ConfigurationError
from polyai_async.load import (
    Persona,
    Scenario,
    ScenarioError,
    ThinkTime,
    TurnSpec,
    demo_scenario,
    load_scenario,
    parse_think_time,
)

SUPPORT = """\
name: support-mix
create: {channel: webchat}
think_time: 2s
personas:
  - name: browser
    weight: 3
    turns:
      - Hello
      - say: ["What are your opening hours?", "When are you open?"]
      - say: Thanks, bye
        expect: {ended: true}
  - name: wants-human
    turns:
      - say: I'd like to talk to a human
        metadata: {user_action: clicked_button}
        expect: {handoff: true, response_matches: "transfer+ing"}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_scenario_reads_every_field(tmp_path: Path) -> None:
    """The issue's example scenario reads into personas, turns, metadata and expectations."""
    scenario = load_scenario(write(tmp_path, "support.yaml", SUPPORT))
    assert scenario.name == "support-mix"
    assert scenario.create == {"channel": "webchat"}
    assert scenario.think_time == ThinkTime(seconds=2.0)
    browser, human = scenario.personas
    assert (browser.name, browser.weight, len(browser.turns)) == ("browser", 3.0, 3)
    assert browser.turns[0].say == ("Hello",)
    assert browser.turns[1].say == ("What are your opening hours?", "When are you open?")
    assert browser.turns[2].expect is not None
    assert browser.turns[2].expect.ended is True
    assert human.weight == 1.0
    assert human.turns[0].metadata == {"user_action": "clicked_button"}
    expect = human.turns[0].expect
    assert expect is not None
    assert expect.checks() == ("handoff=true", "response_matches='transfer+ing'")


def test_json_scenario_reads_like_yaml(tmp_path: Path) -> None:
    """A JSON file with the same content gives the same scenario."""
    import json

    import yaml

    data = yaml.safe_load(SUPPORT)
    from_json = load_scenario(write(tmp_path, "support.json", json.dumps(data)))
    assert from_json == load_scenario(write(tmp_path, "support.yaml", SUPPORT))


def test_jsonl_replays_each_line_as_a_persona(tmp_path: Path) -> None:
    """Each line of recorded turns is a persona of its own, drawn with equal weight."""
    path = write(
        tmp_path,
        "recorded.jsonl",
        '{"turns": ["hi", "my order is late"]}\n\n{"turns": [{"say": "bye"}]}\n',
    )
    scenario = load_scenario(path)
    assert [p.turns[0].say for p in scenario.personas] == [("hi",), ("bye",)]
    assert [p.name for p in scenario.personas] == ["recorded-1", "recorded-3"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "s.yaml",
            "personas:\n  - turns: [hi]\n  - turns:\n"
            "      - say: x\n        expect: {handoff: 3}\n",
            "s.yaml: personas[1].turns[0].expect.handoff: must be true, false or a destination",
        ),
        ("s.yaml", "personas: [\n", "s.yaml: line 2: does not parse as YAML"),
        ("s.json", "{", "s.json: is not JSON"),
        ("s.yaml", "personas:\n  - turns: []\n", "s.yaml: personas[0].turns: is empty"),
        ("s.yaml", "personas:\n  - {turns: [hi], weight: -1}\n", "personas[0].weight: must be"),
        ("s.yaml", "persona: []\n", "s.yaml: persona: unknown field"),
        ("s.yaml", "create: {channel: fax}\npersonas: [{turns: [hi]}]\n", "create.channel"),
        (
            "s.yaml",
            "think_time: {uniform: [5s, 1s]}\npersonas: [{turns: [hi]}]\n",
            "think_time.uniform: the second duration is below the first",
        ),
        ("s.yaml", "think_time: soon\npersonas: [{turns: [hi]}]\n", "think_time: 'soon' is not"),
        (
            "s.yaml",
            "personas: [{turns: [{say: x, expect: {response_matches: '('}}]}]\n",
            "personas[0].turns[0].expect.response_matches: not a regular expression",
        ),
        ("s.jsonl", '{"turns": ["a"]}\n{"turns": 3}\n', "s.jsonl: line 2: turns: must be a list"),
        ("s.txt", "x", "s.txt: unknown kind of file"),
    ],
)
def test_bad_scenarios_name_the_file_and_field(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    """Every problem is one ScenarioError line that starts with the file and names the field."""
    path = write(tmp_path, name, text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    text_of = str(caught.value)
    assert "\n" not in text_of
    assert text_of.startswith(str(path))
    assert message in text_of
    assert isinstance(caught.value, ConfigurationError)


def test_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    """A file that does not exist says so, naming it."""
    with pytest.raises(ScenarioError, match=r"nope\.yaml: cannot read it"):
        load_scenario(tmp_path / "nope.yaml")


def test_pick_draws_by_weight() -> None:
    """With weights 3 and 1, about three quarters of the draws are the first persona."""
    turn = (TurnSpec(say=("hi",)),)
    scenario = Scenario(
        name="x",
        personas=(Persona(name="browser", weight=3, turns=turn), Persona(name="other", turns=turn)),
    )
    rng = random.Random(1)
    drawn = Counter(scenario.pick(rng).name for _ in range(4000))
    assert 0.70 < drawn["browser"] / 4000 < 0.80


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2s", ThinkTime(seconds=2.0)),
        ("500ms", ThinkTime(seconds=0.5)),
        ("exponential:3s", ThinkTime(distribution="exponential", seconds=3.0)),
        ("uniform:1s..5s", ThinkTime(distribution="uniform", seconds=1.0, upper=5.0)),
    ],
)
def test_think_time_from_the_command_line(text: str, expected: ThinkTime) -> None:
    """--think-time takes a duration, exponential:MEAN or uniform:LOW..HIGH."""
    assert parse_think_time(text) == expected


def test_think_time_samples_its_distribution() -> None:
    """Fixed is constant, uniform stays in its bounds, exponential averages its mean."""
    rng = random.Random(3)
    assert ThinkTime(seconds=2).sample(rng) == 2
    uniform = ThinkTime(distribution="uniform", seconds=1, upper=2)
    assert all(1 <= uniform.sample(rng) <= 2 for _ in range(200))
    exponential = ThinkTime(distribution="exponential", seconds=3)
    mean = sum(exponential.sample(rng) for _ in range(5000)) / 5000
    assert 2.7 < mean < 3.3


def test_think_time_refuses_a_bad_value() -> None:
    """A negative or unknown think time is a ConfigurationError that says what is wrong."""
    with pytest.raises(ConfigurationError, match="think time"):
        parse_think_time("-2s")
    with pytest.raises(ConfigurationError, match="seconds must be"):
        ThinkTime(seconds=float("nan"))


def test_demo_scenario_mixes_small_talk_handoffs_and_goodbyes() -> None:
    """The demo: 18 in 20 small talk, 1 asks for a human half-way, 1 says goodbye last."""
    demo = demo_scenario(turns=4)
    weights = {p.name: p.weight for p in demo.personas}
    assert weights == {"small-talk": 18, "wants-human": 1, "says-goodbye": 1}
    human = next(p for p in demo.personas if p.name == "wants-human")
    assert len(human.turns) == 3
    assert "human" in human.turns[-1].say[0]
    bye = next(p for p in demo.personas if p.name == "says-goodbye")
    assert len(bye.turns) == 4
    assert "goodbye" in bye.turns[-1].say[0]
    assert [p.name for p in demo_scenario(turns=0).personas] == ["small-talk"]


@pytest.mark.parametrize(
    ("think", "text"),
    [
        (ThinkTime(seconds=2.0), "2s"),
        (ThinkTime(seconds=0.5), "500ms"),
        (ThinkTime(distribution="exponential", seconds=90.0), "exponential:90s"),
        (ThinkTime(distribution="uniform", seconds=0.001, upper=0.002), "uniform:1ms..2ms"),
    ],
)
def test_think_time_describes_itself_as_the_command_line_takes_it(
    think: ThinkTime, text: str
) -> None:
    """ThinkTime.describe() is the --think-time form, and parse_think_time reads it back."""
    assert think.describe() == text
    assert parse_think_time(text) == think


ONE_TURN = "personas: [{turns: [hi]}]\n"


def nested(levels: int) -> str:
    """JSON for a list nested ``levels`` deep."""
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "s.yaml",
            "personas: [{turns: [{say: x, metadata: {score: .nan}}]}]\n",
            "personas[0].turns[0].metadata.score: is nan, which JSON cannot carry",
        ),
        (
            "s.yaml",
            "create: {integration_attributes: {tags: !!set {a, b}}}\n" + ONE_TURN,
            "create.integration_attributes.tags: cannot be sent as JSON (a set",
        ),
        (
            "s.yaml",
            "personas: [{turns: [{say: x, metadata: {a: [1, {2: two}]}}]}]\n",
            "personas[0].turns[0].metadata.a[1]: has the key 2, an integer: JSON keys are strings",
        ),
        (
            "s.yaml",
            "create: {integration_attributes: {blob: !!binary aGk=}}\n" + ONE_TURN,
            "create.integration_attributes.blob: cannot be sent as JSON (a bytes",
        ),
        (
            "s.yaml",
            "create: {integration_attributes: {n: 1180591620717411303424}}\n" + ONE_TURN,
            "create.integration_attributes.n: cannot be sent as JSON",
        ),
        (
            "s.json",
            '{"personas": [{"turns": [{"say": "x", "metadata": {"a": ' + nested(253) + "}}]}]}",
            "s.json: personas[0].turns[0].metadata: nests more than 253 levels deep",
        ),
        (
            "s.yaml",
            "a: &a [lol, lol]\nb: &b [*a, *a]\n" + ONE_TURN,
            "s.yaml: line 2: the alias *a is refused",
        ),
        (
            "s.yaml",
            "personas:\n  - {name: a, turns: [hi]}\n  - {name: b, turns: [yo]}\n"
            "  - {name: a, turns: [hey]}\n",
            "personas[2].name: 'a' is already the name at personas[0].name",
        ),
        (
            "s.jsonl",
            '{"name": "x", "turns": ["a"]}\n\n{"name": "x", "turns": ["b"]}\n',
            "s.jsonl: line 3: name: 'x' is already the name at line 1: name",
        ),
    ],
    ids=[
        "nan",
        "set",
        "int-key",
        "binary",
        "huge-int",
        "too-deep",
        "alias",
        "twins",
        "jsonl-twins",
    ],
)
def test_what_cannot_be_sent_is_refused_at_load_naming_the_field(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    """Unsendable metadata, aliases and two personas of one name: one line naming the field."""
    path = write(tmp_path, name, text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_the_deepest_metadata_accepted_is_what_the_client_sends(tmp_path: Path) -> None:
    """Metadata nested to the limit loads, and the client's encoder takes its request body."""
    from polyai_async._models import RespondChatRequest, dumps

    text = '{"personas": [{"turns": [{"say": "x", "metadata": {"a": ' + nested(252) + "}}]}]}"
    scenario = load_scenario(write(tmp_path, "deep.json", text))
    metadata = scenario.personas[0].turns[0].metadata
    assert metadata is not None
    dumps(RespondChatRequest(conversation_id="c", message="x", metadata=dict(metadata)))


def test_anchors_without_aliases_and_dates_still_load(tmp_path: Path) -> None:
    """An anchor used nowhere is harmless, and a date goes as its ISO text."""
    text = "create: {integration_attributes: &a {day: 2026-12-06}}\n" + ONE_TURN
    scenario = load_scenario(write(tmp_path, "s.yaml", text))
    assert "day" in scenario.create["integration_attributes"]


def test_only_a_regular_file_is_read(tmp_path: Path) -> None:
    """/dev/zero (endless) and a FIFO (no writer: it would block) are refused at once."""
    fifo = tmp_path / "s.yaml"
    os.mkfifo(fifo)
    for path in (Path("/dev/zero"), fifo):
        with pytest.raises(ScenarioError, match="is not a regular file"):
            load_scenario(path)
    with pytest.raises(ScenarioError, match="cannot read it: Is a directory"):
        load_scenario(tmp_path)


def test_a_file_over_the_size_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file one byte over MAX_SCENARIO_BYTES is refused, saying the limit."""
    from polyai_async.load import _scenario

    assert _scenario.MAX_SCENARIO_BYTES == 16 * 1024 * 1024  # the documented limit
    monkeypatch.setattr(_scenario, "MAX_SCENARIO_BYTES", 2 * 1024 * 1024)
    path = write(tmp_path, "s.yaml", ONE_TURN + "#" * (2 * 1024 * 1024))
    with pytest.raises(ScenarioError, match="is larger than 2 MiB"):
        load_scenario(path)


def test_a_scenario_refuses_two_personas_of_one_name() -> None:
    """Built in Python too, two personas named alike are refused, not merged."""
    persona = Persona(name="same", turns=(TurnSpec(say=("hi",)),))
    with pytest.raises(ConfigurationError, match="two personas are named 'same'"):
        Scenario(name="s", personas=(persona, persona))


@pytest.mark.usefixtures("cli_state")
def test_bench_refuses_dev_zero_in_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench --scenario /dev/zero: exit 2 and one line, no MemoryError, nothing sent."""
    from tests.cli_runner import CliRunner

    done = CliRunner(monkeypatch, capsys, command="bench")("--scenario", "/dev/zero")
    assert done.returncode == 2
    assert done.stderr == (
        "polyai-async bench: error: /dev/zero: is not a regular file: "
        "give the path of a scenario file\n"
    )
