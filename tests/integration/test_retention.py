"""Job records beyond the retention (JOB_RETENTION_COUNT ended records, none ended more than JOB_RETENTION_DAYS
ago) are forgotten when the controller starts: gone from `training_jobs` and from the `training-jobs` KV
bucket, exactly those and no others. A job that has not ended is never forgotten, however old."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
from nats.js.errors import KeyNotFoundError

from tests.conftest import base_settings, request_json
from tests.unit.fakes import FakeGpuService
from training_controller.adapters.state.nats_kv import DESCRIPTIONS, JOBS_BUCKET
from training_controller.bootstrap import Adapters, Service
from training_controller.bus import Bus
from training_controller.config import NatsSettings
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.ports import (
    Finished,
    JobSpec,
    LaunchedJob,
    Launcher,
    LauncherEvent,
    StillRunning,
)
from training_controller.natsserver import NatsServer

KEEP = 4
DAYS = 30
NOW = datetime.now(UTC)
FINAL = {JobPhase.SUCCEEDED: "model published", JobPhase.FAILED: "exit code 1", JobPhase.CANCELLED: "cancelled"}


def _iso(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _record(seq: int, phase: JobPhase, *, days_ago: float) -> JobRecord:
    """A record as a previous controller left it, its every timestamp `days_ago` days back."""
    record = JobRecord.new(job_id=f"job-{seq:02d}", seq=seq, requested_by="test", request_hash=f"{seq:064x}")
    for step in (JobPhase.EXPORTING, JobPhase.LAUNCHING, JobPhase.RUNNING):
        if record.phase is phase:
            break
        record = record.advance(step, step.value)
    if phase.is_final:
        record = record.advance(phase, FINAL[phase])
    elif phase is JobPhase.RUNNING:
        record = record.evolve(gpu_held=True, trainer_may_run=True)
    at = _iso(days_ago)
    dated = {
        **record.to_json(),
        "created_at": at, "updated_at": at, "started_at": at if record.started_at else None,
        "finished_at": at if phase.is_final else None, "history": [{**h, "at": at} for h in record.to_json()["history"]],
    }
    return JobRecord.model_validate(dated)


# seq -> (phase, days since it ended, or since anything happened to it); seq is the order of submission.
RECORDS = {
    1: (JobPhase.RUNNING, 45),  # the oldest of all, and not ended: kept
    2: (JobPhase.QUEUED, 60),  # queued two months ago: kept
    3: (JobPhase.SUCCEEDED, 40),  # ended before the retention's days: gone
    4: (JobPhase.FAILED, 35),
    5: (JobPhase.CANCELLED, 31),
    6: (JobPhase.SUCCEEDED, 3),  # recent, but not among the KEEP most recent ended ones: gone
    7: (JobPhase.FAILED, 2),
    8: (JobPhase.SUCCEEDED, 2),
    9: (JobPhase.SUCCEEDED, 1),  # the KEEP most recent ended ones (9-12) are kept ...
    10: (JobPhase.CANCELLED, 1),
    11: (JobPhase.SUCCEEDED, DAYS + 0.5),  # ... unless ended before the retention's days (a slow job's late record)
    12: (JobPhase.FAILED, 0.1),
}
GONE = {f"job-{s:02d}" for s in (3, 4, 5, 6, 7, 8, 11)}
KEPT = {f"job-{s:02d}" for s in (1, 2, 9, 10, 12)}


class StillTraining(Launcher):
    """A launcher whose jobs all run until cancelled: the restarted controller takes the running job up again
    and follows it, so the queued one stays queued while the test looks."""

    name = "still-training"

    async def launch(self, spec: JobSpec) -> None:
        return None

    async def events(self, job_id: str) -> AsyncIterator[LauncherEvent]:
        yield StillRunning()
        await asyncio.Event().wait()
        yield Finished(succeeded=False, message="never")  # pragma: no cover - waits forever above

    async def cancel(self, job_id: str) -> None:
        return None

    async def list_jobs(self) -> list[LaunchedJob]:
        return [LaunchedJob("job-01", "running")]


async def _start(server: NatsServer, root: Path, logs: Path, **retention: int) -> Service:
    settings = base_settings(server.url, root, logs, **retention)
    return await Service.start(settings, adapters=Adapters(launcher=StillTraining(), gpu_service=FakeGpuService()))


async def _write_records(nc: nats.NATS, url: str) -> None:
    """Into the controller's bucket, opened as the controller opens it."""
    jobs = await Bus(nc, NatsSettings(nats_server_url=url)).key_value(JOBS_BUCKET, description=DESCRIPTIONS[JOBS_BUCKET])
    for seq, (phase, days_ago) in RECORDS.items():
        record = _record(seq, phase, days_ago=days_ago)
        await jobs.put(record.job_id, record.model_dump_json().encode())


async def _listed(nc: nats.NATS) -> dict[str, str]:
    page = await request_json(nc, "training_jobs", {"limit": 1000})
    assert page["next"] is None
    return {job["job_id"]: job["phase"] for job in page["jobs"]}


async def _stored(nc: nats.NATS) -> set[str]:
    jobs = await nc.jetstream().key_value(JOBS_BUCKET)
    return set(await jobs.keys()) - {"_seq"}


async def test_records_beyond_the_retention_are_gone_after_a_restart_and_unended_jobs_never(
    nats_server: NatsServer, nc: nats.NATS, tmp_path: Path, log_dir: Path
) -> None:
    first = await _start(nats_server, tmp_path, log_dir)  # a first deployment: the buckets exist
    await first.stop()
    await _write_records(nc, nats_server.url)
    assert await _stored(nc) == GONE | KEPT

    service = await _start(nats_server, tmp_path, log_dir, job_retention_count=KEEP, job_retention_days=DAYS)
    try:
        listed = await _listed(nc)
        assert set(listed) == KEPT
        assert listed["job-01"] == "running" and listed["job-02"] == "queued"
        assert await _stored(nc) == KEPT
        jobs = await nc.jetstream().key_value(JOBS_BUCKET)
        for job_id in GONE:
            try:
                await jobs.get(job_id)
                raise AssertionError(f"{job_id} is still in the bucket")
            except KeyNotFoundError:
                pass
            reply = await request_json(nc, "training_status", {"job_id": job_id})
            assert reply == {"error": f"no training job with id {job_id!r}"}
        queued = await request_json(nc, "training_status", {"job_id": "job-02"})
        assert queued["phase"] == "queued" and queued["queue_position"] == 1  # behind the running job-01
    finally:
        await service.stop()

    # Once forgotten, forgotten; and the next start with the same retention forgets nothing more.
    again = await _start(nats_server, tmp_path, log_dir, job_retention_count=KEEP, job_retention_days=DAYS)
    try:
        assert set(await _listed(nc)) == KEPT
        assert await _stored(nc) == KEPT
    finally:
        await again.stop()
