"""``polyai-async chat``: chat with an agent in the terminal, one line per message.

The target is resolved as the library resolves it: ``--base-url``, else ``POLYAI_BASE_URL``,
else the region (``--real``); with none of them the agent is an embedded fake server's. The
first line says which agent it is.

In a terminal, lines are read with ``input()`` and readline (editing, history), and a waiting
indicator runs while the agent answers. Lines starting with ``/`` are commands, never sent.
Every way out (``/quit``, end of input, Ctrl-C at the prompt or while waiting, the agent ending
a piped chat, an error) closes the conversation, bounded by ``--close-timeout``, and says so in
the same words, or gives the reason closing failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._client import PolyAIClient
from .._conversation import Conversation
from .._errors import ConfigurationError, PolyAIError
from .._models import RespondChatResponse
from .._redact import safe_text
from ._common import (
    UsageError,
    add_target_options,
    client_settings,
    display_url,
    fail,
    make_fake,
    positive_seconds,
    reason,
)

_T = TypeVar("_T")

# Leaving waits this long at most for the API to close the conversation (the client's own
# retry deadline is longer, and a user who pressed Ctrl-C is not kept waiting for it).
_CLOSE_TIMEOUT = 5.0
# The waiting indicator appears only when an answer takes longer than this.
_INDICATOR_DELAY = 0.3
_INDICATOR_INTERVAL = 0.25
_PROMPT = "you> "
_HELP = """commands (never sent to the agent):
  /help   this list
  /new    close this conversation and start a new one
  /quit   close the conversation and leave (so do Ctrl-D, and Ctrl-C)
A message that starts with / is sent by doubling it: //start sends /start."""


def add_parser(commands: Any) -> None:
    """Add the ``chat`` command to the subparsers ``commands``."""
    chat = commands.add_parser(
        "chat",
        help="chat with an agent in the terminal",
        description="Chat with an agent, one line per message, from the terminal or piped "
        "input. End with /quit, Ctrl-D or Ctrl-C. By default the agent is an embedded fake "
        'server\'s demo agent: ask for "a human" to see a handoff, say "bye" to end.',
    )
    add_target_options(chat, "chat with")
    chat.add_argument(
        "--agent",
        choices=("demo", "echo"),
        default="demo",
        help="the embedded fake's agent (default demo)",
    )
    chat.add_argument("--seed", type=int, metavar="N", help="seed the embedded fake's ids")
    chat.add_argument(
        "--close-timeout",
        type=positive_seconds,
        default=_CLOSE_TIMEOUT,
        metavar="SECONDS",
        help="how long leaving waits at most for the API to close the conversation "
        f"(default {_CLOSE_TIMEOUT:g})",
    )
    chat.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``polyai-async chat`` with the parsed ``args``; returns the exit status."""
    source = _source(args)
    settings = None if source is None else client_settings(args, source=source)
    return _Chat(args, settings, source).run()


def _source(args: argparse.Namespace) -> str | None:
    """What names the target, in the library's order; None for the embedded fake."""
    if args.base_url:
        return "--base-url"
    if os.environ.get("POLYAI_BASE_URL"):
        return "POLYAI_BASE_URL"
    if args.real:
        return "--real"
    return None


class _Interrupted(Exception):
    """Ctrl-C arrived while the chat waited on the API."""


