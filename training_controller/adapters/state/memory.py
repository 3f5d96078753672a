"""The `memory` state store: for unit tests only; it forgets everything when the process ends."""

from __future__ import annotations

import copy
from typing import Any

from training_controller.core.jobs import JobRecord
from training_controller.core.ports import StateStore


class MemoryStateStore(StateStore):
    """Job records and values in dictionaries."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobRecord] = {}
        self._values: dict[str, Any] = {}
        self._seq = 0

    async def save_job(self, record: JobRecord) -> None:
        self._jobs[record.job_id] = record

    async def get_job(self, job_id: str) -> JobRecord | None:
        return self._jobs.get(job_id)

    async def list_jobs(self) -> list[JobRecord]:
        return sorted(self._jobs.values(), key=lambda r: r.seq)

    async def get_value(self, key: str) -> Any | None:
        return copy.deepcopy(self._values.get(key))

    async def put_value(self, key: str, value: Any) -> None:
        self._values[key] = copy.deepcopy(value)

    async def next_seq(self) -> int:
        self._seq += 1
        return self._seq
