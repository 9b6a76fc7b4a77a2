"""PolyAIClient: the three calls of the Chat API over a pooled session, with retries."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Generic, TypeVar

import aiohttp
import cattrs
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import _models
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
from ._conversation import Conversation
from ._errors import (
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

__all__ = ["PolyAIClient"]

T = TypeVar("T")

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # pragma: no cover - aiohttp installs async-timeout on 3.10
    from async_timeout import timeout as _timeout

try:
    _USER_AGENT = f"polyai-async/{version('polyai-async')}"
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    _USER_AGENT = "polyai-async"

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


class _Endpoint(Generic[T]):
    """One call of the API, with everything it needs built once (private helper)."""

    __slots__ = ("answer", "idempotent", "method", "structure", "url", "what")

    def __init__(self, method: str, url: URL, answer: type[T], what: str, idempotent: bool) -> None:
        self.method = method
        self.url = url
        self.answer = answer
        self.what = what
        self.idempotent = idempotent
        # cattrs' generated function for the answer, skipping its dispatch on every call.
        self.structure: Callable[[Any, type[T]], T] = _models.converter.get_structure_hook(answer)


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
    ) -> None:
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
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError("retry must be a RetryPolicy")
        self.retry_policy = retry if retry is not None else RetryPolicy()
        self.timeouts = Timeouts.coerce(timeout)
        if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int):
            raise ConfigurationError("max_response_bytes must be a whole number of bytes")
        if max_response_bytes < 1:
            raise ConfigurationError("max_response_bytes must be at least 1")
        self.max_response_bytes = max_response_bytes
        if pool is not None and limits is not None:
            raise ConfigurationError(
                "pass limits or pool, not both: a shared pool keeps its own limits"
            )
        if pool is not None and not isinstance(pool, SessionPool):
            raise ConfigurationError("pool must be a SessionPool")
        self._owns_pool = pool is None
        self.pool = pool if pool is not None else SessionPool(limits=limits or PoolLimits())

        headers = {
            "X-API-KEY": api_key,
            "X-TOKEN": token,
            "Content-Type": "application/json",
            "Accept": "application/json",
            # Chat answers are a few hundred bytes: compression saves nothing, and a compressed
            # answer could inflate far past max_response_bytes (the pool does not decode one).
            "Accept-Encoding": "identity",
            "User-Agent": _USER_AGENT,
        }
        # Built once: every call reuses these. A multidict, because aiohttp copies a plain dict
        # into one on every request (some 5,000 instructions of a request's ~590,000).
        self._headers = CIMultiDictProxy(CIMultiDict(headers))
        chat = self.base_url / self.version / self.account_id / self.project_id / "chat"
        self._create = _Endpoint("POST", chat / "create", CreateChatResponse, "create_chat", False)
        self._respond = _Endpoint("POST", chat / "respond", RespondChatResponse, "respond", False)
        self._close = _Endpoint("PUT", chat / "close", CloseChatResponse, "close_chat", True)
        self._origin = self.base_url.origin()
        self._retrier = Retrier(self.retry_policy)
        # aiohttp bounds only the opening of a connection; the attempt's own timer does the rest
        # (one timer per attempt: aiohttp's sock_read timer is re-armed on every chunk).
        self._aiohttp_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeouts.connect
        )
        self._host: Host | None = None
        self._closed = False

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
        return await self._call(self._respond, _encode(request))

    async def close_chat(self, conversation_id: str) -> CloseChatResponse:
        """Close a conversation. Safe to retry: close is idempotent."""
        request = CloseChatRequest(conversation_id=_check_id(conversation_id))
        return await self._call(self._close, _encode(request))

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

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` has been called."""
        return self._closed

    async def aclose(self) -> None:
        """Close the client, and its pool if it made it. Calls after this fail. Idempotent."""
        self._closed = True
        self._host = None
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
    def retry_budget(self) -> float | None:
        """Tokens left in this client's retry budget (None when the policy has none)."""
        return self._retrier.budget_tokens

    # -- the hot path ----------------------------------------------------------------------

    async def _call(self, endpoint: _Endpoint[T], body: bytes) -> T:
        if self._closed:
            raise ClientClosedError(f"{endpoint.what}: this PolyAIClient is closed; make a new one")
        loop = asyncio.get_running_loop()
        started = loop.time()
        host = self._host
        if host is not None and host.loop is not loop:
            self._host = None  # made under another asyncio.run: this loop needs its own session
        try:
            # The first attempt runs here; the retry machinery is entered only on a failure.
            result = await self._attempt(endpoint, body, self.retry_policy.deadline)
        except PolyAIError as error:
            try:
                return await self._retrier.retry(
                    functools.partial(self._attempt, endpoint, body),
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

    async def _attempt(self, endpoint: _Endpoint[T], body: bytes, seconds_left: float) -> T:
        host = self._host
        if host is None or host.closed:
            if self._closed:
                raise _closed_during(endpoint.what)
            host = self._host = self.pool.host(self._origin)
        gate = host.gate
        admitted = False
        try:
            # One timer bounds the attempt: the wait for a connection and the request itself.
            async with _timeout(min(seconds_left, self.timeouts.read)):
                await gate.acquire()  # in arrival order; at once while connections are free
                admitted = True
                try:
                    raw, status = await self._exchange(host, endpoint, body)
                finally:
                    gate.release()
        except asyncio.TimeoutError:
            pass  # raised below, outside this block, so that nothing is chained to it
        else:
            return self._parse(raw, status, endpoint)
        if admitted:
            raise APITimeoutError(f"{endpoint.what} failed: timed out waiting for the answer")
        raise APITimeoutError(
            f"{endpoint.what} failed: no connection came free in time (all "
            f"{self.pool.limits.max_connections} were busy; see PoolLimits)",
            request_sent=False,
        )

    async def _exchange(
        self, host: Host, endpoint: _Endpoint[Any], body: bytes
    ) -> tuple[bytes, int]:
        """Send one request on an admitted connection; return the raw answer and its status.

        aiohttp's exceptions are translated, never chained: they hold the request's headers,
        and so the credentials. Redirects are never followed (the API never redirects, and
        following one would send the credentials, even the body, wherever it points).
        """
        what = endpoint.what
        if host.closed or self._closed:
            raise _closed_during(what)
        session = host.session
        failure: PolyAIError
        try:
            async with session.request(
                endpoint.method,
                endpoint.url,
                data=body,
                headers=self._headers,
                timeout=self._aiohttp_timeout,
                allow_redirects=False,
            ) as resp:
                # The raw header, not resp.content_length, which re-parses it on every access.
                length = resp.headers.get("Content-Length")
                if (
                    length is not None
                    and length.isdigit()
                    and int(length) <= self.max_response_bytes
                ):
                    raw = await resp.read()
                else:
                    raw = await self._read(resp, what, length)
                status = resp.status
                if status >= 300:
                    raise status_error(status, resp.reason, resp.headers, raw, what=what)
                return raw, status
        except TRANSPORT_ERRORS as exc:
            if self._closed or host.closed:
                failure = _closed_during(what)
            else:
                failure = transport_error(exc, what)
        except RuntimeError as exc:  # aiohttp: "Session is closed"
            if session.closed or self._closed:
                failure = _closed_during(what)
            else:
                failure = PolyAIError(f"{what} failed: {one_line(str(exc))}")
        raise failure

    async def _read(self, resp: aiohttp.ClientResponse, what: str, length: str | None) -> bytes:
        """Read an answer of unknown or excessive length, at most max_response_bytes of it.

        A success that is larger fails (``ResponseValidationError``); an error page is cut at
        the cap, so that its status still decides the error (a 503 is retried).
        """
        cap = self.max_response_bytes
        error_page = resp.status >= 300
        if not error_page and length is not None and length.isdigit():
            raise self._too_large(resp, what, b"")  # announced larger than the cap
        size = 0
        chunks: list[bytes] = []
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > cap:
                if error_page:
                    chunks.append(chunk)
                    return b"".join(chunks)[:cap]
                raise self._too_large(resp, what, b"".join(chunks))
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(
        self, resp: aiohttp.ClientResponse, what: str, read: bytes
    ) -> ResponseValidationError:
        return ResponseValidationError(
            f"{what} failed: the answer (HTTP {resp.status}) is larger than "
            f"max_response_bytes={self.max_response_bytes}; not read further",
            status=resp.status,
            body=read,
        )

    @staticmethod
    def _parse(raw: bytes, status: int, endpoint: _Endpoint[T]) -> T:
        what = endpoint.what
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            excerpt = raw[:_EXCERPT].decode("utf-8", "replace")
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
