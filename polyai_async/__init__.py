"""polyai_async: the asyncio client for the PolyAI Chat API.

Everything public is importable from here; the modules behind it are private. The fake server
lives in ``polyai_async.testing``; ``from polyai_async import FakePolyAI`` also works, and
imports it only then, so the library never loads the server it does not use.
"""

from typing import TYPE_CHECKING

from ._adaptive import AdaptiveConcurrency
from ._client import PolyAIClient
from ._config import REGIONS, PoolLimits, Timeouts
from ._conversation import Conversation, ConversationSnapshot, Turn
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    ConversationEndedError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PolyAIError,
    RateLimitError,
    ResponseValidationError,
)
from ._hooks import CallEvent, EventHook
from ._models import (
    Channel,
    CloseChatRequest,
    CloseChatResponse,
    CreateChatRequest,
    CreateChatResponse,
    Handoff,
    RespondChatRequest,
    RespondChatResponse,
)
from ._pool import SessionPool
from ._retry import RetryPolicy
from ._version import __version__ as __version__

__all__ = [
    "REGIONS",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AdaptiveConcurrency",
    "AuthenticationError",
    "BadRequestError",
    "CallEvent",
    "Channel",
    "ClientClosedError",
    "CloseChatRequest",
    "CloseChatResponse",
    "ConfigurationError",
    "Conversation",
    "ConversationEndedError",
    "ConversationSnapshot",
    "CreateChatRequest",
    "CreateChatResponse",
    "EventHook",
    "Handoff",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "PolyAIClient",
    "PolyAIError",
    "PoolLimits",
    "RateLimitError",
    "RespondChatRequest",
    "RespondChatResponse",
    "ResponseValidationError",
    "RetryPolicy",
    "SessionPool",
    "Timeouts",
    "Turn",
]

if TYPE_CHECKING:
    from .testing import FakePolyAI as FakePolyAI
else:

    def __getattr__(name: str) -> object:
        """``FakePolyAI``, imported from ``polyai_async.testing`` when first asked for."""
        if name == "FakePolyAI":
            from .testing import FakePolyAI  # noqa: PLC0415 - lazily: the server is optional

            return FakePolyAI
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
