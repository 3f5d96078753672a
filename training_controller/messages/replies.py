"""The job subjects' requests and replies: a `train` request accepted or refused, and `training_status`,
`training_cancel` and `training_jobs`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from training_controller.core.jobs import JobPhase

JobId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$", description="A job id.")]
# What a queued training is told, over NATS (TrainAccepted) and over HTTP (the API's TrainingCreated).
Queued = Literal["queued"]
QueuePosition = Annotated[int, Field(description="How many jobs run before this one.")]


class TrainAccepted(BaseModel):
    """The reply to an accepted `train` request."""

    job_id: str = Field(description="The id of the new training job.")
    status: Queued = "queued"
    queue_position: QueuePosition


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
