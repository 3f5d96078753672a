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
import gc
import json
import logging
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE, KeyValue

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

    def __init__(self, buckets: dict[str, KeyValue], *, bus: Bus) -> None:
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
            await store._read_values(name)
        return store

    def _value_buckets(self) -> list[KeyValue]:
        return [self._buckets[name] for name in VALUE_BUCKETS]

    async def _load_records(self) -> None:
        """Every record, from the last message per key of the jobs bucket, in one pass; the index reads in
        full only those that may still change, the others when they are asked for."""
        entries = await _latest(self._bus.js, JOBS_BUCKET)
        bad = 0
        # The records are thousands of small acyclic objects each, all long-lived: while they are made, the
        # cyclic collector would walk the growing heap again and again for nothing (4x the parse time: 1.2 s
        # against 0.3 s for 10,000 records). Once they are made they are frozen, taken out of the collector's
        # sight: otherwise its next full pass walks all of them (0.27 s at start-up with 10,000 records, and
        # again every time the heap grows by a quarter). Reference counting frees them as before when they
        # are replaced.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for key, value in entries:
                if key == _SEQ_KEY or not value:
                    continue
                try:
                    self.index.load(value)
                except ValueError:  # a record this version cannot read: keep going, say so once
                    bad += 1
        finally:
            gc.freeze()
            if collecting:
                gc.enable()
        if bad:
            log.error("%d job records in bucket %s could not be read and were left out", bad, JOBS_BUCKET)
        log.info("loaded %d job records (%d ended ones to be read when first asked for)", len(self.index), self.index.unread)

    async def _read_values(self, bucket: str) -> None:
        for key, value in await _latest(self._bus.js, bucket):
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
        return self._bus.connected


def _decode(key: str, value: bytes | None) -> Any:
    """A value as JSON; one another writer stored as something else is kept as text, and said so."""
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        log.warning("value of %s is not JSON; kept as text", key)
        return value.decode(errors="replace")


async def _latest(js: JetStreamContext, bucket: str) -> list[tuple[str, bytes]]:
    """(key, value) of the latest entry of every key of a bucket, deleted keys left out, in one pass of an
    ordered consumer.

    Each message is taken as it arrives, in the subscription's callback, and counted: the consumer's info,
    read once it exists, says how many there are. nats-py's KeyWatcher would also parse each message's
    metadata and make an entry object of it, handed over through a queue of 256, which together cost as much
    again as the message itself (0.2 s for 10,000 records at start-up, against 0.1).
    """
    prefix = f"$KV.{bucket}."
    latest: dict[str, bytes] = {}
    taken = 0
    expected: int | None = None
    done = asyncio.get_running_loop().create_future()

    async def take(msg: Msg) -> None:
        nonlocal taken
        key = msg.subject[len(prefix) :]
        headers = msg.headers
        # A delete, a purge, or (nats-server 2.11+) a marker the server left where a key expired.
        if headers and (headers.get(KV_OP) in (KV_DEL, KV_PURGE) or KV_MARKER_REASON in headers):
            latest.pop(key, None)
        else:
            latest[key] = msg.data
        taken += 1
        if expected is not None and taken >= expected and not done.done():
            done.set_result(None)

    with translated(StateUnavailable, f"reading bucket {bucket}"):
        sub = await js.subscribe(
            f"{prefix}>", stream=f"KV_{bucket}", cb=take, ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        )
        try:
            info = await sub.consumer_info()
            # Delivered so far and still to deliver, by the server's count: one message per key (and later
            # writes, which come after these and need no waiting for).
            expected = info.delivered.consumer_seq + info.num_pending
            if taken < expected:
                await done
        finally:
            await sub.unsubscribe()
    return list(latest.items())
