"""An asyncio event loop in a real OS thread, and the way its results reach gevent.

Importing locust monkey-patches the interpreter with gevent: ``threading.Thread`` becomes a
greenlet, ``socket.getaddrinfo`` a gevent call and ``selectors.DefaultSelector`` gevent's
selector. An asyncio loop must not run on any of those, so this module takes gevent's saved
originals: ``_thread.start_new_thread`` for a native thread (the saved ``threading.Thread``
still takes its locks from the patched module: joining it raises gevent's LoopExit), an
epoll (or poll/select) selector, the blocking ``getaddrinfo`` run in a native thread per
look-up, and standard sockets under its transports (see ``_NativeLoop``).

The other way round, nothing on the asyncio thread may touch a gevent object (they are not
thread-safe). Results go into an ``Inbox``: a deque (appends are atomic) plus a gevent hub
``async_`` watcher, whose ``send()`` is the one gevent call documented as safe from another
thread. A greenlet on the gevent side drains the deque and runs each callback there, so
Locust's events and stats are only ever touched from the gevent thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import selectors
import socket
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.monkey

__all__ = ["Inbox", "LoopThread"]

logger = logging.getLogger("polyai_async.locust")

T = TypeVar("T")

_start_new_thread: Callable[..., int] = gevent.monkey.get_original("_thread", "start_new_thread")
_allocate_lock: Callable[[], Any] = gevent.monkey.get_original("_thread", "allocate_lock")
_getaddrinfo: Callable[..., Any] = gevent.monkey.get_original("socket", "getaddrinfo")
_NativeSocket: type[socket.socket] = gevent.monkey.get_original("socket", "socket")


def _original_selector() -> selectors.BaseSelector:
    for name in ("EpollSelector", "KqueueSelector", "PollSelector", "SelectSelector"):
        try:
            cls = gevent.monkey.get_original("selectors", name)
        except AttributeError:  # pragma: no cover - not on this platform
            continue
        if cls is not None:
            selector: selectors.BaseSelector = cls()
            return selector
    raise RuntimeError("no selector that gevent left unpatched")  # pragma: no cover


def _native(sock: socket.socket) -> socket.socket:
    """The same connection as a standard socket object (gevent's wrapper costs every call)."""
    if type(sock) is _NativeSocket:
        return sock
    native = _NativeSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    native.setblocking(False)
    return native


class _NativeLoop(asyncio.SelectorEventLoop):
    """A selector loop on standard sockets whose DNS look-ups block a native thread.

    asyncio and aiohappyeyeballs make their sockets with the patched ``socket.socket``;
    gevent's socket works in non-blocking mode but adds a Python layer to every send and
    receive (a few percent of the loop's CPU under load), so each connection's socket is
    swapped for a standard one on the same file descriptor when its transport is made.
    """

    def _make_socket_transport(
        self, sock: socket.socket, *args: Any, **kwargs: Any
    ) -> asyncio.Transport:
        # Neither method is in typeshed: they are asyncio's private hooks (3.10-3.13 alike).
        transport: asyncio.Transport = super()._make_socket_transport(  # type: ignore[misc]
            _native(sock), *args, **kwargs
        )
        return transport

    def _make_ssl_transport(
        self, rawsock: socket.socket, *args: Any, **kwargs: Any
    ) -> asyncio.Transport:
        transport: asyncio.Transport = super()._make_ssl_transport(  # type: ignore[misc]
            _native(rawsock), *args, **kwargs
        )
        return transport

    async def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:
        future: asyncio.Future[list[tuple[Any, ...]]] = self.create_future()

        def resolve() -> None:
            try:
                answer = _getaddrinfo(host, port, family, type, proto, flags)
            except BaseException as exc:  # handed to the awaiting task
                self.call_soon_threadsafe(_fail, future, exc)
            else:
                self.call_soon_threadsafe(_succeed, future, answer)

        _start_new_thread(resolve, ())
        return await future


def _succeed(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class Inbox:
    """Callbacks from any thread, run in order on the gevent thread that made the inbox.

    ``post(fn, *args)`` may be called from any thread; ``fn(*args)`` then runs in a greenlet
    of the gevent hub this inbox was made on. Exceptions are logged, never lost.
    """

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._wake = gevent.event.Event()
        self._watcher = gevent.get_hub().loop.async_()
        self._watcher.start(self._wake.set)
        self._closed = False
        self._greenlet = gevent.spawn(self._drain)

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the gevent thread soon (thread-safe)."""
        self._queue.append((fn, args))
        self._watcher.send()

    def _drain(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait()
            self._wake.clear()
            while queue:
                fn, args = queue.popleft()
                try:
                    fn(*args)
                except Exception:
                    logger.exception("a callback failed")
            if self._closed:
                return

    def close(self) -> None:
        """Run what is queued, then stop (gevent thread only)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._greenlet.join(timeout=5)
        self._watcher.stop()
        self._watcher.close()


class LoopThread:
    """An asyncio event loop running in its own native thread, for gevent code to use.

    ``start()`` returns once the loop runs; ``submit`` runs a coroutine on it and calls back
    with its outcome on the gevent thread (through the inbox); ``stop()`` cancels what is
    left, closes the loop and joins the thread.
    """

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = gevent.event.Event()
        self._finished = _allocate_lock()
        self._stopped = gevent.event.Event()

    def start(self, timeout: float = 10.0) -> None:
        """Start the thread and its loop; returns when the loop is running."""
        self._finished.acquire()
        _start_new_thread(self._run, ())
        if not self._ready.wait(timeout):
            raise RuntimeError("the asyncio loop thread did not start")

    def _run(self) -> None:
        loop = _NativeLoop(_original_selector())
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.call_soon(self.inbox.post, self._ready.set)
            loop.run_forever()
            # Cancel what stop() left behind, so that nothing is destroyed while pending.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
            self._finished.release()
            self.inbox.post(self._stopped.set)

    def submit(
        self,
        coro_fn: Callable[[], Coroutine[Any, Any, T]],
        done: Callable[[T | None, BaseException | None], None],
    ) -> Callable[[], None]:
        """Run ``coro_fn()`` as a task; ``done(result, error)`` runs on the gevent thread.

        Returns:
            a function that cancels the task (from the gevent thread).
        """
        loop = self.loop
        if loop is None:
            raise RuntimeError("LoopThread.submit before start()")
        holder: list[asyncio.Task[T]] = []
        cancelled = [False]

        def begin() -> None:
            if cancelled[0]:
                self.inbox.post(done, None, asyncio.CancelledError())
                return
            task = loop.create_task(coro_fn())
            holder.append(task)
            task.add_done_callback(finish)

        def finish(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                self.inbox.post(done, None, asyncio.CancelledError())
            elif (exc := task.exception()) is not None:
                self.inbox.post(done, None, exc)
            else:
                self.inbox.post(done, task.result(), None)

        def cancel_on_loop() -> None:
            # Once: a second cancel (the user stopped, then the drain) would cut off the close
            # a cancelled conversation is sending, and that chat would be closed twice.
            if cancelled[0]:
                return
            cancelled[0] = True
            if holder:
                holder[0].cancel()

        def cancel() -> None:
            loop.call_soon_threadsafe(cancel_on_loop)

        loop.call_soon_threadsafe(begin)
        return cancel

    def wait(
        self, coro_fn: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None
    ) -> T:
        """Run ``coro_fn()`` on the loop and wait for it, blocking this greenlet only.

        Raises:
            gevent.Timeout: it took longer than ``timeout``; the task is cancelled.
            BaseException: whatever the coroutine raised.
        """
        outcome: gevent.event.AsyncResult = gevent.event.AsyncResult()

        def done(result: T | None, error: BaseException | None) -> None:
            if error is not None:
                outcome.set_exception(error)
            else:
                outcome.set(result)

        cancel = self.submit(coro_fn, done)
        try:
            value: T = outcome.get(timeout=timeout)
        except gevent.Timeout:
            cancel()
            raise
        return value

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the loop (pending tasks are cancelled) and join the thread.

        Returns:
            True when the thread has ended within ``timeout``.
        """
        loop = self.loop
        if loop is None or not self._finished.locked():
            return True
        loop.call_soon_threadsafe(loop.stop)
        self._stopped.wait(timeout)
        return not self._finished.locked()
