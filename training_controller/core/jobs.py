"""The job record and its lifecycle.

A record is an immutable value: every change makes a new record through `JobRecord.advance` (phase changes,
which are checked against the lifecycle) or `JobRecord.evolve` (data within a phase). Both validate the new
record as a whole, so a misspelt field or a value of the wrong type raises at once instead of being stored.
What the record holds is typed (the query, the parameters, where the data and the model are, the latest
progress), and it is JSON-safe so that the state store keeps it as it is, with ISO-8601 UTC timestamps.

    queued → exporting → launching → running → succeeded | failed | cancelled
    (any phase before a final one may also go straight to failed or cancelled)
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nulog.protocol import ProgressEvent
from training_controller.core.errors import IllegalTransition
from training_controller.core.queries import LogQuery


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


FINAL_PHASES = frozenset({JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED})

_NEXT: dict[JobPhase, frozenset[JobPhase]] = {
    JobPhase.QUEUED: frozenset({JobPhase.EXPORTING}),
    JobPhase.EXPORTING: frozenset({JobPhase.LAUNCHING}),
    JobPhase.LAUNCHING: frozenset({JobPhase.RUNNING}),
    JobPhase.RUNNING: frozenset({JobPhase.SUCCEEDED}),
}


class _Settling(Protocol):
    """What says whether an ended job still owes something: a `JobRecord`, or the index's summary of one."""

    @property
    def phase(self) -> JobPhase: ...
    @property
    def gpu_held(self) -> bool: ...
    @property
    def trainer_may_run(self) -> bool: ...
    @property
    def announced(self) -> bool: ...


def unsettled(record: _Settling) -> bool:
    """Whether an ended job still owes something: its trainer stopped, its announcement, JobEnd."""
    return record.gpu_held or record.trainer_may_run or (record.phase is JobPhase.SUCCEEDED and not record.announced)


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string with a `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_seconds(iso: str) -> float:
    """Seconds since the epoch of a timestamp written by `utc_now`."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PhaseChange(_Value):
    """One step of a job's history."""

    phase: JobPhase
    at: str
    message: str


# The trainer's parameters in force, fixed when the job is queued and checked against the trainer
# catalogue's schema for its model type (core/trainers.py): name -> a JSON scalar.
Parameters = dict[str, int | float | str | bool | None]


class WorkerInfo(_Value):
    """One worker process of a training, as the launcher last saw it."""

    index: int = Field(ge=0, description="The worker's rank; 0 is the master.")
    role: str
    name: str = Field(description="Its pod, or its local process id.")
    state: str
    message: str = ""


class TrainingData(_Value):
    """Where the exported training data lies in the object store."""

    bucket: str
    data: str
    manifest: str


class Artifacts(_Value):
    """Where the trained model lies in the object store: its archive, and the current names at the models
    bucket's root (while it is the current model)."""

    bucket: str
    model: str
    vocab: str
    metrics: str
    latest_bucket: str = "opni-nulog-models"
    latest_model: str
    latest_vocab: str


class JobRecord(_Value):
    """Everything known about one training job."""

    job_id: str
    seq: int = Field(description="Submission order; the queue runs jobs by increasing seq.")
    phase: JobPhase = JobPhase.QUEUED
    message: str = "waiting for its turn"
    model: str = "nulog"
    request: dict[str, Any] = Field(default_factory=dict, description="The request as it was received.")
    query: LogQuery | None = Field(default=None, description="The log query the request became.")
    requested_by: str = ""
    parameters: Parameters = Field(default_factory=dict, description="The trainer's parameters in force.")
    window_seconds: int = Field(default=60, ge=1, description="Width of a training-data window.")
    workers: tuple[WorkerInfo, ...] = Field(default=(), description="The training's worker processes.")
    log_count: int | None = Field(default=None, ge=0)
    train_data_version_hash: str | None = None
    training_data: TrainingData | None = None
    artifacts: Artifacts | None = None
    progress: ProgressEvent | None = Field(default=None, description="The trainer's latest progress report.")
    gpu_held: bool = Field(default=False, description="JobStart was announced and JobEnd not yet.")
    trainer_may_run: bool = Field(default=False, description="The trainer was launched and not seen to end.")
    trained: bool = Field(default=False, description="The trainer ended well; its model is being published.")
    announced: bool = Field(
        default=False, description="The end was announced: model_ready for a model, or the previous model put back."
    )
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

    @field_validator("query", "training_data", "artifacts", "progress", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # Records written before these fields were typed stored `{}` for "nothing yet".
        return None if value == {} else value

    @classmethod
    def new(cls, *, job_id: str, seq: int, **fields: Any) -> JobRecord:
        """A freshly queued job."""
        now = utc_now()
        first = PhaseChange(phase=JobPhase.QUEUED, at=now, message="waiting for its turn")
        return cls(job_id=job_id, seq=seq, created_at=now, updated_at=now, history=(first,), **fields)

    def export_rate(self) -> float | None:
        """Documents per second of this job's export, from its history; None if it exported nothing."""
        times = {step.phase: step.at for step in self.history}
        if not self.log_count or JobPhase.EXPORTING not in times or JobPhase.LAUNCHING not in times:
            return None
        seconds = epoch_seconds(times[JobPhase.LAUNCHING]) - epoch_seconds(times[JobPhase.EXPORTING])
        return self.log_count / seconds if seconds > 0 else None

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
        return self._replace(phase=phase, message=message, updated_at=now, history=(*self.history, step), **changes)

    def evolve(self, **changes: Any) -> JobRecord:
        """A copy of this record with data changed and the phase kept."""
        if "phase" in changes:
            raise ValueError("use advance() to change a job's phase")
        return self._replace(updated_at=utc_now(), **changes)

    def _replace(self, **changes: Any) -> JobRecord:
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"a job record has no field {', '.join(unknown)}")
        try:
            return type(self).model_validate({**dict(self), **changes})
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
                for item in e.errors(include_url=False, include_input=False)
            )
            raise TypeError(f"invalid change to job {self.job_id}: {problems}") from None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
