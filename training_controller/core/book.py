"""The job records as the core reads and changes them.

Records are changed by the job runner and by requests (submit, cancel). Every read-modify-write holds one
lock, so that no change overwrites another, and reads the record as stored, not a copy someone kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from training_controller.core.errors import JobNotFound
from training_controller.core.jobs import JobRecord
from training_controller.core.ports import StateStore


class JobBook:
    """Job records in the state store, changed one at a time."""

    def __init__(self, state: StateStore) -> None:
        self._state = state
        self.index = state.index  # reads are answered from memory, without a scan
        self.lock = asyncio.Lock()

    def find(self, job_id: str) -> JobRecord | None:
        return self.index.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        record = self.index.get(job_id)
        if record is None:
            raise JobNotFound(f"no training job with id {job_id!r}")
        return record

    def all(self) -> list[JobRecord]:
        """Every record, by submission order."""
        return self.index.all()

    async def add_unlocked(self, record: JobRecord) -> None:
        """Store a new record; the caller holds `lock`."""
        await self._state.save_job(record)

    async def update(self, job_id: str, change: Callable[[JobRecord], JobRecord]) -> JobRecord:
        """Apply `change` to the stored record and store the result, with no other change in between.

        One try: a state store that does not answer raises its TemporaryError to the caller, who decides
        whether to retry.
        """
        async with self.lock:
            current = self.get(job_id)
            record = change(current)
            if record is not current:
                await self._state.save_job(record)
            return record

    async def prune(self, *, keep: int, max_age_seconds: float) -> int:
        """Forget ended jobs beyond the retention (count and age); returns how many went."""
        cutoff = datetime.fromtimestamp(time.time() - max_age_seconds, UTC).isoformat(timespec="milliseconds")
        gone = self.index.beyond_retention(keep=keep, older_than=cutoff.replace("+00:00", "Z"))
        for job_id in gone:
            await self._state.delete_job(job_id)
        return len(gone)
