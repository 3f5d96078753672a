"""The `files` log source: JSONL documents on disk, with the fields of Opni's `logs` index.

This is the embedded default for a laptop and for tests. Every `*.jsonl` and `*.jsonl.gz` file under the
directory is read line by line in a worker thread, so the event loop stays free. The hits of one interval are
sorted by time in memory, as a search backend would return them: fine for a laptop's files; the search
backends stream instead.
A document needs an integer `timestamp` in nanoseconds and a `log` string; lines that are not such documents
are skipped and counted in the log.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

from training_controller.core.errors import SourceUnavailable
from training_controller.core.ports import LogDocument, LogSource
from training_controller.core.queries import LogQuery

log = logging.getLogger(__name__)

BATCH = 2_000


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace")


class FilesLogSource(LogSource):
    """Log documents from JSONL files in a directory."""

    name = "files"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            raise SourceUnavailable(f"log directory {self.directory} does not exist")
        return sorted(p for p in self.directory.rglob("*") if p.name.endswith((".jsonl", ".jsonl.gz")))

    def _matching(self, query: LogQuery) -> Iterator[LogDocument]:
        """Documents that match, ordered by interval and, within one interval, by time."""
        skipped = 0
        for interval in query.intervals:
            # Python filtering cannot use an index; sort each interval's hits so the order is the one a
            # search backend gives (by timestamp).
            hits: list[tuple[int, int, LogDocument]] = []
            for path in self._files():
                with _open(path) as f:
                    for n, line in enumerate(f):
                        try:
                            doc = json.loads(line)
                            ts = int(doc["timestamp"])
                            doc["log"] = str(doc["log"])
                        except (ValueError, KeyError, TypeError):
                            skipped += 1
                            continue
                        if interval.contains(ts) and query.matches(doc, ts):
                            hits.append((ts, n, doc))
            hits.sort(key=lambda h: (h[0], h[1]))
            yield from (doc for _, _, doc in hits)
        if skipped:
            log.warning("files log source: skipped %d lines that are not log documents", skipped)

    def _capped(self, query: LogQuery) -> Iterator[LogDocument]:
        for n, doc in enumerate(self._matching(query)):
            if query.max_documents is not None and n >= query.max_documents:
                return
            yield doc

    async def count(self, query: LogQuery) -> int:
        return await asyncio.to_thread(lambda: sum(1 for _ in self._matching(query)))

    async def stream(self, query: LogQuery) -> AsyncIterator[list[LogDocument]]:
        docs = self._capped(query)

        def next_batch() -> list[LogDocument]:
            batch = []
            for doc in docs:
                batch.append(doc)
                if len(batch) >= BATCH:
                    break
            return batch

        while batch := await asyncio.to_thread(next_batch):
            yield batch

    async def ping(self) -> bool:
        return self.directory.is_dir()
