"""The `local` launcher: the training job as a process on this machine.

It runs the same entrypoint as the container (`python -m nulog.job`), in its own session, under a small
shell wrapper that records the exit code in the job's directory. The job therefore outlives a controller that
dies, and a restarted controller can still learn how it ended: the job directory, not the controller's
memory, is the truth about what runs.

    <jobs dir>/<job>/spec.json   what was launched
                     pid         the wrapper's pid (also the process group)
                     events.log  the job's stdout: one JSON event per line
                     stderr.log  the job's human-readable log
                     exit_code   written when the job has ended
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

from training_controller.core.errors import LauncherUnavailable
from training_controller.core.ports import JobSpec, LaunchedJob, Launcher, LauncherEvent

log = logging.getLogger(__name__)

# Runs the job, then records its exit code atomically; "$@" keeps every argument as it is.
_WRAPPER = 'cd "$0" && "$@" > events.log 2> stderr.log; echo $? > exit_code.tmp && mv exit_code.tmp exit_code'
POLL_SECONDS = 0.2


def job_command(spec: JobSpec, *, python: str = sys.executable) -> list[str]:
    """The training entrypoint's command line for a spec (the container runs the same arguments)."""
    cmd = [python, "-m", "nulog.job", "--job-id", spec.job_id, "--data", *spec.data_uris, "--output", spec.output_uri]
    cmd += ["--epochs", str(spec.epochs), "--seed", str(spec.seed), "--device", spec.device]
    if spec.max_lines:
        cmd += ["--max-lines", str(spec.max_lines)]
    return cmd


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
        except (ProcessLookupError, ValueError):
            pass
    return signalled


class LocalLauncher(Launcher):
    """Training jobs as local processes."""

    name = "local"

    def __init__(self, jobs_dir: Path, *, python: str = sys.executable, env: dict[str, str] | None = None) -> None:
        self.jobs_dir = jobs_dir
        self.python = python
        self.env = env
        self._processes: dict[str, asyncio.subprocess.Process] = {}

    def _dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    async def launch(self, spec: JobSpec) -> None:
        job_dir = self._dir(spec.job_id)
        try:
            job_dir.mkdir(parents=True, exist_ok=False)
            (job_dir / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
            process = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", _WRAPPER, str(job_dir), *job_command(spec, python=self.python),
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                env=self.env,
            )
        except FileExistsError:
            raise LauncherUnavailable(f"job {spec.job_id} was already launched") from None
        except OSError as e:
            raise LauncherUnavailable(f"cannot start job {spec.job_id}: {e}") from e
        (job_dir / "pid").write_text(str(process.pid))
        self._processes[spec.job_id] = process  # reaped by events(); keeps no zombie around
        log.info("job %s: started local process %d", spec.job_id, process.pid)

    async def events(self, job_id: str) -> AsyncIterator[LauncherEvent]:
        job_dir = self._dir(job_id)
        events_log, exit_file = job_dir / "events.log", job_dir / "exit_code"
        position = 0
        last_error = ""
        pending = b""

        def poll(position: int) -> tuple[bool, bytes]:
            ended = exit_file.exists()  # look before reading, so no line written before the end is missed
            return ended, _read_from(events_log, position)

        while True:
            ended, chunk = await asyncio.to_thread(poll, position)
            position += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if ended and pending.strip():  # the job's last line, written without its newline
                lines.append(pending)
            for raw in lines:
                event = parse_line(raw)
                if event.data.get("event") == "error":
                    last_error = str(event.data.get("message", ""))
                yield event
            if ended:
                break
            if not await asyncio.to_thread(lambda: self._pid_alive(job_dir) or exit_file.exists()):
                # The wrapper died without recording an exit code (killed with the machine, or by hand).
                yield LauncherEvent("finished", succeeded=False, message="the training process disappeared")
                return
            await asyncio.sleep(POLL_SECONDS)
        code = (await asyncio.to_thread(exit_file.read_text)).strip()
        process = self._processes.pop(job_id, None)
        if process is not None:
            await process.wait()
        if code == "0":
            yield LauncherEvent("finished", succeeded=True, message="exit code 0")
        else:
            reason = last_error or await asyncio.to_thread(_tail, job_dir / "stderr.log") or "no output"
            yield LauncherEvent("finished", succeeded=False, message=f"exit code {code}: {reason}")

    def _pid_alive(self, job_dir: Path) -> bool:
        process = self._processes.get(job_dir.name)
        if process is not None:
            return process.returncode is None or (job_dir / "exit_code").exists()
        try:
            return _alive(int((job_dir / "pid").read_text()))
        except (FileNotFoundError, ValueError):
            return False

    async def cancel(self, job_id: str) -> None:
        pid_file = self._dir(job_id) / "pid"
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            log.info("job %s: sent SIGTERM to its process group", job_id)
        except (FileNotFoundError, ProcessLookupError):
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
                elif self._pid_alive(job_dir):
                    jobs.append(LaunchedJob(job_dir.name, "running"))
                else:
                    jobs.append(LaunchedJob(job_dir.name, "failed", "the training process disappeared"))
            return jobs

        return await asyncio.to_thread(scan) if self.jobs_dir.is_dir() else []

    async def healthy(self) -> bool:
        def check() -> bool:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            return os.access(self.jobs_dir, os.W_OK)

        try:
            return await asyncio.to_thread(check)
        except OSError:
            return False


def _read_from(path: Path, position: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(position)
            return f.read()
    except FileNotFoundError:
        return b""


def parse_line(raw: bytes) -> LauncherEvent:
    """A line of a training job's stdout: a JSON event becomes "progress", anything else "log"."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and "event" in data:
        return LauncherEvent("progress", data)
    return LauncherEvent("log", {"line": text})


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])
