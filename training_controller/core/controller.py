"""The use cases: submit a training, run the queue one job at a time, report on jobs.

One worker runs the queue: the GPU is one slot. Jobs are taken by submission order from the state store,
not from memory, so a restarted controller finds its queue where it left it. On every way out of a training
that announced `JobStart`, `JobEnd` follows: the GPU is never left marked busy.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from training_controller.core.errors import (
    ControllerError,
    JobNotFound,
    TemporaryError,
    TrainingFailed,
)
from training_controller.core.export import export_training_data
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.ports import Events, JobSpec, Launcher, LogSource, ObjectStore, StateStore
from training_controller.core.queries import LogQuery

log = logging.getLogger(__name__)

MODEL_FILE = "nulog_model.pt"
VOCAB_FILE = "vocab.txt"
METRICS_FILE = "metrics.json"
LATEST_MODEL_FILE = "nulog_model_latest.pt"
LATEST_VOCAB_FILE = "vocab.txt"
TRAINING_STATUS_KEY = "modelTrainingStatus"


@dataclass(frozen=True)
class ControllerOptions:
    """How trainings are run; built from Settings by bootstrap."""

    models_bucket: str = "opni-nulog-models"
    training_bucket: str = "training-logs"
    window_seconds: int = 60
    max_documents: int | None = None
    epochs: int = 3
    seed: int = 0
    max_lines: int | None = None
    device: str = "auto"
    export_attempts: int = 3
    progress_save_seconds: float = 2.0


class TrainingController:
    """Accepts training requests and carries each through the job lifecycle."""

    def __init__(
        self,
        *,
        source: LogSource,
        store: ObjectStore,
        launcher: Launcher,
        state: StateStore,
        events: Events,
        options: ControllerOptions,
    ) -> None:
        self.source = source
        self.store = store
        self.launcher = launcher
        self.state = state
        self.events = events
        self.options = options
        self._wake = asyncio.Event()
        self._submit_lock = asyncio.Lock()

    # -- use cases called by handlers ------------------------------------------------------------------

    async def submit(self, query: LogQuery, *, request: dict[str, Any], requested_by: str) -> JobRecord:
        """Queue a training of the logs that match `query`."""
        if self.options.max_documents and not query.max_documents:
            query = query.model_copy(update={"max_documents": self.options.max_documents})
        async with self._submit_lock:
            seq = await self.state.next_seq()
            record = JobRecord.new(
                job_id=uuid.uuid4().hex[:12],
                seq=seq,
                request=request,
                query=query.model_dump(mode="json"),
                requested_by=requested_by,
                parameters={
                    "epochs": self.options.epochs,
                    "seed": self.options.seed,
                    "max_lines": self.options.max_lines,
                    "device": self.options.device,
                    "window_seconds": self.options.window_seconds,
                },
            )
            await self.state.save_job(record)
        log.info("job %s queued (requested by %s)", record.job_id, requested_by)
        self._wake.set()
        return record

    async def get_job(self, job_id: str) -> JobRecord:
        record = await self.state.get_job(job_id)
        if record is None:
            raise JobNotFound(f"no training job with id {job_id!r}")
        return record

    async def list_jobs(self, *, phase: JobPhase | None = None, limit: int = 20) -> list[JobRecord]:
        """The most recent jobs first, optionally only those in one phase."""
        records = [r for r in await self.state.list_jobs() if phase is None or r.phase is phase]
        return sorted(records, key=lambda r: r.seq, reverse=True)[:limit]

    async def queue_position(self, job_id: str) -> int:
        """How many jobs will run before this one (0: it runs now or next)."""
        records = await self.state.list_jobs()
        me = next((r for r in records if r.job_id == job_id), None)
        if me is None or me.phase is not JobPhase.QUEUED:
            return 0
        return sum(
            1 for r in records if (r.phase is JobPhase.QUEUED and r.seq < me.seq) or (not r.phase.is_final and r.phase is not JobPhase.QUEUED)
        )

    # -- the worker ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run queued jobs one at a time, forever."""
        log.info("training worker started")
        while True:
            self._wake.clear()
            record = await self._next_queued()
            if record is None:
                await self._wake.wait()
                continue
            await self.run_job(record)

    async def _next_queued(self) -> JobRecord | None:
        queued = [r for r in await self.state.list_jobs() if r.phase is JobPhase.QUEUED]
        return min(queued, key=lambda r: r.seq, default=None)

    async def run_job(self, record: JobRecord) -> JobRecord:
        """Carry one queued job to a final phase; never raises for a failure of the job itself."""
        job_id = record.job_id
        gpu_announced = False
        try:
            record = await self._advance(record, JobPhase.EXPORTING, "exporting logs")
            result = await self._export(record)
            record = await self._advance(
                record,
                JobPhase.LAUNCHING,
                f"exported {result.count} log lines; launching the training",
                log_count=result.count,
                train_data_version_hash=result.sha256,
                training_data={"bucket": result.bucket, "data": result.data_key, "manifest": result.manifest_key},
            )
            await self.events.job_start(job_id)
            gpu_announced = True
            await self.events.model_update("training")
            spec = JobSpec(
                job_id=job_id,
                data_uris=(self.store.uri(result.bucket, result.data_key),),
                output_uri=self.store.uri(self.options.models_bucket, job_id),
                epochs=self.options.epochs,
                seed=self.options.seed,
                max_lines=self.options.max_lines,
                device=self.options.device,
            )
            await self.launcher.launch(spec)
            record = await self._advance(record, JobPhase.RUNNING, "training")
            record = await self._follow(record)
        except asyncio.CancelledError:
            log.warning("job %s: controller stopping while the job is %s", job_id, record.phase.value)
            raise
        except ControllerError as e:
            record = await self._fail(record, str(e))
        except Exception as e:  # the worker must survive anything a job does; the record says what happened
            log.exception("job %s: unexpected error", job_id)
            record = await self._fail(record, f"internal error: {type(e).__name__}: {e}")
        finally:
            if gpu_announced and not asyncio.current_task().cancelling():
                await self.events.job_end(job_id)
        return record

    async def _export(self, record: JobRecord):
        query = LogQuery.model_validate(record.query)
        for attempt in range(1, self.options.export_attempts + 1):
            try:
                return await export_training_data(
                    query,
                    job_id=record.job_id,
                    source=self.source,
                    store=self.store,
                    bucket=self.options.training_bucket,
                    window_seconds=self.options.window_seconds,
                )
            except TemporaryError as e:
                if attempt == self.options.export_attempts:
                    raise
                log.warning("job %s: export attempt %d failed, retrying in %.0fs: %s", record.job_id, attempt, e.delay, e)
                await asyncio.sleep(e.delay)
        raise AssertionError("unreachable")

    async def _follow(self, record: JobRecord) -> JobRecord:
        """Relay the job's events until it ends, then record the outcome."""
        job_id = record.job_id
        last_save = 0.0
        async for event in self.launcher.events(job_id):
            if event.kind == "finished":
                if not event.succeeded:
                    raise TrainingFailed(f"training failed: {event.message or 'the job ended without a model'}")
                return await self._succeed(record)
            await self.events.job_progress(job_id, {"kind": event.kind, **event.data})
            if event.kind == "progress" and event.data.get("event") == "progress":
                record = record.evolve(progress=event.data)
                now = time.monotonic()
                if now - last_save >= self.options.progress_save_seconds:
                    last_save = now
                    await self.state.save_job(record)
                    await self.state.put_value(TRAINING_STATUS_KEY, training_status(record))
        raise TrainingFailed("the launcher stopped reporting before the job ended")

    async def _succeed(self, record: JobRecord) -> JobRecord:
        bucket, job_id = self.options.models_bucket, record.job_id
        missing = [f for f in (MODEL_FILE, VOCAB_FILE) if not await self.store.exists(bucket, f"{job_id}/{f}")]
        if missing:
            raise TrainingFailed(f"the training job ended without writing {', '.join(missing)}")
        # Publish the latest names only once both per-job files are complete.
        await self.store.copy(bucket, f"{job_id}/{MODEL_FILE}", bucket, LATEST_MODEL_FILE)
        await self.store.copy(bucket, f"{job_id}/{VOCAB_FILE}", bucket, LATEST_VOCAB_FILE)
        artifacts = {
            "bucket": bucket,
            "model": f"{job_id}/{MODEL_FILE}",
            "vocab": f"{job_id}/{VOCAB_FILE}",
            "metrics": f"{job_id}/{METRICS_FILE}",
            "latest_model": LATEST_MODEL_FILE,
            "latest_vocab": LATEST_VOCAB_FILE,
        }
        record = await self._advance(record, JobPhase.SUCCEEDED, "model trained and published", artifacts=artifacts)
        await self.events.model_ready(
            bucket=bucket, model_file=LATEST_MODEL_FILE, vocab_file=LATEST_VOCAB_FILE, job_id=job_id
        )
        return record

    async def _fail(self, record: JobRecord, message: str) -> JobRecord:
        log.error("job %s failed: %s", record.job_id, message)
        if record.phase.is_final:
            return record
        return await self._advance(record, JobPhase.FAILED, message)

    async def _advance(self, record: JobRecord, phase: JobPhase, message: str, **changes: Any) -> JobRecord:
        record = record.advance(phase, message, **changes)
        await self.state.save_job(record)
        await self.state.put_value(TRAINING_STATUS_KEY, training_status(record))
        await self.events.job_progress(record.job_id, {"kind": "phase", "phase": phase.value, "message": message})
        log.info("job %s %s: %s", record.job_id, phase.value, message)
        return record


def training_status(record: JobRecord) -> dict[str, Any]:
    """The `modelTrainingStatus` value that Opni's gateway reads for the job."""
    p = record.progress
    status = {
        JobPhase.QUEUED: "queued",
        JobPhase.EXPORTING: "fetching data",
        JobPhase.LAUNCHING: "training",
        JobPhase.RUNNING: "training",
        JobPhase.SUCCEEDED: "completed",
        JobPhase.FAILED: "failed",
        JobPhase.CANCELLED: "cancelled",
    }[record.phase]
    return {
        "job_id": record.job_id,
        "status": status,
        "statistics": {
            "timeElapsed": p.get("elapsed_s", 0),
            "percentageCompleted": 100 if record.phase is JobPhase.SUCCEEDED else p.get("percent", 0),
            "remainingTime": 0 if record.phase.is_final else p.get("eta_s", 0),
            "currentEpoch": p.get("epoch", 0),
            "stage": record.phase.value,
        },
    }

