"""The job runner: one worker that carries each job through its phases, and the one error policy it applies.

The parts: the steps of a job (core/steps.py), how its state is written (core/journal.py), and what it owes
once it has ended (core/settle.py); this module runs the queue and applies the policy.

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

from training_controller.core.errors import DeadlineExceeded, PermanentError, TemporaryError
from training_controller.core.jobs import JobPhase, JobRecord, epoch_seconds, unsettled
from training_controller.core.journal import Journal, RunContext
from training_controller.core.settle import Settler
from training_controller.core.steps import Steps
from training_controller.core.tasks import cancel_and_wait

log = logging.getLogger(__name__)

__all__ = ["JobRunner", "RunContext", "RunnerStatus"]


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

    def __init__(self, context: RunContext) -> None:
        self._c = context
        self._journal = Journal(context)
        self._steps = Steps(context, self._journal)
        self._settler = Settler(context, self._journal)
        self._wake = asyncio.Event()
        self._current: _Run | None = None
        self._phase: JobPhase | None = None

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
            seconds_since_progress=self._c.clock() - self._c.beat_at if self._current else 0.0,
        )

    async def prune(self) -> None:
        """Forget ended jobs beyond the retention; a store that does not answer now is asked next time."""
        t = self._c.training
        try:
            gone = await self._c.book.prune(keep=t.retention_count, max_age_seconds=t.retention_days * 86_400)
        except TemporaryError as e:
            log.warning("job records beyond the retention not pruned now: %s", e)
            return
        if gone:
            log.info("forgot %d ended job records beyond the retention (%d kept, %.0f days)", gone, t.retention_count, t.retention_days)

    async def run(self) -> None:
        """Settle what a previous worker left, then run queued jobs one at a time, forever."""
        for record in self._c.book.index.owing():
            if record.phase.is_final and unsettled(record):
                log.info("job %s ended (%s) but is not settled; settling it now", record.job_id, record.phase.value)
                await self._settler.settle(record)
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
        return self._c.book.index.next_to_run()

    async def run_job(self, record: JobRecord) -> JobRecord:
        """Carry a job from wherever it stands to a final phase and settle it; raises only CancelledError."""
        start = epoch_seconds(record.started_at) if record.started_at else time.time()
        run = _Run(record.job_id, deadline=start + self._c.training.job_deadline_seconds)
        self._current = run
        self._c.beat()
        try:
            while True:
                record = self._c.book.get(run.job_id)
                self._phase = record.phase
                if record.phase.is_final:
                    return await self._settler.settle(record)
                if record.cancel_requested:
                    await self._journal.end(record, JobPhase.CANCELLED, f"cancelled while {record.phase.value}")
                    continue
                try:
                    await self._step(record, run)
                except _Cancelled:
                    continue  # the record says cancel_requested: the loop ends the job
                except PermanentError as e:
                    await self._journal.end(record, JobPhase.FAILED, str(e))
                except Exception as e:  # a bug; the worker goes on, the record says what happened
                    log.exception("job %s: unexpected error while %s", run.job_id, record.phase.value)
                    await self._journal.end(record, JobPhase.FAILED, f"internal error: {type(e).__name__}: {e}")
        finally:
            self._current = None

    async def _step(self, record: JobRecord, run: _Run) -> None:
        """One step of the job, retried on temporary failures within its deadline."""
        steps: dict[JobPhase, Callable[[JobRecord], Awaitable[None]]] = {
            JobPhase.QUEUED: self._steps.start,
            JobPhase.EXPORTING: self._steps.export,
            JobPhase.LAUNCHING: self._steps.launch,
            JobPhase.RUNNING: self._steps.publish if record.trained else self._steps.follow,
        }
        step = steps[record.phase]
        try:
            await self._interruptible(step(record), run)
        except TemporaryError as e:
            attempt = run.attempts[record.phase] = run.attempts.get(record.phase, 0) + 1
            wait = self._c.backoff.delay(attempt, e.delay)
            if time.time() + wait > run.deadline:
                raise DeadlineExceeded(
                    f"{record.phase.value} kept failing until the job's deadline "
                    f"({self._c.training.job_deadline_seconds:.0f}s): {e}"
                ) from e
            log.warning("job %s: %s failed (attempt %d), retrying in %.1fs: %s", run.job_id, record.phase.value, attempt, wait, e)
            self._c.beat()
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
