"""One short function per subject: validate (the bus, or `messages`), call the core, reply."""

from __future__ import annotations

import logging
import time

from nats.aio.msg import Msg

from training_controller.bus import Route
from training_controller.core.controller import TrainingController
from training_controller.core.errors import InvalidRequest
from training_controller.core.intake import Origin, Submission, request_hash
from training_controller.core.jobs import JobRecord
from training_controller.messages import (
    CONTROLLER_HEADER,
    JOB_END,
    JOB_RESET,
    JOB_START,
    AnyTrainRequest,
    JobRequest,
    JobsPage,
    JobsRequest,
    PayloadError,
    Subjects,
    TrainAccepted,
    TrainRequest,
    decode_train,
    decode_train_model,
    encode,
)

log = logging.getLogger(__name__)

TRAIN_STREAM = "TRAINING_REQUESTS"
TRAIN_CONSUMER = "training-controller"


class RecordJson:
    """The JSON of job records as replies carry them, made once per record rather than once per request.

    Writing a whole record out (its history, query, parameters, artifacts, progress) cost more than all the
    rest of answering `training_status` together (45 us of CPU a request against 9 for a bare responder). A
    record is an immutable value that the store replaces on every change, so the bytes made for the stored
    record stay right until it is replaced, and `is` tells when it was. Bounded: the least recently made go
    first, so records forgotten by the retention do not stay here for long.
    """

    def __init__(self, *, size: int = 1024) -> None:
        self._size = size
        self._made: dict[str, tuple[JobRecord, bytes]] = {}

    def __call__(self, record: JobRecord) -> bytes:
        made = self._made.get(record.job_id)
        if made is not None and made[0] is record:
            return made[1]
        if made is not None:
            del self._made[record.job_id]
        elif len(self._made) >= self._size:
            del self._made[next(iter(self._made))]
        data = record.model_dump_json().encode()
        self._made[record.job_id] = (record, data)
        return data


class LastEncoded:
    """The bytes of the last value encoded, made again only when another object comes.

    For answers read from the state store's memory, which replaces a value on every change rather than
    changing it: the watchlist of `workload_parameters` is the same object until it is replaced, and writing
    it out (2 us) was a tenth of the controller's time for each such request.
    """

    def __init__(self) -> None:
        self._value: object = None
        self._data = b""

    def __call__(self, value: dict | list) -> bytes:
        if value is not self._value:  # held here, so no other object can be given its id
            self._data, self._value = encode(value), value
        return self._data


