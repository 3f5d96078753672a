"""The `nats_kv` state store: JetStream key-value buckets, so that state survives the controller.

Opni's keys (`modelTrainingParameters`, `lastModelTrained`, `modelTrainingStatus`) live in the bucket Opni's
gateway reads, `model-training-parameters`; job records live in `training-jobs`, one key per job. Sequence
numbers come from the revision of a put, which JetStream makes strictly increasing across restarts.
"""

from __future__ import annotations

import json
from typing import Any

from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from training_controller.bus import Bus
from training_controller.core.jobs import JobRecord
from training_controller.core.ports import StateStore

PARAMETERS_BUCKET = "model-training-parameters"
JOBS_BUCKET = "training-jobs"
_SEQ_KEY = "_seq"


class NatsKVStateStore(StateStore):
    """Job records and Opni's values in JetStream KV."""

    def __init__(self, parameters: KeyValue, jobs: KeyValue) -> None:
        self._parameters = parameters
        self._jobs = jobs

    @classmethod
    async def open(cls, bus: Bus) -> NatsKVStateStore:
        return cls(await bus.key_value(PARAMETERS_BUCKET), await bus.key_value(JOBS_BUCKET))

    async def save_job(self, record: JobRecord) -> None:
        await self._jobs.put(record.job_id, json.dumps(record.to_json()).encode())

    async def get_job(self, job_id: str) -> JobRecord | None:
        try:
            entry = await self._jobs.get(job_id)
        except KeyNotFoundError:
            return None
        return JobRecord.model_validate_json(entry.value) if entry.value else None

    async def list_jobs(self) -> list[JobRecord]:
        try:
            keys = await self._jobs.keys()
        except NoKeysError:
            return []
        records = []
        for key in keys:
            if key != _SEQ_KEY and (record := await self.get_job(key)) is not None:
                records.append(record)
        return sorted(records, key=lambda r: r.seq)

    async def get_value(self, key: str) -> Any | None:
        try:
            entry = await self._parameters.get(key)
        except KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None

    async def put_value(self, key: str, value: Any) -> None:
        await self._parameters.put(key, json.dumps(value).encode())

    async def next_seq(self) -> int:
        return await self._jobs.put(_SEQ_KEY, b"")
