"""StagesShape: a Locust LoadTestShape from a ``--stages``-style ramp of users."""

from __future__ import annotations

import math
from typing import ClassVar

from locust import LoadTestShape

from ..load import Stage, parse_stages

__all__ = ["StagesShape"]


class StagesShape(LoadTestShape):
    """Ramp the number of users linearly through stages, as ``polyai-async bench --stages``.

    Subclass it in the locustfile next to your user class::

        from polyai_async.locust import PolyAIUser, StagesShape

        class Chat(PolyAIUser):
            pass

        class Ramp(StagesShape):
            stages = "30s:10,2m:50,30s:0"   # DURATION:USERS, comma-separated

    Each stage reaches its number of users linearly over its duration, starting from
    ``start_users``; when the last stage ends, the test stops. Locust's ``-u``, ``-r`` and
    ``--run-time`` are then ignored, as for every shape class.

    Attributes:
        stages: the ramp, ``DURATION:USERS,...`` (durations as ``500ms``, ``6s``, ``2m``,
            ``1h`` or plain seconds).
        start_users: the users at the start of the first stage.
    """

    abstract = True
    stages: ClassVar[str] = ""
    start_users: ClassVar[float] = 0.0

    def __init__(self) -> None:
        super().__init__()
        if not self.stages:
            raise ValueError(f"{type(self).__name__}.stages is empty: set it, e.g. '30s:10,1m:0'")
        self._stages: tuple[Stage, ...] = parse_stages(self.stages)
        self._total = sum(stage.duration for stage in self._stages)

    def users_at(self, t: float) -> int:
        """The users planned ``t`` seconds into the test (rounded to the nearest whole)."""
        level = float(self.start_users)
        for stage in self._stages:
            if t < stage.duration:
                level += (stage.target - level) * (t / stage.duration)
                return round(level)
            t -= stage.duration
            level = stage.target
        return round(level)

    def tick(self) -> tuple[int, float] | None:
        """Locust asks about once a second: (users, spawn rate), or None to stop."""
        t = self.get_run_time()
        if t >= self._total:
            return None
        users = self.users_at(t)
        # Locust ticks once a second: spawning as fast as the gap to this second's target (or
        # the next second's change) reaches each target within that second, so the ramp is
        # linear at one-second resolution.
        step = max(abs(self.users_at(t + 1.0) - users), abs(users - self.get_current_user_count()))
        return users, float(max(1, math.ceil(step)))
