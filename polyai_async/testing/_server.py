"""FakePolyAI: a real HTTP server that speaks the Chat API, for tests and load benchmarks.

It is an aiohttp low-level ``web.Server`` (no router, no middleware, no access log: the three
paths are matched with one dict lookup) behind a ``ServerRunner`` and a ``TCPSite``; the
server's ``connection_made``/``connection_lost`` hooks count TCP connections.

Stopping cancels the handlers that are only sleeping through injected latency (aiohttp keeps a
handler running after its client hung up, and would wait its shutdown grace for it); handlers
doing real work, such as an async agent, get that grace (``_SHUTDOWN_GRACE``) to finish.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import http
import inspect
import logging
import random
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs
import orjson
from aiohttp import web

from .._client import PolyAIClient
from .._errors import CORRELATION_HEADER, ConfigurationError
from .._models import Channel
from ._agents import DEFAULT_GREETING, Agent, AgentReply, ConversationState, DemoAgent
from ._faults import ENDPOINTS, Fault, FaultPlan, Faults

__all__ = ["DEFAULT_CREDENTIALS", "FakePolyAI", "Stats", "run_server"]

logger = logging.getLogger("polyai_async.testing")

_JSON = "application/json"
#: The credentials a FakePolyAI accepts by default: made up, accepted by nothing else.
#: ``python -m polyai_async.testing``, FakeServerProcess and the ``polyai-async`` command use
#: the same ones: ``PolyAIClient(base_url=url, **DEFAULT_CREDENTIALS)``.
DEFAULT_CREDENTIALS: dict[str, str] = {
    "api_key": "test-api-key",
    "token": "test-token",
    "account_id": "ACCOUNT-test",
    "project_id": "PROJECT-test",
}
_CHANNELS = ", ".join(c.value for c in Channel)
_CHANNEL_VALUES = frozenset(c.value for c in Channel)
_METHODS = {"create": "POST", "respond": "POST", "close": "PUT"}
_CLOSED = orjson.dumps({"success": True})
# A 200 cut off mid-object, as a broken proxy or a truncated write would leave it.
_MALFORMED = b'{"conversation_id": "CONV-'
# A request past Faults.concurrency_limit: a 429 with Retry-After, never processed.
_OVER_CAPACITY = Fault("status", "429", 429)
# Thousands of clients connect at once in load benchmarks; the default backlog (128) drops SYNs.
_BACKLOG = 4096
# Closed conversations a server remembers whole by default (about 1.3 KB each): a soak of hours
# holds ~13 MB of them, while a test still reads back every conversation it made.
KEEP_CLOSED = 10_000
# How long stopping waits for a handler doing real work (an async agent) before cancelling it.
# A short grace: a test's server must not hold its teardown for a minute.
_SHUTDOWN_GRACE = 1.0

# The documented request fields, with the JSON type each must have; others are ignored.
_FIELDS: dict[str, dict[str, type]] = {
    "create": {
        "integration_attributes": dict,
        "variant_id": str,
        "channel": str,
        "asr_lang_code": str,
        "tts_lang_code": str,
    },
    "respond": {
        "conversation_id": str,
        "message": str,
        "metadata": dict,
        "integration_attributes": dict,
        "asr_lang_code": str,
        "tts_lang_code": str,
    },
    "close": {"conversation_id": str},
}
_JSON_TYPES = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
    list: "an array",
    dict: "an object",
}
# The ``error`` field: the API's names where documented, else the status's phrase.
_ERROR_NAMES = {410: "ChatConversationEnded"}


def _error_name(status: int) -> str:
    name = _ERROR_NAMES.get(status)
    if name is None:
        try:
            name = http.HTTPStatus(status).phrase.replace(" ", "")
        except ValueError:
            name = "Error"
    return name


def _error_code(status: int) -> str:
    try:
        return http.HTTPStatus(status).name
    except ValueError:
        return "ERROR"


class _Reject(Exception):
    """An error answer, raised anywhere in a request's handling."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _invalid(message: str) -> _Reject:
    return _Reject(400, "INVALID_REQUEST", message)


