"""The controller: the use cases the handlers and the HTTP surface call, and nothing they reach into.

It wires the core's parts together (intake, the gateway's use cases, the GPU arbiter, the job runner) and
is the one object an entry point talks to. The parts:

    Intake       a request becomes a queued job, once             core/intake.py
    Gateway      Opni's workloads, model status and KV keys       core/gateway.py
    GpuArbiter   who holds the GPU, restored after a restart      core/gpu.py
    JobRunner    the worker and its error policy                  core/runner.py
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from training_controller.config import StoreSettings, TrainingSettings
from training_controller.core.book import JobBook
from training_controller.core.errors import InvalidRequest
from training_controller.core.export import Exporter
from training_controller.core.gateway import Gateway, Workloads
from training_controller.core.gpu import GpuArbiter
from training_controller.core.intake import Intake, Submission
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.models import ModelInfo, Models
from training_controller.core.ports import Events, GpuService, Launcher, LogSource, ObjectStore, StateStore
from training_controller.core.records import JobTotals
from training_controller.core.runner import JobRunner, RunContext, RunnerStatus
from training_controller.core.trainers import Catalogue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    """A job as a submitter sees it: the record, its place in the queue, whether this request made it."""

    record: JobRecord
    queue_position: int
    new: bool


class TrainingController:
    """Accepts training requests, answers for the GPU and the jobs, and runs the queue."""

    def __init__(
        self,
        *,
        source: LogSource,
        store: ObjectStore,
        launcher: Launcher,
        state: StateStore,
        events: Events,
        exporter: Exporter,
        gpu_service: GpuService,
        training: TrainingSettings,
        buckets: StoreSettings,
        catalogue: Catalogue,
    ) -> None:
        self._source = source
        self._store = store
        self._launcher = launcher
        self._state = state
        self._events = events
        self._gpu_service = gpu_service
        self._training = training
        self._book = JobBook(state)
        self._gpu = GpuArbiter(state, reset_seconds=training.gpu_reset_seconds)
        self._catalogue = catalogue
        self._intake = Intake(self._book, state, training, catalogue)
        self._gateway = Gateway(
            book=self._book, intake=self._intake, state=state, events=events, gpu=self._gpu, training=training
        )
        self._models = Models(book=self._book, store=store, events=events, gateway=self._gateway, buckets=buckets)
        self._runner = JobRunner(
            RunContext(
                book=self._book, exporter=exporter, launcher=launcher, store=store, events=events, gpu=self._gpu,
                gateway=self._gateway, training=training, buckets=buckets, catalogue=catalogue,
            )
        )

    async def load(self) -> None:
        """Take up the GPU claims a previous controller left, and forget the job records beyond the
        retention; call before serving any request."""
        held = [r.job_id for r in self._book.index.owing() if r.gpu_held]
        await self._gpu.load(own=held)
        self._gpu.service_up = await self._gpu_service.running()
        await self._runner.prune()

    async def run(self) -> None:
        """The training worker; runs until cancelled (under the service's supervisor)."""
        await self._runner.run()

    # -- jobs ------------------------------------------------------------------------------------------

    async def submit(self, sub: Submission) -> Submitted:
        """Queue a training of `sub.model` on the logs that match `sub.query`, or return the job an earlier copy
        of the same request made; raises InvalidRequest for an unknown model or parameters it refuses."""
        record, new = await self._intake.submit(sub)
        if new:
            self._runner.wake()
        return Submitted(record, self._book.index.queue_position(record.job_id), new)

    async def get_job(self, job_id: str) -> JobRecord:
        return self._book.get(job_id)

    async def queue_position(self, job_id: str) -> int:
        return self._book.index.queue_position(job_id)

    async def list_jobs(
        self, *, phase: JobPhase | None = None, limit: int = 20, before_seq: int | None = None
    ) -> list[JobRecord]:
        """The most recent jobs first, optionally only those in one phase, a page at a time: the next page
        starts before the `seq` of the last record of this one."""
        return self._book.index.recent(limit=limit, phase=phase, before_seq=before_seq)

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job: a queued one at once; one under way is stopped by the runner (trainer first)."""
        current = self._runner.current_job_id

        def ask(r: JobRecord) -> JobRecord:
            if r.phase.is_final:
                raise InvalidRequest(f"job {job_id} has already ended ({r.phase.value})")
            if r.phase is JobPhase.QUEUED and current != job_id:
                return r.advance(JobPhase.CANCELLED, "cancelled while queued", cancel_requested=True)
            return r.evolve(cancel_requested=True)

        record = await self._book.update(job_id, ask)
        if not record.phase.is_final:
            self._runner.interrupt(job_id)
            log.info("job %s: cancellation asked while %s", job_id, record.phase.value)
        else:
            log.info("job %s cancelled while queued", job_id)
        return record

    def trainers(self) -> Catalogue:
        """The model types this controller trains, and their parameters."""
        return self._catalogue

    # -- models ----------------------------------------------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        """Every trained model, the most recent first, and which one is current."""
        return await self._models.list()

    async def promote_model(self, job_id: str) -> ModelInfo:
        """Make an earlier model current again (a rollback), announced as a new model."""
        return await self._models.promote(job_id)

    # -- the gateway -----------------------------------------------------------------------------------

    async def train_workloads(self, workloads: Workloads, *, uuid: str | None = None, requested_by: str) -> str:
        status_type = await self._gateway.train_workloads(workloads, uuid=uuid, requested_by=requested_by)
        if status_type == "train":
            self._runner.wake()
        return status_type

    async def model_status(self) -> str:
        return await self._gateway.model_status()

    async def watched_workloads(self) -> dict[str, Any]:
        return await self._gateway.watched_workloads()

    async def last_workloads(self) -> dict[str, Any]:
        return await self._gateway.last_workloads()

    # -- the GPU ---------------------------------------------------------------------------------------

    def gpu_free_for_inference(self) -> bool:
        """No training holds the GPU (the GPU service may still be away: see grant_inference)."""
        return not self._gpu.busy()

    async def grant_inference(self, payload: bytes) -> bool:
        """`gpu_service_inference`: whether inference may use the GPU now; if so, the request is handed on
        to the GPU inference service."""
        if not self._gpu.free_for_inference():
            return False
        await self._events.inference_granted(payload)
        return True

    async def external_training_started(self) -> None:
        await self._gpu.external_start()

    async def external_training_ended(self) -> None:
        await self._gpu.external_end()

    async def external_trainings_reset(self) -> None:
        await self._gpu.external_reset()

    async def watch_gpu(self) -> None:
        """Ask the GPU inference service whether it runs, and lapse external claims held too long (saying so
        with JobReset), every `gpu_service_check_seconds`; runs until cancelled (supervised)."""
        was_up: bool | None = None
        while True:
            up = await self._gpu_service.running()
            self._gpu.service_up = up
            if up != was_up:
                log.info("GPU inference service %s", "answers: inference may be granted the GPU" if up else "does not answer")
                was_up = up
            self._gpu.busy()  # lapses external claims older than GPU_TRAINING_RESET_TIME
            if self._gpu.lapsed:
                await self._events.job_reset()
                self._gpu.lapsed = 0
            await asyncio.sleep(self._training.gpu_service_check_seconds)

    # -- health ------------------------------------------------------------------------------------------

    async def launcher_ready(self) -> bool:
        return await self._launcher.ping()

    def backends(self) -> dict[str, Any]:
        """The checks of readiness: name -> a zero-argument coroutine function answering True when fine."""
        return {
            f"logs ({self._source.name})": self._source.ping,
            f"store ({self._store.name})": self._store.ping,
            f"launcher ({self._launcher.name})": self._launcher.ping,
            "state": self._state.ping,
        }

    def worker_status(self) -> RunnerStatus:
        return self._runner.status()

    async def metrics_snapshot(self) -> tuple[JobTotals, bool]:
        return self._book.index.totals(), self._gpu.busy()
