"""Stopping asyncio tasks for certain.

nats-py may swallow a cancellation that lands inside one of its own awaits (a flush, a reconnect), so a task
that was cancelled once can go on running. `cancel_and_wait` asks again until the task has really ended.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Future, *, timeout: float = 10.0) -> BaseException | None:
    """Cancel `task` until it has ended; returns the exception it ended with, if any but a cancellation.

    Gives up after `timeout` seconds, with an error in the log: a task that will not end is a bug to see.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        if loop.time() >= deadline:
            log.error("task %r did not end within %.0fs of being cancelled", task, timeout)
            return None
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if task.cancelled():
        return None
    return task.exception()
