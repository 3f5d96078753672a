"""The job record and its lifecycle.

A record is an immutable value: every change makes a new record through `JobRecord.advance` (phase changes,
which are checked against the lifecycle) or `JobRecord.evolve` (data within a phase). Records are JSON-safe so
that the state store can keep them as they are, with ISO-8601 UTC timestamps.

    queued → exporting → launching → running → succeeded | failed | cancelled
    (any phase before a final one may also go straight to failed or cancelled)
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from training_controller.core.errors import IllegalTransition


class JobPhase(enum.StrEnum):
    """Where a training job is in its life."""

    QUEUED = "queued"
    EXPORTING = "exporting"
    LAUNCHING = "launching"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_PHASES

    @property
    def holds_gpu(self) -> bool:
        """Whether a job in this phase has announced JobStart and not yet JobEnd."""
        return self in (JobPhase.LAUNCHING, JobPhase.RUNNING)


FINAL_PHASES = frozenset({JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED})

_NEXT: dict[JobPhase, frozenset[JobPhase]] = {
    JobPhase.QUEUED: frozenset({JobPhase.EXPORTING}),
    JobPhase.EXPORTING: frozenset({JobPhase.LAUNCHING}),
    JobPhase.LAUNCHING: frozenset({JobPhase.RUNNING, JobPhase.SUCCEEDED}),
    JobPhase.RUNNING: frozenset({JobPhase.SUCCEEDED}),
}


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string with a `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PhaseChange(BaseModel):
    """One step of a job's history."""

    model_config = ConfigDict(frozen=True)

    phase: JobPhase
    at: str
    message: str


class JobRecord(BaseModel):
    """Everything known about one training job."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    seq: int = Field(description="Submission order; the queue runs jobs by increasing seq.")
    phase: JobPhase = JobPhase.QUEUED
    message: str = "waiting for its turn"
    model: str = "nulog"
    request: dict[str, Any] = Field(default_factory=dict, description="The request as it was received.")
    query: dict[str, Any] = Field(default_factory=dict, description="The log query the request became.")
    requested_by: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    log_count: int | None = None
    train_data_version_hash: str | None = None
    training_data: dict[str, str] = Field(default_factory=dict, description="Object locations of the data.")
    artifacts: dict[str, str] = Field(default_factory=dict, description="Object locations of the model.")
    progress: dict[str, Any] = Field(default_factory=dict, description="The latest progress report.")
    gpu_held: bool = Field(default=False, description="JobStart was announced and JobEnd not yet.")
    cancel_requested: bool = False
    msg_id: str | None = Field(default=None, description="The request's Nats-Msg-Id, if it had one.")
    request_hash: str = Field(default="", description="sha256 of the request payload, to match its copies.")
    stream_seq: int | None = Field(default=None, description="Sequence of the request in the train stream.")
    replied: bool = Field(default=False, description="A requester was answered with this job's id.")
    created_at: str = Field(default_factory=utc_now)
    updated_at: str = Field(default_factory=utc_now)
    started_at: str | None = None
    finished_at: str | None = None
    history: tuple[PhaseChange, ...] = ()

    @classmethod
    def new(cls, *, job_id: str, seq: int, **fields: Any) -> JobRecord:
        """A freshly queued job."""
        now = utc_now()
        first = PhaseChange(phase=JobPhase.QUEUED, at=now, message="waiting for its turn")
        return cls(job_id=job_id, seq=seq, created_at=now, updated_at=now, history=(first,), **fields)

    def can_move_to(self, phase: JobPhase) -> bool:
        if self.phase.is_final:
            return False
        if phase in (JobPhase.FAILED, JobPhase.CANCELLED):
            return True
        return phase in _NEXT.get(self.phase, frozenset())

    def advance(self, phase: JobPhase, message: str, **changes: Any) -> JobRecord:
        """A copy of this record moved to `phase`; raises IllegalTransition if the lifecycle forbids it."""
        if not self.can_move_to(phase):
            raise IllegalTransition(
                f"job {self.job_id} cannot move from {self.phase.value} to {phase.value}: "
                f"{'it has already ended' if self.phase.is_final else 'that step is not in the lifecycle'}."
            )
        now = utc_now()
        if phase is JobPhase.EXPORTING:
            changes.setdefault("started_at", now)
        if phase.is_final:
            changes.setdefault("finished_at", now)
        step = PhaseChange(phase=phase, at=now, message=message)
        return self.model_copy(
            update={"phase": phase, "message": message, "updated_at": now, "history": (*self.history, step), **changes}
        )

    def evolve(self, **changes: Any) -> JobRecord:
        """A copy of this record with data changed and the phase kept."""
        if "phase" in changes:
            raise ValueError("use advance() to change a job's phase")
        return self.model_copy(update={"updated_at": utc_now(), **changes})

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
