"""The steps of a job, one per phase: each is idempotent, so a step that broke off can simply run again.

    queued ──start──► exporting ──export──► launching ──launch──► running ──follow──► (trained) ──publish──►
"""

from __future__ import annotations

from nulog.protocol import (
    LATEST_MODEL_FILE,
    LATEST_VOCAB_FILE,
    METRICS_FILE,
    MODEL_FILE,
    VOCAB_FILE,
    JobArgs,
    ProgressEvent,
)
from training_controller.core.errors import LauncherUnavailable, TrainingFailed
from training_controller.core.jobs import Artifacts, JobPhase, JobRecord, TrainingData
from training_controller.core.journal import Journal, RunContext
from training_controller.core.ports import Finished, JobSpec, StillRunning, TrainerOutput, WorkerState
from training_controller.core.settle import copy_to_current
from training_controller.core.trainers import WORKERS

# Under the job's folder of the archive bucket: its resumable training state.
CHECKPOINT_DIR = "checkpoint"


class Steps:
    """What moves a job from one phase to the next."""

    def __init__(self, context: RunContext, journal: Journal) -> None:
        self._c = context
        self._j = journal

    async def start(self, record: JobRecord) -> None:
        await self._j.advance(record, JobPhase.EXPORTING, "exporting logs")

    async def export(self, record: JobRecord) -> None:
        assert record.query is not None
        result = await self._c.exporter.export(
            record.query, job_id=record.job_id, bucket=self._c.buckets.training_bucket, window_seconds=record.window_seconds
        )
        self._c.beat()
        await self._j.advance(
            record,
            JobPhase.LAUNCHING,
            f"exported {result.count} log lines; launching the training",
            log_count=result.count,
            train_data_version_hash=result.sha256,
            training_data=TrainingData(bucket=result.bucket, data=result.data_key, manifest=result.manifest_key),
        )

    async def launch(self, record: JobRecord) -> None:
        job_id = record.job_id
        if not record.gpu_held and self._c.trainer(record).gpus > 0:
            await self._c.gpu.wait_until_external_free()
            record = await self._j.persist(job_id, lambda r: r.evolve(gpu_held=True), "record its GPU claim")
            self._c.gpu.hold(job_id)
            await self._j.announce(lambda: self._c.events.job_start(job_id), f"job {job_id}: JobStart")
            await self._j.announce(lambda: self._c.events.model_update("training"), f"job {job_id}: model_update")
        if not record.trainer_may_run:
            # Said before the launch, so that a crash right after it still knows a trainer may run.
            record = await self._j.persist(job_id, lambda r: r.evolve(trainer_may_run=True), "record its launch")
        if job_id not in {j.job_id for j in await self._c.launcher.list_jobs()}:
            await self._c.launcher.launch(self.spec(record))
        await self._j.advance(record, JobPhase.RUNNING, "training")

    def spec(self, record: JobRecord) -> JobSpec:
        """The launcher's spec: the contract's arguments from the parameters in force; a parameter the
        contract has no argument for goes to the trainer as `--<name> <value>`. The training's checkpoints go
        beside its artifacts, so that a worker started again (a pod moved off a drained node, a relaunch after a
        controller restart) resumes from the last one."""
        assert record.training_data is not None
        trainer = self._c.trainer(record)
        params = {k: v for k, v in record.parameters.items() if v is not None and k != WORKERS}
        known = {k: v for k, v in params.items() if k in JobArgs.model_fields}
        args = JobArgs(
            job_id=record.job_id,
            data=(self._c.store.uri(record.training_data.bucket, record.training_data.data),),
            output=self._c.store.uri(self._c.buckets.archive_bucket, record.job_id),
            checkpoint=self._c.store.uri(self._c.buckets.archive_bucket, f"{record.job_id}/{CHECKPOINT_DIR}"),
            checkpoint_every_s=self._c.training.checkpoint_seconds,
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

    async def follow(self, record: JobRecord) -> None:
        """Relay the trainer's events until it ends, then record how it ended."""
        job_id = record.job_id
        last_save = 0.0
        unsaved: ProgressEvent | None = None  # the latest report, saved at most every progress_save_seconds
        async for event in self._c.launcher.events(job_id):
            self._c.beat()
            if isinstance(event, Finished):
                if unsaved is not None:
                    await self._j.save_progress(job_id, unsaved)
                message = "trainer finished; publishing the model" if event.succeeded else record.message
                await self._j.persist(
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
                await self._j.save_worker(job_id, event)
                continue
            await self._j.tell(job_id, event)
            if isinstance(event, TrainerOutput) and isinstance(event.event, ProgressEvent):
                unsaved = event.event
                now = self._c.clock()
                if now - last_save >= self._c.training.progress_save_seconds:
                    last_save = now
                    await self._j.save_progress(job_id, unsaved)
                    unsaved = None
        raise LauncherUnavailable(f"job {job_id}: the launcher stopped reporting before the job ended")

    async def publish(self, record: JobRecord) -> None:
        """Put the trained model under the names Opni's inference service reads, and mark the job succeeded."""
        archive, job_id = self._c.buckets.archive_bucket, record.job_id
        missing = [f for f in (MODEL_FILE, VOCAB_FILE) if not await self._c.store.exists(archive, f"{job_id}/{f}")]
        if missing:
            raise TrainingFailed(f"the training job ended without writing {', '.join(missing)}")
        if not self._c.trainer(record).publishes_model:
            artifacts = Artifacts(
                bucket=archive, model=f"{job_id}/{MODEL_FILE}", vocab=f"{job_id}/{VOCAB_FILE}",
                metrics=f"{job_id}/{METRICS_FILE}", latest_bucket="", latest_model="", latest_vocab="",
            )
            await self._j.advance(record, JobPhase.SUCCEEDED, "model trained and archived", artifacts=artifacts)
            return
        await copy_to_current(self._c, job_id)
        artifacts = Artifacts(
            bucket=archive,
            model=f"{job_id}/{MODEL_FILE}",
            vocab=f"{job_id}/{VOCAB_FILE}",
            metrics=f"{job_id}/{METRICS_FILE}",
            latest_bucket=self._c.buckets.models_bucket,
            latest_model=LATEST_MODEL_FILE,
            latest_vocab=LATEST_VOCAB_FILE,
        )
        await self._j.advance(record, JobPhase.SUCCEEDED, "model trained and published", artifacts=artifacts)
