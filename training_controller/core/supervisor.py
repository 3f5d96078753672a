"""The supervisor of the controller's long-lived tasks (the train stream's consumer, the training worker).

A supervised task is meant to run until the service stops. One that ends anyway, by an exception or by
returning, is logged with what it ended with and started again after a backoff delay; the delay grows with
crashes in a row and resets once the task has run for a while. Health is the supervisor's to tell: a task
that crashed `restart_budget` times within `restart_window_seconds`, or that has not been running for
`task_down_seconds`, makes the controller unhealthy, so that Kubernetes restarts the pod.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from training_controller.config import HealthSettings
from training_controller.core.retry import Backoff
from training_controller.core.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# A task that ran this long before it crashed starts again at once: the crash was not a loop.
STABLE_SECONDS = 60.0


@dataclass
class TaskHealth:
    """How one supervised task is doing."""

    name: str
    running: bool = False
    restarts: int = 0
    last_error: str = ""
    down_since: float | None = None  # monotonic
    crashes: deque[float] = field(default_factory=deque)  # monotonic times of recent crashes


class Supervisor:
    """Runs long-lived tasks, restarts the ones that end, and says whether they are healthy."""

    def __init__(
        self,
        health: HealthSettings,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = health
        self._backoff = backoff or Backoff(maximum=30.0)
        self._clock = clock
        self._tasks: dict[str, asyncio.Task] = {}
        self.health: dict[str, TaskHealth] = {}

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run `run()` under supervision as task `name`."""
        assert name not in self._tasks, f"task {name} is supervised already"
        self.health[name] = TaskHealth(name, down_since=self._clock())
        self._tasks[name] = asyncio.create_task(self._supervise(name, run), name=name)

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        h = self.health[name]
        in_a_row = 0
        while True:
            started = self._clock()
            h.running, h.down_since = True, None
            try:
                await run()
                reason = "it returned"
                log.error("supervised task %s ended although it should run until the service stops", name)
            except asyncio.CancelledError:
                h.running = False
                raise
            except Exception as e:
                reason = f"{type(e).__name__}: {e}"
                log.exception("supervised task %s crashed", name)
            now = self._clock()
            h.running, h.down_since, h.last_error = False, now, reason
            h.restarts += 1
            h.crashes.append(now)
            while h.crashes and now - h.crashes[0] > self._settings.restart_window_seconds:
                h.crashes.popleft()
            ran_well = now - started >= STABLE_SECONDS
            in_a_row = 0 if ran_well else in_a_row + 1
            delay = 0.0 if ran_well else self._backoff.delay(in_a_row, 0.5)
            log.warning("restarting supervised task %s in %.1fs (restart %d)", name, delay, h.restarts)
            await asyncio.sleep(delay)

    def problems(self) -> list[str]:
        """Why the supervised tasks are unhealthy; empty when they are fine."""
        now = self._clock()
        s = self._settings
        found = []
        for h in self.health.values():
            recent = [t for t in h.crashes if now - t <= s.restart_window_seconds]
            if len(recent) >= s.restart_budget:
                found.append(
                    f"task {h.name} crashed {len(recent)} times in {s.restart_window_seconds:.0f}s "
                    f"(last: {h.last_error})"
                )
            elif not h.running and h.down_since is not None and now - h.down_since > s.task_down_seconds:
                found.append(f"task {h.name} has been down for {now - h.down_since:.0f}s (last: {h.last_error})")
        return found

    async def stop(self) -> list[BaseException]:
        """Cancel every task and wait until each has ended; returns the errors they ended with."""
        errors = []
        for name, task in self._tasks.items():
            error = await cancel_and_wait(task)
            if error is not None:
                log.error("supervised task %s ended with an error while stopping", name, exc_info=error)
                errors.append(error)
        self._tasks.clear()
        return errors
