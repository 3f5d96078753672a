"""Every payload that crosses NATS, as pydantic models.

The subject names and payloads are Opni's, so that the controller drops into an existing Opni deployment.
Handlers receive these models, never raw bytes: a payload that does not validate is answered with an
`ErrorReply` that names each problem.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import to_json

from nulog.protocol import TrainerEvent
from training_controller.core.jobs import JobPhase
from training_controller.core.opni_query import interpret
from training_controller.core.ports import JobUpdate, PhaseUpdate, TrainerOutput
from training_controller.core.queries import Interval, LogQuery

MAX_NS = 2**63 - 1
MAX_INTERVALS = 1_000

Nanoseconds = Annotated[StrictInt, Field(ge=0, le=MAX_NS, description="Nanoseconds since the Unix epoch.")]
JobId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$", description="A job id.")]


class Subjects:
    """The NATS subjects of the wire contract."""

    TRAIN = "train"
    TRAIN_MODEL = "train_model"
    MODEL_STATUS = "model_status"
    WORKLOAD_PARAMETERS = "workload_parameters"
    GPU_SERVICE_INFERENCE = "gpu_service_inference"
    GPU_SERVICE_INFERENCE_INTERNAL = "gpu_service_inference_internal"
    GPU_SERVICE_RUNNING = "gpu_service_running"
    GPU_TRAININGJOB_STATUS = "gpu_trainingjob_status"
    MODEL_WORKLOAD_PARAMETERS = "model_workload_parameters"
    MODEL_UPDATE = "model_update"
    MODEL_READY = "model_ready"
    TRAINING_STATUS = "training_status"
    TRAINING_JOBS = "training_jobs"
    TRAINING_CANCEL = "training_cancel"
    TRAINING_LOGS = "training_logs"  # training_logs.<job>
    # Answered by the inference worker (`nulog serve`), asked by the controller's /api/v1/predict. Not
    # gpu_service_running: that one is Opni's GPU inference service's, and answering it would make the
    # controller grant the GPU to batches nobody consumes.
    NULOG_PREDICT = "nulog_predict"

    @staticmethod
    def training_logs(job_id: str) -> str:
        return f"training_logs.{job_id}"


CONTROLLER_HEADER = "Training-Controller"
JOB_START = b"JobStart"
JOB_END = b"JobEnd"
JOB_RESET = b"JobReset"  # every external claim on the GPU is void (Opni: after GPU_TRAINING_RESET_TIME)


class TimeInterval(BaseModel):
    """One time range of logs to train on, in nanoseconds since the epoch, end excluded."""

    start_ts: Nanoseconds = Field(description="Start of the range, nanoseconds since the epoch.")
    end_ts: Nanoseconds = Field(description="End of the range (excluded), nanoseconds since the epoch.")

    @model_validator(mode="after")
    def _start_before_end(self) -> TimeInterval:
        if self.start_ts >= self.end_ts:
            raise ValueError(f"start_ts ({self.start_ts}) must be before end_ts ({self.end_ts})")
        return self


class TrainRequest(BaseModel):
    """A request to train a model on the logs of some time ranges (subject `train`)."""

    model_config = ConfigDict(extra="forbid")

    model_to_train: str = Field(
        min_length=1, description="The model type to train (`nulog`, or one of the trainer catalogue)."
    )
    time_intervals: list[TimeInterval] = Field(
        min_length=1, max_length=MAX_INTERVALS, description="The time ranges whose logs make the training data."
    )
    parameters: dict[str, StrictInt | float | str | bool] | None = Field(
        default=None, description="The trainer's parameters, checked against its schema; defaults for the rest."
    )

    def to_query(self) -> LogQuery:
        """The log query this request asks for."""
        return LogQuery(intervals=tuple(Interval(start_ns=i.start_ts, end_ns=i.end_ts) for i in self.time_intervals))


Milliseconds = Annotated[StrictInt, Field(ge=0, le=MAX_NS // 1_000_000, description="Milliseconds since the epoch.")]


class DrainTrainRequest(BaseModel):
    """opni-drain-service's `train`: a stable period of the logs, in milliseconds since the epoch."""

    model_config = ConfigDict(extra="forbid")

    start_ts: Milliseconds
    end_ts: Milliseconds

    @model_validator(mode="after")
    def _start_before_end(self) -> DrainTrainRequest:
        if self.start_ts >= self.end_ts:
            raise ValueError(f"start_ts ({self.start_ts}) must be before end_ts ({self.end_ts})")
        return self

    def to_query(self) -> LogQuery:
        return LogQuery(intervals=(Interval(start_ns=self.start_ts * 1_000_000, end_ns=self.end_ts * 1_000_000),))


