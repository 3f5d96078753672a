"""Health that tells the truth: /healthz fails when only a restart can mend the controller.

A supervised task that keeps dying, or a worker that makes no progress on a job, turns /healthz to 503 (so
the liveness probe restarts the pod); /readyz reports each supervised task. The controller runs in-process
here, on a real nats-server and its real HTTP surface, with one port broken on purpose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import StartService, train_payload
from tests.unit.fakes import ScriptedLauncher
from training_controller.adapters.state.memory import MemoryStateStore
from training_controller.bootstrap import Adapters, Service
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.ports import LauncherEvent

pytestmark = pytest.mark.faults


async def get(service: Service, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{service.http.port}{path}") as r:
        return r.status, await r.json()


async def wait_status(service: Service, path: str, status: int, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got, body = await get(service, path)
        if got == status:
            return body
        assert time.monotonic() < deadline, f"{path} still answers {got}: {body}"
        await asyncio.sleep(0.1)


class BrokenState(MemoryStateStore):
    """A state store that, once broken, takes new records but fails every change of one with a bug (not a
    temporary error): the worker cannot even record that the job failed, and dies."""

    broken = False

    async def save_job(self, record: JobRecord) -> None:
        if self.broken and record.phase is not JobPhase.QUEUED:
            raise RuntimeError("the job index is corrupt")
        await super().save_job(record)


async def test_a_worker_that_keeps_dying_makes_healthz_fail_and_readyz_report_it(start_service: StartService) -> None:
    state = BrokenState()
    service = await start_service(
        adapters=Adapters(state=state), task_restart_budget=3, task_restart_window_seconds=60
    )
    assert (await get(service, "/healthz"))[0] == 200

    state.broken = True
    await service.bus.nc.publish("train", train_payload(40))  # the worker takes it up, and crashes; again and again

    body = await wait_status(service, "/healthz", 503)
    assert body["status"] == "unhealthy"
    assert any("task training-worker crashed 3 times" in p and "the job index is corrupt" in p for p in body["problems"])
    ready = await wait_status(service, "/readyz", 503)
    assert ready["checks"]["train-stream-consumer"] is True

    state.broken = False  # what a restart of the pod mends: the crashes stop, the job ends
    record = (await service.controller.list_jobs())[0]
    for _ in range(100):
        if (await service.controller.get_job(record.job_id)).phase.is_final:
            break
        await asyncio.sleep(0.1)
    assert (await service.controller.get_job(record.job_id)).phase.is_final


class SilentLauncher(ScriptedLauncher):
    """A launcher whose job never says anything, not even that it still runs."""

    async def events(self, job_id: str) -> AsyncIterator[LauncherEvent]:
        await asyncio.Event().wait()
        yield  # pragma: no cover - never reached


async def test_a_worker_stuck_without_progress_makes_healthz_fail(start_service: StartService, sample_logs) -> None:
    service = await start_service(
        logs=sample_logs, adapters=Adapters(launcher=SilentLauncher()), worker_stall_seconds=2
    )
    await service.bus.nc.publish("train", train_payload(40))

    body = await wait_status(service, "/healthz", 503, timeout=60)

    assert any("made no progress on job" in p and "(running)" in p for p in body["problems"]), body
    assert (await get(service, "/readyz"))[0] == 200  # it is alive enough to serve, only the worker is stuck