@attrs.define
class Stats:
    """What the fake server saw; every counter starts at zero.

    Attributes:
        requests: requests per endpoint (``create``, ``respond``, ``close``), counted once
            the path names the endpoint, whatever the outcome; ``unknown`` for other paths.
        attempts: respond and close requests per conversation id they named, faulted
            ones included: more than the turns sent means the client retried. Only for the
            conversations the server remembers (see ``FakePolyAI.keep_closed``).
        faults: faults injected, by name (``500``, ``429``, ``reset``, ``malformed``...,
            and ``latency`` for each delayed request).
        lost_answers: requests per endpoint that were processed but whose answer the client
            never got (a fault after processing, or the client hung up): ambiguous failures.
        connections_accepted: TCP connections accepted.
        open_connections: TCP connections open now.
        max_open_connections: the most TCP connections open at once.
        in_flight: requests being processed now (from their arrival at an endpoint to
            their answer), those refused by ``Faults.concurrency_limit`` not included.
        max_in_flight: the most requests processed at once.
        agent_waiting: respond turns waiting now for a slot of ``agent_capacity``.
        max_agent_waiting: the most turns that waited for a slot at once.
    """

    requests: Counter[str] = attrs.Factory(Counter)
    attempts: Counter[str] = attrs.Factory(Counter)
    faults: Counter[str] = attrs.Factory(Counter)
    lost_answers: Counter[str] = attrs.Factory(Counter)
    connections_accepted: int = 0
    open_connections: int = 0
    max_open_connections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    agent_waiting: int = 0
    max_agent_waiting: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as plain JSON-ready data (the CLI prints it on exit)."""
        return attrs.asdict(self)


class _CountingServer(web.Server):
    """aiohttp's low-level server, counting TCP connections into a Stats.

    ``web.Server`` is told of every connection by its protocol (``RequestHandler``) exactly
    once when it opens and once when it closes, so these two hooks see every TCP connection.
    """

    def __init__(self, handler: Any, stats: Stats, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.stats = stats

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        stats = self.stats
        stats.connections_accepted += 1
        stats.open_connections += 1
        stats.max_open_connections = max(stats.max_open_connections, stats.open_connections)

    def connection_lost(
        self, handler: web.RequestHandler, exc: BaseException | None = None
    ) -> None:
        super().connection_lost(handler, exc)
        self.stats.open_connections -= 1


class FakePolyAI:
    """A real HTTP server on 127.0.0.1 that speaks the PolyAI Chat API, with faults on demand.

    ``async with FakePolyAI() as fake:`` starts it on a free port; ``fake.client()`` makes a
    PolyAIClient wired to it. It checks paths, credentials and bodies as the API documents,
    keeps each conversation's state, lets an agent answer, injects faults, and counts
    everything in ``fake.stats``.

    Args:
        host: the address to listen on.
        port: the port; 0 picks a free one (read it from ``fake.url`` or ``fake.port``).
        api_key: the ``X-API-KEY`` it accepts.
        token: the ``X-TOKEN`` it accepts.
        account_id: the account in the path it accepts.
        project_id: the project in the path it accepts.
        version: the API version in the path it accepts.
        agent: answers each message: a callable ``(message, state) -> AgentReply | str``,
            plain or async; its ``greeting`` attribute, if any, answers create.
            Default: DemoAgent.
        faults: the faults to inject (changeable later through ``fake.faults``).
        seed: seeds the random sources behind faults, latency and ids: with the same seed the
            n-th request the faults apply to gets the same fault.
        legacy_errors: answer errors in the older shape ``{"error_message": ...}``.
        agent_capacity: respond turns the agent works on at once, None for no limit (the
            default: answers take no time whatever the load). With N, each respond turn holds
            one of N slots for ``agent_latency`` plus up to ``agent_latency_jitter`` seconds
            (uniformly random), then the agent answers; turns beyond N wait for a slot, first
            come first served. Create and close take no slot. Such an agent sustains at most
            ``agent_turns_per_second`` (N / mean latency) turns a second: past that, its queue
            and its latency grow without bound, the knee a capacity search looks for.
        agent_latency: the seconds a turn holds its slot (with ``agent_capacity``).
        agent_latency_jitter: up to this many more seconds a turn, uniformly random.
        keep_closed: how many closed conversations it remembers whole (``conversations``,
            ``stats.attempts``), the most recently closed; older ones are forgotten, so a
            long soak's memory stays flat. A forgotten id still answers as a closed one
            does (respond 410, close 200): the ids carry a keyed check, so the server knows
            its own ids without keeping them. An id it never made answers 404.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "test-api-key",
        token: str = "test-token",  # noqa: S107 - the fake's own credential
        account_id: str = "ACCOUNT-test",
        project_id: str = "PROJECT-test",
        version: str = "v1",
        agent: Agent | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        legacy_errors: bool = False,
        agent_capacity: int | None = None,
        agent_latency: float = 0.1,
        agent_latency_jitter: float = 0.0,
        keep_closed: int = KEEP_CLOSED,
    ) -> None:
        if isinstance(keep_closed, bool) or not isinstance(keep_closed, int) or keep_closed < 0:
            raise ConfigurationError(
                f"keep_closed must be a whole number >= 0, got {keep_closed!r}"
            )
        if agent_capacity is not None and (
            isinstance(agent_capacity, bool)
            or not isinstance(agent_capacity, int)
            or agent_capacity < 1
        ):
            raise ValueError(
                f"agent_capacity must be a whole number >= 1 or None, got {agent_capacity!r}"
            )
        for name, seconds in (
            ("agent_latency", agent_latency),
            ("agent_latency_jitter", agent_latency_jitter),
        ):
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not seconds >= 0
            ):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {seconds!r}")
            if seconds == float("inf"):
                raise ValueError(f"{name} must be a finite number of seconds, got {seconds!r}")
        self.host = host
        self.port = port
        self.api_key = api_key
        self.token = token
        self.account_id = account_id
        self.project_id = project_id
        self.version = version
        self.agent: Agent = agent if agent is not None else DemoAgent()
        self.legacy_errors = legacy_errors
        self.agent_capacity = agent_capacity
        self.agent_latency = float(agent_latency)
        self.agent_latency_jitter = float(agent_latency_jitter)
        # asyncio.Semaphore wakes its waiters in the order they came (FIFO).
        self._slots = None if agent_capacity is None else asyncio.Semaphore(agent_capacity)
        # The slots' latency draws from a source of its own, so faults stay as the seed says.
        self._slot_rng = random.Random(seed)  # noqa: S311 - simulated latency, not secrets
        self.stats = Stats()
        self.keep_closed = keep_closed
        #: The conversations it remembers, by id: every open one, and the last
        #: ``keep_closed`` closed ones.
        self.conversations: dict[str, ConversationState] = {}
        # The ids of the closed conversations it remembers, the oldest first.
        self._closed: collections.deque[str] = collections.deque()
        # Faults draw from one source and ids from another, so the n-th request's fault
        # depends only on the seed, not on how many ids were made before it.
        self._rng = random.Random(seed)  # noqa: S311 - repeatable test faults, not secrets
        self._ids = random.Random(seed)  # noqa: S311 - ids need only be unique per server
        # Signs the conversation ids, so a forgotten one is still known for this server's own.
        self._id_key = self._ids.getrandbits(128).to_bytes(16, "big")
        self._plan = FaultPlan(faults or Faults(), self._rng)
        prefix = f"/{version}/{account_id}/{project_id}/chat/"
        self._routes = {prefix + endpoint: endpoint for endpoint in ENDPOINTS}
        self._runner: web.ServerRunner | None = None
        self._url: str | None = None
        # Handlers sleeping through injected latency, cancelled when the server stops.
        self._delayed: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # -- configuration and counters --------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The faults injected now; assign a new Faults to change them (its script restarts)."""
        return self._plan.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._plan = FaultPlan(faults, self._rng)

    @property
    def requests(self) -> Counter[str]:
        """Requests per endpoint: ``fake.requests["respond"]`` (the same as ``stats.requests``)."""
        return self.stats.requests

    @property
    def turns(self) -> dict[str, list[str | None]]:
        """The user messages recorded per conversation id; a duplicated turn shows twice."""
        return {cid: state.turns for cid, state in self.conversations.items()}

    def duplicated_turns(self) -> dict[str, int]:
        """Count, per conversation, turns recorded twice because an answer was lost and retried.

        A turn counts when it repeats the turn before it and that turn's answer never reached
        the client: what a retry after an ambiguous failure does. Conversations with none are
        left out, so ``{}`` means no duplicates.
        """
        counts = {cid: state.duplicated_turns() for cid, state in self.conversations.items()}
        return {cid: n for cid, n in counts.items() if n}

    @property
    def agent_turns_per_second(self) -> float | None:
        """The most respond turns a second the agent sustains: ``agent_capacity`` / mean latency.

        None without ``agent_capacity`` (no limit), or with a latency of zero.
        """
        mean = self.agent_latency + self.agent_latency_jitter / 2
        if self.agent_capacity is None or mean <= 0:
            return None
        return self.agent_capacity / mean

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's origin, such as ``http://127.0.0.1:54321``; set once started."""
        if self._url is None:
            raise RuntimeError("the FakePolyAI is not running: use `async with` or start()")
        return self._url

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``aclose()``."""
        return self._runner is not None

    async def start(self) -> None:
        """Start listening; ``port`` and ``url`` then hold the real port."""
        if self._runner is not None:
            raise RuntimeError("this FakePolyAI is already running")
        server = _CountingServer(self._handle, self.stats, access_log=None)
        runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=_SHUTDOWN_GRACE)
        self._stopping = False
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, backlog=_BACKLOG)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"http://{host}:{self.port}"

    async def aclose(self) -> None:
        """Stop the server and close its connections. Idempotent.

        Requests still waiting out injected latency are cancelled at once (their clients see
        the connection close, as from a server going down); a request an async agent is still
        answering gets up to a second to finish before it is cancelled too.
        """
        runner, self._runner = self._runner, None
        if runner is not None:
            self._stopping = True
            for task in list(self._delayed):
                task.cancel()
            await runner.cleanup()

    async def __aenter__(self) -> FakePolyAI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def client(self, **overrides: Any) -> PolyAIClient:
        """Make a PolyAIClient for this server; keyword arguments override or add settings.

        The caller closes it: ``async with fake.client(retry=RetryPolicy(...)) as client:``.
        """
        options: dict[str, Any] = {
            "base_url": self.url,
            "api_key": self.api_key,
            "token": self.token,
            "account_id": self.account_id,
            "project_id": self.project_id,
            "version": self.version,
        }
        options.update(overrides)
        return PolyAIClient(**options)

    def __repr__(self) -> str:
        where = self._url if self._runner is not None else "stopped"
        return f"<FakePolyAI {where} conversations={len(self.conversations)}>"

    # -- the request path ------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            endpoint = self._route(request)
            body = self._parse(await request.read(), endpoint)
            conversation_id = body.get("conversation_id")
            if conversation_id in self.conversations:  # not for ids forgotten or never made
                self.stats.attempts[conversation_id] += 1
            plan = self._plan
            stats = self.stats
            limit = plan.faults.concurrency_limit
            if limit is not None and stats.in_flight >= limit:
                stats.faults["429"] += 1  # over capacity: refused before it is processed
                return self._inject(request, _OVER_CAPACITY, plan)
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                return await self._handle_admitted(request, endpoint, body, plan)
            finally:
                stats.in_flight -= 1
        except _Reject as reject:
            return self._error(reject.status, reject.code, reject.message)

    async def _handle_admitted(
        self, request: web.BaseRequest, endpoint: str, body: dict[str, Any], plan: FaultPlan
    ) -> web.StreamResponse:
        try:
            fault = None
            if endpoint in plan.faults.endpoints:
                if plan.delays:
                    self.stats.faults["latency"] += 1
                    await self._delay(plan.delay())
                fault = plan.draw()
            if fault is not None:
                self.stats.faults[fault.name] += 1
                if fault.after:
                    # Processed, whatever came of it; then the answer is lost to the fault.
                    with contextlib.suppress(_Reject):
                        _, turn = await self._process(endpoint, body, request)
                        self._lose(endpoint, body, turn)
                return self._inject(request, fault, plan)
            answer, turn = await self._process(endpoint, body, request)
            transport = request.transport
            if transport is None or transport.is_closing():
                self._lose(endpoint, body, turn)  # the client gave up waiting
            return self._answer(200, answer)
        except _Reject as reject:
            return self._error(reject.status, reject.code, reject.message)

    async def _delay(self, seconds: float) -> None:
        """Sleep through injected latency; cancelled if the server stops meanwhile."""
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel at stop
            await asyncio.sleep(seconds)
            return
        if self._stopping:
            task.cancel()  # the server is going down: not worth the wait
        self._delayed.add(task)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._delayed.discard(task)

    async def _hold_slot(self, request: web.BaseRequest | None) -> None:
        """Wait for one of the agent's slots, hold it for a turn's latency, give it back.

        A turn whose client hung up while it waited gives its slot back at once (the agent
        would answer nobody), so an overload drains as its clients give up rather than
        outliving them. Cancelled like injected latency when the server stops (``_delay``).
        """
        assert self._slots is not None  # noqa: S101 - called only with agent_capacity
        task = asyncio.current_task()
        if task is not None:
            if self._stopping:
                task.cancel()
            self._delayed.add(task)
        stats = self.stats
        stats.agent_waiting += 1
        stats.max_agent_waiting = max(stats.max_agent_waiting, stats.agent_waiting)
        waiting = True
        try:
            async with self._slots:
                stats.agent_waiting -= 1
                waiting = False
                transport = None if request is None else request.transport
                if request is not None and (transport is None or transport.is_closing()):
                    return
                jitter = self.agent_latency_jitter
                await asyncio.sleep(
                    self.agent_latency + (self._slot_rng.uniform(0, jitter) if jitter else 0.0)
                )
        finally:
            if waiting:  # cancelled in the queue
                stats.agent_waiting -= 1
            if task is not None:
                self._delayed.discard(task)

    def _route(self, request: web.BaseRequest) -> str:
        path = request.path
        endpoint = self._routes.get(path)
        if endpoint is None:
            self.stats.requests["unknown"] += 1
            parts = path.split("/")
            if len(parts) == 6 and parts[4] == "chat" and parts[5] in ENDPOINTS:
                self._authenticate(request)
                for name, got, expected in (
                    ("API version", parts[1], self.version),
                    ("account", parts[2], self.account_id),
                    ("project", parts[3], self.project_id),
                ):
                    if got != expected:
                        raise _Reject(404, "NOT_FOUND", f"unknown {name} {got!r}")
            raise _Reject(404, "NOT_FOUND", f"no such endpoint: {request.method} {path}")
        self.stats.requests[endpoint] += 1
        if request.method != _METHODS[endpoint]:
            raise _Reject(
                405,
                "METHOD_NOT_ALLOWED",
                f"{endpoint} takes {_METHODS[endpoint]}, not {request.method}",
            )
        self._authenticate(request)
        return endpoint

    def _authenticate(self, request: web.BaseRequest) -> None:
        headers = request.headers
        for header, expected in (("X-API-KEY", self.api_key), ("X-TOKEN", self.token)):
            value = headers.get(header)
            if value is None:
                raise _Reject(401, "UNAUTHORIZED", f"the {header} header is missing")
            if value != expected:
                raise _Reject(401, "UNAUTHORIZED", f"the {header} header is not valid")

    @staticmethod
    def _parse(raw: bytes, endpoint: str) -> dict[str, Any]:
        required = endpoint != "create"
        if not raw.strip():
            if required:
                raise _invalid("the request body is required: a JSON object with conversation_id")
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _invalid(f"the request body is not valid JSON: {exc}") from None
        if type(body) is not dict:
            raise _invalid(f"the request body must be a JSON object, not {_json_type(body)}")
        fields = _FIELDS[endpoint]
        for key, value in body.items():
            expected = fields.get(key)
            if expected is not None and type(value) is not expected:
                raise _invalid(f"{key} must be {_JSON_TYPES[expected]}, not {_json_type(value)}")
        if required and "conversation_id" not in body:
            raise _invalid("conversation_id is required")
        # Checked where the field is documented (create), and so known to be a string.
        channel = body.get("channel") if "channel" in fields else None
        if channel is not None and channel not in _CHANNEL_VALUES:
            raise _invalid(f"channel must be one of {_CHANNELS}, not {channel!r}")
        return body

    async def _process(
        self, endpoint: str, body: dict[str, Any], request: web.BaseRequest | None = None
    ) -> tuple[bytes, int | None]:
        """Run an endpoint on a valid body; return the answer and, for respond, the turn index."""
        if endpoint == "respond":
            return await self._respond(body, request)
        if endpoint == "create":
            return self._create(body), None
        state = self._conversation(body["conversation_id"])
        if state is not None and not state.closed:
            self._close(state)
        return _CLOSED, None

    def _close(self, state: ConversationState) -> None:
        """Mark it closed; forget the oldest closed ones beyond ``keep_closed``."""
        state.closed = True
        closed = self._closed
        closed.append(state.conversation_id)
        while len(closed) > self.keep_closed:
            forgotten = closed.popleft()
            self.conversations.pop(forgotten, None)
            self.stats.attempts.pop(forgotten, None)

    def _sign(self, token: str) -> str:
        return hashlib.blake2b(token.encode(), key=self._id_key, digest_size=4).hexdigest()

    def _made_here(self, conversation_id: str) -> bool:
        """Whether this server made the id (a forgotten one included), from its signature."""
        token = conversation_id.removeprefix("CONV-")
        return (
            len(token) == 24
            and conversation_id.startswith("CONV-")
            and self._sign(token[:16]) == token[16:]
        )

    def _create(self, body: dict[str, Any]) -> bytes:
        token = self._new_id()
        conversation_id = f"CONV-{token}{self._sign(token)}"
        greeting = getattr(self.agent, "greeting", DEFAULT_GREETING)
        self.conversations[conversation_id] = ConversationState(
            conversation_id,
            channel=body.get("channel"),
            variant_id=body.get("variant_id"),
            asr_lang_code=body.get("asr_lang_code"),
            tts_lang_code=body.get("tts_lang_code"),
            integration_attributes=dict(body.get("integration_attributes") or {}),
            replies=[greeting],
        )
        return orjson.dumps({"conversation_id": conversation_id, "response": greeting})

    async def _respond(
        self, body: dict[str, Any], request: web.BaseRequest | None = None
    ) -> tuple[bytes, int]:
        conversation_id: str = body["conversation_id"]
        state = self._conversation(conversation_id)
        if state is None or state.closed or state.ended:
            raise _Reject(
                410,
                "CHAT_CONVERSATION_ENDED",
                f"conversation {conversation_id} has "
                + ("ended" if state is not None and not state.closed else "been closed")
                + "; start a new one",
            )
        message: str | None = body.get("message")
        state.metadata = body.get("metadata")
        if "integration_attributes" in body:
            state.integration_attributes.update(body["integration_attributes"])
        if self._slots is not None:
            await self._hold_slot(request)
        state.turns.append(message)
        turn = len(state.turns) - 1
        try:
            result = self.agent(message, state)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            logger.exception("the fake server's agent failed")
            raise _Reject(500, "AGENT_ERROR", f"the agent failed: {exc!r}") from None
        reply = result if isinstance(result, AgentReply) else AgentReply(str(result))
        state.replies.append(reply.text)
        answer: dict[str, Any] = {
            "conversation_id": conversation_id,
            "response": reply.text,
            "end_conversation": reply.ends,
        }
        if reply.handoff is not None:
            answer["handoff"] = {
                "destination": reply.handoff.destination,
                "reason": reply.handoff.reason,
            }
        if reply.ends:
            state.ended = True
        return orjson.dumps(answer), turn

    def _conversation(self, conversation_id: str) -> ConversationState | None:
        """Its state; None for one closed and forgotten; a 404 for an id it never made."""
        state = self.conversations.get(conversation_id)
        if state is None and not self._made_here(conversation_id):
            raise _Reject(
                404, "CONVERSATION_NOT_FOUND", f"conversation {conversation_id!r} does not exist"
            )
        return state

    def _lose(self, endpoint: str, body: dict[str, Any], turn: int | None) -> None:
        self.stats.lost_answers[endpoint] += 1
        state = self.conversations.get(body.get("conversation_id", ""))
        if turn is not None and state is not None:  # closed and forgotten meanwhile
            state.lost_replies.add(turn)

    # -- answers ---------------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"{self._ids.getrandbits(64):016x}"

    def _answer(
        self, status: int, body: bytes, correlation_id: str | None = None, **headers: str
    ) -> web.Response:
        correlation_id = correlation_id or self._new_id()
        return web.Response(
            status=status,
            body=body,
            headers={"Content-Type": _JSON, CORRELATION_HEADER: correlation_id, **headers},
        )

    def _error(self, status: int, code: str, message: str, **headers: str) -> web.Response:
        correlation_id = self._new_id()
        if self.legacy_errors:
            body: dict[str, Any] = {"error_message": message}
        else:
            body = {
                "success": False,
                "error": _error_name(status),
                "error_id": correlation_id,
                "error_code": code,
                "error_message": message,
                "data": None,
            }
        return self._answer(status, orjson.dumps(body), correlation_id, **headers)

    def _inject(self, request: web.BaseRequest, fault: Fault, plan: FaultPlan) -> web.Response:
        if fault.kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            # aiohttp finds the connection gone when it writes this, and drops it quietly.
            return web.Response(status=500)
        if fault.kind == "malformed":
            return self._answer(200, _MALFORMED)
        message = f"injected fault: HTTP {fault.status}"
        if fault.status == 429:
            return self._error(429, "RATE_LIMITED", message, **{"Retry-After": plan.retry_after})
        return self._error(fault.status, _error_code(fault.status), message)


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


async def run_server(
    fake: FakePolyAI,
    *,
    on_ready: Callable[[FakePolyAI], object] | None = None,
    stop: asyncio.Event | None = None,
) -> Stats:
    """Run ``fake`` until SIGINT or SIGTERM (or until ``stop`` is set), then close it cleanly.

    Args:
        fake: the server to run (not yet started).
        on_ready: called once it listens, with the running fake (to print its URL).
        stop: an event that stops the server when set, as a signal would.

    Returns:
        The server's Stats, final.
    """
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            continue
        installed.append(sig)
    try:
        async with fake:
            if on_ready is not None:
                on_ready(fake)
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return fake.stats
