"""The models: round trips through the converter, omitted fields, strict types."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyai_async import (
    Channel,
    CloseChatRequest,
    CloseChatResponse,
    CreateChatRequest,
    CreateChatResponse,
    Handoff,
    RespondChatRequest,
    RespondChatResponse,
)
from polyai_async._models import converter, dumps

text = st.text(max_size=50)
maybe_text = st.none() | text
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=10,
)
maybe_object = st.none() | st.dictionaries(text, json_values, max_size=4)

MODELS: dict[type[Any], st.SearchStrategy[Any]] = {
    CreateChatRequest: st.builds(
        CreateChatRequest,
        channel=st.none() | st.sampled_from(Channel),
        variant_id=maybe_text,
        integration_attributes=maybe_object,
        asr_lang_code=maybe_text,
        tts_lang_code=maybe_text,
    ),
    RespondChatRequest: st.builds(
        RespondChatRequest,
        conversation_id=text,
        message=maybe_text,
        metadata=maybe_object,
        integration_attributes=maybe_object,
        asr_lang_code=maybe_text,
        tts_lang_code=maybe_text,
    ),
    CloseChatRequest: st.builds(CloseChatRequest, conversation_id=text),
    CreateChatResponse: st.builds(
        CreateChatResponse,
        conversation_id=text.filter(lambda value: value.strip() != ""),
        response=text,
    ),
    RespondChatResponse: st.builds(
        RespondChatResponse,
        conversation_id=text,
        response=text,
        end_conversation=st.booleans(),
        handoff=st.none() | st.builds(Handoff, destination=maybe_text, reason=maybe_text),
    ),
    CloseChatResponse: st.builds(CloseChatResponse, success=st.booleans()),
}


@pytest.mark.parametrize("cls", list(MODELS), ids=lambda c: c.__name__)
@given(data=st.data())
def test_round_trip(cls: type[Any], data: st.DataObject) -> None:
    """structure(unstructure(x)) == x for every model."""
    value = data.draw(MODELS[cls])
    assert converter.structure(converter.unstructure(value), cls) == value


@given(MODELS[RespondChatRequest])
def test_requests_omit_unset_fields(request: RespondChatRequest) -> None:
    """Serialised requests carry exactly the fields that are set."""
    import orjson

    sent = orjson.loads(dumps(request))
    expected = {k for k, v in converter.unstructure(request).items() if v is not None}
    assert set(sent) == expected
    assert None not in sent.values()


def test_channel_serialises_as_its_value() -> None:
    """Channel.WHATSAPP goes out as "whatsapp"."""
    assert dumps(CreateChatRequest(channel=Channel.WHATSAPP)) == b'{"channel":"whatsapp"}'


def test_models_are_frozen() -> None:
    """Answers cannot be changed after the fact."""
    import attrs

    answer = CloseChatResponse(success=True)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        answer.success = False  # type: ignore[misc]
