"""The messages of `training_logs.<job>`: a job's phase changes, its trainer's events, its log lines."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, RootModel, TypeAdapter, ValidationError

from nulog.protocol import TrainerEvent
from training_controller.core.jobs import JobPhase
from training_controller.core.ports import JobUpdate, PhaseUpdate, TrainerOutput
from training_controller.messages.codec import PayloadError, describe


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
