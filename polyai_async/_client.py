"""PolyAIClient: the three calls of the Chat API over a pooled session, with retries."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import math
import os
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import aiohttp
import cattrs
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import _logging, _models, _redact, _wire
from ._adaptive import AdaptiveConcurrency, Limiter
from ._config import (
    DEFAULT_REGION,
    PoolLimits,
    Timeouts,
    check_bool,
    check_header_value,
    check_segment,
    resolve_base_url,
    setting,
)
from ._conversation import Conversation, ConversationRegistry, ConversationSnapshot
from ._errors import (
    CORRELATION_HEADER,
    TRANSPORT_ERRORS,
    APITimeoutError,
    ClientClosedError,
    ConfigurationError,
    PolyAIError,
    ResponseValidationError,
    detach,
    display_url,
    one_line,
    status_error,
    transport_error,
)
from ._hooks import CallState, EventHook, Hooks, Tap
from ._models import (
    Channel,
    CloseChatRequest,
    CloseChatResponse,
    CreateChatRequest,
    CreateChatResponse,
    RespondChatRequest,
    RespondChatResponse,
)
from ._pool import Host, SessionPool
from ._retry import Retrier, RetryPolicy
from ._timing import Expiry
from ._version import __version__

__all__ = ["PolyAIClient"]

T = TypeVar("T")

_USER_AGENT = f"polyai-async/{__version__}"
# Headers the client sets itself: default_headers may not replace them. The credentials and
# Content-Type are the API's; the others decide how the request is framed.
_OWN_HEADERS = frozenset(
    {
        "x-api-key",
        "x-token",
        "content-type",
        "accept-encoding",
        "content-length",
        "transfer-encoding",
        "host",
    }
)

# Chat answers are a few hundred bytes; anything near this is a proxy's page or an attack.
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
_EXCERPT = 120
# orjson refuses anything nested deeper than 254 levels.
_MAX_DEPTH = 255


def _check_id(conversation_id: object) -> str:
    if not isinstance(conversation_id, str) or not conversation_id.strip():
        raise ConfigurationError(
            f"conversation_id must be a non-empty string, got {conversation_id!r}"
        )
    return conversation_id


def _check_optional_str(value: object, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string or None, not {type(value).__name__}")
    return value


def _check_mapping(value: object, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{name} must be a dict or None, not {type(value).__name__}")
    mapping = dict(value)
    _check_finite(mapping, name)
    return mapping


def _check_finite(mapping: dict[str, Any], name: str) -> None:
    """Refuse NaN and infinities anywhere inside: orjson would send them as null.

    Deeper than JSON can go (orjson stops at 255 levels; a dict holding itself never ends) is
    left for the encoder, which refuses it.
    """
    stack: list[tuple[object, str, int]] = [(mapping, name, 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ConfigurationError(
                    f"{where} is {value!r}, which JSON cannot carry (it would be sent as null): "
                    "send a finite number, a string or None"
                )
        elif depth > _MAX_DEPTH:
            continue
        elif isinstance(value, Mapping):
            stack.extend((item, f"{where}[{key!r}]", depth + 1) for key, item in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))


def _check_channel(value: object) -> Channel | None:
    if value is None or isinstance(value, Channel):
        return value
    try:
        return Channel(value)
    except ValueError:
        valid = ", ".join(c.value for c in Channel)
        raise ConfigurationError(f"unknown channel {value!r}: use one of {valid}") from None


def _describe(error: BaseException, _: object) -> str:
    if isinstance(error, KeyError):
        return "required field missing"
    return str(error) or type(error).__name__


def _check_max_response_bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError("max_response_bytes must be a whole number of bytes")
    if value < 1:
        raise ConfigurationError("max_response_bytes must be at least 1")
    return value


def _check_retry(value: object) -> RetryPolicy:
    if not isinstance(value, RetryPolicy):
        raise ConfigurationError("retry must be a RetryPolicy")
    return value


def _extra_headers(default_headers: object, app_info: object) -> dict[str, str]:
    """The headers ``default_headers`` and ``app_info`` add to every request, checked."""
    headers: dict[str, str] = {}
    if app_info is not None:
        if not isinstance(app_info, str):
            raise ConfigurationError(
                f"app_info must be a string such as 'my-bot/1.2', not {type(app_info).__name__}"
            )
        headers["User-Agent"] = f"{_USER_AGENT} {check_header_value(app_info, 'app_info')}"
    if default_headers is None:
        return headers
    if not isinstance(default_headers, Mapping):
        raise ConfigurationError(
            f"default_headers must be a dict of header names to values, "
            f"not {type(default_headers).__name__}"
        )
    for name, value in default_headers.items():
        if (
            not isinstance(name, str)
            or not name.strip()
            or not name.isascii()
            or any(ch in name for ch in " \t:\r\n\0")
        ):
            raise ConfigurationError(f"default_headers has an invalid header name {name!r}")
        if name.lower() in _OWN_HEADERS:
            raise ConfigurationError(
                f"default_headers may not set {name}: the client sets it (the credentials come "
                "from api_key and token)"
            )
        if not isinstance(value, str):
            raise ConfigurationError(
                f"default_headers[{name!r}] must be a string, not {type(value).__name__}"
            )
        if name.lower() == "user-agent" and "User-Agent" in headers:
            raise ConfigurationError("pass app_info or a User-Agent in default_headers, not both")
        # The value is not quoted: a default header may be a secret of the user's own.
        headers["User-Agent" if name.lower() == "user-agent" else name] = check_header_value(
            value, f"default_headers[{name!r}]"
        )
    return headers


# How the correlation header is looked up among an answer's raw fields.
CORRELATION_BYTES = CORRELATION_HEADER.lower().encode()


def _closed_during(what: str) -> ClientClosedError:
    return ClientClosedError(f"{what}: the client was closed during the call")


def _encode(request: object) -> bytes:
    try:
        return _models.dumps(request)
    except TypeError as exc:
        raise ConfigurationError(f"the request cannot be sent as JSON: {exc}") from None
    except RecursionError:  # a dict or list that holds itself, or one nested thousands deep
        raise ConfigurationError(
            "the request cannot be sent as JSON: its data holds itself or is nested too deeply"
        ) from None


class Endpoint(Generic[T]):
    """One call of the API, with everything it needs built once."""

    __slots__ = ("answer", "head", "idempotent", "method", "structure", "url", "what")

    def __init__(
        self,
        method: str,
        url: URL,
        answer: type[T],
        what: str,
        idempotent: bool,
        headers: Mapping[str, str],
    ) -> None:
        self.method = method
        self.url = url
        self.answer = answer
        self.what = what
        self.idempotent = idempotent
        # cattrs' generated function for the answer, skipping its dispatch on every call.
        self.structure: Callable[[Any, type[T]], T] = _models.converter.get_structure_hook(answer)
        # The request's line and headers as sent on the client's own connections (_wire).
        self.head = self.head_with(headers)

    def head_with(self, headers: Mapping[str, str]) -> bytes:
        """The request's head with these headers (a hook may add one, such as traceparent)."""
        url = self.url
        fields = list(headers.items())
        if url.raw_user is not None:  # user:password@ in base_url: basic auth, as aiohttp sends
            pair = f"{url.user or ''}:{url.password or ''}".encode()
            login = "Basic " + base64.b64encode(pair).decode("ascii")
            fields = [(k, v) for k, v in fields if k.lower() != "authorization"]
            fields.append(("Authorization", login))
        return _wire.request_head(
            self.method, url.raw_path_qs, url.host_port_subcomponent or "", fields
        )


