"""Retrying what failed for a temporary reason: bounded exponential backoff, and the loop that applies it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from training_controller.core.errors import TemporaryError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays that grow by `factor` from what the error asks for (its `delay`), never beyond `maximum`."""

    maximum: float = 30.0
    factor: float = 2.0
    minimum: float = 0.05

    def delay(self, attempt: int, asked: float) -> float:
        """The wait before retry number `attempt` (1 for the first retry)."""
        return max(self.minimum, min(self.maximum, asked * self.factor ** (attempt - 1)))


async def retry_forever(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff,
    on_retry: Callable[[], None] = lambda: None,
) -> T:
    """Run `op` until it succeeds, waiting after each TemporaryError; any other error goes to the caller.

    For what must happen sooner or later whatever the deadline, such as recording that a training succeeded:
    only the controller's own infrastructure can be failing, and that is no reason to give up on the job.
    """
    attempt = 0
    while True:
        try:
            return await op()
        except TemporaryError as e:
            attempt += 1
            wait = backoff.delay(attempt, e.delay)
            # The first failures are news; after that, one line now and then is enough.
            if attempt <= 3 or attempt % 20 == 0:
                log.warning("%s failed (attempt %d), retrying in %.1fs: %s", what, attempt, wait, e)
            on_retry()
            await asyncio.sleep(wait)