class OpniQueryTrainRequest(BaseModel):
    """The last Opni training controller's `train`: an OpenSearch search body, a cap, and the count it saw."""

    model_config = ConfigDict(extra="forbid")

    max_size: StrictInt = Field(ge=1, description="The most log documents to train on.")
    query: dict[str, Any] = Field(description="A search body for the `logs` index, run as it is.")
    count: StrictInt | None = Field(default=None, ge=0, description="How many documents matched when it was sent.")
    parameters: dict[str, Any] | None = Field(default=None, description="The gateway's {uuid, workloads}, if sent.")

    def to_query(self) -> LogQuery:
        found = interpret(self.query)
        if not found.intervals:
            found.not_understood.append("no time range on `time` (a files source needs one)")
        return LogQuery(
            intervals=tuple(found.intervals) or (Interval(start_ns=0, end_ns=MAX_NS),),
            workloads=tuple(found.workloads),
            exclude_anomalies=found.exclude_anomalies,
            exclude_keywords=tuple(found.exclude_keywords),
            max_documents=self.max_size,
            search=self.query,
            search_not_understood=tuple(found.not_understood),
        )


AnyTrainRequest = TrainRequest | DrainTrainRequest | OpniQueryTrainRequest


def decode_train(data: bytes) -> AnyTrainRequest:
    """A `train` payload in any shape Opni's components publish, told apart by its fields.

    `{"model_to_train", "time_intervals"}` (nanoseconds; this controller's and Opni's ES poller's),
    `{"max_size", "query", "count"}` (Opni's last training controller), `{"start_ts", "end_ts"}`
    (milliseconds; opni-drain-service). Anything else is refused with the shapes it could have been.
    """
    raw = _json_object(data)
    hint = ""
    if "query" in raw or "max_size" in raw:
        model: type[BaseModel] = OpniQueryTrainRequest
    elif "start_ts" in raw and "end_ts" in raw and "time_intervals" not in raw:
        model = DrainTrainRequest
    else:
        model = TrainRequest
        if "model_to_train" not in raw and "time_intervals" not in raw:
            hint = " (or send Opni's {max_size, query, count}, or {start_ts, end_ts} in milliseconds)"
    try:
        return model.model_validate(raw)  # type: ignore[return-value]
    except ValidationError as e:
        raise PayloadError(describe(e) + hint) from None


Name = Annotated[str, Field(min_length=1, max_length=253)]
WorkloadMap = dict[Name, dict[Name, Annotated[list[Name], Field(max_length=10_000)]]]
_WORKLOADS = TypeAdapter(WorkloadMap)


class TrainModelRequest(BaseModel):
    """The gateway's request to train on some workloads (subject `train_model`); no workloads means reset.

    The gateway sends `{"uuid": .., "workloads": {..}}`, and `{"uuid": ..}` to reset (Go's `omitempty`
    drops empty workloads); older gateways sent the bare workloads map, and `{}` to reset.
    """

    model_config = ConfigDict(extra="forbid")

    uuid: str | None = Field(default=None, max_length=256, description="The gateway's id of the request.")
    workloads: WorkloadMap = Field(default_factory=dict, description="cluster id -> namespace -> deployments.")


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        raw = json.loads(data) if data.strip() else {}
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, too deep, too long a number
        raise PayloadError(f"payload is not valid JSON: {str(e)[:200] or type(e).__name__}") from None
    if not isinstance(raw, dict):
        raise PayloadError(f"payload must be a JSON object, not {type(raw).__name__}")
    return raw


def decode_train_model(data: bytes) -> TrainModelRequest:
    """A `train_model` payload, wrapped or bare."""
    raw = _json_object(data)
    try:
        if raw and set(raw) <= {"uuid", "workloads"} and ("uuid" in raw or isinstance(raw.get("workloads"), dict)):
            return TrainModelRequest.model_validate(raw)
        return TrainModelRequest(workloads=_WORKLOADS.validate_python(raw))
    except ValidationError as e:
        raise PayloadError(describe(e)) from None


