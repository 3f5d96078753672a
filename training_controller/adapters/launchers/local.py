"""The `local` launcher: the training job as a process on this machine.

It runs the same entrypoint as the container (`python -m nulog.job`, arguments from the trainer contract),
in its own session, under a small shell wrapper that records its own pid and, at the end, the job's exit
code in the job's directory. The job therefore outlives a controller that dies, and a restarted controller
can still learn how it ended: the job directory, not the controller's memory, is the truth about what runs.

    <jobs dir>/<job>/spec.json   what was launched
                     pid         the wrapper's pid (also the process group), written by the wrapper itself
                     events.log  the job's stdout: one trainer-contract event per line
                     stderr.log  the job's human-readable log
                     exit_code   written when the job has ended
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

from nulog.objectstore import MinioConfig
from nulog.protocol import ErrorEvent
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
)

log = logging.getLogger(__name__)

# Records its pid, runs the job, then records its exit code atomically; "$@" keeps every argument as it is.
_WRAPPER = (
    'cd "$0" && echo $$ > pid.tmp && mv pid.tmp pid && "$@" > events.log 2> stderr.log; '
    "echo $? > exit_code.tmp && mv exit_code.tmp exit_code"
)
POLL_SECONDS = 0.2
PID_WAIT_SECONDS = 5.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_jobs(jobs_dir: Path, *, sig: int = signal.SIGTERM) -> list[str]:
    """Signal every job under `jobs_dir` that still runs; returns their ids (used by the demo's clean-up)."""
    signalled = []
    for pid_file in sorted(jobs_dir.glob("*/pid")):
        if (pid_file.parent / "exit_code").exists():
            continue
        try:
            os.killpg(int(pid_file.read_text()), sig)
            signalled.append(pid_file.parent.name)
        except (ProcessLookupError, ValueError, PermissionError):
            pass
    return signalled


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
        self._processes: dict[str, asyncio.subprocess.Process] = {}

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
        try:
            job_dir.mkdir(parents=True)
            (job_dir / "spec.json").write_text(json.dumps(spec.args.model_dump(mode="json"), indent=2))
            process = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", _WRAPPER, str(job_dir), *spec.command(self.python),
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                env=self.env,
            )
        except OSError as e:
            raise LauncherUnavailable(f"cannot start job {spec.job_id}: {e}") from e
        self._processes[spec.job_id] = process  # reaped by events(); keeps no zombie around
        # The wrapper writes its pid first thing; once it is there, a restarted controller can find the job.
        for _ in range(int(PID_WAIT_SECONDS / 0.01)):
            if (job_dir / "pid").exists() or process.returncode is not None:
                break
            await asyncio.sleep(0.01)
        log.info("job %s: started local process %d", spec.job_id, process.pid)

    async def events(self, job_id: str) -> AsyncIterator[LauncherEvent]:
        job_dir = self._dir(job_id)
        events_log, exit_file = job_dir / "events.log", job_dir / "exit_code"
        position = 0
        last_error = ""
        pending = b""
        quiet_since = time.monotonic()

        def poll(position: int) -> tuple[bool, bytes]:
            ended = exit_file.exists()  # look before reading, so no line written before the end is missed
            return ended, _read_from(events_log, position)

        if not await asyncio.to_thread(job_dir.is_dir):
            yield Finished(succeeded=False, message=f"job {job_id} was never launched here")
            return
        while True:
            ended, chunk = await asyncio.to_thread(poll, position)
            position += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if ended and pending.strip():  # the job's last line, written without its newline
                lines.append(pending)
            for raw in lines:
                event = parse_line(raw)
                if isinstance(event, TrainerOutput) and isinstance(event.event, ErrorEvent):
                    last_error = event.event.message
                quiet_since = time.monotonic()
                yield event
            if ended:
                break
            if not await asyncio.to_thread(lambda: self._pid_alive(job_dir) or exit_file.exists()):
                # The wrapper died without recording an exit code (killed with the machine, or by hand).
                yield Finished(succeeded=False, message="the training process disappeared")
                return
            if time.monotonic() - quiet_since >= STILL_RUNNING_SECONDS:
                quiet_since = time.monotonic()
                yield StillRunning()
            await asyncio.sleep(POLL_SECONDS)
        code = (await asyncio.to_thread(exit_file.read_text)).strip()
        process = self._processes.pop(job_id, None)
        if process is not None:
            await process.wait()
        if code == "0":
            yield Finished(succeeded=True, message="exit code 0")
        else:
            reason = last_error or await asyncio.to_thread(_tail, job_dir / "stderr.log") or "no output"
            yield Finished(succeeded=False, message=f"exit code {code}: {reason}")

    def _pid_alive(self, job_dir: Path) -> bool:
        """Whether anything of the job still runs: the wrapper, or the trainer (in the wrapper's group) even
        when the wrapper was killed alone."""
        try:
            pgid = int((job_dir / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return False
        return self._group_alive(pgid)

    async def cancel(self, job_id: str) -> None:
        """SIGTERM to the job's process group; SIGKILL after the grace period; returns once it has ended."""
        job_dir = self._dir(job_id)
        try:
            pgid = int((job_dir / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return  # never started, or its launch died before the process recorded itself
        if not self._group_alive(pgid):
            return
        self._signal(job_id, pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.cancel_grace_seconds
        while self._group_alive(pgid):
            if time.monotonic() >= deadline:
                log.warning("job %s: still running %.0fs after SIGTERM; sending SIGKILL", job_id, self.cancel_grace_seconds)
                self._signal(job_id, pgid, signal.SIGKILL)
                deadline = time.monotonic() + self.cancel_grace_seconds
            await asyncio.sleep(POLL_SECONDS)
        process = self._processes.pop(job_id, None)
        if process is not None:
            await process.wait()

    def _group_alive(self, pgid: int) -> bool:
        """Whether any process of the job's group still runs; zombies waiting to be reaped do not count."""
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _group_has_live_members(pgid) if Path("/proc/self/stat").exists() else True

    def _signal(self, job_id: str, pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
            log.info("job %s: sent %s to its process group", job_id, signal.Signals(sig).name)
        except ProcessLookupError:
            pass

    async def list_jobs(self) -> list[LaunchedJob]:
        def scan() -> list[LaunchedJob]:
            jobs = []
            for job_dir in sorted(p for p in self.jobs_dir.glob("*") if p.is_dir()):
                exit_file = job_dir / "exit_code"
                if exit_file.exists():
                    code = exit_file.read_text().strip()
                    state = "succeeded" if code == "0" else "failed"
                    jobs.append(LaunchedJob(job_dir.name, state, f"exit code {code}"))
                elif not (job_dir / "pid").exists():
                    continue  # a launch that never got its process going: not a job
                elif self._pid_alive(job_dir):
                    jobs.append(LaunchedJob(job_dir.name, "running"))
                else:
                    jobs.append(LaunchedJob(job_dir.name, "failed", "the training process disappeared"))
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


def _group_has_live_members(pgid: int) -> bool:
    """Whether any process of group `pgid` other than zombies is left, from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            return True
    return False


def _read_from(path: Path, position: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(position)
            return f.read()
    except FileNotFoundError:
        return b""


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])
