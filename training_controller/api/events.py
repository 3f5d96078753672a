"""A training's events as Server-Sent Events: its history first, then phases, progress and log lines live
until it ends, resumable with `Last-Event-ID` without gaps or repeats.

The controller publishes a job's news on `training_logs.<job>` (core NATS, fire and forget). A JetStream
stream of the API's own, `TRAINING_EVENTS`, captures `training_logs.>` with a maximum age, so that a client
that connects late, or comes back, reads what it missed. An event's `id` is the stream sequence of its
message. A request reads the job's subject through one ordered consumer: from the start of the stream (the
history) and on (live, the same consumer); with `Last-Event-ID: N`, from sequence N+1. What the stream does
not hold, because the job began before the stream existed or its messages aged out, is filled in from the
job record: its earlier phases (and its latest progress), sent without an `id` and marked `replay`. A phase
both in the record and the stream is sent once; its stream copy then goes as an `id` alone, which moves the
client's last event id on without dispatching anything. The response ends with an `end` event once the job
has ended and the stream holds nothing more of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import nats.js.errors
from aiohttp import web
from nats.js.api import ConsumerConfig, DeliverPolicy, DiscardPolicy, StorageType, StreamConfig

from nulog.protocol import ProgressEvent
from training_controller.api.problems import Problem
from training_controller.bus import NATS_TEMPORARY, Bus
from training_controller.core.jobs import JobPhase, JobRecord, epoch_seconds
from training_controller.messages import (
    LineLog,
    PayloadError,
    PhaseLog,
    Subjects,
    TrainerLog,
    parse_job_log,
)

log = logging.getLogger(__name__)

EVENTS_STREAM = "TRAINING_EVENTS"
EVENTS_MAX_BYTES = 256 << 20
KEEPALIVE_SECONDS = 15.0
END_CHECK_SECONDS = 1.0


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_name(update: PhaseLog | TrainerLog | LineLog) -> str:
    """`phase`, `progress`, `trainer` (stage, done, error) or `log`."""
    if isinstance(update, PhaseLog):
        return "phase"
    if isinstance(update, TrainerLog):
        return "progress" if isinstance(update.event, ProgressEvent) else "trainer"
    return "log"


def sse(*, event: str | None = None, data: Any = None, id: int | None = None) -> bytes:
    """One Server-Sent Event; only an `id` (no data) moves the client's last event id without dispatching."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    if data is not None:
        lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


