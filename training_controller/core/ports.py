"""The interfaces between the core and the outside world.

The core imports only these classes; `bootstrap.py` picks the adapters that implement them. Every method is
async: an adapter with a blocking client runs it in a worker thread, never on the event loop.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nulog.protocol import JobArgs, TrainerEvent
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.queries import LogQuery
from training_controller.core.records import RecordIndex

LogDocument = dict[str, Any]


class LogSource(abc.ABC):
    """Counts and streams the log documents that match a query."""

    name: str = "logs"

    @abc.abstractmethod
    async def count(self, query: LogQuery) -> int:
        """How many documents match, before the cap."""

    @abc.abstractmethod
    def stream(self, query: LogQuery) -> AsyncIterator[list[LogDocument]]:
        """The matching documents in batches, sorted by time within each interval, at most the query's cap."""

    async def ping(self) -> bool:
        """Whether the backend answers."""
        return True

    async def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release connections."""


class ObjectStore(abc.ABC):
    """Buckets of objects: the training data and the models."""

    name: str = "store"

    @abc.abstractmethod
    async def put_file(self, bucket: str, key: str, path: Path) -> None:
        """Upload a local file, creating the bucket if needed."""

    @abc.abstractmethod
    async def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        """Store a small object."""

    @abc.abstractmethod
    async def get_bytes(self, bucket: str, key: str) -> bytes:
        """Read a small object; raises KeyError if it does not exist."""

    @abc.abstractmethod
    async def exists(self, bucket: str, key: str) -> bool:
        """Whether the object exists."""

    @abc.abstractmethod
    async def list(self, bucket: str, prefix: str = "") -> list[str]:
        """Keys under a prefix, sorted."""

    @abc.abstractmethod
    async def copy(self, bucket: str, key: str, dst_bucket: str, dst_key: str) -> None:
        """Copy an object within the store."""

    @abc.abstractmethod
    def uri(self, bucket: str, key: str) -> str:
        """Where a training job finds this object or prefix: a local path or an s3:// URI."""

    async def ping(self) -> bool:
        """Whether the store answers."""
        return True

    async def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release connections."""


@dataclass(frozen=True)
class JobSpec:
    """What a launcher needs to start one training job.

    `workers` > 1 is one training across that many processes (PyTorch DDP): each gets the rendezvous
    variables of `nulog.protocol` (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); rank 0 is the
    master, which alone writes the artifacts and reports progress.
    """

    job_id: str
    args: JobArgs
    workers: int = 1
    gpus_per_worker: int | None = None  # None: the launcher's default (TRAIN_GPU_COUNT); 0: no GPU
    image: str | None = None  # the trainer's image on Kubernetes; None: the launcher's default
    entrypoint: tuple[str, ...] | None = None  # the trainer's command before its arguments; None: python -m nulog.job
    extra_args: tuple[str, ...] = ()  # the trainer's own parameters, as `--name value`

    def command(self, python: str) -> list[str]:
        """The trainer's command line with this interpreter (`python` in the training image)."""
        if self.entrypoint is not None:
            return [*self.entrypoint, *self.args.to_argv(), *self.extra_args]
        return [*self.args.command(python), *self.extra_args]


@dataclass(frozen=True)
class LaunchedJob:
    """A job as the launcher sees it."""

    job_id: str
    state: str  # "running", "succeeded" or "failed"
    message: str = ""


@dataclass(frozen=True)
class TrainerOutput:
    """A machine-readable event of the trainer (the trainer contract's stage, progress, done, error)."""

    event: TrainerEvent


@dataclass(frozen=True)
class LogLine:
    """A human-readable line of the trainer's log."""

    line: str


@dataclass(frozen=True)
class WorkerState:
    """How one worker of the job stands: its index (the rank), role, pod or process, state and last word."""

    index: int
    role: str  # "master" (rank 0) or "worker"
    name: str  # the pod's name, or the local process id
    state: str  # "pending", "running", "succeeded" or "failed"
    message: str = ""


@dataclass(frozen=True)
class StillRunning:
    """The job runs and had nothing to say for a while; keeps the follower's watchdog fed."""


@dataclass(frozen=True)
class Finished:
    """The job ended; always the last event. A failure's message names the worker that failed, and why."""

    succeeded: bool
    message: str = ""


LauncherEvent = TrainerOutput | LogLine | WorkerState | StillRunning | Finished


@dataclass(frozen=True)
class PhaseUpdate:
    """A job moved to a new phase."""

    phase: JobPhase
    message: str


JobUpdate = PhaseUpdate | TrainerOutput | LogLine


