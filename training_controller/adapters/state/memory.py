"""The `memory` state store: for unit tests only; it forgets everything when the process ends."""

from __future__ import annotations

import copy
from typing import Any

from training_controller.core.jobs import JobRecord
from training_controller.core.ports import StateStore


class MemoryStateStore(StateStore):
    """Job records in the index alone, values in a dictionary."""

    def __init__(self) -> None:
        super().__init__()
        self._values: dict[str, Any] = {}
        self._seq = 0

    async def save_job(self, record: JobRecord) -> None:
        self.index.put(record)

    async def delete_job(self, job_id: str) -> None:
        self.index.remove(job_id)

    async def get_value(self, key: str) -> Any | None:
        return copy.deepcopy(self._values.get(key))

    async def put_value(self, key: str, value: Any) -> None:
        self._values[key] = copy.deepcopy(value)

    async def next_seq(self) -> int:
        self._seq += 1
        return self._seq
