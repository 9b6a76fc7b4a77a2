"""polyai_async.testing: a fake PolyAI Chat API server, its agents and faults, a pytest plugin.

``async with FakePolyAI() as fake:`` runs a real HTTP server on 127.0.0.1; ``fake.client()``
makes a PolyAIClient wired to it; ``FakeServerProcess`` runs it in a process of its own. With
the package installed, pytest gets the ``polyai_fake`` and ``polyai_client`` fixtures (see
``polyai_async.testing._plugin``).
"""

from ._agents import (
    AGENTS,
    DEFAULT_GREETING,
    Agent,
    AgentReply,
    AgentResult,
    ConversationState,
    DemoAgent,
    EchoAgent,
    ScriptedAgent,
)
from ._faults import Faults
from ._process import FakeServerError, FakeServerProcess
from ._server import DEFAULT_CREDENTIALS, FakePolyAI, Stats, run_server

__all__ = [
    "AGENTS",
    "DEFAULT_CREDENTIALS",
    "DEFAULT_GREETING",
    "Agent",
    "AgentReply",
    "AgentResult",
    "ConversationState",
    "DemoAgent",
    "EchoAgent",
    "FakePolyAI",
    "FakeServerError",
    "FakeServerProcess",
    "Faults",
    "ScriptedAgent",
    "Stats",
    "run_server",
]
