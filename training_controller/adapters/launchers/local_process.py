"""One worker process of a local training, and the files through which it outlives its controller.

A worker runs under a small shell wrapper, in a session and process group of its own, with its files in one
directory:

    pid         the wrapper's pid (also the process group), written by the wrapper itself, first thing
    events.log  the worker's stdout: one trainer-contract event per line
    stderr.log  its human-readable log
    exit_code   written when it has ended

A restarted controller finds out from these alone what runs and how it ended. The process group, not the
wrapper, tells whether anything still runs: a trainer whose wrapper was killed alone runs on in it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

# Records its pid, runs the job, then records its exit code atomically; "$@" keeps every argument as it is.
WRAPPER = (
    'cd "$0" && echo $$ > pid.tmp && mv pid.tmp pid && "$@" > events.log 2> stderr.log; '
    "echo $? > exit_code.tmp && mv exit_code.tmp exit_code"
)
PID_WAIT_SECONDS = 5.0


class WorkerProcess:
    """The files, and the process group, of one worker."""

    def __init__(self, directory: Path, *, index: int = 0) -> None:
        self.dir = directory
        self.index = index
        self.process: asyncio.subprocess.Process | None = None  # when started by this controller

    @property
    def role(self) -> str:
        return "master" if self.index == 0 else "worker"

    @property
    def events_log(self) -> Path:
        return self.dir / "events.log"

    def pid(self) -> int | None:
        try:
            return int((self.dir / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def exit_code(self) -> str | None:
        try:
            return (self.dir / "exit_code").read_text().strip()
        except FileNotFoundError:
            return None

    def alive(self) -> bool:
        """Whether anything of this worker still runs."""
        pgid = self.pid()
        return pgid is not None and group_alive(pgid)

    def state(self) -> str:
        """`pending`, `running`, `succeeded` or `failed` (a worker that vanished without an exit code)."""
        code = self.exit_code()
        if code is None:
            if self.pid() is None:
                return "pending"
            if self.alive():
                return "running"
            code = self.exit_code()  # the wrapper may have recorded it between the two looks
        if code is None:
            return "failed"
        return "succeeded" if code == "0" else "failed"

    async def start(self, command: list[str], env: dict[str, str] | None) -> None:
        """Start the worker; returns once its wrapper has recorded its pid (or has ended)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", WRAPPER, str(self.dir), *command,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        for _ in range(int(PID_WAIT_SECONDS / 0.01)):
            if (self.dir / "pid").exists() or self.process.returncode is not None:
                break
            await asyncio.sleep(0.01)

    def signal(self, sig: int) -> bool:
        """Signal the worker's whole process group; False when nothing of it runs."""
        pgid = self.pid()
        if pgid is None:
            return False
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return False
        return True

    async def reap(self) -> None:
        if self.process is not None:
            await self.process.wait()

    def stderr_tail(self, lines: int = 3) -> str:
        try:
            text = (self.dir / "stderr.log").read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` runs; zombies waiting to be reaped do not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return group_has_live_members(pgid) if Path("/proc/self/stat").exists() else True


def group_has_live_members(pgid: int) -> bool:
    """Whether any process of group `pgid` other than zombies is left, from /proc.

    The group's leader (the wrapper, whose pid is the group's id) is looked at first: while it runs, that
    one read answers. Only once it has ended is every process looked at: hundreds of reads on a busy node,
    made by the launcher's poll a few times a second, in a thread that takes the GIL between them.
    """
    if _live_in_group(Path("/proc", str(pgid)), pgid):
        return True
    return any(_live_in_group(entry, pgid) for entry in Path("/proc").iterdir() if entry.name.isdigit())


def _live_in_group(entry: Path, pgid: int) -> bool:
    try:
        fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # it ended meanwhile, or there is no such process
        return False
    return int(fields[2]) == pgid and fields[0] != "Z"


def read_from(path: Path, position: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(position)
            return f.read()
    except FileNotFoundError:
        return b""


def terminate(pgid: int, sig: int = signal.SIGTERM) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
