"""The fake server's agents: what answers a user's message, and the state it sees.

An agent is any callable ``(message, state) -> AgentReply | str``, plain or async. Three come
with the package: EchoAgent, ScriptedAgent and DemoAgent (the default).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import attrs

from .._models import Handoff

__all__ = [
    "AGENTS",
    "DEFAULT_GREETING",
    "Agent",
    "AgentReply",
    "AgentResult",
    "ConversationState",
    "DemoAgent",
    "EchoAgent",
    "ScriptedAgent",
]

#: The greeting create answers with when the agent has no ``greeting`` attribute.
DEFAULT_GREETING = "Hello! How can I help you today?"


def _to_handoff(value: Handoff | tuple[str, str] | None) -> Handoff | None:
    if value is None or isinstance(value, Handoff):
        return value
    destination, reason = value
    return Handoff(destination=destination, reason=reason)


@attrs.frozen
class AgentReply:
    """What an agent answers to one user message.

    Args:
        text: the agent's reply (the answer's ``response``).
        end_conversation: the agent is done; further messages get 410.
        handoff: hand the user over, as a Handoff or a ``(destination, reason)`` pair; a
            handoff always ends the conversation, as the API documents.
    """

    text: str
    end_conversation: bool = attrs.field(default=False, kw_only=True)
    handoff: Handoff | None = attrs.field(default=None, kw_only=True, converter=_to_handoff)

    @property
    def ends(self) -> bool:
        """True when this reply ends the conversation (it does, or it hands off)."""
        return self.end_conversation or self.handoff is not None


@attrs.define(eq=False)
class ConversationState:
    """One conversation as the fake server keeps it; agents read it, tests inspect it.

    Attributes:
        conversation_id: the id create handed out.
        channel: the channel given to create, if any.
        variant_id: the variant given to create, if any.
        integration_attributes: those given to create, updated by each respond that sends some.
        metadata: the ``metadata`` of the latest respond (None if it sent none).
        turns: every user message recorded so far, the current one last while the agent runs;
            a duplicated turn (an ambiguous retry) shows here twice.
        replies: every answer the agent gave, the greeting first.
        lost_replies: indexes into ``turns`` whose answer the client never received (a fault
            after processing, or the client hung up): a repeat of such a turn is a duplicate.
        ended: the agent ended the conversation (or handed it off).
        closed: close was called.
        data: free space for an agent to keep its own state per conversation.
    """

    conversation_id: str
    channel: str | None = None
    variant_id: str | None = None
    asr_lang_code: str | None = None
    tts_lang_code: str | None = None
    integration_attributes: dict[str, Any] = attrs.Factory(dict)
    metadata: dict[str, Any] | None = None
    turns: list[str | None] = attrs.Factory(list)
    replies: list[str] = attrs.Factory(list)
    lost_replies: set[int] = attrs.Factory(set)
    ended: bool = False
    closed: bool = False
    data: dict[str, Any] = attrs.Factory(dict)

    def duplicated_turns(self) -> int:
        """Count turns that repeat the turn before them after that turn's answer was lost."""
        turns = self.turns
        return sum(1 for i in self.lost_replies if i + 1 < len(turns) and turns[i + 1] == turns[i])


#: What an agent may return, directly or from a coroutine.
AgentResult: TypeAlias = AgentReply | str
#: Any callable ``(message, state)`` returning an AgentResult, or an awaitable of one.
Agent: TypeAlias = Callable[[str | None, ConversationState], AgentResult | Awaitable[AgentResult]]


@attrs.frozen
class EchoAgent:
    """Answers every message with the message itself, after an optional prefix.

    Args:
        prefix: put before every echo.
        greeting: the answer to create.
    """

    prefix: str = ""
    greeting: str = attrs.field(default=DEFAULT_GREETING, kw_only=True)

    def __call__(self, message: str | None, state: ConversationState) -> AgentReply:
        """Echo ``message`` (an empty string for no message)."""
        return AgentReply(f"{self.prefix}{message or ''}")


def _to_replies(replies: Sequence[AgentReply | str]) -> tuple[AgentReply, ...]:
    return tuple(r if isinstance(r, AgentReply) else AgentReply(r) for r in replies)


def _not_empty(_: object, __: attrs.Attribute[Any], value: tuple[AgentReply, ...]) -> None:
    if not value:
        raise ValueError("ScriptedAgent needs at least one reply")


@attrs.frozen
class ScriptedAgent:
    """Answers the n-th message of every conversation with the n-th reply of a script.

    The script is per conversation and advances with each recorded turn, so a duplicated
    turn skips a reply, as it would with a real agent. Once the script runs out, the last
    reply repeats (unless it ended the conversation).

    Args:
        replies: the replies in order; strings or AgentReply (to end or hand off).
        greeting: the answer to create.
    """

    replies: tuple[AgentReply, ...] = attrs.field(converter=_to_replies, validator=_not_empty)
    greeting: str = attrs.field(default=DEFAULT_GREETING, kw_only=True)

    def __call__(self, message: str | None, state: ConversationState) -> AgentReply:
        """Return the reply for this turn of the conversation."""
        return self.replies[min(len(state.turns), len(self.replies)) - 1]


def _words(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE)


_HUMAN = _words("human", "agent", "person", "someone", "representative", "operator")
_GOODBYE = _words("bye", "goodbye", "good bye", "that's all", "farewell")
# Plain answers, the first pattern that matches wins.
_ANSWERS = (
    (_words("thanks", "thank you", "cheers"), "You're welcome! Is there anything else I can do?"),
    (_words("hours", "open", "opening", "closing"), "We're open Monday to Friday, 9am to 5pm."),
    (
        _words("hello", "hi", "hey", "good morning", "good afternoon"),
        "Hello! What can I do for you?",
    ),
)


@attrs.frozen
class DemoAgent:
    """A small, plausible agent: the default of FakePolyAI.

    - asks for a human, an agent, a person...: hands off to ``handoff_destination`` with
      reason ``user_requested_human``;
    - says goodbye or bye: ends the conversation;
    - otherwise answers greetings, thanks and opening hours, and echoes anything else.

    Args:
        greeting: the answer to create.
        handoff_destination: where a handoff sends the user.
    """

    greeting: str = attrs.field(default=DEFAULT_GREETING, kw_only=True)
    handoff_destination: str = attrs.field(default="live_agent_queue", kw_only=True)

    def __call__(self, message: str | None, state: ConversationState) -> AgentReply:
        """Answer ``message``."""
        text = (message or "").strip()
        if not text:
            return AgentReply("Sorry, I didn't catch that. Could you say it again?")
        if _HUMAN.search(text):
            return AgentReply(
                "Of course. I'm transferring you to a member of our team now.",
                handoff=Handoff(
                    destination=self.handoff_destination, reason="user_requested_human"
                ),
            )
        if _GOODBYE.search(text):
            return AgentReply("Thanks for chatting with us. Goodbye!", end_conversation=True)
        for pattern, answer in _ANSWERS:
            if pattern.search(text):
                return AgentReply(answer)
        return AgentReply(f'I understand you said: "{text}". How else can I help?')


AGENTS: dict[str, Callable[[], Agent]] = {"demo": DemoAgent, "echo": EchoAgent}
"""The agents by the name ``--agent`` takes (``demo``, ``echo``): a factory each."""
