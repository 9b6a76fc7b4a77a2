"""polyai_async: the asyncio client for the PolyAI Chat API.

Everything public is importable from here; the modules behind it are private.
"""

from ._client import PolyAIClient
from ._config import REGIONS, PoolLimits, Timeouts
from ._conversation import Conversation, Turn
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