class ModelWorkloadParameters(BaseModel):
    """What the model is (being) trained on (subject `model_workload_parameters`)."""

    workloads: WorkloadMap
    status_type: Literal["train", "update", "reset"]


class TrainAccepted(BaseModel):
    """The reply to an accepted `train` request."""

    job_id: str = Field(description="The id of the new training job.")
    status: Literal["queued"] = "queued"
    queue_position: int = Field(description="How many jobs run before this one.")


class ErrorReply(BaseModel):
    """The reply to a request that could not be served; `error` says why."""

    error: str = Field(description="What is wrong, in one or more sentences.")


class JobRequest(BaseModel):
    """Names one training job (`training_status`, `training_cancel`)."""

    model_config = ConfigDict(extra="forbid")

    job_id: JobId


class JobsRequest(BaseModel):
    """Filters for `training_jobs`: a page of jobs, most recent first."""

    model_config = ConfigDict(extra="forbid")

    status: JobPhase | None = Field(default=None, description="Only jobs in this phase.")
    limit: int = Field(default=20, ge=1, le=1000, description="At most this many, most recent first.")
    before: int | None = Field(
        default=None, ge=0, description="Only jobs submitted before this `seq` (the `next` of the previous page)."
    )


class JobsPage(BaseModel):
    """A page of jobs; `next` is the `before` of the next page, None on the last one."""

    jobs: list[dict[str, Any]]
    next: int | None = None


class BucketFiles(BaseModel):
    """The names of a model's files in its bucket."""

    model_file: str
    vocab_file: str


class ModelReady(BaseModel):
    """A new model is in the bucket (subject `model_ready`)."""

    bucket: str
    bucket_files: BucketFiles
    job_id: str


class ModelUpdate(BaseModel):
    """The model is being trained or was reset (subject `model_update`).

    Careful: on `training` (and `reset`) Opni's inference services drop their model and delete every object
    of the models bucket; only these two statuses and the bucket payload are safe to publish there.
    """

    status: Literal["training", "reset"]


class ModelFiles(BaseModel):
    """A new model is in the bucket (subject `model_update`, the payload Opni's inference services reload on)."""

    bucket: str
    bucket_files: BucketFiles


class PhaseLog(BaseModel):
    """A job moved to a phase (subject `training_logs.<job>`)."""

    job_id: str
    kind: Literal["phase"] = "phase"
    phase: JobPhase
    message: str


class TrainerLog(BaseModel):
    """An event of the job's trainer, as the trainer contract defines it (subject `training_logs.<job>`)."""

    job_id: str
    kind: Literal["trainer"] = "trainer"
    event: TrainerEvent


class LineLog(BaseModel):
    """A line of the trainer's own log (subject `training_logs.<job>`)."""

    job_id: str
    kind: Literal["log"] = "log"
    line: str


JobLogMessage = Annotated[PhaseLog | TrainerLog | LineLog, Field(discriminator="kind")]
_JOB_LOG: TypeAdapter[JobLogMessage] = TypeAdapter(JobLogMessage)


class JobLog(RootModel[JobLogMessage]):
    """One message of `training_logs.<job>`: a phase change, a trainer event, or a log line."""


def job_log_message(job_id: str, update: JobUpdate) -> PhaseLog | TrainerLog | LineLog:
    """The `training_logs.<job>` payload of a job's update."""
    if isinstance(update, PhaseUpdate):
        return PhaseLog(job_id=job_id, phase=update.phase, message=update.message)
    if isinstance(update, TrainerOutput):
        return TrainerLog(job_id=job_id, event=update.event)
    return LineLog(job_id=job_id, line=update.line)


def parse_job_log(data: bytes) -> PhaseLog | TrainerLog | LineLog:
    """A `training_logs.<job>` payload; raises PayloadError when it is not one."""
    try:
        return _JOB_LOG.validate_json(data)
    except ValidationError as e:
        raise PayloadError(describe(e)) from None


# What `nulog serve --announce-ready` prints on stdout once it answers nulog_predict; the controller's
# embedded child is waited for on it.
WORKER_READY_LINE = "nulog serve ready"
MAX_PREDICT_LINES = 10_000
MAX_PREDICT_LINE_CHARS = 20_000
LogLineText = Annotated[str, Field(max_length=MAX_PREDICT_LINE_CHARS)]