class Launcher(abc.ABC):
    """Starts training jobs and reports what they do."""

    name: str = "launcher"

    @abc.abstractmethod
    async def launch(self, spec: JobSpec) -> None:
        """Start the job; returns once it has been created. Launching a job that exists already is no error."""

    @abc.abstractmethod
    def events(self, job_id: str) -> AsyncIterator[LauncherEvent]:
        """The job's events and log lines, from its start, ending with one `Finished`.

        Following may be started again (after a restart of the controller, or after a TemporaryError broke
        it off): it yields the job's story from the beginning, or what the launcher still knows of it.
        A launcher should yield `StillRunning` at least every `STILL_RUNNING_SECONDS` while the job is quiet.
        """

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> None:
        """Stop the job, and return only once its trainer no longer runs (it may have ended already)."""

    @abc.abstractmethod
    async def list_jobs(self) -> list[LaunchedJob]:
        """The jobs that exist, for reconciliation after a restart."""

    async def ping(self) -> bool:
        """Whether the launcher can start jobs now."""
        return True

    async def close(self) -> None:  # noqa: B027 - most launchers hold nothing to release
        """Release connections."""


STILL_RUNNING_SECONDS = 10.0


class StateStore(abc.ABC):
    """Job records and the controller's shared values; survives restarts.

    The controller is the only writer of its job records, so a store keeps them in memory as well, in a
    `RecordIndex` it updates on every write it makes: reads never wait on the backend. Values (Opni's keys)
    are cached the same way, and kept current with what other writers (the gateway) put.
    """

    def __init__(self) -> None:
        self.index = RecordIndex()

    @abc.abstractmethod
    async def save_job(self, record: JobRecord) -> None:
        """Store (replace) a job record, then index it."""

    @abc.abstractmethod
    async def delete_job(self, job_id: str) -> None:
        """Forget a job record (retention)."""

    async def get_job(self, job_id: str) -> JobRecord | None:
        """A job record, or None."""
        return self.index.get(job_id)

    async def list_jobs(self) -> list[JobRecord]:
        """All job records, by submission order."""
        return self.index.all()

    @abc.abstractmethod
    async def get_value(self, key: str) -> Any | None:
        """A JSON value under an Opni key (`modelTrainingStatus`, ...), or None."""

    @abc.abstractmethod
    async def put_value(self, key: str, value: Any) -> None:
        """Store a JSON value under a key."""

    @abc.abstractmethod
    async def next_seq(self) -> int:
        """A number larger than any handed out before, also across restarts."""

    async def ping(self) -> bool:
        """Whether the store can take writes now."""
        return True

    async def watch(self) -> None:
        """Keep the cached values current with what other writers put; runs until cancelled (supervised).

        A store with no other writers has nothing to watch.
        """
        await asyncio.Event().wait()


class GpuService(abc.ABC):
    """The GPU inference service, which takes the batches `gpu_service_inference` grants the GPU to."""

    @abc.abstractmethod
    async def running(self) -> bool:
        """Whether it answers its health check now (Opni: `gpu_service_running` check-up -> running)."""


class Events(abc.ABC):
    """Announces what happened to the services that listen; a bus that cannot take a message now raises
    EventsUnavailable."""

    @abc.abstractmethod
    async def job_start(self, job_id: str) -> None:
        """The GPU is now taken by a training (`gpu_trainingjob_status` JobStart)."""

    @abc.abstractmethod
    async def job_end(self, job_id: str) -> None:
        """The GPU is free again (`gpu_trainingjob_status` JobEnd)."""

    @abc.abstractmethod
    async def model_ready(self, *, bucket: str, model_file: str, vocab_file: str, job_id: str) -> None:
        """A new model is in the bucket: `model_ready` for older inference services, and `model_update`
        with the same bucket payload, the one current Opni inference services reload on."""

    @abc.abstractmethod
    async def model_update(self, status: str) -> None:
        """The model is being trained (`training`) or was reset (`reset`); Opni's inference services then
        drop their model and empty the models bucket."""

    @abc.abstractmethod
    async def job_reset(self) -> None:
        """Every external claim on the GPU is void (`gpu_trainingjob_status` JobReset)."""

    @abc.abstractmethod
    async def job_progress(self, job_id: str, update: JobUpdate) -> None:
        """A phase change, trainer event or log line of one job."""

    @abc.abstractmethod
    async def workload_parameters(self, workloads: dict[str, Any], status_type: str) -> None:
        """The workloads the model is (being) trained on: status_type `train`, `update` or `reset`."""

    @abc.abstractmethod
    async def inference_granted(self, payload: bytes) -> None:
        """Hand an inference request that may use the GPU on to the inference service."""