def parse_last_event_id(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        seq = int(value.strip())
    except ValueError:
        raise Problem(400, "Last-Event-ID must be the id of an event this route sent (a whole number)") from None
    if seq < 0:
        raise Problem(400, "Last-Event-ID must not be negative")
    return seq


class TrainingEvents:
    """The events stream and the Server-Sent Events read from it."""

    def __init__(self, bus: Bus, *, max_age_seconds: float) -> None:
        self._bus = bus
        self._max_age = max_age_seconds
        self.ready = False

    async def ensure(self) -> bool:
        """The stream, created if missing; False (and a warning) when NATS cannot make it now."""
        js = self._bus.js
        try:
            try:
                await js.stream_info(EVENTS_STREAM)
            except nats.js.errors.NotFoundError:
                await js.add_stream(
                    StreamConfig(
                        name=EVENTS_STREAM,
                        description="training_logs.<job> kept for the REST API's /trainings/{id}/events",
                        subjects=[f"{Subjects.TRAINING_LOGS}.>"],
                        max_age=self._max_age,
                        max_bytes=EVENTS_MAX_BYTES,
                        discard=DiscardPolicy.OLD,
                        storage=StorageType.FILE,
                        no_ack=True,
                    )
                )
                log.info("created stream %s of training_logs.> (max age %.0fs)", EVENTS_STREAM, self._max_age)
        except (*NATS_TEMPORARY, nats.js.errors.Error) as e:
            log.warning("the stream %s of training events cannot be made now: %s", EVENTS_STREAM, e)
            self.ready = False
            return False
        self.ready = True
        return True

    async def _first(self, subject: str, seq: int) -> Any | None:
        """The stream's first message of `subject` at or after `seq`, or None."""
        try:
            return await self._bus.js.get_msg(EVENTS_STREAM, seq=max(1, seq), subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None

    async def respond(
        self,
        request: web.Request,
        job_id: str,
        *,
        record: Callable[[], Awaitable[JobRecord]],
        stopping: asyncio.Event,
    ) -> web.StreamResponse:
        last_id = parse_last_event_id(request.headers.get("Last-Event-ID"))
        current = await record()  # 404 before anything is sent
        if not await self.ensure():  # made again if someone deleted it; a cheap info request otherwise
            raise Problem(503, f"the training events stream ({EVENTS_STREAM}) is not available now; try again",
                          headers={"Retry-After": "2"})
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        try:
            await self._send(response, job_id, current, last_id=last_id, record=record, stopping=stopping)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the client went away, or the server is stopping: nothing is owed to anyone
        return response

    async def _send(
        self,
        response: web.StreamResponse,
        job_id: str,
        current: JobRecord,
        *,
        last_id: int | None,
        record: Callable[[], Awaitable[JobRecord]],
        stopping: asyncio.Event,
    ) -> None:
        subject = Subjects.training_logs(job_id)
        start = 1 if last_id is None else last_id + 1
        replayed: set[JobPhase] = set()
        if last_id is None:
            first = await self._first(subject, 1)
            first_at = first.time.timestamp() if first is not None and first.time else None
            for step in current.history:
                if first_at is None or epoch_seconds(step.at) < first_at:
                    data = {"job_id": job_id, "kind": "phase", "phase": step.phase.value, "message": step.message,
                            "at": step.at, "replay": True}
                    await response.write(sse(event="phase", data=data))
                    replayed.add(step.phase)
            if first is None and current.progress is not None:
                data = {**TrainerLog(job_id=job_id, event=current.progress).model_dump(mode="json"),
                        "at": current.updated_at, "replay": True}
                await response.write(sse(event="progress", data=data))
            if first is None and current.phase.is_final:
                await response.write(sse(event="end", data={"job_id": job_id, "phase": current.phase.value}))
                return
        sub = await self._bus.js.subscribe(
            subject,
            stream=EVENTS_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=ConsumerConfig(opt_start_seq=start),
        )
        last_seq = start - 1
        idle = 0.0
        try:
            while not stopping.is_set():
                try:
                    msg = await sub.next_msg(timeout=END_CHECK_SECONDS)
                except TimeoutError:
                    idle += END_CHECK_SECONDS
                    now = await record()
                    if now.phase.is_final and await self._first(subject, last_seq + 1) is None:
                        await response.write(sse(event="end", data={"job_id": job_id, "phase": now.phase.value}))
                        return
                    if idle >= KEEPALIVE_SECONDS:
                        await response.write(b": keepalive\n\n")
                        idle = 0.0
                    continue
                idle = 0.0
                last_seq = msg.metadata.sequence.stream
                try:
                    update = parse_job_log(msg.data)
                except PayloadError as e:
                    log.warning("message #%d of %s is no training event: %s", last_seq, EVENTS_STREAM, e)
                    await response.write(sse(id=last_seq))
                    continue
                if isinstance(update, PhaseLog) and update.phase in replayed:
                    await response.write(sse(id=last_seq))  # sent from the record already
                    continue
                data = {**update.model_dump(mode="json"), "at": _iso(msg.metadata.timestamp)}
                await response.write(sse(event=event_name(update), data=data, id=last_seq))
                if isinstance(update, PhaseLog) and update.phase.is_final:
                    await response.write(sse(event="end", data={"job_id": job_id, "phase": update.phase.value}))
                    return
        finally:
            with contextlib.suppress(Exception):  # the consumer is ephemeral; the server drops it anyway
                await sub.unsubscribe()
