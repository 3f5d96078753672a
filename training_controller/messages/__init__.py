"""Every payload that crosses NATS, as pydantic models.

The subject names and payloads are Opni's, so that the controller drops into an existing Opni deployment.
Handlers receive these models, never raw bytes: a payload that does not validate is answered with an
`ErrorReply` that names each problem.

The package, by subject: `subjects` (names and the GPU messages), `train`, `gateway` (`train_model` and the
model announcements), `replies` (the job subjects), `logs` (`training_logs.<job>`), `predict`
(`nulog_predict`), and `codec` (bytes to models and back). Every name is importable from here.
"""

from __future__ import annotations

from training_controller.messages.codec import PayloadError, decode, describe, encode
from training_controller.messages.gateway import (
    BucketFiles,
    ModelFiles,
    ModelReady,
    ModelUpdate,
    ModelWorkloadParameters,
    TrainModelRequest,
    WorkloadMap,
    decode_train_model,
)
from training_controller.messages.logs import (
    JobLog,
    JobLogMessage,
    LineLog,
    PhaseLog,
    TrainerLog,
    job_log_message,
    parse_job_log,
)
from training_controller.messages.predict import (
    MAX_PREDICT_LINE_CHARS,
    MAX_PREDICT_LINES,
    WORKER_READY_LINE,
    LinePrediction,
    ModelRef,
    PredictError,
    PredictReply,
    PredictRequest,
)
from training_controller.messages.replies import (
    ErrorReply,
    JobId,
    JobRequest,
    JobsPage,
    JobsRequest,
    TrainAccepted,
)
from training_controller.messages.subjects import CONTROLLER_HEADER, JOB_END, JOB_RESET, JOB_START, Subjects
from training_controller.messages.train import (
    MAX_INTERVALS,
    MAX_NS,
    AnyTrainRequest,
    DrainTrainRequest,
    Milliseconds,
    Nanoseconds,
    OpniQueryTrainRequest,
    TimeInterval,
    TrainRequest,
    decode_train,
)

__all__ = [
    "MAX_INTERVALS",
    "MAX_NS",
    "MAX_PREDICT_LINE_CHARS",
    "JobId",
    "Milliseconds",
    "Nanoseconds",
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
