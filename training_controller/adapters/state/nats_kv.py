"""The `nats_kv` state store: JetStream key-value buckets, so that state survives the controller.

Opni's keys (`modelTrainingParameters`, `lastModelTrained`, `modelTrainingStatus`) live in the bucket Opni's
gateway reads, `model-training-parameters`; job records live in `training-jobs`, one key per job. Sequence
numbers come from the revision of a put, which JetStream makes strictly increasing across restarts.

The controller is the only writer of the job records, so it keeps them in memory as well, written through
to KV and loaded once at start. Listing the keys of a KV bucket while a record is being rewritten can miss
that key (the rewrite moves it past the listing's cursor); the cache never does.
"""

from __future__ import annotations

import json
from typing import Any

from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from training_controller.bus import Bus, translated
from training_controller.core.errors import StateUnavailable
from training_controller.core.jobs import JobRecord
from training_controller.core.ports import StateStore

PARAMETERS_BUCKET = "model-training-parameters"
JOBS_BUCKET = "training-jobs"
_SEQ_KEY = "_seq"


class NatsKVStateStore(StateStore):
    """Job records and Opni's values in JetStream KV."""

    def __init__(self, parameters: KeyValue, jobs: KeyValue, *, bus: Bus | None = None) -> None:
        self._parameters = parameters
        self._jobs = jobs
        self._bus = bus
        self._records: dict[str, JobRecord] = {}

    @classmethod
    async def open(cls, bus: Bus) -> NatsKVStateStore:
        store = cls(await bus.key_value(PARAMETERS_BUCKET), await bus.key_value(JOBS_BUCKET), bus=bus)
        await store._load()
        return store

    async def _load(self) -> None:
        try:
            keys = await self._jobs.keys()
        except NoKeysError:
            return
        for key in keys:
            if key == _SEQ_KEY:
                continue
            try:
                entry = await self._jobs.get(key)
            except KeyNotFoundError:
                continue
            if entry.value:
                self._records[key] = JobRecord.model_validate_json(entry.value)

    async def save_job(self, record: JobRecord) -> None:
        with translated(StateUnavailable, f"saving job {record.job_id}"):
            await self._jobs.put(record.job_id, json.dumps(record.to_json()).encode())
        self._records[record.job_id] = record

    async def get_job(self, job_id: str) -> JobRecord | None:
        return self._records.get(job_id)

    async def list_jobs(self) -> list[JobRecord]:
        return sorted(self._records.values(), key=lambda r: r.seq)

    async def get_value(self, key: str) -> Any | None:
        try:
            with translated(StateUnavailable, f"reading {key}"):
                entry = await self._parameters.get(key)
        except KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None

    async def put_value(self, key: str, value: Any) -> None:
        with translated(StateUnavailable, f"writing {key}"):
            await self._parameters.put(key, json.dumps(value).encode())

    async def next_seq(self) -> int:
        with translated(StateUnavailable, "taking a sequence number"):
            return await self._jobs.put(_SEQ_KEY, b"")

    async def ping(self) -> bool:
        return self._bus is None or self._bus.connected
