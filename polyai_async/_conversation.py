"""Conversation: one chat's state, as ``client.conversation()`` and ``client.resume()`` hand it out.

A web service sees one conversation across many requests, and maybe in two browser tabs at
once. ``ConversationSnapshot`` is what it keeps between requests (plain JSON data through
``to_dict()``); ``client.resume()`` turns it back into a Conversation. Every Conversation of
one client for one id shares a ``_Line``: the lock that puts their sends in call order, and
what the API said of the conversation (ended, handed off, turns). The client's
``ConversationRegistry`` holds the lines weakly, so nothing is kept for an id that no
Conversation holds any more.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ._errors import ConfigurationError, ConversationEndedError, NotFoundError, PolyAIError
from ._models import CreateChatResponse, Handoff, RespondChatResponse

if TYPE_CHECKING:
    from ._client import PolyAIClient

__all__ = ["Conversation", "ConversationSnapshot", "Turn"]

logger = logging.getLogger("polyai_async")

# How long leaving a failed or cancelled ``conversation()`` block may spend closing the chat.
QUIET_CLOSE_TIMEOUT = 5.0


@attrs.frozen
class Turn:
    """One message in a conversation's history.

    Attributes:
        role: who said it: ``"agent"`` or ``"user"``.
        text: what was said (a user turn may carry no message).
    """

    role: Literal["agent", "user"]
    text: str | None


def _check_id(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            f"{type(instance).__name__}.{attribute.name} must be a non-empty string, got {value!r}"
        )


def _check_greeting(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(
            f"{type(instance).__name__}.{attribute.name} must be a string or None, got {value!r}"
        )


def _check_turns(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"{type(instance).__name__}.{attribute.name} must be a whole number >= 0, got {value!r}"
        )


def _check_ended(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"{type(instance).__name__}.{attribute.name} must be True or False, got {value!r}"
        )


def _to_handoff(value: object) -> Any:
    """A Handoff, or the dict ``to_dict()`` made of one, as a Handoff (else left to the check)."""
    if isinstance(value, Mapping) and set(value) <= {"destination", "reason"}:
        destination, reason = value.get("destination"), value.get("reason")
        if all(part is None or isinstance(part, str) for part in (destination, reason)):
            return Handoff(destination=destination, reason=reason)
    return value  # refused by _check_handoff, naming the field


def _check_handoff(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, Handoff):
        raise ConfigurationError(
            f"{type(instance).__name__}.{attribute.name} must be None or "
            f'{{"destination": str | None, "reason": str | None}}, got {value!r}'
        )


@attrs.frozen(kw_only=True)
class ConversationSnapshot:
    """What to keep of a conversation between requests: ``client.resume()`` takes it back.

    ``conversation.state`` gives it; ``to_dict()`` turns it into plain JSON data for a
    session store, and ``client.resume(data)`` (or ``ConversationSnapshot.from_dict(data)``)
    checks that data and turns it back. Every field is checked: a wrong one is a
    ConfigurationError naming it.

    Attributes:
        conversation_id: the API's id for the conversation.
        greeting: the agent's first message (None when only the id was known).
        turns: the user's messages sent and answered so far.
        ended: True once the agent ended the conversation (or it was closed): a Conversation
            resumed from it refuses to send, without calling the API.
        handoff: where the agent handed the user over to, if it did.
    """

    conversation_id: str = attrs.field(validator=_check_id)
    greeting: str | None = attrs.field(default=None, validator=_check_greeting)
    turns: int = attrs.field(default=0, validator=_check_turns)
    ended: bool = attrs.field(default=False, validator=_check_ended)
    handoff: Handoff | None = attrs.field(
        default=None, converter=_to_handoff, validator=_check_handoff
    )

    def to_dict(self) -> dict[str, Any]:
        """This state as plain JSON data (str, int, bool, None and dicts of them)."""
        handoff = self.handoff
        return {
            "conversation_id": self.conversation_id,
            "greeting": self.greeting,
            "turns": self.turns,
            "ended": self.ended,
            "handoff": None
            if handoff is None
            else {"destination": handoff.destination, "reason": handoff.reason},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConversationSnapshot:
        """The state ``to_dict()`` gave, checked; keys it does not know are ignored.

        Unknown keys are ignored so that, during a rolling deploy, a version that reads the
        session store can also read what a newer version wrote.

        Raises:
            ConfigurationError: the data is not such a dict, or a field is missing or wrong;
                the message names it.
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError(
                "a conversation state must be the dict ConversationSnapshot.to_dict() gave, "
                f"not {type(data).__name__}"
            )
        if "conversation_id" not in data:
            raise ConfigurationError("the conversation state has no conversation_id")
        fields = {f.name for f in attrs.fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in fields})


class _Line:
    """What every Conversation of one client for one id shares.

    The API is turn-based: a send waits for the one before it (``turn``, a FIFO lock), so the
    server sees the turns in the order ``send`` was called, whichever object it was called on.
    """

    __slots__ = ("__weakref__", "ended", "handoff", "turn", "turns")

    def __init__(self, state: ConversationSnapshot) -> None:
        self.turn = asyncio.Lock()
        self.turns = state.turns
        self.ended = state.ended
        self.handoff = state.handoff

    def learn(self, state: ConversationSnapshot) -> None:
        """Merge a state that came from elsewhere: what ended stays ended, turns only grow."""
        self.turns = max(self.turns, state.turns)
        self.ended = self.ended or state.ended
        if self.handoff is None:
            self.handoff = state.handoff


