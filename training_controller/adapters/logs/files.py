"""The `files` log source: JSONL documents on disk, with the fields of Opni's `logs` index.

This is the embedded default for a laptop and for tests. Every `*.jsonl` and `*.jsonl.gz` file under the
directory is read line by line in a worker thread, so the event loop stays free.

The hits of one interval come sorted by time, as a search backend returns them, with memory bounded
whatever the window: up to `RUN` hits are sorted in memory; beyond that each sorted run goes to a temporary
file (in `marshal` form, which reads back several times faster than JSON) and the runs are merged. Runs that
follow one another in time, as those of time-ordered log files do, are read one after the other instead.
A document needs an integer `timestamp` in nanoseconds and a `log` string; lines that are not such documents
are skipped and counted in the log.
"""

from __future__ import annotations

import asyncio
import gzip
import heapq
import itertools
import json
import logging
import marshal
import struct
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

from training_controller.core.errors import SourceRejected, SourceUnavailable
from training_controller.core.ports import LogDocument, LogSource
from training_controller.core.queries import Interval, LogQuery

log = logging.getLogger(__name__)

BATCH = 2_000
RUN = 20_000  # hits sorted in memory before a run goes to disk
_CHUNK = 1_000  # hits per marshal record in a run file
_LENGTH = struct.Struct(">I")

# A hit: (timestamp, line number, file number, document). The first three are unique, so sorting never
# compares documents; ties in time keep the order of lines, then of files, as a stable sort would.
Hit = tuple[int, int, int, LogDocument]


_decode = json.JSONDecoder().raw_decode


def _document(line: str) -> dict:
    """The JSON value of one line, as `json.loads` reads it, without its per-call overhead."""
    try:
        value, end = _decode(line)
    except ValueError:
        return json.loads(line)  # leading whitespace, which raw_decode refuses; or not JSON at all
    if end != len(line) and not line[end:].isspace():
        return json.loads(line)  # raises "Extra data", as for any line holding more than one value
    return value


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace")


class _Run:
    """Sorted hits in a temporary file, read back one chunk at a time."""

    def __init__(self, directory: Path, index: int, hits: list[Hit]) -> None:
        self.path = directory / f"run-{index}.marshal"
        self.first = hits[0][:3]
        self.last = hits[-1][:3]
        with self.path.open("wb") as f:
            for i in range(0, len(hits), _CHUNK):
                data = marshal.dumps(hits[i : i + _CHUNK])
                f.write(_LENGTH.pack(len(data)) + data)

    def __iter__(self) -> Iterator[Hit]:
        with self.path.open("rb") as f:  # marshal.load on a file reads it in small pieces: read whole chunks
            while header := f.read(_LENGTH.size):
                (length,) = _LENGTH.unpack(header)
                yield from marshal.loads(f.read(length))


class FilesLogSource(LogSource):
    """Log documents from JSONL files in a directory."""

    name = "files"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            raise SourceUnavailable(f"log directory {self.directory} does not exist")
        return sorted(p for p in self.directory.rglob("*") if p.name.endswith((".jsonl", ".jsonl.gz")))

    def _hits(self, query: LogQuery, interval: Interval, skipped: list[int], stop: threading.Event) -> Iterator[Hit]:
        """The matching documents of one interval, in file order; counts the lines that are not documents.

        Stops early once `stop` is set: a cancelled stream must not go on reading in its thread.
        """
        for number, path in enumerate(self._files()):
            with _open(path) as f:
                for n, line in enumerate(f):
                    if not n & 0x3FF and stop.is_set():
                        return
                    try:
                        doc = _document(line)
                        ts = int(doc["timestamp"])
                        doc["log"] = str(doc["log"])
                    except (ValueError, KeyError, TypeError):
                        skipped[0] += 1
                        continue
                    if interval.contains(ts) and query.matches(doc, ts):
                        yield ts, n, number, doc

    def _sorted(self, hits: Iterator[Hit], scratch: Path) -> Iterator[Hit]:
        """The hits by (time, line, file), holding at most `RUN` of them in memory."""
        runs: list[_Run] = []
        while chunk := list(itertools.islice(hits, RUN)):
            chunk.sort()
            if not runs and len(chunk) < RUN:
                yield from chunk  # all of them fit: no run file
                return
            runs.append(_Run(scratch, len(runs), chunk))
            del chunk
        if all(a.last < b.first for a, b in itertools.pairwise(runs)):
            yield from itertools.chain.from_iterable(runs)
        else:
            yield from heapq.merge(*runs)

    def _matching(self, query: LogQuery, stop: threading.Event) -> Iterator[LogDocument]:
        """Documents that match, ordered by interval and, within one interval, by time."""
        skipped = [0]
        with tempfile.TemporaryDirectory(prefix="files-source-") as scratch:
            for interval in query.intervals:
                for hit in self._sorted(self._hits(query, interval, skipped, stop), Path(scratch)):
                    yield hit[3]
        if skipped[0] and not stop.is_set():
            log.warning("files log source: skipped %d lines that are not log documents", skipped[0])

    @staticmethod
    def _applicable(query: LogQuery) -> None:
        """A search body is applied as far as it was understood; the rest is refused, by name."""
        if query.search_not_understood:
            raise SourceRejected(
                "the files log source cannot apply this part of the search query: "
                + "; ".join(query.search_not_understood)
            )

    async def count(self, query: LogQuery) -> int:
        self._applicable(query)

        def count() -> int:
            skipped = [0]
            hits = (h for interval in query.intervals for h in self._hits(query, interval, skipped, threading.Event()))
            total = sum(1 for _ in hits)
            if skipped[0]:
                log.warning("files log source: skipped %d lines that are not log documents", skipped[0])
            return total

        return await asyncio.to_thread(count)

    async def stream(self, query: LogQuery) -> AsyncIterator[list[LogDocument]]:
        self._applicable(query)
        stop = threading.Event()
        matching = self._matching(query, stop)
        docs = matching if query.max_documents is None else itertools.islice(matching, query.max_documents)
        lock = threading.Lock()  # the generator runs in one thread at a time, and is closed by the last

        def next_batch() -> list[LogDocument]:
            with lock:
                return list(itertools.islice(docs, BATCH))

        def close() -> None:
            with lock:
                matching.close()  # removes the run files

        try:
            while batch := await asyncio.to_thread(next_batch):
                yield batch
        finally:
            stop.set()
            await asyncio.to_thread(close)

    async def ping(self) -> bool:
        return self.directory.is_dir()
