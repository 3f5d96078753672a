"""The process-based exporter: each export runs in a child process of its own.

Masking a million lines keeps a CPU busy for seconds. In the controller's process that work holds the GIL,
and the event loop answers late while it runs (5 ms at the median, 17 ms at p99 and over 100 ms at worst,
measured on the in-process export). In a child, the controller only waits on a pipe. The child builds its
own log source and object store from picklable zero-argument factories (`functools.partial(builder,
settings)`), so no client or connection crosses the process boundary. It masks in a second process beside
it and runs only when the CPU has nothing else to do; see `worker` for the child's side.

Errors raised in the child arrive as the same classes with their messages (a TemporaryError keeps its
delay) and the child's traceback as a note. Cancelling the task that awaits `export` closes the child's
stdin, which cancels its export; a child still running `stop_timeout` seconds later is killed. A child that
dies without an answer (the kernel's OOM killer sends SIGKILL) becomes a TemporaryError that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import sys
from collections.abc import Callable

from training_controller.adapters.export import frames
from training_controller.core.errors import PermanentError, TemporaryError
from training_controller.core.export import Exporter, ExportResult
from training_controller.core.ports import LogSource, ObjectStore
from training_controller.core.queries import LogQuery

log = logging.getLogger(__name__)

WORKER = "training_controller.adapters.export.worker"


def _error(failed: frames.Failed, pid: int) -> BaseException:
    """The exception the worker raised, or the nearest ControllerError when it did not survive pickling."""
    error: BaseException | None = None
    if failed.error is not None:
        with contextlib.suppress(Exception):  # unpickling imports; if that fails, fall back as below
            error = pickle.loads(failed.error)
    if error is None:
        message = f"{failed.message} ({failed.type_name} in the export worker)"
        if failed.delay is not None:
            error = TemporaryError(message, delay=failed.delay)
        else:
            error = PermanentError(message)
    error.add_note(f"raised in the export worker (pid {pid}):\n{failed.traceback.rstrip()}")
    return error


def _died(job_id: str, pid: int, status: int) -> TemporaryError:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        why = f"was killed by {name}"
        if -status == signal.SIGKILL:
            why += " (the kernel's OOM killer does that when memory runs out)"
    else:
        why = f"exited with status {status}"
    return TemporaryError(f"the export worker of job {job_id} (pid {pid}) {why} before it finished; retry later")


class ProcessExporter(Exporter):
    """Exports in a child process per export, so the masking never holds this process's GIL."""

    def __init__(
        self,
        source_factory: Callable[[], LogSource],
        store_factory: Callable[[], ObjectStore],
        *,
        mask_processes: int = 1,
        idle_priority: bool = True,
        stop_timeout: float = 10.0,
        python: str = sys.executable,
    ) -> None:
        """`source_factory` and `store_factory` are called in the child; they must pickle (no lambdas).

        `mask_processes` mask beside the child (0: in a thread of the child). With `idle_priority` the child
        and its masking processes run only when the CPU has nothing else to do (Linux SCHED_IDLE), so that
        the controller's event loop never waits for a CPU they hold.
        """
        if mask_processes < 0:
            raise ValueError("mask_processes cannot be negative")
        for name, factory in (("source_factory", source_factory), ("store_factory", store_factory)):
            try:
                pickle.loads(pickle.dumps(factory))
            except Exception as e:
                raise TypeError(
                    f"{name} must pickle, e.g. functools.partial of a module-level function: {e}"
                ) from e
        self.source_factory, self.store_factory = source_factory, store_factory
        self.mask_processes, self.idle_priority = mask_processes, idle_priority
        self.stop_timeout, self.python = stop_timeout, python

    async def export(self, query: LogQuery, *, job_id: str, bucket: str, window_seconds: int) -> ExportResult:
        job = frames.Job(self.source_factory, self.store_factory, query, job_id, bucket, window_seconds)
        level = logging.getLogger("training_controller").getEffectiveLevel()
        request = frames.Request(list(sys.path), level, self.idle_priority, self.mask_processes, pickle.dumps(job))
        try:
            process = await asyncio.create_subprocess_exec(
                self.python,
                "-m",
                WORKER,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,  # Ctrl-C reaches the controller, which then stops the worker
            )
        except OSError as e:
            raise TemporaryError(f"cannot start the export worker of job {job_id}: {e}") from e
        log.debug("job %s: export worker started (pid %d)", job_id, process.pid)
        try:
            assert process.stdin is not None
            with contextlib.suppress(ConnectionError):  # a worker that died at once is reported below
                process.stdin.write(frames.encode(request))
                await process.stdin.drain()
            return await self._outcome(process, job_id)
        finally:
            await self._stop(process, job_id)

    async def _outcome(self, process: asyncio.subprocess.Process, job_id: str) -> ExportResult:
        assert process.stdout is not None
        while True:
            try:
                message = await frames.read(process.stdout)
            except asyncio.IncompleteReadError:
                raise _died(job_id, process.pid, await process.wait()) from None
            if isinstance(message, frames.LogLine):
                _relay(message)
            elif isinstance(message, frames.Done):
                masking = message.masking_peak_rss_kib
                log.info(
                    "job %s: export worker (pid %d) used %.1f CPU seconds and peaked at %.0f MiB%s",
                    job_id,
                    process.pid,
                    message.cpu_seconds,
                    message.peak_rss_kib / 1024,
                    "" if masking is None else f" (its masking process at {masking / 1024:.0f} MiB)",
                    extra={
                        "worker_peak_rss_kib": message.peak_rss_kib,
                        "masking_peak_rss_kib": masking,
                        "worker_cpu_seconds": message.cpu_seconds,
                    },
                )
                return message.result
            else:
                assert isinstance(message, frames.Failed)
                raise _error(message, process.pid)

    async def _stop(self, process: asyncio.subprocess.Process, job_id: str) -> None:
        """Let the worker end (closing stdin stops an export still running), or kill it after stop_timeout."""
        assert process.stdin is not None and process.stdout is not None
        if process.returncode is not None:
            # Ended already: close its pipes, so that nothing of it is left for the loop to clean up.
            process.stdin.close()
            with contextlib.suppress(Exception):  # what is left of its output is of no use now
                await asyncio.wait_for(process.stdout.read(), 5)
            return
        process.stdin.close()
        relay = asyncio.create_task(_relay_until_end(process.stdout))  # a full pipe would block its exit
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout)
        except TimeoutError:
            log.warning("job %s: export worker (pid %d) did not stop in %.0fs; killing it", job_id, process.pid,
                        self.stop_timeout)
            _kill(process)
            await process.wait()
        except asyncio.CancelledError:  # cancelled again while stopping: kill it, and wait only for that
            _kill(process)
            with contextlib.suppress(BaseException):  # a further cancel cuts the wait short; the first goes on
                await asyncio.wait_for(asyncio.shield(process.wait()), 2)
            raise
        finally:
            relay.cancel()


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        process.kill()


def _relay(line: frames.LogLine) -> None:
    logger = logging.getLogger(line.name)
    if logger.isEnabledFor(line.level):
        record = logging.makeLogRecord(
            {"name": line.name, "levelno": line.level, "levelname": logging.getLevelName(line.level),
             "msg": line.message, "created": line.created}
        )
        logger.handle(record)


async def _relay_until_end(stdout: asyncio.StreamReader) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError):
        while True:
            message = await frames.read(stdout)
            if isinstance(message, frames.LogLine):
                _relay(message)

