"""The requests and answers of the Chat API, and the one converter that reads and writes them.

Requests omit the fields left unset; answers ignore fields they do not know (the API adds
fields) and are checked strictly: a missing field or a wrong type is an error, never coerced.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

__all__ = [
    "Channel",
    "CloseChatRequest",
    "CloseChatResponse",
    "CreateChatRequest",
    "CreateChatResponse",
    "Handoff",
    "RespondChatRequest",
    "RespondChatResponse",
]


class Channel(str, enum.Enum):
    """The channel a conversation runs on: ``webchat``, ``whatsapp``, ``sms`` or ``api``.

    A plain string with one of these values is accepted wherever a Channel is.
    """

    WEBCHAT = "webchat"
    WHATSAPP = "whatsapp"
    SMS = "sms"
    API = "api"


@attrs.frozen(kw_only=True)
class CreateChatRequest:
    """The body of ``POST .../chat/create``; every field is optional, and unset ones are not sent.

    Attributes:
        channel: the channel the conversation runs on.
        variant_id: the project variant to use (settable only at creation).
        integration_attributes: data for the agent's integrations.
        asr_lang_code: the speech-recognition language, such as ``en-US``.
        tts_lang_code: the speech-synthesis language.
    """

    channel: Channel | None = None
    variant_id: str | None = None
    integration_attributes: dict[str, Any] | None = None
    asr_lang_code: str | None = None
    tts_lang_code: str | None = None


@attrs.frozen(kw_only=True)
class RespondChatRequest:
    """The body of ``POST .../chat/respond``; unset fields are not sent.

    Attributes:
        conversation_id: the conversation to continue.
        message: the user's message.
        metadata: data visible to the agent's functions for this turn only.
        integration_attributes: data for the agent's integrations.
        asr_lang_code: the speech-recognition language.
        tts_lang_code: the speech-synthesis language.
    """

    conversation_id: str
    message: str | None = None
    metadata: dict[str, Any] | None = None
    integration_attributes: dict[str, Any] | None = None
    asr_lang_code: str | None = None
    tts_lang_code: str | None = None


@attrs.frozen(kw_only=True)
class CloseChatRequest:
    """The body of ``PUT .../chat/close``.

    Attributes:
        conversation_id: the conversation to close.
    """

    conversation_id: str


@attrs.frozen(kw_only=True)
class CreateChatResponse:
    """The answer to create.

    Attributes:
        conversation_id: the new conversation's id, for respond and close.
        response: the agent's greeting.
        correlation_id: the answer's ``X-PolyAI-Correlation-Id`` (None when the server sent
            none): quote it to PolyAI support. Not part of equality nor of the JSON.
    """

    conversation_id: str
    response: str
    correlation_id: str | None = attrs.field(default=None, eq=False)


@attrs.frozen(kw_only=True)
class Handoff:
    """Where the agent handed the conversation over to (a human queue) and why.

    Attributes:
        destination: where to route the user, such as ``live_agent_queue``.
        reason: why the agent handed off, such as ``billing_question``.
    """

    destination: str | None = None
    reason: str | None = None


@attrs.frozen(kw_only=True)
class RespondChatResponse:
    """The agent's reply to one user message.

    When ``end_conversation`` is true the agent is done; if ``handoff`` is set too, route the
    user to ``handoff.destination``.

    Attributes:
        conversation_id: the conversation this reply belongs to.
        response: the agent's reply.
        end_conversation: the agent ended the conversation; send no more messages.
        handoff: set when the agent handed the user over (``end_conversation`` is then true).
        correlation_id: the answer's ``X-PolyAI-Correlation-Id`` (None when the server sent
            none): quote it to PolyAI support. Not part of equality nor of the JSON.
    """

    conversation_id: str
    response: str
    end_conversation: bool
    handoff: Handoff | None = None
    correlation_id: str | None = attrs.field(default=None, eq=False)


@attrs.frozen(kw_only=True)
class CloseChatResponse:
    """The answer to close.

    Attributes:
        success: whether the API closed the conversation.
        correlation_id: the answer's ``X-PolyAI-Correlation-Id`` (None when the server sent
            none): quote it to PolyAI support. Not part of equality nor of the JSON.
    """

    success: bool
    correlation_id: str | None = attrs.field(default=None, eq=False)


def _strict(kind: type[Any]) -> Any:
    """Make a structure hook that accepts exactly ``kind``: cattrs would coerce ``1`` to ``"1"``."""

    def structure(value: Any, _: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


#: The answer models: each carries the answer's correlation id.
ANSWERS = (CreateChatResponse, RespondChatResponse, CloseChatResponse)


def _as_is(value: Any, _: Any) -> Any:
    return value


# The correlation id comes from a header, never the body: the client puts it in the dict it
# structures; it is not part of the JSON an answer unstructures to.
_FROM_HEADER: Any = {"correlation_id": override(struct_hook=_as_is)}
_NOT_IN_JSON: Any = {"correlation_id": override(omit=True)}


def _object_only(cls: type[Any], converter: cattrs.Converter) -> Any:
    """A structure hook for ``cls`` that accepts only a JSON object.

    cattrs would test ``"destination" in value``, which a string passes (``"live_agent_queue"``
    became ``Handoff(None, None)``) and a number fails with a TypeError about iterating.
    """
    structure = make_dict_structure_fn(cls, converter)

    def hook(value: Any, _: Any) -> Any:
        if type(value) is not dict:
            raise TypeError(f"expected an object or null, got {_json_type(value)}")
        return structure(value, cls)

    return hook


def _json_type(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), "an array" if isinstance(value, list) else type(value).__name__)


def _created(converter: cattrs.Converter) -> Any:
    """A hook for create's answer: its conversation id must name a conversation, not be blank."""
    structure = make_dict_structure_fn(CreateChatResponse, converter, **_FROM_HEADER)

    def hook(value: Any, _: Any) -> CreateChatResponse:
        created: CreateChatResponse = structure(value, CreateChatResponse)
        if not created.conversation_id.strip():
            raise cattrs.ClassValidationError(
                "While structuring CreateChatResponse",
                [ValueError("conversation_id is blank: the API must name the new conversation")],
                CreateChatResponse,
            )
        return created

    return hook


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(str, _strict(str))
    converter.register_structure_hook(bool, _strict(bool))
    converter.register_structure_hook(Handoff, _object_only(Handoff, converter))
    converter.register_structure_hook(CreateChatResponse, _created(converter))
    converter.register_unstructure_hook(Channel, lambda channel: channel.value)
    for request in (CreateChatRequest, RespondChatRequest, CloseChatRequest):
        converter.register_unstructure_hook(
            request, make_dict_unstructure_fn(request, converter, _cattrs_omit_if_default=True)
        )
    # Last, so the generated functions use every hook registered above.
    for reply in (RespondChatResponse, CloseChatResponse):
        converter.register_structure_hook(
            reply, make_dict_structure_fn(reply, converter, **_FROM_HEADER)
        )
    for answer in ANSWERS:
        converter.register_unstructure_hook(
            answer, make_dict_unstructure_fn(answer, converter, **_NOT_IN_JSON)
        )
    return converter


converter = _make_converter()
"""The cattrs converter for every model, built once at import."""


def dumps(request: object) -> bytes:
    """Serialise a request model to JSON bytes, leaving out unset fields."""
    return orjson.dumps(converter.unstructure(request))
