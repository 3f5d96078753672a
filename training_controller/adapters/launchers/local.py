"""The `local` launcher: the training job as processes on this machine.

It runs the same entrypoint as the container (`python -m nulog.job`, arguments from the trainer contract).
A training with N workers is N processes, one per rank, with the rendezvous variables that `torchrun` would
set (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); rank 0, the master, alone writes the
artifacts and reports progress. Each worker runs in a session of its own (`local_process.WorkerProcess`),
so the job outlives a controller that dies, and a restarted controller learns from the job's directory
alone what runs and how it ended:

    <jobs dir>/<job>/spec.json       what was launched: the trainer's arguments, workers, the master port
                     pid, events.log, stderr.log, exit_code    rank 0
                     rank-<i>/...    the same files of rank i > 0
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nulog.objectstore import MinioConfig
from nulog.protocol import (
    LOCAL_RANK_VAR,
    MASTER_ADDR_VAR,
    MASTER_PORT_VAR,
    RANK_VAR,
    WORLD_SIZE_VAR,
    ErrorEvent,
    parse_event,
)
from training_controller.adapters.launchers.local_process import WorkerProcess, read_from, terminate
from training_controller.adapters.launchers.output import parse_line
from training_controller.core.errors import LauncherUnavailable
from training_controller.core.ports import (
    STILL_RUNNING_SECONDS,
    Finished,
    JobSpec,
    LaunchedJob,
    Launcher,
    LauncherEvent,
    StillRunning,
    TrainerOutput,
    WorkerState,
)
from training_controller.natsserver import free_port

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


def terminate_jobs(jobs_dir: Path, *, sig: int = signal.SIGTERM) -> list[str]:
    """Signal every job under `jobs_dir` that still runs; returns their ids (used by the demo's clean-up)."""
    signalled = []
    for job_dir in sorted(p for p in jobs_dir.glob("*") if p.is_dir()):
        hit = False
        for worker in _workers(job_dir):
            pgid = worker.pid()
            if pgid is not None and worker.exit_code() is None and terminate(pgid, sig):
                hit = True
        if hit:
            signalled.append(job_dir.name)
    return signalled


def _spec_of(job_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((job_dir / "spec.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _workers(job_dir: Path, count: int | None = None) -> list[WorkerProcess]:
    n = count if count is not None else int(_spec_of(job_dir).get("workers", 1))
    return [WorkerProcess(job_dir if i == 0 else job_dir / f"rank-{i}", index=i) for i in range(max(1, n))]


class LocalLauncher(Launcher):
    """Training jobs as local processes."""

    name = "local"

    def __init__(
        self,
        jobs_dir: Path,
        *,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        minio: MinioConfig | None = None,
        cancel_grace_seconds: float = 10.0,
    ) -> None:
        self.jobs_dir = jobs_dir
        self.python = python
        # The job reads the object store's configuration from its environment, as a training pod does.
        self.env = None if env is None and minio is None else {**(os.environ if env is None else env)}
        if minio is not None and self.env is not None:
            self.env.update({**minio.public_env(), **minio.secret_env()})
        self.cancel_grace_seconds = cancel_grace_seconds
        self._started: dict[str, list[WorkerProcess]] = {}  # the workers this controller started, to reap

    def _dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    async def launch(self, spec: JobSpec) -> None:
        job_dir = self._dir(spec.job_id)
        if (job_dir / "pid").exists():
            log.info("job %s: launched already (pid file present); not launching again", spec.job_id)
            return
        if job_dir.exists():
            # A launch that died before its process recorded itself: nothing of it runs.
            await asyncio.to_thread(shutil.rmtree, job_dir, True)
        n = spec.workers
        described = {**spec.args.model_dump(mode="json"), "workers": n}
        if n > 1:
            described["master_port"] = free_port()
        workers = _workers(job_dir, n)
        try:
            job_dir.mkdir(parents=True)
            (job_dir / "spec.json").write_text(json.dumps(described, indent=2))
            command = spec.command(self.python)
            # The others first: the master's pid file is what says "launched".
            for worker in reversed(workers):
                await worker.start(command, self._env(worker.index, n, described.get("master_port")))
        except OSError as e:
            raise LauncherUnavailable(f"cannot start job {spec.job_id}: {e}") from e
        self._started[spec.job_id] = workers
        pids = ", ".join(str(w.process.pid) for w in workers if w.process)
        log.info("job %s: started %d local process(es): %s", spec.job_id, n, pids)

    def _env(self, rank: int, world: int, port: int | None) -> dict[str, str] | None:
        if world == 1:
            return self.env
        return {
            **(os.environ if self.env is None else self.env),
            WORLD_SIZE_VAR: str(world), RANK_VAR: str(rank), LOCAL_RANK_VAR: str(rank),
            MASTER_ADDR_VAR: "127.0.0.1", MASTER_PORT_VAR: str(port),
        }

    async def events(self, job_id: str) -> AsyncIterator[LauncherEvent]:
        job_dir = self._dir(job_id)
        if not await asyncio.to_thread(job_dir.is_dir):
            yield Finished(succeeded=False, message=f"job {job_id} was never launched here")
            return
        workers = await asyncio.to_thread(_workers, job_dir)
        master = workers[0]
        position, pending, last_error = 0, b"", ""
        states: dict[int, str] = {}
        quiet_since = time.monotonic()

        def poll(position: int) -> tuple[bool, bytes, list[str]]:
            # Look before reading: every line written before a worker was seen to end is in the chunk, so the
            # loop may stop on these states without missing one.
            states = [w.state() for w in workers]
            done = master.exit_code() is not None
            return done, read_from(master.events_log, position), states

        while True:
            master_done, chunk, now = await asyncio.to_thread(poll, position)
            position += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if master_done and pending.strip():  # the job's last line, written without its newline
                lines.append(pending)
                pending = b""
            for raw in lines:
                event = parse_line(raw)
                if isinstance(event, TrainerOutput) and isinstance(event.event, ErrorEvent):
                    last_error = event.event.message
                quiet_since = time.monotonic()
                yield event
            if len(workers) > 1:
                for worker, state in zip(workers, now, strict=True):
                    if states.get(worker.index) != state:
                        states[worker.index] = state
                        yield WorkerState(worker.index, worker.role, f"pid {worker.pid()}", state)
            failed = [w for w, s in zip(workers, now, strict=True) if s == "failed"]
            running = [w for w, s in zip(workers, now, strict=True) if s in ("running", "pending")]
            if failed and running:
                # One worker failed: the others would wait on it for ever. Stop them, then say who failed.
                await self._stop(job_id, running)
                continue
            if not running:
                break
            if time.monotonic() - quiet_since >= STILL_RUNNING_SECONDS:
                quiet_since = time.monotonic()
                yield StillRunning()
            await asyncio.sleep(POLL_SECONDS)
        for worker in self._started.pop(job_id, []):
            await worker.reap()
        yield await asyncio.to_thread(self._outcome, workers, last_error)

    def _outcome(self, workers: list[WorkerProcess], master_error: str) -> Finished:
        failed = [w for w in workers if w.state() == "failed"]
        if not failed:
            return Finished(succeeded=True, message="exit code 0")
        # The first to fail is the cause; the others were stopped because of it.
        first = min(failed, key=lambda w: _ended_at(w))
        code = first.exit_code()
        reason = (master_error if first.index == 0 else _last_error(first)) or first.stderr_tail() or "no output"
        what = "the training process disappeared" if code is None else f"exit code {code}: {reason}"
        if len(workers) == 1:
            return Finished(succeeded=False, message=what)
        return Finished(succeeded=False, message=f"worker {first.index} ({first.role}, pid {first.pid()}) failed: {what}")

    async def cancel(self, job_id: str) -> None:
        """SIGTERM to every worker's process group; SIGKILL after the grace period; returns once all ended."""
        workers = await asyncio.to_thread(_workers, self._dir(job_id))
        await self._stop(job_id, [w for w in workers if w.alive()])
        for worker in self._started.pop(job_id, []):
            await worker.reap()

    async def _stop(self, job_id: str, workers: list[WorkerProcess]) -> None:
        for worker in workers:
            if worker.signal(signal.SIGTERM):
                log.info("job %s: sent SIGTERM to worker %d", job_id, worker.index)
        deadline = time.monotonic() + self.cancel_grace_seconds
        while alive := [w for w in workers if await asyncio.to_thread(w.alive)]:
            if time.monotonic() >= deadline:
                log.warning("job %s: still running %.0fs after SIGTERM; sending SIGKILL", job_id, self.cancel_grace_seconds)
                for worker in alive:
                    worker.signal(signal.SIGKILL)
                deadline = time.monotonic() + self.cancel_grace_seconds
            await asyncio.sleep(POLL_SECONDS)

    async def list_jobs(self) -> list[LaunchedJob]:
        def scan() -> list[LaunchedJob]:
            jobs = []
            for job_dir in sorted(p for p in self.jobs_dir.glob("*") if p.is_dir()):
                if not (job_dir / "pid").exists():
                    continue  # a launch that never got its process going: not a job
                states = [w.state() for w in _workers(job_dir)]
                if any(s in ("running", "pending") for s in states):
                    jobs.append(LaunchedJob(job_dir.name, "running"))
                elif all(s == "succeeded" for s in states):
                    jobs.append(LaunchedJob(job_dir.name, "succeeded", "exit code 0"))
                else:
                    code = WorkerProcess(job_dir).exit_code()
                    message = f"exit code {code}" if code is not None else "the training process disappeared"
                    jobs.append(LaunchedJob(job_dir.name, "failed", message))
            return jobs

        return await asyncio.to_thread(scan) if self.jobs_dir.is_dir() else []

    async def ping(self) -> bool:
        def check() -> bool:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            return os.access(self.jobs_dir, os.W_OK)

        try:
            return await asyncio.to_thread(check)
        except OSError:
            return False


def _ended_at(worker: WorkerProcess) -> float:
    try:
        return (worker.dir / "exit_code").stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _last_error(worker: WorkerProcess) -> str:
    """The message of the last error event a (non-master) worker wrote."""
    message = ""
    for raw in read_from(worker.events_log, 0).splitlines():
        try:
            event = parse_event(raw)
        except ValueError:
            continue
        if isinstance(event, ErrorEvent):
            message = event.message
    return message
