"""The job runner: one worker that carries each job through its phases, and the one error policy it applies.

A job moves as a loop over idempotent steps chosen by its stored phase, so the loop takes a job up wherever
it stands, also after a restart:

    queued ──start──► exporting ──export──► launching ──launch──► running ──follow──► (trained) ──publish──►
    succeeded | failed | cancelled ──settle: stop the trainer, announce the model, JobEnd──► done

The outcome of a step decides what happens next, in the style of kopf's handler outcomes:
- a `TemporaryError` (NATS, Kubernetes, MinIO or the search backend did not answer) is retried after its
  delay with bounded backoff, while the job's deadline allows;
- a `PermanentError` fails the job with its message;
- any other exception is a bug: it is logged with its traceback and fails the job, never the worker.

Writes of the job's own state (its record, the GPU claim, JobStart/JobEnd, model_ready) are retried until
they succeed, whatever the deadline: only the controller's own infrastructure can be failing there, and a
training that succeeded is never turned into a failure because NATS blinked. Progress reports are the one
exception: one try each, because the next one is a second away.

Every way out of a training passes through `settle`: a trainer that may still run is stopped (the launcher's
`cancel` returns once it no longer runs) before `JobEnd` goes out, so `JobEnd` never tells inference the GPU
is free while a training process holds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from nulog.protocol import (
    LATEST_MODEL_FILE,
    LATEST_VOCAB_FILE,
    METRICS_FILE,
    MODEL_FILE,
    VOCAB_FILE,
    JobArgs,
    ProgressEvent,
)
from training_controller.config import StoreSettings, TrainingSettings
from training_controller.core.book import JobBook
from training_controller.core.errors import (
    DeadlineExceeded,
    LauncherUnavailable,
    PermanentError,
    TemporaryError,
    TrainingFailed,
)
from training_controller.core.export import ExportResult
from training_controller.core.gateway import Gateway
from training_controller.core.gpu import GpuArbiter
from training_controller.core.jobs import (
    Artifacts,
    JobPhase,
    JobRecord,
    TrainingData,
    WorkerInfo,
    epoch_seconds,
)
from training_controller.core.ports import (
    Events,
    Finished,
    JobSpec,
    Launcher,
    LogLine,
    ObjectStore,
    PhaseUpdate,
    StillRunning,
    TrainerOutput,
    WorkerState,
)
from training_controller.core.queries import LogQuery
from training_controller.core.retry import Backoff, retry_forever
from training_controller.core.tasks import cancel_and_wait
from training_controller.core.trainers import WORKERS, Catalogue, TrainerSpec

log = logging.getLogger(__name__)


class Exporter(Protocol):
    """Writes the training data of a query into the store."""

    async def export(self, query: LogQuery, *, job_id: str, bucket: str, window_seconds: int) -> ExportResult: ...


class _Cancelled(Exception):
    """The job's cancellation was asked for while a step ran."""


