"""Intake: a training request becomes a queued job, once, however many copies of it arrive.

A `train` request with a reply subject reaches the controller twice: directly (answered at once) and as its
copy in the train stream (which is what survives a controller that is down). A client that retries with the
same `Nats-Msg-Id`, and a stream that redelivers a message whose ack was lost, send copies too. Each copy
carries an `Origin`; a copy of a request already seen returns the job that request made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from training_controller.config import TrainingSettings
from training_controller.core.book import JobBook
from training_controller.core.jobs import JobRecord, epoch_seconds
from training_controller.core.ports import StateStore
from training_controller.core.queries import LogQuery
from training_controller.core.trainers import Catalogue

log = logging.getLogger(__name__)

# Copies of one request (its direct delivery and its copy in the train stream) are matched within this.
MATCH_WINDOW_SECONDS = 30.0


@dataclass(frozen=True)
class Origin:
    """How a request reached the controller, to tell its copies apart from new requests."""

    via: str  # "request" (direct, with a reply subject) or "stream" (the durable copy)
    request_hash: str
    received_at: float  # seconds since the epoch; for the stream, when the server stored it
    msg_id: str | None = None
    stream_seq: int | None = None


@dataclass(frozen=True)
class Submission:
    """One training request, as every way in (NATS, HTTP, the gateway) hands it to the core."""

    query: LogQuery
    request: dict[str, Any]  # the payload, kept in the job record
    requested_by: str  # who asked, for the logs and the record
    origin: Origin | None = None  # None: no copies to match (the gateway's own trainings)
    model: str = "nulog"
    parameters: dict[str, Any] | None = None


def request_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Intake:
    """Turns requests into queued job records."""

    def __init__(self, book: JobBook, state: StateStore, training: TrainingSettings, catalogue: Catalogue) -> None:
        self._book = book
        self._state = state
        self._training = training
        self._catalogue = catalogue

    async def submit(self, sub: Submission) -> tuple[JobRecord, bool]:
        """The job for this request, and whether it is new (False: an earlier copy made it).

        Raises InvalidRequest for a model type the catalogue does not know or parameters its schema refuses.
        """
        query, origin, model = sub.query, sub.origin, sub.model
        in_force = self._catalogue.get(model).resolve(sub.parameters, model=model)
        if self._training.max_documents and not query.max_documents:
            query = query.model_copy(update={"max_documents": self._training.max_documents})
        async with self._book.lock:
            if origin is not None and (known := await self._copy_of(origin)) is not None:
                return known, False
            record = JobRecord.new(
                job_id=uuid.uuid4().hex[:12],
                seq=await self._state.next_seq(),
                request=sub.request,
                query=query,
                requested_by=sub.requested_by,
                model=model,
                parameters=in_force,
                window_seconds=self._training.window_seconds,
                msg_id=origin.msg_id if origin else None,
                request_hash=origin.request_hash if origin else "",
                stream_seq=origin.stream_seq if origin else None,
                replied=origin is not None and origin.via == "request",
            )
            await self._book.add_unlocked(record)
        log.info("job %s queued (requested by %s)", record.job_id, sub.requested_by)
        return record, True

    async def _copy_of(self, origin: Origin) -> JobRecord | None:
        """The job already made from another copy of the same request, marked as seen by this copy."""
        copies = list(
            self._book.index.copies(stream_seq=origin.stream_seq, msg_id=origin.msg_id, request_hash=origin.request_hash)
        )
        if origin.stream_seq is not None:
            for r in copies:
                if r.stream_seq == origin.stream_seq:
                    return r  # the stream redelivered a request we had stored
        if origin.msg_id:
            match = next((r for r in copies if r.msg_id == origin.msg_id), None)
        else:
            match = next((r for r in copies if _same_request(r, origin)), None)
        if match is None:
            return None
        if origin.via == "stream" and match.stream_seq is None:
            match = match.evolve(stream_seq=origin.stream_seq)
            await self._book.add_unlocked(match)
        elif origin.via == "request" and not match.replied:
            match = match.evolve(replied=True)
            await self._book.add_unlocked(match)
        return match


def _same_request(record: JobRecord, origin: Origin) -> bool:
    """Whether `record` was made by the other delivery of the request `origin` delivers now."""
    if record.request_hash != origin.request_hash or record.msg_id:
        return False
    if abs(epoch_seconds(record.created_at) - origin.received_at) >= MATCH_WINDOW_SECONDS:
        return False
    if origin.via == "stream":
        return record.stream_seq is None
    return not record.replied
