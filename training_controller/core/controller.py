"""The use cases: submit a training, run the queue one job at a time, report on and cancel jobs.

One worker runs the queue: the GPU is one slot. Jobs are taken from the state store, not from memory, so a
restarted controller finds its queue where it left it, and a job that was exporting, launching or running
when the controller died is taken up where it stood: the launcher's jobs are the truth about what runs.

On every way out of a training that announced `JobStart`, `JobEnd` follows: whether JobStart is still
unanswered is part of the job record (`gpu_held`), so even a crash between the two is mended on restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from training_controller.core.errors import (
    ControllerError,
    InvalidRequest,
    JobNotFound,
    TemporaryError,
    TrainingFailed,
)
from training_controller.core.export import ExportResult, export_training_data
from training_controller.core.gpu import GpuArbiter
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.ports import Events, JobSpec, Launcher, LogSource, ObjectStore, StateStore
from training_controller.core.queries import ANOMALY_KEYWORDS, Interval, LogQuery, Workload

log = logging.getLogger(__name__)

MODEL_FILE = "nulog_model.pt"
VOCAB_FILE = "vocab.txt"
METRICS_FILE = "metrics.json"
LATEST_MODEL_FILE = "nulog_model_latest.pt"
LATEST_VOCAB_FILE = "vocab.txt"
TRAINING_STATUS_KEY = "modelTrainingStatus"
PARAMETERS_KEY = "modelTrainingParameters"
LAST_MODEL_KEY = "lastModelTrained"
# Copies of one request (its direct delivery and its copy in the train stream) are matched within this.
MATCH_WINDOW_SECONDS = 30.0


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
    gpu_reset_seconds: float = 3600.0
    workload_lookback_seconds: int = 3600


@dataclass(frozen=True)
class Origin:
    """How a request reached the controller, to tell its copies apart from new requests."""

    via: str  # "request" (direct, with a reply subject) or "stream" (the durable copy)
    request_hash: str
    received_at: float  # seconds since the epoch; for the stream, when the server stored it
    msg_id: str | None = None
    stream_seq: int | None = None


def request_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


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
        self.gpu = GpuArbiter(state, reset_seconds=options.gpu_reset_seconds)
        self._wake = asyncio.Event()
        # Records are changed by the worker and by handlers; every read-modify-write holds this lock so
        # that no change overwrites another.
        self._records_lock = asyncio.Lock()
        self._current: tuple[str, asyncio.Task] | None = None

    # -- use cases called by handlers ------------------------------------------------------------------

    async def submit(
        self, query: LogQuery, *, request: dict[str, Any], requested_by: str, origin: Origin | None = None
    ) -> JobRecord:
        """Queue a training of the logs that match `query`, or return the job an earlier copy of it made."""
        if self.options.max_documents and not query.max_documents:
            query = query.model_copy(update={"max_documents": self.options.max_documents})
        async with self._records_lock:
            if origin is not None and (known := await self._copy_of(origin)) is not None:
                return known
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
                msg_id=origin.msg_id if origin else None,
                request_hash=origin.request_hash if origin else "",
                stream_seq=origin.stream_seq if origin else None,
                replied=origin is not None and origin.via == "request",
            )
            await self.state.save_job(record)
        log.info("job %s queued (requested by %s)", record.job_id, requested_by)
        self._wake.set()
        return record

    async def _copy_of(self, origin: Origin) -> JobRecord | None:
        """The job already made from another copy of the same request, marked as seen by this copy."""
        records = await self.state.list_jobs()
        if origin.stream_seq is not None:
            for r in records:
                if r.stream_seq == origin.stream_seq:
                    return r  # the stream redelivered a request we had stored
        if origin.msg_id:
            match = next((r for r in records if r.msg_id == origin.msg_id), None)
        else:
            # A request with a reply subject reaches us twice: directly, and through the train stream.
            match = next(
                (
                    r
                    for r in records
                    if r.request_hash == origin.request_hash
                    and not r.msg_id
                    and abs(_epoch(r.created_at) - origin.received_at) < MATCH_WINDOW_SECONDS
                    and ((origin.via == "stream" and r.stream_seq is None) or (origin.via == "request" and not r.replied))
                ),
                None,
            )
        if match is None:
            return None
        if origin.via == "stream" and match.stream_seq is None:
            match = match.evolve(stream_seq=origin.stream_seq)
            await self.state.save_job(match)
        elif origin.via == "request" and not match.replied:
            match = match.evolve(replied=True)
            await self.state.save_job(match)
        return match

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
            1
            for r in records
            if (r.phase is JobPhase.QUEUED and r.seq < me.seq) or (not r.phase.is_final and r.phase is not JobPhase.QUEUED)
        )

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job: a queued one at once, a running one by stopping what runs it."""
        record = await self.get_job(job_id)
        if record.phase.is_final:
            raise InvalidRequest(f"job {job_id} has already ended ({record.phase.value})")
        if record.phase is JobPhase.QUEUED and (self._current is None or self._current[0] != job_id):
            return await self._advance(record, JobPhase.CANCELLED, "cancelled while queued")
        record = await self._update(job_id, lambda r: r.evolve(cancel_requested=True))
        if record.phase is JobPhase.RUNNING:
            await self.launcher.cancel(job_id)
        elif self._current is not None and self._current[0] == job_id:
            self._current[1].cancel()
        return record

    async def train_workloads(self, workloads: dict[str, dict[str, list[str]]], *, requested_by: str) -> str:
        """The gateway's `train_model`: train if the workloads hold something the last model did not.

        Returns what was announced on `model_workload_parameters`: `train`, `update` or `reset`.
        """
        if not workloads:
            await self.reset_model()
            return "reset"
        await self.state.put_value(PARAMETERS_KEY, workloads)
        last = (await self.state.get_value(LAST_MODEL_KEY) or {}).get("workloads") or {}
        if covers(last, workloads):
            await self.events.workload_parameters(workloads, "update")
            return "update"
        now_ns = time.time_ns()
        query = LogQuery(
            intervals=(Interval(start_ns=now_ns - self.options.workload_lookback_seconds * 10**9, end_ns=now_ns),),
            workloads=workload_filters(workloads),
            exclude_anomalies=True,
            exclude_keywords=ANOMALY_KEYWORDS,
        )
        await self.submit(query, request={"workloads": workloads}, requested_by=requested_by)
        await self.events.workload_parameters(workloads, "train")
        return "train"

    async def reset_model(self) -> None:
        """Forget the last trained model and the workloads."""
        await self.state.put_value(PARAMETERS_KEY, {})
        await self.state.put_value(LAST_MODEL_KEY, None)
        await self.events.model_update("reset")
        await self.events.workload_parameters({}, "reset")
        log.info("model reset: workloads and last trained model forgotten")

    async def model_status(self) -> str:
        """Opni's `model_status`: `training`, `completed` or `not started`."""
        if await self.is_training():
            return "training"
        return "completed" if await self.state.get_value(LAST_MODEL_KEY) else "not started"

    async def last_workloads(self) -> dict[str, Any]:
        """The workloads the last trained model was trained on."""
        return (await self.state.get_value(LAST_MODEL_KEY) or {}).get("workloads") or {}

    async def is_training(self) -> bool:
        """Whether a job is queued or on its way (Opni's `model_status` "training")."""
        return any(not r.phase.is_final for r in await self.state.list_jobs())

    async def gpu_free_for_inference(self) -> bool:
        return not self.gpu.busy()

    # -- the worker ------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the GPU claims a previous controller left; call before serving requests."""
        await self.gpu.load()

    async def run(self) -> None:
        """Take up what a previous controller left, then run queued jobs one at a time, forever."""
        await self._release_leftover_gpu_claims()
        log.info("training worker started")
        while True:
            self._wake.clear()
            record = await self._next_job()
            if record is None:
                await self._wake.wait()
                continue
            task = asyncio.create_task(self.run_job(record), name=f"job-{record.job_id}")
            self._current = (record.job_id, task)
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # the worker itself is being stopped
                    task.cancel()
                    raise
            finally:
                self._current = None

    async def _release_leftover_gpu_claims(self) -> None:
        for record in await self.state.list_jobs():
            if record.phase.is_final and record.gpu_held:
                log.info("job %s ended while the controller was down; announcing JobEnd", record.job_id)
                await self._release_gpu(record)

    async def _next_job(self) -> JobRecord | None:
        """A job that is under way first (after a restart), else the oldest queued one."""
        pending = [r for r in await self.state.list_jobs() if not r.phase.is_final]
        under_way = [r for r in pending if r.phase is not JobPhase.QUEUED]
        return min(under_way or pending, key=lambda r: r.seq, default=None)

    async def run_job(self, record: JobRecord) -> JobRecord:
        """Carry a job from wherever it stands to a final phase; never raises for a failure of the job."""
        job_id = record.job_id
        try:
            if record.phase is JobPhase.QUEUED:
                record = await self._advance(record, JobPhase.EXPORTING, "exporting logs")
            if record.phase is JobPhase.EXPORTING:
                result = await self._export(record)
                record = await self._advance(
                    record,
                    JobPhase.LAUNCHING,
                    f"exported {result.count} log lines; launching the training",
                    log_count=result.count,
                    train_data_version_hash=result.sha256,
                    training_data={"bucket": result.bucket, "data": result.data_key, "manifest": result.manifest_key},
                )
            if record.phase is JobPhase.LAUNCHING:
                if not record.gpu_held:
                    record = await self._take_gpu(record)
                if job_id not in {j.job_id for j in await self.launcher.list_jobs()}:
                    await self.launcher.launch(self._spec(record))
                record = await self._advance(record, JobPhase.RUNNING, "training")
            if record.phase is JobPhase.RUNNING:
                record = await self._follow(record)
        except asyncio.CancelledError:
            latest = await self.state.get_job(job_id) or record
            if not latest.cancel_requested:
                log.warning("job %s: controller stopping while the job is %s", job_id, record.phase.value)
                raise
            record = await self._advance(record, JobPhase.CANCELLED, "cancelled")
        except ControllerError as e:
            record = await self._fail(record, str(e))
        except Exception as e:  # the worker must survive anything a job does; the record says what happened
            log.exception("job %s: unexpected error", job_id)
            record = await self._fail(record, f"internal error: {type(e).__name__}: {e}")
        if record.gpu_held:
            record = await self._release_gpu(record)
        return record

    def _spec(self, record: JobRecord) -> JobSpec:
        params = record.parameters
        return JobSpec(
            job_id=record.job_id,
            data_uris=(self.store.uri(record.training_data["bucket"], record.training_data["data"]),),
            output_uri=self.store.uri(self.options.models_bucket, record.job_id),
            epochs=int(params.get("epochs", self.options.epochs)),
            seed=int(params.get("seed", self.options.seed)),
            max_lines=params.get("max_lines"),
            device=str(params.get("device", self.options.device)),
        )

    async def _take_gpu(self, record: JobRecord) -> JobRecord:
        await self.gpu.wait_until_external_free()
        self.gpu.hold(record.job_id)
        record = await self._update(record.job_id, lambda r: r.evolve(gpu_held=True))
        await self.events.job_start(record.job_id)
        await self.events.model_update("training")
        return record

    async def _release_gpu(self, record: JobRecord) -> JobRecord:
        await self.events.job_end(record.job_id)
        self.gpu.release(record.job_id)
        return await self._update(record.job_id, lambda r: r.evolve(gpu_held=False))

    async def _export(self, record: JobRecord) -> ExportResult:
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
        progress: dict[str, Any] | None = None  # the latest report, saved at most every progress_save_seconds
        async for event in self.launcher.events(job_id):
            if event.kind == "finished":
                if progress is not None:
                    record = await self._update(job_id, lambda r, p=progress: r.evolve(progress=p))
                if (await self.get_job(job_id)).cancel_requested:
                    return await self._advance(record, JobPhase.CANCELLED, "cancelled while training")
                if not event.succeeded:
                    raise TrainingFailed(f"training failed: {event.message or 'the job ended without a model'}")
                return await self._succeed(record)
            await self.events.job_progress(job_id, {"kind": event.kind, **event.data})
            if event.kind == "progress" and event.data.get("event") == "progress":
                progress = event.data
                now = time.monotonic()
                if now - last_save >= self.options.progress_save_seconds:
                    last_save = now
                    record = await self._update(job_id, lambda r, p=progress: r.evolve(progress=p))
                    await self.state.put_value(TRAINING_STATUS_KEY, training_status(record))
                    progress = None
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
        await self.state.put_value(
            LAST_MODEL_KEY,
            {"job_id": job_id, "workloads": record.request.get("workloads") or {}, "at": record.finished_at},
        )
        await self.events.model_ready(
            bucket=bucket, model_file=LATEST_MODEL_FILE, vocab_file=LATEST_VOCAB_FILE, job_id=job_id
        )
        return record

    async def _fail(self, record: JobRecord, message: str) -> JobRecord:
        log.error("job %s failed: %s", record.job_id, message)
        if record.phase.is_final:
            return record
        return await self._advance(record, JobPhase.FAILED, message)

    async def _update(self, job_id: str, change: Callable[[JobRecord], JobRecord]) -> JobRecord:
        """Apply `change` to the stored record and store the result, with no other change in between."""
        async with self._records_lock:
            current = await self.state.get_job(job_id)
            if current is None:
                raise JobNotFound(f"no training job with id {job_id!r}")
            record = change(current)
            await self.state.save_job(record)
            return record

    async def _advance(self, record: JobRecord, phase: JobPhase, message: str, **changes: Any) -> JobRecord:
        record = await self._update(record.job_id, lambda r: r.advance(phase, message, **changes))
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


