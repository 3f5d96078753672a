"""The REST API's own bodies, as pydantic models; the wire contract's (`training_controller/messages/`) are reused as they are.

A training request's intervals are the `train` subject's `TimeInterval`, its workloads the gateway's
`WorkloadMap`, a job is the core's `JobRecord`, and predictions are `nulog_predict`'s `PredictRequest` /
`PredictReply`: the OpenAPI document is generated from these same classes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.messages import MAX_INTERVALS, TimeInterval, WorkloadMap
from training_controller.messages.replies import Queued, QueuePosition

State = Literal["pending", "running", "completed", "failed", "cancelled"]

STATE_OF_PHASE: dict[JobPhase, State] = {
    JobPhase.QUEUED: "pending",
    JobPhase.EXPORTING: "running",
    JobPhase.LAUNCHING: "running",
    JobPhase.RUNNING: "running",
    JobPhase.SUCCEEDED: "completed",
    JobPhase.FAILED: "failed",
    JobPhase.CANCELLED: "cancelled",
}
PHASES_OF_STATE: dict[str, tuple[JobPhase, ...]] = {
    state: tuple(p for p, s in STATE_OF_PHASE.items() if s == state) for state in set(STATE_OF_PHASE.values())
}
MAX_PAGE = 100


class TrainingCreate(BaseModel):
    """A training to start: the logs of some time ranges, of some workloads, or of some workloads within
    some time ranges (workloads alone: the last WORKLOAD_LOOKBACK_SECONDS)."""

    model_config = ConfigDict(extra="forbid")

    modelType: str = Field(
        default="nulog", min_length=1, description="The model type to train: `nulog`, or one of the trainer catalogue."
    )
    time_intervals: list[TimeInterval] | None = Field(
        default=None, min_length=1, max_length=MAX_INTERVALS, description="Time ranges, nanoseconds since the epoch."
    )
    workloads: WorkloadMap | None = Field(
        default=None, description="cluster id -> namespace -> deployments whose logs to train on."
    )
    parameters: dict[str, Any] | None = Field(
        default=None, description="Training parameters of this request (epochs, ...), checked against the trainer's schema."
    )

    @model_validator(mode="after")
    def _some_logs(self) -> TrainingCreate:
        if not self.time_intervals and not self.workloads:
            raise ValueError("give time_intervals, workloads, or both")
        return self


# The API's name for a job id, as training services of this kind call it.
RunId = Annotated[str, Field(description="The job's id.")]


class TrainingCreated(BaseModel):
    """A training was queued."""

    runId: RunId
    status: Queued = "queued"
    queue_position: QueuePosition


class Training(BaseModel):
    """One training: its state in a word, and its whole record."""

    runId: RunId
    state: State = Field(description="pending (queued), running (exporting, launching, training), or how it ended.")
    message: str = Field(description="What is happening, or how it ended.")
    queue_position: int | None = Field(default=None, description="Jobs before this one, while it waits.")
    record: JobRecord = Field(description="The job record: phase, history, progress, parameters, data hash, artifacts.")


class TrainingsPage(BaseModel):
    """A page of trainings, the most recent first."""

    items: list[Training]
    next_cursor: int | None = Field(default=None, description="The `cursor` of the next page; null on the last.")


class TrainingsQuery(BaseModel):
    """The filters of GET /api/v1/trainings."""

    model_config = ConfigDict(extra="forbid")

    state: State | None = Field(default=None, description="Only trainings in this state.")
    phase: JobPhase | None = Field(default=None, description="Only trainings in this phase (finer than state).")
    limit: int = Field(default=20, ge=1, le=MAX_PAGE, description="At most this many.")
    cursor: int | None = Field(default=None, ge=0, description="Only trainings queued before this one (a `next_cursor`).")

    @model_validator(mode="after")
    def _one_filter(self) -> TrainingsQuery:
        if self.state is not None and self.phase is not None:
            raise ValueError("give state or phase, not both")
        return self


class ModelView(BaseModel):
    """A trained model."""

    job_id: str = Field(description="The job that trained it.")
    trained_at: str | None = Field(description="When its training ended, ISO-8601 UTC.")
    train_data_version_hash: str | None = Field(description="sha256 of its training data.")
    log_count: int | None = Field(description="Log documents it was trained on.")
    metrics: dict[str, Any] = Field(description="The training's metrics (metrics.json): loss, steps, vocabulary, ...")
    held_out_score: float | None = Field(default=None, description="Its score on held-out logs, if the metrics have one.")
    current: bool = Field(description="Whether inference services use it now.")
    available: bool = Field(description="Whether its files are still in the archive (it can be promoted).")


class ModelsList(BaseModel):
    """Every trained model, the most recent first."""

    models: list[ModelView]
    current: str | None = Field(description="The job id of the current model, if any.")


class EventData(BaseModel):
    """The data of one Server-Sent Event of /trainings/{id}/events: a `training_logs.<job>` message (its `kind`
    is phase, trainer or log) with the time it was published; `replay` marks phases taken from the record
    because the events stream had not kept them (no `id` then)."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    kind: Literal["phase", "trainer", "log"]
    at: str | None = None
    replay: bool = False