class Handlers:
    """The service's request handlers."""

    def __init__(self, controller: TrainingController, *, instance: str) -> None:
        self.controller = controller
        self.instance = instance
        self._record_json = RecordJson()
        self._watchlist_json = LastEncoded()

    # -- train: answered directly when it is a request; stored and trained from the stream ---------------

    async def train(self, payload: bytes, msg: Msg) -> TrainAccepted:
        request = decode_train(payload)
        origin = Origin(
            via="request",
            request_hash=request_hash(request.model_dump()),
            received_at=time.time(),
            msg_id=(msg.headers or {}).get("Nats-Msg-Id"),
        )
        return await self._submit(request, origin)

    async def train_from_stream(self, msg: Msg) -> None:
        """One stored `train` request: becomes a job (once), then is acked; a payload no shape fits is
        dropped from the stream with its reason in the log, never silently."""
        try:
            request = decode_train(msg.data)
        except PayloadError as e:
            log.warning(
                "rejected train request #%d of the stream: %s; payload: %s",
                msg.metadata.sequence.stream, e, msg.data[:300].decode(errors="replace"),
            )
            await msg.term()
            return
        origin = Origin(
            via="stream",
            request_hash=request_hash(request.model_dump()),
            received_at=msg.metadata.timestamp.timestamp(),
            msg_id=(msg.headers or {}).get("Nats-Msg-Id"),
            stream_seq=msg.metadata.sequence.stream,
        )
        await self._submit(request, origin)
        await msg.ack()

    async def _submit(self, request: AnyTrainRequest, origin: Origin) -> TrainAccepted:
        shape = type(request).__name__
        ours = isinstance(request, TrainRequest)
        if ours:
            self._check_model(request)
        submitted = await self.controller.submit(Submission(
            request.to_query(),
            request=request.model_dump(exclude_none=True),
            requested_by=f"nats:train ({origin.via}, {shape})",
            origin=origin,
            model=request.model_to_train if ours else "nulog",
            parameters=request.parameters if ours else None,
        ))
        return TrainAccepted(job_id=submitted.record.job_id, queue_position=submitted.queue_position)

    def _check_model(self, request: TrainRequest) -> None:
        """The model type and parameters against the trainer catalogue, as the payload's own errors."""
        try:
            self.controller.trainers().get(request.model_to_train).resolve(request.parameters, model=request.model_to_train)
        except InvalidRequest as e:
            field = "parameters" if str(e).startswith("invalid parameters") else "model_to_train"
            raise PayloadError(f"{field}: {str(e).removeprefix('invalid parameters: ')}") from None

    # -- the gateway -------------------------------------------------------------------------------------

    async def train_model(self, payload: bytes, msg: Msg) -> str:
        request = decode_train_model(payload)
        status_type = await self.controller.train_workloads(
            request.workloads, uuid=request.uuid, requested_by="nats:train_model"
        )
        return "model reset" if status_type == "reset" else "training job submitted"

    async def model_status(self, payload: bytes, msg: Msg) -> str:
        return await self.controller.model_status()

    async def workload_parameters(self, payload: bytes, msg: Msg) -> bytes:
        return self._watchlist_json(await self.controller.watched_workloads())

    # -- the GPU -----------------------------------------------------------------------------------------

    async def gpu_trainingjob_status(self, payload: bytes, msg: Msg) -> None:
        if (msg.headers or {}).get(CONTROLLER_HEADER) == self.instance:
            return None  # our own announcement; our jobs are counted already
        word = payload.strip()
        if word == JOB_START:
            await self.controller.external_training_started()
        elif word == JOB_END:
            await self.controller.external_training_ended()
        elif word == JOB_RESET:
            await self.controller.external_trainings_reset()
        else:
            log.warning("ignored gpu_trainingjob_status %r: expected JobStart, JobEnd or JobReset", payload[:64])
        return None

    async def gpu_service_inference(self, payload: bytes, msg: Msg) -> str:
        return "YES" if await self.controller.grant_inference(payload) else "NO"

    # -- jobs for people -----------------------------------------------------------------------------------

    async def training_status(self, request: JobRequest, msg: Msg) -> bytes:
        record = await self.controller.get_job(request.job_id)
        position = await self.controller.queue_position(record.job_id)
        # The record's JSON object, with its place in the queue added as the last member.
        return self._record_json(record)[:-1] + b',"queue_position":%d}' % position

    async def training_jobs(self, request: JobsRequest, msg: Msg) -> JobsPage:
        records = await self.controller.list_jobs(phase=request.status, limit=request.limit, before_seq=request.before)
        more = len(records) == request.limit and records[-1].seq > 0
        return JobsPage(jobs=[r.to_json() for r in records], next=records[-1].seq if more else None)

    async def training_cancel(self, request: JobRequest, msg: Msg) -> dict:
        return (await self.controller.cancel(request.job_id)).to_json()

    def routes(self) -> list[Route]:
        return [
            # Plain publishes on train are taken from the stream; requests are answered here too.
            Route(Subjects.TRAIN, self.train, requests_only=True, concurrent=True),
            Route(Subjects.TRAIN_MODEL, self.train_model, concurrent=True),
            # Answered from memory at once: in order, on the subscription's own task.
            Route(Subjects.MODEL_STATUS, self.model_status),
            Route(Subjects.WORKLOAD_PARAMETERS, self.workload_parameters),
            Route(Subjects.GPU_TRAININGJOB_STATUS, self.gpu_trainingjob_status),  # JobStart before JobEnd
            Route(Subjects.GPU_SERVICE_INFERENCE, self.gpu_service_inference),
            Route(Subjects.TRAINING_STATUS, self.training_status, JobRequest),
            Route(Subjects.TRAINING_JOBS, self.training_jobs, JobsRequest),
            Route(Subjects.TRAINING_CANCEL, self.training_cancel, JobRequest, concurrent=True),
        ]
