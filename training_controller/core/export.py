"""Export of training data: logs from the source, masked and grouped into time windows, into the store.

The export streams: documents arrive in batches, are masked and written to a gzip file, and the file is
uploaded when complete, so memory stays bounded whatever the size of the window. The next batch is fetched
while one is masked. The file's sha256 becomes the job's `train_data_version_hash`; the gzip header carries
no name and no time, so the same documents give the same hash.

`Exporter` is what the job runner calls. `InProcessExporter` masks in a worker thread of the calling
process, which holds that process's GIL while it works (fine for tests and a laptop); the process-based
exporter in `training_controller.adapters.export` runs the same `export_to_store` in a child process.

Object layout: `<training bucket>/<job>/windows.jsonl.gz`, one JSON object per window
(`{"start_ts", "end_ts", "count", "logs"}`), and `<job>/manifest.json`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from training_controller.core.errors import NoTrainingData
from training_controller.core.masking import mask_lines
from training_controller.core.ports import LogDocument, LogSource, ObjectStore
from training_controller.core.queries import LogQuery

log = logging.getLogger(__name__)

DATA_FILE = "windows.jsonl.gz"
MANIFEST_FILE = "manifest.json"
MAX_LINES_PER_WINDOW = 10_000
PREFETCH_BATCHES = 2  # batches fetched ahead of the masking; bounds memory with the source's batch size


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    count: int
    windows: int
    sha256: str
    bucket: str
    data_key: str
    manifest_key: str


class Exporter(abc.ABC):
    """Exports the log documents a training asks for into the object store."""

    @abc.abstractmethod
    async def export(self, query: LogQuery, *, job_id: str, bucket: str, window_seconds: int) -> ExportResult:
        """Masked windows and a manifest under `<bucket>/<job_id>/`; raises NoTrainingData when nothing matches.

        The source's and the store's TemporaryError and PermanentError subclasses pass through as they are.
        """


class InProcessExporter(Exporter):
    """Exports in this process: masking runs in a worker thread, holding this process's GIL meanwhile."""

    def __init__(self, source: LogSource, store: ObjectStore) -> None:
        self.source = source
        self.store = store

    async def export(self, query: LogQuery, *, job_id: str, bucket: str, window_seconds: int) -> ExportResult:
        return await export_to_store(
            query, job_id=job_id, source=self.source, store=self.store, bucket=bucket, window_seconds=window_seconds
        )


class _HashingFile:
    """A binary file that hashes what is written to it, so the sha256 needs no second read."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()


class WindowWriter:
    """Masks documents and writes them, grouped by time window, to a gzip JSONL file (blocking; run in a thread)."""

    def __init__(self, path: Path, *, window_ns: int) -> None:
        self._raw = path.open("wb")
        self._hashing = _HashingFile(self._raw)
        self._file = gzip.GzipFile(filename="", mode="wb", fileobj=self._hashing, compresslevel=6, mtime=0)
        self._window_ns = window_ns
        self._index: int | None = None
        self._logs: list[str] = []
        self.count = 0
        self.windows = 0

    def write_batch(self, docs: list[LogDocument]) -> None:
        masked = mask_lines([str(doc.get("log", "")).rstrip("\n") for doc in docs])
        for doc, line in zip(docs, masked, strict=True):
            index = int(doc["timestamp"]) // self._window_ns
            if index != self._index or len(self._logs) >= MAX_LINES_PER_WINDOW:
                self._flush()
                self._index = index
            self._logs.append(line)
        self.count += len(docs)

    def _flush(self) -> None:
        if not self._logs:
            return
        assert self._index is not None
        window = {
            "start_ts": self._index * self._window_ns,
            "end_ts": (self._index + 1) * self._window_ns,
            "count": len(self._logs),
            "logs": self._logs,
        }
        self._file.write(json.dumps(window, ensure_ascii=False).encode() + b"\n")
        self.windows += 1
        self._logs = []

    def close(self) -> str:
        """Write the last window and close the file; returns the file's sha256."""
        try:
            self._flush()
            self._file.close()
        finally:
            self._raw.close()
        return self._hashing.digest.hexdigest()


_END = object()


async def _prefetch(batches: AsyncIterator[list[LogDocument]], queue: asyncio.Queue[Any]) -> None:
    """Move batches into the queue, then `_END`; an error goes into the queue for the consumer to raise."""
    try:
        async with contextlib.aclosing(batches):  # type: ignore[type-var]
            async for batch in batches:
                await queue.put(batch)
    except Exception as e:  # handed to the consumer, which raises it in the export's own task
        await queue.put(e)
    else:
        await queue.put(_END)


async def export_to_store(
    query: LogQuery,
    *,
    job_id: str,
    source: LogSource,
    store: ObjectStore,
    bucket: str,
    window_seconds: int,
) -> ExportResult:
    """Stream the documents that match `query` into the store; raises NoTrainingData when none match."""
    with tempfile.TemporaryDirectory(prefix=f"export-{job_id}-") as tmp:
        path = Path(tmp) / DATA_FILE
        writer = await asyncio.to_thread(WindowWriter, path, window_ns=window_seconds * 1_000_000_000)
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=PREFETCH_BATCHES)
        prefetch = asyncio.create_task(_prefetch(source.stream(query), queue))
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, Exception):
                    raise item
                await asyncio.to_thread(writer.write_batch, item)
        finally:
            prefetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prefetch
            sha = await asyncio.to_thread(writer.close)
        if writer.count == 0:
            raise NoTrainingData("no log documents match the requested time intervals and workloads")
        data_key = f"{job_id}/{DATA_FILE}"
        await store.put_file(bucket, data_key, path)
    manifest: dict[str, Any] = {
        "job_id": job_id,
        "count": writer.count,
        "windows": writer.windows,
        "sha256": sha,
        "intervals": [i.model_dump() for i in query.intervals],
        "workloads": [w.model_dump() for w in query.workloads],
        "data_file": DATA_FILE,
    }
    manifest_key = f"{job_id}/{MANIFEST_FILE}"
    await store.put_bytes(bucket, manifest_key, json.dumps(manifest, indent=2).encode())
    log.info("job %s: exported %d log lines in %d windows (sha256 %s)", job_id, writer.count, writer.windows, sha[:12])
    return ExportResult(writer.count, writer.windows, sha, bucket, data_key, manifest_key)


async def export_training_data(
    query: LogQuery,
    *,
    job_id: str,
    source: LogSource,
    store: ObjectStore,
    bucket: str,
    window_seconds: int = 60,
) -> ExportResult:
    """The in-process export as a function, for callers that hold a source and a store (`InProcessExporter`)."""
    return await InProcessExporter(source, store).export(
        query, job_id=job_id, bucket=bucket, window_seconds=window_seconds
    )
