"""Conversation: one chat's state, as ``client.conversation()`` hands it out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ._errors import ConversationEndedError, NotFoundError, PolyAIError
from ._models import CreateChatResponse, Handoff, RespondChatResponse

if TYPE_CHECKING:
    from ._client import PolyAIClient

__all__ = ["Conversation", "Turn"]

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


class Conversation:
    """A live conversation: send messages, see whether the agent ended it or handed it off.

    Made by ``client.conversation()``, which closes it when the block ends.

    Attributes:
        conversation_id: the API's id for this conversation.
        greeting: the agent's first message.
        history: every turn so far, the greeting first.
        ended: True once the agent ended the conversation (or it was closed).
        handoff: where the agent handed the user over to, if it did.
    """

    def __init__(self, client: PolyAIClient, created: CreateChatResponse) -> None:
        self._client = client
        self.conversation_id = created.conversation_id
        self.greeting = created.response
        self.history: list[Turn] = [Turn("agent", created.response)]
        self.ended = False
        self.handoff: Handoff | None = None
        self._closed = False
        # The API is turn-based: a second send waits for the first, so the server sees the
        # turns, and history records them, in the order send was called.
        self._turn = asyncio.Lock()

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
        async with self._turn:
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
        if self.ended:
            raise ConversationEndedError(
                f"conversation {self.conversation_id} has ended"
                + (f" (handed off to {self.handoff.destination})" if self.handoff else "")
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
            self.ended = True  # the API says so (ended elsewhere, or timed out): stop sending
            raise
        self.history.append(Turn("user", message))
        self.history.append(Turn("agent", reply.response))
        if reply.end_conversation:
            self.ended = True
            self.handoff = reply.handoff
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
        self.ended = True
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