class ConversationRegistry:
    """The lines of one client's conversations, by id, held weakly."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines: weakref.WeakValueDictionary[str, _Line] = weakref.WeakValueDictionary()

    def join(self, state: ConversationSnapshot) -> _Line:
        """The line for the state's conversation: the one already held, else a new one."""
        line = self._lines.get(state.conversation_id)
        if line is None:
            line = self._lines[state.conversation_id] = _Line(state)
        else:
            line.learn(state)
        return line

    def __len__(self) -> int:
        return len(self._lines)


class Conversation:
    """A live conversation: send messages, see whether the agent ended it or handed it off.

    Made by ``client.conversation()``, which closes it when the block ends, or by
    ``client.resume()`` for a conversation created elsewhere. Every Conversation of one
    client for one id sends in turn: a send waits for the one before it, whichever object it
    was called on, and fails without calling the API once that one ended the conversation.

    Attributes:
        conversation_id: the API's id for this conversation.
        greeting: the agent's first message (None when resumed from the id alone).
        history: the turns this object saw: the greeting first when it created the
            conversation; a resumed object starts empty.
    """

    def __init__(
        self, client: PolyAIClient, created: CreateChatResponse | ConversationSnapshot
    ) -> None:
        self._client = client
        if isinstance(created, ConversationSnapshot):
            state = created
            self.history: list[Turn] = []
        else:
            state = ConversationSnapshot(
                conversation_id=created.conversation_id, greeting=created.response
            )
            self.history = [Turn("agent", created.response)]
        self.conversation_id = state.conversation_id
        self.greeting = state.greeting
        self._line = client._conversations.join(state)
        self._closed = False

    @property
    def ended(self) -> bool:
        """True once the agent ended the conversation (or it was closed)."""
        return self._line.ended

    @property
    def handoff(self) -> Handoff | None:
        """Where the agent handed the user over to, if it did."""
        return self._line.handoff

    @property
    def state(self) -> ConversationSnapshot:
        """What to keep between requests: ``client.resume(state)`` gives it back."""
        line = self._line
        return ConversationSnapshot(
            conversation_id=self.conversation_id,
            greeting=self.greeting,
            turns=line.turns,
            ended=line.ended,
            handoff=line.handoff,
        )

    async def send(
        self,
        message: str | None,
        *,
        metadata: Mapping[str, Any] | None = None,
        integration_attributes: Mapping[str, Any] | None = None,
        asr_lang_code: str | None = None,
        tts_lang_code: str | None = None,
    ) -> RespondChatResponse:
        """Send the user's message; returns the agent's reply and records both turns.

        The keyword arguments are those of ``PolyAIClient.respond``. Sends on one conversation
        are serialised: one started while another is in flight waits for it to finish (and
        fails, sending nothing, if that one ended the conversation), so the API and
        ``history`` see the turns in the order ``send`` was called.

        Raises:
            ConversationEndedError: the agent has already ended this conversation; nothing is
                sent.
        """
        async with self._line.turn:
            return await self._send(
                message,
                metadata=metadata,
                integration_attributes=integration_attributes,
                asr_lang_code=asr_lang_code,
                tts_lang_code=tts_lang_code,
            )

    async def _send(
        self,
        message: str | None,
        *,
        metadata: Mapping[str, Any] | None,
        integration_attributes: Mapping[str, Any] | None,
        asr_lang_code: str | None,
        tts_lang_code: str | None,
    ) -> RespondChatResponse:
        line = self._line
        if line.ended:
            raise ConversationEndedError(
                f"conversation {self.conversation_id} has ended"
                + (f" (handed off to {line.handoff.destination})" if line.handoff else "")
                + "; start a new one",
                status=410,
                error_code="CHAT_CONVERSATION_ENDED",
            )
        try:
            reply = await self._client.respond(
                self.conversation_id,
                message,
                metadata=metadata,
                integration_attributes=integration_attributes,
                asr_lang_code=asr_lang_code,
                tts_lang_code=tts_lang_code,
            )
        except ConversationEndedError:
            line.ended = True  # the API says so (ended elsewhere, or timed out): stop sending
            raise
        line.turns += 1
        self.history.append(Turn("user", message))
        self.history.append(Turn("agent", reply.response))
        if reply.end_conversation:
            line.ended = True
            line.handoff = reply.handoff
        return reply

    async def aclose(self, *, quiet: bool = False) -> None:
        """Close the conversation on the API; already gone (404, 410) counts as closed.

        Args:
            quiet: log a failure instead of raising it, and give up after a few seconds
                (used when the block already failed or was cancelled, so that a shutdown is
                not held up by the retry deadline).
        """
        if self._closed:
            return
        self._closed = True
        self._line.ended = True
        try:
            if quiet:
                await asyncio.wait_for(
                    self._client.close_chat(self.conversation_id), QUIET_CLOSE_TIMEOUT
                )
            else:
                await self._client.close_chat(self.conversation_id)
        except (NotFoundError, ConversationEndedError):
            pass
        except (PolyAIError, asyncio.TimeoutError):
            if not quiet:
                raise
            logger.warning(
                "polyai_async: closing conversation %s failed", self.conversation_id, exc_info=True
            )

    def __repr__(self) -> str:
        state = "ended" if self.ended else "open"
        return f"<Conversation {self.conversation_id} {state}, {len(self.history)} turns>"
