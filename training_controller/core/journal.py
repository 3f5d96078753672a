"""How the runner writes a job's state: what is retried until it holds, and what is tried once.

Phase changes, the GPU claim, JobStart/JobEnd and model_ready are retried until they succeed, whatever the
job's deadline: only the controller's own infrastructure can be failing there. A progress report, a
worker's state and a `training_logs` line are tried once: the next one is a second away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nulog.protocol import ProgressEvent
from training_controller.config import StoreSettings, TrainingSettings
from training_controller.core.book import JobBook
from training_controller.core.errors import TemporaryError
from training_controller.core.export import Exporter
from training_controller.core.gateway import Gateway
from training_controller.core.gpu import GpuArbiter
from training_controller.core.jobs import JobPhase, JobRecord, WorkerInfo
from training_controller.core.ports import (
    Events,
    Launcher,
    LogLine,
    ObjectStore,
    PhaseUpdate,
    TrainerOutput,
    WorkerState,
)
from training_controller.core.retry import Backoff, retry_forever
from training_controller.core.trainers import Catalogue, TrainerSpec

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What the runner's parts share: the ports, the settings, and the worker's heartbeat."""

    book: JobBook
    exporter: Exporter
    launcher: Launcher
    store: ObjectStore
    events: Events
    gpu: GpuArbiter
    gateway: Gateway
    training: TrainingSettings
    buckets: StoreSettings
    catalogue: Catalogue
    clock: Callable[[], float] = time.monotonic
    beat_at: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.backoff = Backoff(maximum=self.training.retry_max_seconds)
        # State writes are cheap and NATS comes back quickly: look again often.
        self.state_backoff = Backoff(maximum=min(5.0, self.training.retry_max_seconds))
        self.beat_at = self.clock()

    def beat(self) -> None:
        """The worker made progress (a step, an event, a retry): the stall watchdog is fed."""
        self.beat_at = self.clock()

    def trainer(self, record: JobRecord) -> TrainerSpec:
        return self.catalogue.get(record.model)


class Journal:
    """The runner's writes of job state and announcements, each with its retry policy."""

    def __init__(self, context: RunContext) -> None:
        self._c = context
        self._progress_missed = False

    async def persist(self, job_id: str, change: Callable[[JobRecord], JobRecord], what: str) -> JobRecord:
        return await retry_forever(
            lambda: self._c.book.update(job_id, change),
            what=f"job {job_id}: {what}", backoff=self._c.state_backoff, on_retry=self._c.beat,
        )

    async def advance(self, record: JobRecord, phase: JobPhase, message: str, **changes: object) -> JobRecord:
        record = await self.persist(
            record.job_id, lambda r: r.advance(phase, message, **changes), f"record it {phase.value}"
        )
        log.info("job %s %s: %s", record.job_id, phase.value, message)
        await self.after_phase_change(record)
        return record

    async def end(self, record: JobRecord, phase: JobPhase, message: str) -> None:
        """Move the job to a final phase, unless it is in one already."""
        if phase is JobPhase.FAILED:
            log.error("job %s failed: %s", record.job_id, message)

        def end(r: JobRecord) -> JobRecord:
            return r if r.phase.is_final else r.advance(phase, message)

        ended = await self.persist(record.job_id, end, f"record it {phase.value}")
        await self.after_phase_change(ended)

    async def after_phase_change(self, record: JobRecord) -> None:
        await retry_forever(
            lambda: self._c.gateway.publish_status(record),
            what=f"job {record.job_id}: modelTrainingStatus", backoff=self._c.state_backoff, on_retry=self._c.beat,
        )
        await self.tell(record.job_id, PhaseUpdate(phase=record.phase, message=record.message))

    async def announce(self, publish: Callable[[], Awaitable[None]], what: str) -> None:
        await retry_forever(publish, what=what, backoff=self._c.state_backoff, on_retry=self._c.beat)

    async def save_progress(self, job_id: str, progress: ProgressEvent) -> None:
        """One try: the next report is a second away. The first miss of a run of misses is a warning."""
        try:
            record = await self._c.book.update(job_id, lambda r: r.evolve(progress=progress))
            await self._c.gateway.publish_status(record)
        except TemporaryError as e:
            if not self._progress_missed:
                log.warning("job %s: progress not saved, skipping reports until the state store answers: %s", job_id, e)
            self._progress_missed = True
            return
        if self._progress_missed:
            log.info("job %s: progress saved again", job_id)
        self._progress_missed = False

    async def save_worker(self, job_id: str, state: WorkerState) -> None:
        """Record how one worker stands; one try, like progress."""
        info = WorkerInfo(index=state.index, role=state.role, name=state.name, state=state.state, message=state.message)

        def put(r: JobRecord) -> JobRecord:
            workers = {w.index: w for w in r.workers}
            workers[info.index] = info
            return r.evolve(workers=tuple(workers[i] for i in sorted(workers)))

        try:
            await self._c.book.update(job_id, put)
        except TemporaryError as e:
            log.warning("job %s: worker %d's state not saved: %s", job_id, state.index, e)

    async def tell(self, job_id: str, update: PhaseUpdate | TrainerOutput | LogLine) -> None:
        """Publish a phase, event or log line on training_logs.<job>; one try."""
        try:
            await self._c.events.job_progress(job_id, update)
        except TemporaryError as e:
            log.debug("job %s: update not published: %s", job_id, e)