class PredictRequest(BaseModel):
    """Log lines to parse and score with the current model (subject `nulog_predict`, and /api/v1/predict)."""

    model_config = ConfigDict(extra="forbid")

    logs: list[LogLineText] = Field(
        min_length=1, max_length=MAX_PREDICT_LINES,
        description="Raw log lines; the worker masks them as the training data was masked.",
    )


class LinePrediction(BaseModel):
    """What the model says about one line."""

    log: str = Field(description="The line as it was sent.")
    masked: str = Field(description="The line with its variable values masked, as the model sees it.")
    template: str = Field(description="The line's template: its constant tokens, `<*>` where a value varies.")
    score: float = Field(ge=0, le=1, description="Share of the line's tokens the model predicted (1: all).")
    label: Literal["Normal", "Anomaly"] = Field(description="Anomaly when the score is below the model's threshold.")


class ModelRef(BaseModel):
    """Which model answered."""

    job_id: str | None = Field(description="The job that trained it, once a model_ready has named it.")
    sha256: str = Field(description="sha256 of the model file.")
    loaded_at: str = Field(description="When the worker loaded it, ISO-8601 UTC.")


class PredictReply(BaseModel):
    """The templates and scores of the lines of a `nulog_predict` request, in order."""

    model: ModelRef
    predictions: list[LinePrediction]


class PredictError(BaseModel):
    """A `nulog_predict` request the worker could not answer; `reason` says whether a model is missing."""

    error: str = Field(description="What went wrong, in a sentence.")
    reason: Literal["no_model", "invalid_request", "internal"]


class PayloadError(ValueError):
    """A payload that does not fit its subject's model."""


def decode(model: type[BaseModel], data: bytes) -> BaseModel:
    """Parse a payload into `model`; raises PayloadError with a readable message."""
    try:
        raw = json.loads(data) if data.strip() else None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, too deep, too long a number
        raise PayloadError(f"payload is not valid JSON: {str(e)[:200] or type(e).__name__}") from None
    if raw is None:
        raw = {}  # an empty request means "all defaults"; a model with required fields says which are missing
    if not isinstance(raw, dict):
        raise PayloadError(f"payload must be a JSON object, not {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise PayloadError(describe(e)) from None


MAX_PROBLEMS = 10


def describe(error: ValidationError) -> str:
    """A ValidationError as one line per problem, `field.path: what is wrong`; short even for huge input."""
    problems = []
    items = error.errors(include_url=False, include_input=False)
    for item in items[:MAX_PROBLEMS]:
        where = ".".join(_short(str(part)) for part in item["loc"]) or "payload"
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {_short(message, 300)}")
    if len(items) > MAX_PROBLEMS:
        problems.append(f"and {len(items) - MAX_PROBLEMS} more problems")
    return "; ".join(problems)


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def encode(value: BaseModel | dict[str, Any] | list[Any] | str | bytes) -> bytes:
    """A reply or message as bytes: models and JSON values as compact UTF-8 JSON, text as UTF-8.

    JSON values are written by pydantic-core, as models are: a third of json.dumps's time (2 us against 7
    for the watchlist `workload_parameters` answers), and the same JSON.
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return to_json(value)


__all__ = [
    "CONTROLLER_HEADER",
    "BucketFiles",
    "ErrorReply",
    "JOB_END",
    "JOB_RESET",
    "JOB_START",
    "JobRequest",
    "JobsRequest",
    "JobLog",
    "JobLogMessage",
    "JobsPage",
    "LineLog",
    "PhaseLog",
    "TrainerLog",
    "job_log_message",
    "parse_job_log",
    "ModelReady",
    "ModelUpdate",
    "ModelWorkloadParameters",
    "TrainModelRequest",
    "WorkloadMap",
    "decode_train",
    "decode_train_model",
    "AnyTrainRequest",
    "DrainTrainRequest",
    "ModelFiles",
    "LinePrediction",
    "MAX_PREDICT_LINES",
    "WORKER_READY_LINE",
    "ModelRef",
    "PredictError",
    "PredictReply",
    "PredictRequest",
    "OpniQueryTrainRequest",
    "PayloadError",
    "Subjects",
    "TimeInterval",
    "TrainAccepted",
    "TrainRequest",
    "decode",
    "describe",
    "encode",
]
