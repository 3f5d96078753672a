"""Settling a job that has ended: everything owed once it is over, whichever way it went.

Its trainer is stopped if it may still run (the launcher's `cancel` returns once it no longer runs), its
model is announced (or, after a training that produced none, the previous model put back, because
announcing the training made Opni's inference services empty the models bucket), and the GPU is given back
with JobEnd: in that order, so that JobEnd never goes out while a training process holds the GPU.
"""

from __future__ import annotations

import logging

from nulog.protocol import LATEST_MODEL_FILE, LATEST_VOCAB_FILE, MODEL_FILE, VOCAB_FILE
from training_controller.core.errors import PermanentError
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.journal import Journal, RunContext
from training_controller.core.retry import retry_forever

log = logging.getLogger(__name__)


async def copy_to_current(context: RunContext, job_id: str) -> None:
    """Copy a job's model from the archive to the root of the models bucket, where inference reads it.

    The latest names are written only once both per-job files are complete, the vocabulary last.
    """
    archive, models = context.buckets.archive_bucket, context.buckets.models_bucket
    await context.store.copy(archive, f"{job_id}/{MODEL_FILE}", models, LATEST_MODEL_FILE)
    await context.store.copy(archive, f"{job_id}/{VOCAB_FILE}", models, LATEST_VOCAB_FILE)


class Settler:
    """What a job owes once it has ended."""

    def __init__(self, context: RunContext, journal: Journal) -> None:
        self._c = context
        self._j = journal

    async def settle(self, record: JobRecord) -> JobRecord:
        """Everything owed once a job has ended: its trainer stopped, its model announced, the GPU given back."""
        job_id = record.job_id
        if record.trainer_may_run:
            await self._stop_trainer(job_id)
            record = await self._j.persist(job_id, lambda r: r.evolve(trainer_may_run=False), "record its trainer stopped")
        if record.phase is JobPhase.SUCCEEDED and not record.announced and self._c.trainer(record).publishes_model:
            finished = record
            await retry_forever(
                lambda: self._c.gateway.model_trained(finished),
                what=f"job {job_id}: remember the model", backoff=self._c.state_backoff, on_retry=self._c.beat,
            )
            await self._announce_model(job_id)
            record = await self._j.persist(job_id, lambda r: r.evolve(announced=True), "record model_ready")
        elif record.gpu_held and not record.announced:
            # `model_update {"status": "training"}` went out when the GPU was taken.
            await self._restore_previous_model(job_id)
            record = await self._j.persist(job_id, lambda r: r.evolve(announced=True), "record the model restored")
        if record.gpu_held:
            await self._j.announce(lambda: self._c.events.job_end(job_id), f"job {job_id}: JobEnd")
            self._c.gpu.release(job_id)
            record = await self._j.persist(job_id, lambda r: r.evolve(gpu_held=False), "record the GPU released")
        return record

    async def _stop_trainer(self, job_id: str) -> None:
        try:
            await retry_forever(
                lambda: self._c.launcher.cancel(job_id),
                what=f"job {job_id}: stopping its trainer", backoff=self._c.backoff, on_retry=self._c.beat,
            )
            log.info("job %s: trainer stopped", job_id)
        except PermanentError as e:
            # Nothing more can be done from here; holding the GPU for ever would not stop the trainer either.
            log.error("job %s: cannot stop its trainer (%s); giving the GPU back anyway", job_id, e)

    async def _restore_previous_model(self, job_id: str) -> None:
        """After a training that did not end in a model: put the last good one back, and say so.

        Announcing the training made every Opni inference service empty the models bucket; without this,
        inference would stay without a model until the next training succeeds.
        """
        last = await self._c.gateway.last_model()
        if not last or not last.get("job_id"):
            return
        previous = last["job_id"]
        try:
            await retry_forever(
                lambda: copy_to_current(self._c, previous),
                what=f"job {job_id}: restore the model of job {previous}", backoff=self._c.backoff, on_retry=self._c.beat,
            )
        except PermanentError as e:  # the archive lost it: nothing to restore
            log.error("job %s: the previous model (job %s) cannot be restored: %s", job_id, previous, e)
            return
        await self._announce_model(previous)
        log.info("job %s: the previous model (job %s) is current again", job_id, previous)

    async def _announce_model(self, job_id: str) -> None:
        await self._j.announce(
            lambda: self._c.events.model_ready(
                bucket=self._c.buckets.models_bucket, model_file=LATEST_MODEL_FILE, vocab_file=LATEST_VOCAB_FILE, job_id=job_id
            ),
            f"job {job_id}: model_ready",
        )
