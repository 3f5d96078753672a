"""Export of training data: logs from the source, masked and grouped into time windows, into the store.

The export streams: documents arrive in batches, are masked and written to a gzip file in a worker thread,
and the file is uploaded when complete, so memory stays bounded whatever the size of the window. The file's
sha256 becomes the job's `train_data_version_hash`.

Object layout: `<training bucket>/<job>/windows.jsonl.gz`, one JSON object per window
(`{"start_ts", "end_ts", "count", "logs"}`), and `<job>/manifest.json`.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from training_controller.core.errors import NoTrainingData
from training_controller.core.masking import mask
from training_controller.core.ports import LogDocument, LogSource, ObjectStore
from training_controller.core.queries import LogQuery

log = logging.getLogger(__name__)

DATA_FILE = "windows.jsonl.gz"
MANIFEST_FILE = "manifest.json"
MAX_LINES_PER_WINDOW = 10_000


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    count: int
    windows: int
    sha256: str
    bucket: str
    data_key: str
    manifest_key: str


class WindowWriter:
    """Masks documents and writes them, grouped by time window, to a gzip JSONL file (blocking; run in a thread)."""

    def __init__(self, path: Path, *, window_ns: int) -> None:
        self._file: IO[bytes] = gzip.open(path, "wb", compresslevel=6)
        self._window_ns = window_ns
        self._index: int | None = None
        self._logs: list[str] = []
        self.count = 0
        self.windows = 0

    def write_batch(self, docs: list[LogDocument]) -> None:
        for doc in docs:
            ts = int(doc["timestamp"])
            index = ts // self._window_ns
            if index != self._index or len(self._logs) >= MAX_LINES_PER_WINDOW:
                self._flush()
                self._index = index
            self._logs.append(mask(str(doc.get("log", "")).rstrip("\n")))
            self.count += 1

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

    def close(self) -> None:
        self._flush()
        self._file.close()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def export_training_data(
    query: LogQuery,
    *,
    job_id: str,
    source: LogSource,
    store: ObjectStore,
    bucket: str,
    window_seconds: int = 60,
) -> ExportResult:
    """Stream the documents that match `query` into the store; raises NoTrainingData when none match."""
    with tempfile.TemporaryDirectory(prefix=f"export-{job_id}-") as tmp:
        path = Path(tmp) / DATA_FILE
        writer = await asyncio.to_thread(WindowWriter, path, window_ns=window_seconds * 1_000_000_000)
        try:
            async for batch in source.stream(query):
                await asyncio.to_thread(writer.write_batch, batch)
        finally:
            await asyncio.to_thread(writer.close)
        if writer.count == 0:
            raise NoTrainingData("no log documents match the requested time intervals and workloads")
        sha = await asyncio.to_thread(_sha256, path)
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
