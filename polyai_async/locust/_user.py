"""PolyAIUser: one simulated chat user on Locust, driving the load engine's conversations."""

from __future__ import annotations

import inspect
import logging
import os
import random
from pathlib import Path
from typing import ClassVar

import gevent
from locust import User, constant, task
from locust.exception import StopUser

from .._config import PoolLimits
from .._errors import PolyAIError
from .._retry import RetryPolicy
from ..load import Scenario, ThinkTime, demo_scenario, load_scenario, parse_think_time
from ._bridge import bridge_of

__all__ = ["PolyAIUser"]

logger = logging.getLogger("polyai_async.locust")


class PolyAIUser(User):
    """One simulated chat user: conversations from a scenario, back to back, until stopped.

    Subclass it in a locustfile; every user of a Locust process shares that process's one
    asyncio loop (in a native thread) and one ``PolyAIClient``, whose credentials come from
    the ``POLYAI_*`` variables and whose base URL is Locust's ``--host`` (the region's host
    when it is not given)::

        from polyai_async.locust import PolyAIUser

        class Chat(PolyAIUser):
            scenario = "support-mix.yaml"

    Each call is fired into Locust's ``events.request`` (type the HTTP method, name
    ``create``, ``respond`` or ``close``; a failure as a ``RequestFailed`` named by kind and
    status). Each whole conversation (``CHAT conversation``) and each checked expectation
    (``CHECK expectation``, an unmet one is its failure) go to statistics of their own: the
    web UI's "PolyAI conversations" tab and ``--csv``'s ``_polyai_checks.csv``.

    Attributes:
        scenario: a scenario file (YAML, JSON or JSON Lines; a relative path is looked up
            beside the locustfile, then in the working directory), a ``Scenario``, or None
            for the built-in demo scenario.
        think_time: overrides the scenario's pause before each user message: a duration
            (``"2s"``), ``"exponential:3s"``, ``"uniform:1s..5s"``, or None.
        wait_time: Locust's pause between two conversations of a user (none by default:
            the scenario's think time paces the turns).
        limits: the PoolLimits of the process's client (default ``PoolLimits()``: 100
            connections); with many users and a slow agent, raise ``max_connections``.
        retry: the RetryPolicy of the process's client (default ``RetryPolicy()``).

    The client is made by the first user of a process to start, with that user's class's
    ``limits`` and ``retry``.
    """

    abstract = True
    scenario: ClassVar[str | os.PathLike[str] | Scenario | None] = None
    think_time: ClassVar[str | float | None] = None
    wait_time = constant(0)
    limits: ClassVar[PoolLimits | None] = None
    retry: ClassVar[RetryPolicy | None] = None

    _loaded: ClassVar[dict[type[PolyAIUser], tuple[Scenario, ThinkTime | None]]] = {}

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._rng = random.Random()  # noqa: S311 - simulated users, not secrets
        self._scenario, self._think_time = self.scenario_of()

    @classmethod
    def scenario_of(cls) -> tuple[Scenario, ThinkTime | None]:
        """This class's scenario and think-time override, loaded once per process.

        Raises:
            ConfigurationError: the scenario file or the think time is wrong (a
                ``ScenarioError`` names the file and the field).
        """
        loaded = cls._loaded.get(cls)
        if loaded is None:
            source = cls.scenario
            if source is None:
                scenario = demo_scenario()
            elif isinstance(source, Scenario):
                scenario = source
            else:
                scenario = load_scenario(cls._find(Path(source)))
            think = None if cls.think_time is None else parse_think_time(cls.think_time)
            loaded = cls._loaded[cls] = (scenario, think)
        return loaded

    @classmethod
    def _find(cls, path: Path) -> Path:
        if path.is_absolute() or path.exists():
            return path
        try:
            beside = Path(inspect.getfile(cls)).parent / path
        except (TypeError, OSError):  # pragma: no cover - a class made at run time
            return path
        return beside if beside.exists() else path

    @task
    def conversation(self) -> None:
        """Run one conversation of the scenario (a Locust task) and wait for its end."""
        try:
            bridge_of(self.environment).converse(
                self._scenario,
                self._rng,
                self._think_time,
                {"base_url": self.host, "limits": self.limits, "retry": self.retry},
            )
        except PolyAIError as exc:
            _give_up(self, exc)
            raise StopUser from None


_reported: set[int] = set()


def _give_up(user: PolyAIUser, error: PolyAIError) -> None:
    """The client cannot be made: say why once, and stop the run with exit code 2."""
    environment = user.environment
    if id(environment) in _reported:
        return
    _reported.add(id(environment))
    logger.error("%s", error)
    environment.process_exit_code = 2
    runner = environment.runner
    if runner is not None:
        gevent.spawn(runner.quit)