class _Chat:
    """One ``chat`` session: its event loop, client, conversation and terminal."""

    def __init__(
        self, args: argparse.Namespace, settings: dict[str, Any] | None, source: str | None
    ) -> None:
        self.args = args
        self.settings = settings
        self.source = source
        self.interactive = sys.stdin.isatty()
        self.loop = asyncio.new_event_loop()
        self.stack = contextlib.AsyncExitStack()
        self.client: PolyAIClient | None = None
        self.conversation: Conversation | None = None

    def run(self) -> int:
        """Chat until the user or the agent ends it; returns the exit status."""
        try:
            try:
                where = self._wait(self._open())
            except _Interrupted:
                print("\n-- interrupted before the chat started")
                return 130
            print(f"Chatting with {where}.", flush=True)
            if self.interactive:
                _enable_line_editing()
                print("Type a message; /help lists the commands; /quit or Ctrl-D leaves.")
            return self._converse()
        finally:
            try:
                self.loop.run_until_complete(self.stack.aclose())
            finally:
                self.loop.close()

    # -- the event loop, driven one awaited step at a time ------------------------------

    def _wait(self, step: Coroutine[Any, Any, _T]) -> _T:
        """Run ``step`` on the loop; Ctrl-C while it runs cancels it and raises _Interrupted."""
        task = self.loop.create_task(step)
        interrupted = False

        def interrupt() -> None:
            nonlocal interrupted
            interrupted = True
            task.cancel()

        try:
            self.loop.add_signal_handler(signal.SIGINT, interrupt)
            handled = True
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not main thread
            handled = False
        try:
            return self.loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupted:
                raise _Interrupted from None
            raise
        except KeyboardInterrupt:  # no handler: the interrupt was raised inside the loop
            task.cancel()
            with contextlib.suppress(BaseException):
                self.loop.run_until_complete(task)
            raise _Interrupted from None
        finally:
            if handled:  # back to Python's handler: Ctrl-C at the prompt is KeyboardInterrupt
                self.loop.remove_signal_handler(signal.SIGINT)

    async def _open(self) -> str:
        """Start the embedded fake if there is one, open the client; say who answers."""
        if self.settings is None:
            fake = await self.stack.enter_async_context(
                make_fake(agent=self.args.agent, seed=self.args.seed)
            )
            self.client = await self.stack.enter_async_context(fake.client())
            return f"the {self.args.agent} agent of an embedded fake server at {fake.url}"
        try:
            client = PolyAIClient(**self.settings)
        except ConfigurationError as exc:
            named = "POLYAI_BASE_URL" if self.source == "POLYAI_BASE_URL" else "--base-url"
            raise UsageError(str(exc).replace("base_url", named)) from None
        self.client = await self.stack.enter_async_context(client)
        return (
            f"the agent of account {client.account_id}, project {client.project_id} at "
            f"{display_url(client.base_url)} (from {self.source})"
        )

    # -- the conversation ---------------------------------------------------------------

    def _converse(self) -> int:
        if not self._start(""):
            return 130
        while True:
            try:
                line = self._read()
            except KeyboardInterrupt:
                print()
                return self._leave("interrupted", 130)
            if line is None:
                if self.interactive:
                    print()
                return self._leave("end of input", 0)
            text = line.strip()
            if text.startswith("/") and not text.startswith("//"):
                status = self._command(text.split()[0].lower())
            elif text:
                status = self._say(text[1:] if text.startswith("//") else text)
            else:
                status = None
            if status is not None:
                return status

    def _start(self, announce: str) -> bool:
        """Create a conversation and show its greeting; False if Ctrl-C stopped that."""
        try:
            self.conversation = self._wait(self._create())
        except _Interrupted:
            print("\n-- interrupted before the conversation started")
            return False
        # The agent's words as text: redacted, control characters shown as escapes.
        print(f"{announce}agent: {safe_text(self.conversation.greeting or '')}", flush=True)
        return True

    def _command(self, command: str) -> int | None:
        """Run a /command; returns the exit status if it ends the chat."""
        if command == "/quit":
            return self._leave("/quit", 0)
        if command == "/help":
            print(_HELP, flush=True)
        elif command == "/new":
            if not self._close("/new"):
                return 1
            if not self._start("-- new conversation\n"):
                return 130
        else:
            print(f"-- {command} is not a command (not sent): /help lists them", flush=True)
        return None

    def _say(self, message: str) -> int | None:
        """Send a message and show the reply; returns the exit status if the chat ends."""
        assert self.conversation is not None  # noqa: S101 - set by _start
        if self.conversation.ended:
            print("-- the agent has ended this conversation: /new starts another", flush=True)
            return None
        if not self.interactive:
            print(f"you: {safe_text(message)}")
        try:
            reply = self._wait(self._reply(self.conversation, message))
        except _Interrupted:
            print()
            return self._leave("interrupted", 130)
        except PolyAIError as exc:
            fail(f"the agent did not answer: {reason(exc)}")
            return self._leave("error", 1)
        self._show(reply)
        if reply.end_conversation:
            if not self.interactive:  # a script has nobody to start another conversation
                return self._leave("the agent ended it", 0)
            print("-- /new starts another conversation, /quit leaves", flush=True)
        return None

    async def _create(self) -> Conversation:
        assert self.client is not None  # noqa: S101 - set by _open
        return Conversation(self.client, await self.client.create_chat())

    async def _reply(self, conversation: Conversation, message: str) -> RespondChatResponse:
        if not self.interactive or not sys.stdout.isatty():
            return await conversation.send(message)
        indicator = asyncio.create_task(_indicate(sys.stdout.write, sys.stdout.flush))
        try:
            return await conversation.send(message)
        finally:
            indicator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await indicator

    def _read(self) -> str | None:
        """The user's next line, None at end of input; Ctrl-C raises KeyboardInterrupt."""
        if self.interactive:
            try:
                return input(_PROMPT)
            except EOFError:
                return None
        line = sys.stdin.readline()
        return line or None

    @staticmethod
    def _show(reply: RespondChatResponse) -> None:
        print(f"agent: {safe_text(reply.response)}")
        if reply.handoff is not None:
            why = f" ({safe_text(reply.handoff.reason)})" if reply.handoff.reason else ""
            print(f"-- handed off to {safe_text(reply.handoff.destination or '')}{why}")
        if reply.end_conversation:
            print("-- the agent ended the conversation")
        sys.stdout.flush()

    def _leave(self, why: str, status: int) -> int:
        """Close the conversation on the way out; 1 if that failed (130 stays 130)."""
        if self._close(why):
            return status
        return status or 1

    def _close(self, why: str) -> bool:
        """Close the conversation within --close-timeout, saying so; False if that failed."""
        conversation = self.conversation
        if conversation is None:
            return True
        cid = safe_text(conversation.conversation_id)
        timeout = self.args.close_timeout
        print(f"-- {why}: closing conversation {cid} (at most {timeout:g} s)", flush=True)
        try:
            self._wait(asyncio.wait_for(conversation.aclose(), timeout))
        except _Interrupted:
            fail(f"gave up closing conversation {cid}: interrupted again")
            return False
        except (PolyAIError, asyncio.TimeoutError) as exc:
            fail(
                f"closing conversation {cid} failed: {reason(exc)} (the API ends idle "
                "conversations itself)"
            )
            return False
        print(f"Conversation {cid} closed.", flush=True)
        return True


async def _indicate(write: Callable[[str], Any], flush: Callable[[], Any]) -> None:
    """Show that the agent is answering, after a short delay; wipe the line when cancelled."""
    await asyncio.sleep(_INDICATOR_DELAY)
    try:
        for dots in itertools.cycle((".", "..", "...")):
            write(f"\r\x1b[2Kagent is answering{dots}")
            flush()
            await asyncio.sleep(_INDICATOR_INTERVAL)
    finally:
        write("\r\x1b[2K")
        flush()


def _enable_line_editing() -> None:
    """Give ``input()`` readline's line editing and history, where Python has readline."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401, PLC0415 - importing it is what turns it on
