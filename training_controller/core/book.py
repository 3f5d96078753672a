"""The job records as the core reads and changes them.

Records are changed by the job runner and by requests (submit, cancel). Every read-modify-write holds one
lock, so that no change overwrites another, and reads the record as stored, not a copy someone kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from training_controller.core.errors import JobNotFound
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.ports import StateStore


class JobBook:
    """Job records in the state store, changed one at a time."""

    def __init__(self, state: StateStore) -> None:
        self._state = state
        self.lock = asyncio.Lock()

    async def find(self, job_id: str) -> JobRecord | None:
        return await self._state.get_job(job_id)

    async def get(self, job_id: str) -> JobRecord:
        record = await self._state.get_job(job_id)
        if record is None:
            raise JobNotFound(f"no training job with id {job_id!r}")
        return record

    async def all(self) -> list[JobRecord]:
        """Every record, by submission order."""
        return await self._state.list_jobs()

    async def pending(self) -> list[JobRecord]:
        """The records that have not reached a final phase, by submission order."""
        return [r for r in await self._state.list_jobs() if not r.phase.is_final]

    async def add_unlocked(self, record: JobRecord) -> None:
        """Store a new record; the caller holds `lock`."""
        await self._state.save_job(record)

    async def update(self, job_id: str, change: Callable[[JobRecord], JobRecord]) -> JobRecord:
        """Apply `change` to the stored record and store the result, with no other change in between.

        One try: a state store that does not answer raises its TemporaryError to the caller, who decides
        whether to retry.
        """
        async with self.lock:
            current = await self.get(job_id)
            record = change(current)
            if record is not current:
                await self._state.save_job(record)
            return record

    async def queue_position(self, job_id: str) -> int:
        """How many jobs will run before this one (0: it runs now or next)."""
        records = await self._state.list_jobs()
        me = next((r for r in records if r.job_id == job_id), None)
        if me is None or me.phase is not JobPhase.QUEUED:
            return 0
        return sum(
            1
            for r in records
            if (r.phase is JobPhase.QUEUED and r.seq < me.seq) or (not r.phase.is_final and r.phase is not JobPhase.QUEUED)
        )
