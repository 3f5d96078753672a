"""The `nats_kv` state store: JetStream key-value buckets, so that state survives the controller.

Opni's keys live where Opni's gateway reads them; the controller's own job records and values live in
buckets of its own (`training-jobs`, `training-controller`). Sequence numbers come from the revision of a
put, which JetStream makes strictly increasing across restarts.

The controller is the only writer of its job records, so it keeps them in memory (`RecordIndex`), written
through to KV and read once at start-up through one ordered consumer of the bucket, not a request per key.
Values are cached as well; a watch on their buckets (`watch`, a supervised task) keeps the cache
current with what others write, such as the gateway's `modelTrainingParameters`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from training_controller.bus import Bus, translated
from training_controller.core.errors import StateUnavailable
from training_controller.core.jobs import JobRecord
from training_controller.core.ports import StateStore

log = logging.getLogger(__name__)

PARAMETERS_BUCKET = "model-training-parameters"
STATISTICS_BUCKET = "model-training-statistics"
JOBS_BUCKET = "training-jobs"
CONTROLLER_BUCKET = "training-controller"
# Descriptions are part of the stream's configuration: the gateway's two are its own words, exactly.
DESCRIPTIONS = {
    PARAMETERS_BUCKET: "Storing the workloads specified for model training.",
    STATISTICS_BUCKET: "Storing the statistics for the training of the model.",
    JOBS_BUCKET: "The training controller's job records.",
    CONTROLLER_BUCKET: "The training controller's own state: the last model trained, claims on the GPU.",
}
_SEQ_KEY = "_seq"
# Which bucket holds each value key; keys not named here are the controller's own.
BUCKET_OF_KEY = {
    "modelTrainingParameters": PARAMETERS_BUCKET,
    "modelTrainingStatus": STATISTICS_BUCKET,
}
VALUE_BUCKETS = (CONTROLLER_BUCKET, PARAMETERS_BUCKET, STATISTICS_BUCKET)


class NatsKVStateStore(StateStore):
    """Job records and values in JetStream KV."""

    def __init__(self, buckets: dict[str, KeyValue], *, bus: Bus | None = None) -> None:
        super().__init__()
        self._buckets = buckets
        self._jobs = buckets[JOBS_BUCKET]
        self._bus = bus
        self._values: dict[str, Any] = {}

    @classmethod
    async def open(cls, bus: Bus) -> NatsKVStateStore:
        names = (JOBS_BUCKET, *VALUE_BUCKETS)
        store = cls({name: await bus.key_value(name, description=DESCRIPTIONS[name]) for name in names}, bus=bus)
        await store._load_records()
        for name in VALUE_BUCKETS:
            await store._read_values(store._buckets[name])
        return store

    def _value_buckets(self) -> list[KeyValue]:
        return [self._buckets[name] for name in VALUE_BUCKETS]

    async def _load_records(self) -> None:
        """Every record, from the last message per key of the jobs bucket, in one pass."""
        bad = 0
        async for key, value in _latest(self._jobs):
            if key == _SEQ_KEY or not value:
                continue
            try:
                self.index.put(JobRecord.model_validate_json(value))
            except ValueError:  # a record this version cannot read: keep going, say so once
                bad += 1
        if bad:
            log.error("%d job records in bucket %s could not be read and were left out", bad, JOBS_BUCKET)
        log.info("loaded %d job records", len(self.index))

    async def _read_values(self, bucket: KeyValue) -> None:
        async for key, value in _latest(bucket):
            self._values[key] = _decode(key, value)

    async def watch(self) -> None:
        """Keep the value cache current with every write to the value buckets, including other writers'.

        Runs until cancelled; raises when the watch breaks off, so that its supervisor starts it again (and
        the restart reads every value afresh).
        """
        watchers = [await b.watchall() for b in self._value_buckets()]
        try:

            async def follow(watcher: Any) -> None:
                async for entry in watcher:
                    if entry is None:
                        continue  # the end of the values there were when the watch started
                    if entry.operation in (KV_DEL, KV_PURGE):
                        self._values.pop(entry.key, None)
                    else:
                        self._values[entry.key] = _decode(entry.key, entry.value)
                raise StateUnavailable("the watch of the value buckets ended")

            await asyncio.gather(*(follow(w) for w in watchers))
        finally:
            for watcher in watchers:
                try:
                    await watcher.stop()
                except Exception:  # the watch is being replaced; its stop is best effort
                    log.debug("stopping a KV watcher failed", exc_info=True)

    async def save_job(self, record: JobRecord) -> None:
        with translated(StateUnavailable, f"saving job {record.job_id}"):
            await self._jobs.put(record.job_id, record.model_dump_json().encode())
        self.index.put(record)

    async def delete_job(self, job_id: str) -> None:
        with translated(StateUnavailable, f"deleting job {job_id}"):
            await self._jobs.purge(job_id)
        self.index.remove(job_id)

    async def get_value(self, key: str) -> Any | None:
        return self._values.get(key)

    async def put_value(self, key: str, value: Any) -> None:
        bucket = self._buckets[BUCKET_OF_KEY.get(key, CONTROLLER_BUCKET)]
        with translated(StateUnavailable, f"writing {key}"):
            await bucket.put(key, json.dumps(value).encode())
        self._values[key] = value

    async def next_seq(self) -> int:
        with translated(StateUnavailable, "taking a sequence number"):
            return await self._jobs.put(_SEQ_KEY, b"")

    async def ping(self) -> bool:
        return self._bus is None or self._bus.connected


def _decode(key: str, value: bytes | None) -> Any:
    """A value as JSON; one another writer stored as something else is kept as text, and said so."""
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        log.warning("value of %s is not JSON; kept as text", key)
        return value.decode(errors="replace")


async def _latest(bucket: KeyValue):
    """(key, value) of the latest entry of every key of a bucket, deleted keys left out."""
    try:
        watcher = await bucket.watchall(ignore_deletes=True)
    except KeyNotFoundError:
        return
    try:
        async for entry in watcher:
            if entry is None:
                return
            yield entry.key, entry.value
            if entry.delta == 0:
                return
    finally:
        await watcher.stop()
