"""``polyai-async chat``: chat with an agent in the terminal, one line per message."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
from typing import Any

from .._client import PolyAIClient
from .._errors import ConfigurationError
from ._common import UsageError, _add_target_options, _client_settings, _display_url, _fake


def add_parser(commands: Any) -> None:
    """Add the ``chat`` command to the subparsers ``commands``."""
    chat = commands.add_parser(
        "chat",
        help="chat with an agent in the terminal",
        description="Chat with an agent, one line per message, from the terminal or piped "
        "input. End with Ctrl-D or /quit. By default the agent is the fake server's demo "
        'agent: ask for "a human" to see a handoff, say "bye" to end.',
    )
    _add_target_options(chat, "chat with")
    chat.add_argument(
        "--agent",
        choices=("demo", "echo"),
        default="demo",
        help="the embedded fake's agent (default demo)",
    )
    chat.add_argument("--seed", type=int, metavar="N", help="seed the embedded fake's ids")
    chat.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``polyai-async chat`` with the parsed ``args``; returns the exit status."""
    settings = None if not (args.base_url or args.real) else _client_settings(args)
    return asyncio.run(_chat_session(args, settings))


async def _chat_session(args: argparse.Namespace, settings: dict[str, Any] | None) -> int:
    async with contextlib.AsyncExitStack() as stack:
        if settings is None:
            fake = await stack.enter_async_context(_fake(agent=args.agent, seed=args.seed))
            client = fake.client()
            where = f"the fake {args.agent} agent at {fake.url}"
        else:
            try:
                client = PolyAIClient(**settings)
            except ConfigurationError as exc:
                raise UsageError(str(exc)) from None
            where = _display_url(client.base_url)
        await stack.enter_async_context(client)
        lines = _stdin_lines()
        interactive = sys.stdin.isatty()
        print(f"Chatting with {where}. Type /quit or press Ctrl-D to leave.", flush=True)
        async with client.conversation() as conversation:
            print(f"agent: {conversation.greeting}", flush=True)
            while not conversation.ended:
                if interactive:
                    print("you> ", end="", flush=True)
                line = await lines.get()
                if line is None or line.strip() == "/quit":
                    if line is None and interactive:
                        print()
                    break
                message = line.strip()
                if not message:
                    continue
                if not interactive:
                    print(f"you: {message}")
                reply = await conversation.send(message)
                print(f"agent: {reply.response}", flush=True)
                if reply.handoff is not None:
                    reason = f" ({reply.handoff.reason})" if reply.handoff.reason else ""
                    print(f"-- handed off to {reply.handoff.destination}{reason}")
                if reply.end_conversation:
                    print("-- the agent ended the conversation", flush=True)
        print(f"Conversation {conversation.conversation_id} closed.", flush=True)
    return 0


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Stdin's lines, read by a daemon thread (it cannot keep the process alive); None at EOF."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
        except (OSError, ValueError, RuntimeError):  # stdin closed, or the loop is gone
            pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, daemon=True, name="polyai-async-stdin").start()
    return lines