class PolyAIClient:
    """The asyncio client for the PolyAI Chat API.

    One client serves any number of concurrent conversations; make one per process (per
    project) and share it. Use it as ``async with PolyAIClient() as client:`` or call
    ``await client.aclose()`` when done.

    Args:
        api_key: the API key (``X-API-KEY``); default ``POLYAI_API_KEY``.
        token: the connector token from Agent Studio (``X-TOKEN``); default ``POLYAI_TOKEN``.
        account_id: the account (workspace) id; default ``POLYAI_ACCOUNT_ID``.
        project_id: the project id; default ``POLYAI_PROJECT_ID``.
        region: ``us-1``, ``uk-1``, ``euw-1`` or ``studio`` (the self-serve Agent Studio,
            ``https://api.studio.poly.ai``); default ``POLYAI_REGION``, else ``us-1``.
        base_url: any other origin (a fake server, a proxy); overrides the region's host;
            default ``POLYAI_BASE_URL``. Plain ``http://`` only to loopback, unless
            ``allow_insecure_http``.
        version: the API version in the path.
        retry: the RetryPolicy; default ``RetryPolicy()``.
        timeout: per-attempt Timeouts, or seconds for both connect and read.
        limits: PoolLimits for the pool this client makes (not with ``pool``).
        pool: a SessionPool to share with other clients; this client will not close it.
        max_response_bytes: the largest answer read before the call fails.
        allow_insecure_http: allow a plain ``http://`` base_url to a non-loopback host.
        proxy: an HTTP proxy for the pool this client makes, such as
            ``http://user:password@proxy:3128`` (not with ``pool``); its password never
            appears in a repr, log or error.
        trust_env: take the proxy from ``HTTPS_PROXY``/``HTTP_PROXY`` and ``NO_PROXY`` (not
            with ``pool`` nor ``proxy``). Off unless asked for: credentials should not follow
            an environment variable to a proxy nobody chose.
        default_headers: extra headers for every request. They may not set ``X-API-KEY``,
            ``X-TOKEN``, ``Content-Type`` or the framing headers.
        app_info: your application, such as ``my-bot/1.2``, added to the ``User-Agent``.
        event_hooks: functions to call on events, by event name: ``{"retry_scheduled":
            [count_retry]}``; each gets a CallEvent (see the Observability page).
        telemetry: OpenTelemetry spans and metrics for every call (needs the ``telemetry``
            extra, ``opentelemetry-api``).
        tracer_provider: the TracerProvider for the spans; the global one when None.
        meter_provider: the MeterProvider for the metrics; the global one when None.
        propagate_traceparent: send the W3C ``traceparent`` header of each call's span, so
            the API's traces could join yours (off: a header PolyAI did not ask for).
        adaptive_concurrency: cap the calls in flight and move the cap as the API answers
            (slow start, additive increase, multiplicative decrease on 429, 503 and
            timeouts; a ``Retry-After`` pauses every new call): True for the defaults, or an
            AdaptiveConcurrency. Off by default. See the Concurrency page.

    Raises:
        ConfigurationError: a setting is missing or invalid; the message names it.

    Attributes:
        account_id: the account (workspace) id in use.
        project_id: the project id in use.
        region: the region in use (its host is replaced when ``base_url`` is set).
        version: the API version in the path.
        base_url: the origin requests go to (a ``yarl.URL``).
        retry_policy: the RetryPolicy in force.
        timeouts: the per-attempt Timeouts in force.
        max_response_bytes: the largest answer read before a call fails.
        pool: the SessionPool the client sends through.
        adaptive_concurrency: the AdaptiveConcurrency in force, or None.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        token: str | None = None,
        account_id: str | None = None,
        project_id: str | None = None,
        region: str | None = None,
        base_url: str | None = None,
        version: str = "v1",
        retry: RetryPolicy | None = None,
        timeout: Timeouts | float | None = None,
        limits: PoolLimits | None = None,
        pool: SessionPool | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        allow_insecure_http: bool = False,
        proxy: str | None = None,
        trust_env: bool = False,
        default_headers: Mapping[str, str] | None = None,
        app_info: str | None = None,
        event_hooks: Mapping[str, EventHook | Sequence[EventHook]] | None = None,
        telemetry: bool = False,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        propagate_traceparent: bool = False,
        adaptive_concurrency: bool | AdaptiveConcurrency = False,
    ) -> None:
        _logging.configure_from_env()
        allow_insecure_http = check_bool(allow_insecure_http, "allow_insecure_http")
        api_key = check_header_value(setting(api_key, "api_key", "POLYAI_API_KEY"), "api_key")
        token = check_header_value(setting(token, "token", "POLYAI_TOKEN"), "token")
        self.account_id = check_segment(
            setting(account_id, "account_id", "POLYAI_ACCOUNT_ID"), "account_id"
        )
        self.project_id = check_segment(
            setting(project_id, "project_id", "POLYAI_PROJECT_ID"), "project_id"
        )
        self.region = setting(region, "region", "POLYAI_REGION", DEFAULT_REGION)
        if base_url is None:
            base_url = os.environ.get("POLYAI_BASE_URL") or None
        self.version = check_segment(version, "version")
        self.base_url = resolve_base_url(
            base_url, self.region, allow_insecure_http=allow_insecure_http
        )
        # From now on every output of this process hides them (error messages included).
        _redact.remember(api_key, token, self.base_url.password)
        self.retry_policy = _check_retry(retry) if retry is not None else RetryPolicy()
        self.timeouts = Timeouts.coerce(timeout)
        self.max_response_bytes = _check_max_response_bytes(max_response_bytes)
        check_bool(trust_env, "trust_env")
        if pool is not None:
            for name, value in (("limits", limits), ("proxy", proxy), ("trust_env", trust_env)):
                if value is not None and value is not False:
                    raise ConfigurationError(
                        f"pass {name} or pool, not both: a shared pool keeps its own {name} "
                        "(set it on the SessionPool)"
                    )
        if pool is not None and not isinstance(pool, SessionPool):
            raise ConfigurationError("pool must be a SessionPool")
        self._owns_pool = pool is None
        self.pool = (
            pool
            if pool is not None
            else SessionPool(limits=limits or PoolLimits(), proxy=proxy, trust_env=trust_env)
        )

        headers = {
            "X-API-KEY": api_key,
            "X-TOKEN": token,
            "Content-Type": "application/json",
            "Accept": "application/json",
            # Chat answers are a few hundred bytes: compression saves nothing, and a compressed
            # answer could inflate far past max_response_bytes (the pool does not decode one).
            "Accept-Encoding": "identity",
            "User-Agent": _USER_AGENT,
            **_extra_headers(default_headers, app_info),
        }
        # Built once: every call reuses these. A multidict, because aiohttp copies a plain dict
        # into one on every request (some 5,000 instructions of a request's ~590,000).
        self._headers = CIMultiDictProxy(CIMultiDict(headers))
        chat = self.base_url / self.version / self.account_id / self.project_id / "chat"
        self._create = Endpoint(
            "POST", chat / "create", CreateChatResponse, "create_chat", False, self._headers
        )
        self._respond = Endpoint(
            "POST", chat / "respond", RespondChatResponse, "respond", False, self._headers
        )
        self._close = Endpoint(
            "PUT", chat / "close", CloseChatResponse, "close_chat", True, self._headers
        )
        self._origin = self.base_url.origin()
        self._retrier = Retrier(self.retry_policy)
        # aiohttp bounds only the opening of a connection; the attempt's own timer does the rest
        # (one timer per attempt: aiohttp's sock_read timer is re-armed on every chunk).
        self._aiohttp_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeouts.connect
        )
        self._host: Host | None = None
        self._closed = False
        self._derived: weakref.WeakSet[PolyAIClient] | None = None
        # Shared with the clients with_options makes: one ordering per conversation id.
        self._conversations = ConversationRegistry()
        # Shared with them too: the client backs off as one.
        self.adaptive_concurrency = AdaptiveConcurrency.coerce(adaptive_concurrency)
        self._limiter: Limiter | None = None
        if self.adaptive_concurrency is not None:
            self._limiter = Limiter(
                self.adaptive_concurrency, max_pause=self.retry_policy.max_retry_after
            )

        hooks = Hooks.from_argument(event_hooks)
        if check_bool(telemetry, "telemetry"):
            # OpenTelemetry is imported only when asked for.
            from ._telemetry import Telemetry  # noqa: PLC0415

            Telemetry(
                tracer_provider,
                meter_provider,
                server_address=self.base_url.host or "",
                propagate_traceparent=check_bool(propagate_traceparent, "propagate_traceparent"),
            ).subscribe(hooks)
        elif tracer_provider is not None or meter_provider is not None or propagate_traceparent:
            raise ConfigurationError(
                "tracer_provider, meter_provider and propagate_traceparent need telemetry=True"
            )
        _logging.subscribe(hooks, {e.what: e for e in (self._create, self._respond, self._close)})
        # One set of hooks for this client and every client with_options makes from it.
        self._hook_registry = hooks
        self._family: weakref.WeakSet[PolyAIClient] = weakref.WeakSet([self])
        # None when nothing listens: the hot path then builds no event at all.
        self._hooks: Hooks | None = hooks if hooks else None

    def _connections_short(self) -> bool:
        """A pool's worth of calls waits for a connection (the load runner drops arrivals then)."""
        host = self._host
        return host is not None and host.gate.waiting >= host.gate.size

    def add_event_hook(self, event: str, hook: EventHook) -> None:
        """Call ``hook`` on ``event`` from now on, as if it had been in ``event_hooks``.

        The hooks are shared by this client and every client ``with_options`` made from it
        (or it from): the load engine, say, adds its counters to a client it was given.

        Args:
            event: ``request_sent``, ``answer_received``, ``retry_scheduled`` or
                ``call_failed``.
            hook: a function taking a CallEvent.

        Raises:
            ConfigurationError: the event is unknown or the hook not callable.
        """
        self._hook_registry.add(Hooks.check(event, hook), hook)
        self._hooks_changed()

    def remove_event_hook(self, event: str, hook: EventHook) -> None:
        """Stop calling ``hook`` on ``event``; the other hooks stay.

        Raises:
            ConfigurationError: ``hook`` is not subscribed to ``event``.
        """
        self._hook_registry.remove(Hooks.check(event, hook), hook)
        self._hooks_changed()

    def _add_tap(self, tap: Tap) -> None:
        """Tell ``tap`` of every event from now on (a private, cheaper hook: see ``Tap``)."""
        self._hook_registry.taps = (*self._hook_registry.taps, tap)
        self._hooks_changed()

    def _remove_tap(self, tap: Tap) -> None:
        """Stop telling ``tap``."""
        self._hook_registry.taps = tuple(t for t in self._hook_registry.taps if t is not tap)
        self._hooks_changed()

    def _hooks_changed(self) -> None:
        hooks = self._hook_registry if self._hook_registry else None
        for member in self._family:
            member._hooks = hooks

    def with_options(
        self,
        *,
        retry: RetryPolicy | None = None,
        timeout: Timeouts | float | None = None,
        max_response_bytes: int | None = None,
    ) -> PolyAIClient:
        """A client like this one but for the settings given; cheap enough to make per call.

        It shares this client's pool, credentials, hooks, telemetry and retry budget (a
        ``retry`` policy given here brings its rules, not a budget of its own). Closing it
        does not close this client; closing this client closes it too.
        ``await client.with_options(timeout=2).respond(cid, "hi")``.

        Args:
            retry: the RetryPolicy for calls made through the new client.
            timeout: per-attempt Timeouts, or seconds for both connect and read.
            max_response_bytes: the largest answer read before a call fails.

        Raises:
            ConfigurationError: an option is invalid; the message names it.
            ClientClosedError: this client is closed.
        """
        if self._closed:
            raise ClientClosedError("this PolyAIClient is closed; make a new one")
        derived = object.__new__(PolyAIClient)
        derived.__dict__.update(self.__dict__)
        derived._owns_pool = False
        derived._derived = None
        self._family.add(derived)
        if retry is not None:
            derived.retry_policy = _check_retry(retry)
            derived._retrier = Retrier(retry, share_budget_of=self._retrier)
        if timeout is not None:
            derived.timeouts = Timeouts.coerce(timeout)
            derived._aiohttp_timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=derived.timeouts.connect
            )
        if max_response_bytes is not None:
            derived.max_response_bytes = _check_max_response_bytes(max_response_bytes)
        if self._derived is None:
            self._derived = weakref.WeakSet()
        self._derived.add(derived)
        return derived

    # -- the three calls -------------------------------------------------------------------

    async def create_chat(
        self,
        *,
        channel: Channel | str | None = None,
        variant_id: str | None = None,
        integration_attributes: Mapping[str, Any] | None = None,
        asr_lang_code: str | None = None,
        tts_lang_code: str | None = None,
    ) -> CreateChatResponse:
        """Start a conversation; the answer holds its id and the agent's greeting.

        Args:
            channel: the channel the conversation runs on.
            variant_id: the project variant to use (settable only here).
            integration_attributes: data for the agent's integrations.
            asr_lang_code: the speech-recognition language, such as ``en-US``.
            tts_lang_code: the speech-synthesis language.
        """
        request = CreateChatRequest(
            channel=_check_channel(channel),
            variant_id=_check_optional_str(variant_id, "variant_id"),
            integration_attributes=_check_mapping(integration_attributes, "integration_attributes"),
            asr_lang_code=_check_optional_str(asr_lang_code, "asr_lang_code"),
            tts_lang_code=_check_optional_str(tts_lang_code, "tts_lang_code"),
        )
        return await self._call(self._create, _encode(request))

    async def respond(
        self,
        conversation_id: str,
        message: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        integration_attributes: Mapping[str, Any] | None = None,
        asr_lang_code: str | None = None,
        tts_lang_code: str | None = None,
    ) -> RespondChatResponse:
        """Send the user's message and return the agent's reply.

        Check ``end_conversation`` (and ``handoff``) on the answer: once the agent has ended
        the conversation, further messages fail with ConversationEndedError.

        Args:
            conversation_id: the id create_chat returned.
            message: the user's message.
            metadata: data visible to the agent's functions for this turn only.
            integration_attributes: data for the agent's integrations.
            asr_lang_code: the speech-recognition language.
            tts_lang_code: the speech-synthesis language.
        """
        request = RespondChatRequest(
            conversation_id=_check_id(conversation_id),
            message=_check_optional_str(message, "message"),
            metadata=_check_mapping(metadata, "metadata"),
            integration_attributes=_check_mapping(integration_attributes, "integration_attributes"),
            asr_lang_code=_check_optional_str(asr_lang_code, "asr_lang_code"),
            tts_lang_code=_check_optional_str(tts_lang_code, "tts_lang_code"),
        )
        return await self._call(self._respond, _encode(request), request.conversation_id)

    async def close_chat(self, conversation_id: str) -> CloseChatResponse:
        """Close a conversation. Safe to retry: close is idempotent."""
        request = CloseChatRequest(conversation_id=_check_id(conversation_id))
        return await self._call(self._close, _encode(request), request.conversation_id)

    @contextlib.asynccontextmanager
    async def conversation(
        self,
        *,
        channel: Channel | str | None = None,
        variant_id: str | None = None,
        integration_attributes: Mapping[str, Any] | None = None,
        asr_lang_code: str | None = None,
        tts_lang_code: str | None = None,
        close_after_handoff: bool = True,
    ) -> AsyncIterator[Conversation]:
        """Create a conversation for the block and close it on the way out.

        ``async with client.conversation() as chat: reply = await chat.send("hi")``.
        A 404 or 410 when closing (the conversation is already gone) is not an error; a
        failure to close after the block raised is logged, never raised over the block's error.

        Args:
            channel: as for ``create_chat``.
            variant_id: as for ``create_chat``.
            integration_attributes: as for ``create_chat``.
            asr_lang_code: as for ``create_chat``.
            tts_lang_code: as for ``create_chat``.
            close_after_handoff: close the chat on the way out even when the agent handed it
                to a human. The API says close "may be called once a human agent has taken
                over": pass False to leave a handed-off chat open for that side to close.
        """
        close_after_handoff = check_bool(close_after_handoff, "close_after_handoff")
        created = await self.create_chat(
            channel=channel,
            variant_id=variant_id,
            integration_attributes=integration_attributes,
            asr_lang_code=asr_lang_code,
            tts_lang_code=tts_lang_code,
        )
        chat = Conversation(self, created)
        try:
            yield chat
        except BaseException:
            if close_after_handoff or chat.handoff is None:
                await chat.aclose(quiet=True)
            raise
        if close_after_handoff or chat.handoff is None:
            await chat.aclose()

    def resume(
        self, conversation: str | ConversationSnapshot | CreateChatResponse | Mapping[str, Any]
    ) -> Conversation:
        """A Conversation for one created elsewhere (another request, another process).

        Nothing is sent: the Conversation continues from what it is given. Its sends and
        those of every other Conversation of this client for the same id are serialised in
        call order. Give it the ``conversation.state`` (or its ``to_dict()``) kept from before
        rather than the id alone, so that an ended conversation stays ended: sending on it
        raises ConversationEndedError without calling the API. Closing is the caller's:
        ``await conversation.aclose()`` when the chat is over.

        ``chat = client.resume(session["polyai"]); reply = await chat.send("hi")``.
        A web service starts one with ``client.resume(await client.create_chat())``.

        Args:
            conversation: a conversation id, a ConversationSnapshot, the dict its
                ``to_dict()`` gave (from a session store, say), or the answer of
                ``create_chat()``.

        Raises:
            ConfigurationError: the id or the state is invalid; the message names the field.
            ClientClosedError: the client is closed.
        """
        if self._closed:
            raise ClientClosedError("this PolyAIClient is closed; make a new one")
        if isinstance(conversation, ConversationSnapshot | CreateChatResponse):
            return Conversation(self, conversation)
        if isinstance(conversation, str):
            state = ConversationSnapshot(conversation_id=_check_id(conversation))
        elif isinstance(conversation, Mapping):
            state = ConversationSnapshot.from_dict(conversation)
        else:
            raise ConfigurationError(
                "resume() takes a conversation id, a ConversationSnapshot, the dict its "
                f"to_dict() gave or a CreateChatResponse, not {type(conversation).__name__}"
            )
        return Conversation(self, state)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` has been called."""
        return self._closed

    async def aclose(self) -> None:
        """Close the client, and its pool if it made it. Calls after this fail. Idempotent.

        Closes the clients ``with_options`` made from it too; closing one of those closes
        only that one.
        """
        self._closed = True
        self._host = None
        for derived in list(self._derived or ()):
            await derived.aclose()
        if self._owns_pool:
            await self.pool.aclose()

    async def __aenter__(self) -> PolyAIClient:
        if self._closed:
            raise ClientClosedError("this PolyAIClient is closed; make a new one")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"<PolyAIClient {display_url(self.base_url)} account_id={self.account_id!r} "
            f"project_id={self.project_id!r}{' closed' if self._closed else ''}>"
        )

    @property
    def concurrency_limit(self) -> int | None:
        """The adaptive concurrency cap now: attempts in flight at most (None when off)."""
        return self._limiter.limit if self._limiter is not None else None

    @property
    def retry_budget(self) -> float | None:
        """Tokens left in this client's retry budget (None when the policy has none)."""
        return self._retrier.budget_tokens

    # -- the hot path ----------------------------------------------------------------------

    async def _call(
        self, endpoint: Endpoint[T], body: bytes, conversation_id: str | None = None
    ) -> T:
        if self._closed:
            raise ClientClosedError(f"{endpoint.what}: this PolyAIClient is closed; make a new one")
        loop = asyncio.get_running_loop()
        started = loop.time()
        host = self._host
        if host is not None and host.loop is not loop:
            self._host = None  # made under another asyncio.run: this loop needs its own session
        if self._hooks is not None:
            return await self._observed_call(endpoint, body, conversation_id, self._hooks)
        try:
            # The first attempt runs here; the retry machinery is entered only on a failure.
            result = await self._attempt(endpoint, body, None, self.retry_policy.deadline)
        except PolyAIError as error:
            try:
                return await self._retrier.retry(
                    functools.partial(self._attempt, endpoint, body, None),
                    error,
                    started=started,
                    what=endpoint.what,
                    idempotent=endpoint.idempotent,
                )
            except PolyAIError as final:
                detach(final)  # no aiohttp exception, and so no credential, rides along
                raise
        self._retrier.succeeded()
        return result

    async def _observed_call(
        self, endpoint: Endpoint[T], body: bytes, conversation_id: str | None, hooks: Hooks
    ) -> T:
        """``_call`` telling the event hooks what happens (only when there are hooks)."""
        call = CallState(
            hooks, endpoint.what, conversation_id, asyncio.get_running_loop().time, self._limiter
        )
        try:
            try:
                # The first attempt inline, as in _call (_observed_attempt, without its frame).
                call.begin_attempt()
                try:
                    result = await self._attempt(endpoint, body, call, self.retry_policy.deadline)
                except PolyAIError as error:
                    if call.status is not None:
                        call.answer_received(error)
                    raise
                call.answer_received(None, result)
            except PolyAIError as error:
                try:
                    return await self._retrier.retry(
                        functools.partial(self._observed_attempt, endpoint, body, call),
                        error,
                        started=call.started,
                        what=endpoint.what,
                        idempotent=endpoint.idempotent,
                        observer=call,
                    )
                except PolyAIError as final:
                    detach(final)  # no aiohttp exception, and so no credential, rides along
                    raise
        except BaseException as error:  # cancellation too: every call has a last event
            call.call_failed(error)
            raise
        self._retrier.succeeded()
        return result

    async def _observed_attempt(
        self, endpoint: Endpoint[T], body: bytes, call: CallState, seconds_left: float
    ) -> T:
        call.begin_attempt()
        try:
            result = await self._attempt(endpoint, body, call, seconds_left)
        except PolyAIError as error:
            if call.status is not None:
                call.answer_received(error)
            raise
        call.answer_received(None, result)
        return result

    async def _attempt(
        self,
        endpoint: Endpoint[T],
        body: bytes,
        call: CallState | None,
        seconds_left: float,
        admitted_by_limiter: bool = False,
    ) -> T:
        if self._limiter is not None and not admitted_by_limiter:
            return await self._limited_attempt(self._limiter, endpoint, body, call, seconds_left)
        host = self._host
        if host is None or host.closed:
            if self._closed:
                raise _closed_during(endpoint.what)
            host = self._host = self.pool.host(self._origin)
        gate = host.gate
        admitted = False
        # One timer bounds the attempt: the wait for a connection and the request itself.
        loop = host.loop
        expiry = Expiry(asyncio.current_task())  # type: ignore[arg-type]
        timer = loop.call_at(loop.time() + min(seconds_left, self.timeouts.read), expiry)
        try:
            if not gate.try_acquire():  # in arrival order; at once while connections are free
                await gate.acquire()
            admitted = True
            try:
                raw, status, correlation_id = await self._exchange(host, endpoint, body, call)
            finally:
                gate.release()
        except asyncio.CancelledError:
            if not expiry.expired():
                raise  # the caller's cancellation, not the timer's
            # The timeout is raised below, outside this block, so that nothing is chained to it.
        else:
            return self._parse(raw, status, endpoint, correlation_id)
        finally:
            timer.cancel()
        if admitted:
            raise APITimeoutError(f"{endpoint.what} failed: timed out waiting for the answer")
        raise APITimeoutError(
            f"{endpoint.what} failed: no connection came free in time (all "
            f"{self.pool.limits.max_connections} were busy; see PoolLimits)",
            request_sent=False,
        )

    async def _limited_attempt(
        self,
        limiter: Limiter,
        endpoint: Endpoint[T],
        body: bytes,
        call: CallState | None,
        seconds_left: float,
    ) -> T:
        """``_attempt`` under the adaptive concurrency cap: a slot first, then the attempt."""
        loop = asyncio.get_running_loop()
        ticket = limiter.admit(loop)
        if ticket is None:
            # Wait in arrival order, for as long as the call's deadline allows.
            started = loop.time()
            expiry = Expiry(asyncio.current_task())  # type: ignore[arg-type]
            timer = loop.call_at(started + seconds_left, expiry)
            try:
                ticket = await limiter.acquire()
            except asyncio.CancelledError:
                if not expiry.expired():
                    raise  # the caller's cancellation, not the timer's
            finally:
                timer.cancel()
            seconds_left -= loop.time() - started
            if ticket is not None and seconds_left <= 0:  # admitted as the deadline came
                limiter.release(ticket, None, neutral=True)
                ticket = None
            if ticket is None:
                raise APITimeoutError(
                    f"{endpoint.what} failed: no slot came free under the adaptive "
                    f"concurrency cap ({limiter.limit}) before the call's deadline",
                    request_sent=False,
                )
        try:
            result = await self._attempt(endpoint, body, call, seconds_left, True)
        except BaseException as error:
            limiter.release(ticket, error)
            raise
        limiter.release(ticket, None)
        return result

    async def _exchange(
        self, host: Host, endpoint: Endpoint[Any], body: bytes, call: CallState | None
    ) -> tuple[bytes, int, str | None]:
        """Send one request on an admitted connection; return the answer, status, correlation.

        aiohttp's exceptions are translated, never chained: they hold the request's headers,
        and so the credentials. Redirects are never followed (the API never redirects, and
        following one would send the credentials, even the body, wherever it points).
        """
        what = endpoint.what
        if host.closed or self._closed:
            raise _closed_during(what)
        session = host.session
        headers = self._headers if call is None else call.request_sent(self._headers)
        failure: PolyAIError
        try:
            # The client's own connections, unless a mock replaced aiohttp's path (see _wire).
            wire = host.wire
            if wire is not None and aiohttp.ClientSession._request is _wire.ORIGINAL_REQUEST:
                head = endpoint.head if headers is self._headers else endpoint.head_with(headers)
                answer = await wire.exchange(
                    _wire.frame(head, body), self.max_response_bytes, self.timeouts.connect
                )
                return self._answered(answer, what, call)
            async with session.request(
                endpoint.method,
                endpoint.url,
                data=body,
                headers=headers,
                timeout=self._aiohttp_timeout,
                allow_redirects=False,
            ) as resp:
                return await self._receive(resp, what, call)
        except (*TRANSPORT_ERRORS, _wire.WireError) as exc:
            if self._closed or host.closed:
                failure = _closed_during(what)
            else:
                failure = transport_error(exc, what, proxy=host.proxy)
        except RuntimeError as exc:  # aiohttp: "Session is closed"
            if session.closed or self._closed:
                failure = _closed_during(what)
            else:
                failure = PolyAIError(f"{what} failed: {one_line(str(exc))}")
        raise failure

    def _answered(
        self, answer: _wire.Answer, what: str, call: CallState | None
    ) -> tuple[bytes, int, str | None]:
        """``_receive`` for an answer read on the client's own connections."""
        correlation_id = answer.header(CORRELATION_BYTES)
        status = answer.status
        if call is not None:
            call.answered(status, correlation_id)
        raw = answer.body
        if answer.truncated and status < 300:
            raise self._too_large(status, what, raw)
        if status >= 300:
            raise status_error(status, answer.reason, answer.headers(), raw, what=what)
        return raw, status, correlation_id

    async def _receive(
        self, resp: aiohttp.ClientResponse, what: str, call: CallState | None
    ) -> tuple[bytes, int, str | None]:
        """Read the answer whose status and headers came: its body, status and correlation."""
        correlation_id = resp.headers.get(CORRELATION_HEADER)
        if call is not None:
            call.answered(resp.status, correlation_id)
        # The raw header, not resp.content_length, which re-parses it on every access.
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) <= self.max_response_bytes:
            raw = await resp.read()
        else:
            raw = await self._read(resp, what, length)
        status = resp.status
        if status >= 300:
            raise status_error(status, resp.reason, resp.headers, raw, what=what)
        return raw, status, correlation_id

    async def _read(self, resp: aiohttp.ClientResponse, what: str, length: str | None) -> bytes:
        """Read an answer of unknown or excessive length, at most max_response_bytes of it.

        A success that is larger fails (``ResponseValidationError``); an error page is cut at
        the cap, so that its status still decides the error (a 503 is retried).
        """
        cap = self.max_response_bytes
        error_page = resp.status >= 300
        if not error_page and length is not None and length.isdigit():
            raise self._too_large(resp.status, what, b"")  # announced larger than the cap
        size = 0
        chunks: list[bytes] = []
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > cap:
                if error_page:
                    chunks.append(chunk)
                    return b"".join(chunks)[:cap]
                raise self._too_large(resp.status, what, b"".join(chunks))
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, status: int, what: str, read: bytes) -> ResponseValidationError:
        return ResponseValidationError(
            f"{what} failed: the answer (HTTP {status}) is larger than "
            f"max_response_bytes={self.max_response_bytes}; not read further",
            status=status,
            body=read,
        )

    @staticmethod
    def _parse(raw: bytes, status: int, endpoint: Endpoint[T], correlation_id: str | None) -> T:
        what = endpoint.what
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # Secrets are hidden before the cut, so none is cut in half.
            excerpt = _redact.redact(raw[: _EXCERPT * 8].decode("utf-8", "replace"))[:_EXCERPT]
            raise ResponseValidationError(
                f"{what}: the answer (HTTP {status}) is not JSON: {excerpt!r}",
                status=status,
                body=raw,
            ) from None
        if type(data) is not dict:
            raise ResponseValidationError(
                f"{what}: the answer (HTTP {status}) is not a JSON object but "
                f"{type(data).__name__}",
                status=status,
                body=raw,
            )
        # From the header, never the body: the model's converter reads it from here.
        data["correlation_id"] = correlation_id
        try:
            return endpoint.structure(data, endpoint.answer)
        except cattrs.BaseValidationError as exc:
            detail = "; ".join(cattrs.transform_error(exc, format_exception=_describe))
            raise ResponseValidationError(
                f"{what}: the answer (HTTP {status}) does not match the API: "
                f"{one_line(detail, 300)}",
                status=status,
                body=raw,
            ) from None