@dataclass
class _Run:
    """The runner's state for the job it carries now."""

    job_id: str
    deadline: float  # seconds since the epoch
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    attempts: dict[JobPhase, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunnerStatus:
    """What the worker does, for health and readiness."""

    job_id: str | None
    phase: str | None
    seconds_since_progress: float


class JobRunner:
    """Runs the queue, one job at a time: the GPU is one slot."""

    def __init__(
        self,
        *,
        book: JobBook,
        exporter: Exporter,
        launcher: Launcher,
        store: ObjectStore,
        events: Events,
        gpu: GpuArbiter,
        gateway: Gateway,
        training: TrainingSettings,
        buckets: StoreSettings,
        catalogue: Catalogue,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._book = book
        self._exporter = exporter
        self._launcher = launcher
        self._store = store
        self._events = events
        self._gpu = gpu
        self._gateway = gateway
        self._training = training
        self._models_bucket = buckets.models_bucket
        self._archive_bucket = buckets.archive_bucket
        self._training_bucket = buckets.training_bucket
        self._catalogue = catalogue
        self._clock = clock
        self._backoff = Backoff(maximum=training.retry_max_seconds)
        # State writes are cheap and NATS comes back quickly: look again often.
        self._state_backoff = Backoff(maximum=min(5.0, training.retry_max_seconds))
        self._wake = asyncio.Event()
        self._current: _Run | None = None
        self._phase: JobPhase | None = None
        self._beat_at = clock()
        self._progress_missed = False

    # -- what the controller asks -----------------------------------------------------------------------

    def wake(self) -> None:
        """A job was queued."""
        self._wake.set()

    def interrupt(self, job_id: str) -> bool:
        """Stop the current step of `job_id` if it is the job under way; its record says why."""
        if self._current is not None and self._current.job_id == job_id:
            self._current.cancel.set()
            return True
        return False

    @property
    def current_job_id(self) -> str | None:
        return self._current.job_id if self._current else None

    def status(self) -> RunnerStatus:
        return RunnerStatus(
            job_id=self.current_job_id,
            phase=self._phase.value if self._current and self._phase else None,
            seconds_since_progress=self._clock() - self._beat_at if self._current else 0.0,
        )

    def _beat(self) -> None:
        self._beat_at = self._clock()

    async def prune(self) -> None:
        """Forget ended jobs beyond the retention; a store that does not answer now is asked next time."""
        t = self._training
        try:
            gone = await self._book.prune(keep=t.retention_count, max_age_seconds=t.retention_days * 86_400)
        except TemporaryError as e:
            log.warning("job records beyond the retention not pruned now: %s", e)
            return
        if gone:
            log.info("forgot %d ended job records beyond the retention (%d kept, %.0f days)", gone, t.retention_count, t.retention_days)

    # -- the worker --------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Settle what a previous worker left, then run queued jobs one at a time, forever."""
        for record in self._book.all():
            if record.phase.is_final and _unsettled(record):
                log.info("job %s ended (%s) but is not settled; settling it now", record.job_id, record.phase.value)
                await self._settle(record)
        log.info("training worker started")
        while True:
            self._wake.clear()
            record = await self._next_job()
            if record is None:
                await self._wake.wait()
                continue
            await self.run_job(record)
            await self.prune()

    async def _next_job(self) -> JobRecord | None:
        """A job that is under way first (after a restart), else the oldest queued one."""
        return self._book.index.next_to_run()

    async def run_job(self, record: JobRecord) -> JobRecord:
        """Carry a job from wherever it stands to a final phase and settle it; raises only CancelledError."""
        start = epoch_seconds(record.started_at) if record.started_at else time.time()
        run = _Run(record.job_id, deadline=start + self._training.job_deadline_seconds)
        self._current = run
        self._beat()
        try:
            while True:
                record = self._book.get(run.job_id)
                self._phase = record.phase
                if record.phase.is_final:
                    return await self._settle(record)
                if record.cancel_requested:
                    await self._end(record, JobPhase.CANCELLED, f"cancelled while {record.phase.value}")
                    continue
                try:
                    await self._step(record, run)
                except _Cancelled:
                    continue  # the record says cancel_requested: the loop ends the job
                except PermanentError as e:
                    await self._end(record, JobPhase.FAILED, str(e))
                except Exception as e:  # a bug; the worker goes on, the record says what happened
                    log.exception("job %s: unexpected error while %s", run.job_id, record.phase.value)
                    await self._end(record, JobPhase.FAILED, f"internal error: {type(e).__name__}: {e}")
        finally:
            self._current = None

    async def _step(self, record: JobRecord, run: _Run) -> None:
        """One step of the job, retried on temporary failures within its deadline."""
        steps: dict[JobPhase, Callable[[JobRecord], Awaitable[None]]] = {
            JobPhase.QUEUED: self._start,
            JobPhase.EXPORTING: self._export,
            JobPhase.LAUNCHING: self._launch,
            JobPhase.RUNNING: self._publish if record.trained else self._follow,
        }
        step = steps[record.phase]
        try:
            await self._interruptible(step(record), run)
        except TemporaryError as e:
            attempt = run.attempts[record.phase] = run.attempts.get(record.phase, 0) + 1
            wait = self._backoff.delay(attempt, e.delay)
            if time.time() + wait > run.deadline:
                raise DeadlineExceeded(
                    f"{record.phase.value} kept failing until the job's deadline "
                    f"({self._training.job_deadline_seconds:.0f}s): {e}"
                ) from e
            log.warning("job %s: %s failed (attempt %d), retrying in %.1fs: %s", run.job_id, record.phase.value, attempt, wait, e)
            self._beat()
            await self._interruptible(asyncio.sleep(wait), run)

    async def _interruptible(self, work: Awaitable[None], run: _Run) -> None:
        """Await `work`, unless the job's cancellation comes first: then stop it and raise _Cancelled."""
        task = asyncio.ensure_future(work)
        cancelled = asyncio.ensure_future(run.cancel.wait())
        try:
            await asyncio.wait({task, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if not task.done():
                await cancel_and_wait(task)
        if run.cancel.is_set() and (task.cancelled() or task.exception() is not None):
            raise _Cancelled
        task.result()  # the step's own outcome, exceptions included

    # -- the steps ---------------------------------------------------------------------------------------

    async def _start(self, record: JobRecord) -> None:
        await self._advance(record, JobPhase.EXPORTING, "exporting logs")

    async def _export(self, record: JobRecord) -> None:
        assert record.query is not None
        result = await self._exporter.export(
            record.query, job_id=record.job_id, bucket=self._training_bucket, window_seconds=record.window_seconds
        )
        self._beat()
        await self._advance(
            record,
            JobPhase.LAUNCHING,
            f"exported {result.count} log lines; launching the training",
            log_count=result.count,
            train_data_version_hash=result.sha256,
            training_data=TrainingData(bucket=result.bucket, data=result.data_key, manifest=result.manifest_key),
        )

    async def _launch(self, record: JobRecord) -> None:
        job_id = record.job_id
        if not record.gpu_held and self._trainer(record).gpus > 0:
            await self._gpu.wait_until_external_free()
            record = await self._persist(job_id, lambda r: r.evolve(gpu_held=True), "record its GPU claim")
            self._gpu.hold(job_id)
            await self._announce(lambda: self._events.job_start(job_id), f"job {job_id}: JobStart")
            await self._announce(lambda: self._events.model_update("training"), f"job {job_id}: model_update")
        if not record.trainer_may_run:
            # Said before the launch, so that a crash right after it still knows a trainer may run.
            record = await self._persist(job_id, lambda r: r.evolve(trainer_may_run=True), "record its launch")
        if job_id not in {j.job_id for j in await self._launcher.list_jobs()}:
            await self._launcher.launch(self._spec(record))
        await self._advance(record, JobPhase.RUNNING, "training")

    def _trainer(self, record: JobRecord) -> TrainerSpec:
        return self._catalogue.get(record.model)

    def _spec(self, record: JobRecord) -> JobSpec:
        """The launcher's spec: the contract's arguments from the parameters in force; a parameter the
        contract has no argument for goes to the trainer as `--<name> <value>`."""
        assert record.training_data is not None
        trainer = self._trainer(record)
        params = {k: v for k, v in record.parameters.items() if v is not None and k != WORKERS}
        known = {k: v for k, v in params.items() if k in JobArgs.model_fields}
        args = JobArgs(
            job_id=record.job_id,
            data=(self._store.uri(record.training_data.bucket, record.training_data.data),),
            output=self._store.uri(self._archive_bucket, record.job_id),
            **known,
        )
        extra = tuple(a for k, v in params.items() if k not in known for a in (f"--{k.replace('_', '-')}", str(v)))
        return JobSpec(
            job_id=record.job_id,
            args=args,
            workers=int(record.parameters.get(WORKERS) or 1),
            gpus_per_worker=trainer.gpus,
            image=trainer.image,
            entrypoint=trainer.command,
            extra_args=extra,
        )

    async def _follow(self, record: JobRecord) -> None:
        """Relay the trainer's events until it ends, then record how it ended."""
        job_id = record.job_id
        last_save = 0.0
        unsaved: ProgressEvent | None = None  # the latest report, saved at most every progress_save_seconds
        async for event in self._launcher.events(job_id):
            self._beat()
            if isinstance(event, Finished):
                if unsaved is not None:
                    await self._save_progress(job_id, unsaved)
                message = "trainer finished; publishing the model" if event.succeeded else record.message
                await self._persist(
                    job_id,
                    lambda r, ok=event.succeeded, m=message: r.evolve(trainer_may_run=False, trained=ok, message=m),
                    "record how its trainer ended",
                )
                if not event.succeeded:
                    raise TrainingFailed(f"training failed: {event.message or 'the job ended without a model'}")
                return
            if isinstance(event, StillRunning):
                continue
            if isinstance(event, WorkerState):
                await self._save_worker(job_id, event)
                continue
            await self._tell(job_id, event)
            if isinstance(event, TrainerOutput) and isinstance(event.event, ProgressEvent):
                unsaved = event.event
                now = self._clock()
                if now - last_save >= self._training.progress_save_seconds:
                    last_save = now
                    await self._save_progress(job_id, unsaved)
                    unsaved = None
        raise LauncherUnavailable(f"job {job_id}: the launcher stopped reporting before the job ended")

    async def _publish(self, record: JobRecord) -> None:
        """Put the trained model under the names Opni's inference service reads, and mark the job succeeded."""
        archive, job_id = self._archive_bucket, record.job_id
        missing = [f for f in (MODEL_FILE, VOCAB_FILE) if not await self._store.exists(archive, f"{job_id}/{f}")]
        if missing:
            raise TrainingFailed(f"the training job ended without writing {', '.join(missing)}")
        if not self._trainer(record).publishes_model:
            artifacts = Artifacts(
                bucket=archive, model=f"{job_id}/{MODEL_FILE}", vocab=f"{job_id}/{VOCAB_FILE}",
                metrics=f"{job_id}/{METRICS_FILE}", latest_bucket="", latest_model="", latest_vocab="",
            )
            await self._advance(record, JobPhase.SUCCEEDED, "model trained and archived", artifacts=artifacts)
            return
        await self._put_current(job_id)
        artifacts = Artifacts(
            bucket=archive,
            model=f"{job_id}/{MODEL_FILE}",
            vocab=f"{job_id}/{VOCAB_FILE}",
            metrics=f"{job_id}/{METRICS_FILE}",
            latest_bucket=self._models_bucket,
            latest_model=LATEST_MODEL_FILE,
            latest_vocab=LATEST_VOCAB_FILE,
        )
        await self._advance(record, JobPhase.SUCCEEDED, "model trained and published", artifacts=artifacts)

    async def _put_current(self, job_id: str) -> None:
        """Copy a job's model from the archive to the root of the models bucket, where inference reads it.

        The latest names are written only once both per-job files are complete, the vocabulary last.
        """
        archive, models = self._archive_bucket, self._models_bucket
        await self._store.copy(archive, f"{job_id}/{MODEL_FILE}", models, LATEST_MODEL_FILE)
        await self._store.copy(archive, f"{job_id}/{VOCAB_FILE}", models, LATEST_VOCAB_FILE)

    async def _restore_previous_model(self, job_id: str) -> None:
        """After a training that did not end in a model: put the last good one back, and say so.

        Announcing the training made every Opni inference service empty the models bucket; without this,
        inference would stay without a model until the next training succeeds.
        """
        last = await self._gateway.last_model()
        if not last or not last.get("job_id"):
            return
        previous = last["job_id"]
        try:
            await retry_forever(
                lambda: self._put_current(previous),
                what=f"job {job_id}: restore the model of job {previous}", backoff=self._backoff, on_retry=self._beat,
            )
        except PermanentError as e:  # the archive lost it: nothing to restore
            log.error("job %s: the previous model (job %s) cannot be restored: %s", job_id, previous, e)
            return
        await self._announce_model(previous)
        log.info("job %s: the previous model (job %s) is current again", job_id, previous)

    async def _announce_model(self, job_id: str) -> None:
        await self._announce(
            lambda: self._events.model_ready(
                bucket=self._models_bucket, model_file=LATEST_MODEL_FILE, vocab_file=LATEST_VOCAB_FILE, job_id=job_id
            ),
            f"job {job_id}: model_ready",
        )

    async def _settle(self, record: JobRecord) -> JobRecord:
        """Everything owed once a job has ended: its trainer stopped, its model announced, the GPU given back."""
        job_id = record.job_id
        if record.trainer_may_run:
            await self._stop_trainer(job_id)
            record = await self._persist(job_id, lambda r: r.evolve(trainer_may_run=False), "record its trainer stopped")
        if record.phase is JobPhase.SUCCEEDED and not record.announced and self._trainer(record).publishes_model:
            finished = record
            await retry_forever(
                lambda: self._gateway.model_trained(finished),
                what=f"job {job_id}: remember the model", backoff=self._state_backoff, on_retry=self._beat,
            )
            await self._announce_model(job_id)
            record = await self._persist(job_id, lambda r: r.evolve(announced=True), "record model_ready")
        elif record.gpu_held and not record.announced:
            # `model_update {"status": "training"}` went out when the GPU was taken.
            await self._restore_previous_model(job_id)
            record = await self._persist(job_id, lambda r: r.evolve(announced=True), "record the model restored")
        if record.gpu_held:
            await self._announce(lambda: self._events.job_end(job_id), f"job {job_id}: JobEnd")
            self._gpu.release(job_id)
            record = await self._persist(job_id, lambda r: r.evolve(gpu_held=False), "record the GPU released")
        return record

    async def _stop_trainer(self, job_id: str) -> None:
        try:
            await retry_forever(
                lambda: self._launcher.cancel(job_id),
                what=f"job {job_id}: stopping its trainer", backoff=self._backoff, on_retry=self._beat,
            )
            log.info("job %s: trainer stopped", job_id)
        except PermanentError as e:
            # Nothing more can be done from here; holding the GPU for ever would not stop the trainer either.
            log.error("job %s: cannot stop its trainer (%s); giving the GPU back anyway", job_id, e)

    # -- state and announcements ---------------------------------------------------------------------------

    async def _end(self, record: JobRecord, phase: JobPhase, message: str) -> None:
        """Move the job to a final phase, unless it is in one already."""
        if phase is JobPhase.FAILED:
            log.error("job %s failed: %s", record.job_id, message)

        def end(r: JobRecord) -> JobRecord:
            return r if r.phase.is_final else r.advance(phase, message)

        ended = await self._persist(record.job_id, end, f"record it {phase.value}")
        await self._after_phase_change(ended)

    async def _advance(self, record: JobRecord, phase: JobPhase, message: str, **changes: object) -> JobRecord:
        record = await self._persist(
            record.job_id, lambda r: r.advance(phase, message, **changes), f"record it {phase.value}"
        )
        log.info("job %s %s: %s", record.job_id, phase.value, message)
        await self._after_phase_change(record)
        return record

    async def _after_phase_change(self, record: JobRecord) -> None:
        await retry_forever(
            lambda: self._gateway.publish_status(record),
            what=f"job {record.job_id}: modelTrainingStatus", backoff=self._state_backoff, on_retry=self._beat,
        )
        await self._tell(record.job_id, PhaseUpdate(phase=record.phase, message=record.message))

    async def _persist(self, job_id: str, change: Callable[[JobRecord], JobRecord], what: str) -> JobRecord:
        return await retry_forever(
            lambda: self._book.update(job_id, change),
            what=f"job {job_id}: {what}", backoff=self._state_backoff, on_retry=self._beat,
        )

    async def _announce(self, publish: Callable[[], Awaitable[None]], what: str) -> None:
        await retry_forever(publish, what=what, backoff=self._state_backoff, on_retry=self._beat)

    async def _save_progress(self, job_id: str, progress: ProgressEvent) -> None:
        """One try: the next report is a second away. The first miss of a run of misses is a warning."""
        try:
            record = await self._book.update(job_id, lambda r: r.evolve(progress=progress))
            await self._gateway.publish_status(record)
        except TemporaryError as e:
            if not self._progress_missed:
                log.warning("job %s: progress not saved, skipping reports until the state store answers: %s", job_id, e)
            self._progress_missed = True
            return
        if self._progress_missed:
            log.info("job %s: progress saved again", job_id)
        self._progress_missed = False

    async def _save_worker(self, job_id: str, state: WorkerState) -> None:
        """Record how one worker stands; one try, like progress."""
        info = WorkerInfo(index=state.index, role=state.role, name=state.name, state=state.state, message=state.message)

        def put(r: JobRecord) -> JobRecord:
            workers = {w.index: w for w in r.workers}
            workers[info.index] = info
            return r.evolve(workers=tuple(workers[i] for i in sorted(workers)))

        try:
            await self._book.update(job_id, put)
        except TemporaryError as e:
            log.warning("job %s: worker %d's state not saved: %s", job_id, state.index, e)

    async def _tell(self, job_id: str, update: PhaseUpdate | TrainerOutput | LogLine) -> None:
        """Publish a phase, event or log line on training_logs.<job>; one try."""
        try:
            await self._events.job_progress(job_id, update)
        except TemporaryError as e:
            log.debug("job %s: update not published: %s", job_id, e)


def _unsettled(record: JobRecord) -> bool:
    return record.gpu_held or record.trainer_may_run or (record.phase is JobPhase.SUCCEEDED and not record.announced)
