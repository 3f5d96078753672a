"""The export worker: `python -m training_controller.adapters.export.worker`, started by `ProcessExporter`.

It reads one request from stdin, builds its own log source and object store from the request's factories,
runs `export_to_store` and writes the outcome to stdout (see `frames`). Masking, the larger part of the
work, runs in a process beside it (`mask_processes`), so that fetching and parsing the documents and
masking them use two cores; both run only when the CPU has nothing else to do (`_idle_priority`). Its log
records go to the controller as frames too, so they reach the controller's handlers. When stdin closes
before the export is done (the controller cancelled the job, or died) the export is cancelled, its cleanup
runs (the point in time is closed, the temporary file removed) and the worker exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import pickle
import resource
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import IO, Any

from training_controller.adapters.export import frames
from training_controller.core.errors import TemporaryError
from training_controller.core.export import ExportResult, MaskLines, export_to_store, mask_in_thread
from training_controller.core.masking import mask_lines

AUTOGROUP = "/proc/self/autogroup"  # the scheduling group of this process's session, and its nice


def _sender(out: IO[bytes]) -> Callable[[Any], None]:
    """Writes frames to `out`, one at a time: log records may come from the masking thread."""
    lock = threading.Lock()

    def send(message: Any) -> None:
        with lock, contextlib.suppress(BrokenPipeError):  # the controller died: there is nobody to tell
            frames.write(out, message)

    return send


class _FrameHandler(logging.Handler):
    """Sends each record to the controller as a `LogLine` frame."""

    def __init__(self, send: Callable[[Any], None], level: int) -> None:
        super().__init__(level)
        self._send = send
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + self._formatter.formatException(record.exc_info)
            self._send(frames.LogLine(record.name, record.levelno, message, record.created))
        except Exception:  # as logging itself does: a record that cannot be sent must not end the export
            self.handleError(record)


def _peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM), in KiB."""
    with open("/proc/self/status") as status:
        return next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)


def _exit_with(worker: int) -> None:
    """Runs in each masking process: ends it once its worker is gone (killed, say, by the OOM killer)."""

    def watch() -> None:
        while os.getppid() == worker:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-worker", daemon=True).start()


async def _mask_in(pool: ProcessPoolExecutor, lines: list[str]) -> list[str]:
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, mask_lines, lines)
    except BrokenProcessPool as e:
        raise TemporaryError(f"a masking process of the export worker died ({e}); retry later") from e


class _Export:
    """One export, with the masking processes it uses and what they cost."""

    def __init__(self, job: frames.Job, mask_processes: int) -> None:
        self.job = job
        self.mask_processes = mask_processes
        self.masking_peak_rss_kib: int | None = None

    async def run(self) -> ExportResult:
        job = self.job
        async with contextlib.AsyncExitStack() as cleanup:  # undone in reverse: the source, then the pool
            mask: MaskLines = mask_in_thread
            pool = None
            if self.mask_processes:
                # spawn: a fork of this process, which has threads, could inherit a lock held at the fork
                pool = ProcessPoolExecutor(
                    self.mask_processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with,
                    initargs=(os.getpid(),),
                )
                # Waits for a batch still being masked, then for the processes to end.
                cleanup.push_async_callback(asyncio.to_thread, functools.partial(pool.shutdown, cancel_futures=True))
                mask = functools.partial(_mask_in, pool)
            source = job.source_factory()
            cleanup.push_async_callback(source.close)
            result = await export_to_store(
                job.query,
                job_id=job.job_id,
                source=source,
                store=job.store_factory(),
                bucket=job.bucket,
                window_seconds=job.window_seconds,
                mask=mask,
            )
            if pool is not None:
                loop = asyncio.get_running_loop()
                self.masking_peak_rss_kib = await loop.run_in_executor(pool, _peak_rss_kib)
            return result


def _idle_priority() -> None:
    """Run only when the CPU has nothing else to do (SCHED_IDLE; nice 19 where there is no such policy).

    A CPU that runs only SCHED_IDLE work counts as idle to the scheduler: the controller's event loop is
    put there and preempts at once when it wakes. Policy and niceness pass to the masking processes.

    Where the kernel groups processes by session (autogroup, on by default on many distributions; it
    applies to processes outside any cgroup of their own), the policy counts only within this worker's
    session, which is its own: the session's group competes with the controller's as an equal, and the
    worker would have half of a CPU the controller wants. Measured on this machine, a SCHED_IDLE loop in a
    session of its own took 2.0 of 4 CPU-seconds beside a plain loop on one CPU, 0.09 with its group's
    nice at 19; so the group's nice is set to 19 too.
    """
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:  # pragma: no cover - not Linux
        os.nice(19)
    with contextlib.suppress(OSError):  # no autogroups here (or not ours to change): the policy is enough
        with open(AUTOGROUP, "w") as f:
            f.write("19")


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (the masking processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def _serve(send: Callable[[Any], None]) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
    request: frames.Request = await frames.read(stdin)
    sys.path[:] = request.sys_path  # where the controller found the factories' modules
    if request.idle_priority:
        _idle_priority()
    root = logging.getLogger()
    root.handlers[:] = [_FrameHandler(send, request.log_level)]
    root.setLevel(request.log_level)
    try:
        job: frames.Job = pickle.loads(request.job)
        work = _Export(job, request.mask_processes)
        export = asyncio.create_task(work.run())
    except Exception as e:
        send(frames.Failed.of(e))
        return
    closed = asyncio.create_task(stdin.read())  # b"" once the controller closes stdin
    await asyncio.wait({export, closed}, return_when=asyncio.FIRST_COMPLETED)
    if not export.done():
        logging.getLogger(__name__).info("export of job %s cancelled by the controller", job.job_id)
        export.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):  # nobody waits for the outcome now
            await export
        return
    closed.cancel()
    error = export.exception()
    if error is None:
        send(frames.Done(export.result(), _peak_rss_kib(), work.masking_peak_rss_kib, _cpu_seconds()))
    else:
        send(frames.Failed.of(error))


def main() -> None:
    # Frames own the real stdout; anything else that prints goes to stderr, where it cannot corrupt them.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        asyncio.run(_serve(_sender(out)))
    finally:
        with contextlib.suppress(BrokenPipeError):
            out.close()


if __name__ == "__main__":
    main()
