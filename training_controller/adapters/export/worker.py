"""The export worker: `python -m training_controller.adapters.export.worker`, started by `ProcessExporter`.

It reads one request from stdin, builds its own log source and object store from the request's factories,
runs `export_to_store` and writes the outcome to stdout (see `frames`). Its log records go to the controller
as frames too, so they reach the controller's handlers. When stdin closes before the export is done (the
controller cancelled the job, or died) the export is cancelled, its cleanup runs (the point in time is
closed, the temporary file removed) and the worker exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from training_controller.adapters.export import frames
from training_controller.core.export import ExportResult, export_to_store


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


async def _export(job: frames.Job) -> ExportResult:
    source = job.source_factory()
    try:
        store = job.store_factory()
        return await export_to_store(
            job.query,
            job_id=job.job_id,
            source=source,
            store=store,
            bucket=job.bucket,
            window_seconds=job.window_seconds,
        )
    finally:
        await source.close()


async def _serve(send: Callable[[Any], None]) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
    request: frames.Request = await frames.read(stdin)
    sys.path[:] = request.sys_path  # where the controller found the factories' modules
    root = logging.getLogger()
    root.handlers[:] = [_FrameHandler(send, request.log_level)]
    root.setLevel(request.log_level)
    try:
        job: frames.Job = pickle.loads(request.job)
        export = asyncio.create_task(_export(job))
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
        send(frames.Done(export.result(), _peak_rss_kib()))
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
