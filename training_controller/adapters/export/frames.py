"""What the controller and its export worker say to each other over the worker's stdin and stdout.

Each frame is a 4-byte big-endian length and a pickle. The controller sends one `Request`, then keeps stdin
open: closing it (or dying) tells the worker to stop. The worker answers with `LogLine`s and ends with one
`Done` or one `Failed`. Pickle is fine here: both ends are the same program, and nothing else writes to
these pipes.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
import traceback
from dataclasses import dataclass
from typing import IO, Any

from training_controller.core.errors import TemporaryError
from training_controller.core.export import ExportResult

_LENGTH = struct.Struct(">I")


@dataclass(frozen=True)
class Request:
    """The export to run: the worker sets `sys_path` first, so that `job` (a pickled `Job`) can be loaded."""

    sys_path: list[str]
    log_level: int
    idle_priority: bool  # the worker runs only when the CPU has nothing else to do
    mask_processes: int  # processes that mask beside the worker; 0 masks in a thread of the worker
    job: bytes


@dataclass(frozen=True)
class Job:
    """Everything one export needs; the factories build the worker's own source and store."""

    source_factory: Any
    store_factory: Any
    query: Any
    job_id: str
    bucket: str
    window_seconds: int


@dataclass(frozen=True)
class LogLine:
    """A log record of the worker, to be logged again by the controller."""

    name: str
    level: int
    message: str
    created: float


@dataclass(frozen=True)
class Done:
    """The export succeeded; with what it cost the worker (and its masking processes)."""

    result: ExportResult
    peak_rss_kib: int
    masking_peak_rss_kib: int | None
    cpu_seconds: float


@dataclass(frozen=True)
class Failed:
    """The export raised: the exception itself when it pickles, else its class name, message and, for a
    TemporaryError, its delay (None for any other error)."""

    error: bytes | None
    type_name: str
    message: str
    delay: float | None
    traceback: str

    @classmethod
    def of(cls, exc: BaseException) -> Failed:
        text = "".join(traceback.format_exception(exc))
        try:
            error: bytes | None = pickle.dumps(exc)
            pickle.loads(error)  # an exception whose constructor wants other arguments does not come back
        except Exception:  # then the parent rebuilds what it can from the text fields
            error = None
        delay = exc.delay if isinstance(exc, TemporaryError) else None
        kind = type(exc)
        return cls(error, f"{kind.__module__}.{kind.__qualname__}", str(exc), delay, text)


def encode(message: Any) -> bytes:
    data = pickle.dumps(message)
    return _LENGTH.pack(len(data)) + data


def write(stream: IO[bytes], message: Any) -> None:
    stream.write(encode(message))
    stream.flush()


async def read(reader: asyncio.StreamReader) -> Any:
    """The next frame; raises asyncio.IncompleteReadError at the end of the stream."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(length))