def covers(trained: dict[str, dict[str, list[str]]], wanted: dict[str, dict[str, list[str]]]) -> bool:
    """Whether a model trained on `trained` already saw every workload of `wanted`.

    An empty namespace map means every namespace of the cluster, an empty deployment list every deployment
    of the namespace, on both sides.
    """
    for cluster, namespaces in wanted.items():
        if cluster not in trained:
            return False
        seen = trained[cluster]
        if not seen:
            continue  # the whole cluster was trained
        if not namespaces:
            return False  # the whole cluster is wanted, only parts were trained
        for namespace, deployments in namespaces.items():
            if namespace not in seen:
                return False
            if not seen[namespace]:
                continue  # every deployment of the namespace was trained
            if not deployments or not set(deployments) <= set(seen[namespace]):
                return False
    return True


def workload_filters(workloads: dict[str, dict[str, list[str]]]) -> tuple[Workload, ...]:
    """Exact-value filters for the logs of these workloads; a namespace without deployments means all of them."""
    filters = []
    for cluster, namespaces in workloads.items():
        if not namespaces:
            filters.append(Workload(cluster_id=cluster))
        for namespace, deployments in (namespaces or {}).items():
            if not deployments:
                filters.append(Workload(cluster_id=cluster, namespace_name=namespace))
            filters += [Workload(cluster_id=cluster, namespace_name=namespace, deployment=d) for d in deployments]
    return tuple(filters)
