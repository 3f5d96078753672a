"""The use cases of Opni's AIOps gateway: train on workloads, model status, the workloads of the model.

The gateway speaks in workloads (cluster -> namespace -> deployments) and reads its answers from KV keys of
its own (`modelTrainingParameters`, `modelTrainingStatus`); this module keeps those keys current and turns a
workload request into a log query over the last `workload_lookback_seconds`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from training_controller.config import TrainingSettings
from training_controller.core.book import JobBook
from training_controller.core.gpu import GpuArbiter
from training_controller.core.intake import Intake, Submission
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.ports import Events, StateStore
from training_controller.core.queries import ANOMALY_KEYWORDS, Interval, LogQuery, Workload

log = logging.getLogger(__name__)

TRAINING_STATUS_KEY = "modelTrainingStatus"
PARAMETERS_KEY = "modelTrainingParameters"
LAST_MODEL_KEY = "lastModelTrained"

Workloads = dict[str, dict[str, list[str]]]


@dataclass(kw_only=True)
class Gateway:
    """What the gateway asks of the controller, and the KV keys it reads."""

    book: JobBook
    intake: Intake
    state: StateStore
    events: Events
    gpu: GpuArbiter
    training: TrainingSettings

    async def train_workloads(self, workloads: Workloads, *, uuid: str | None, requested_by: str) -> str:
        """`train_model`: train if the workloads hold something the last model did not.

        Returns what was announced on `model_workload_parameters`: `train`, `update` or `reset`. The
        watchlist is kept in the gateway's shape, `{"uuid", "workloads"}`, under `modelTrainingParameters`
        (the gateway wrote the same just before asking; an older gateway did not).
        """
        await self.state.put_value(PARAMETERS_KEY, {"uuid": uuid or uuid4().hex, "workloads": workloads})
        if not workloads:
            await self.reset_model()
            return "reset"
        if covers(await self.last_workloads(), workloads):
            await self.events.workload_parameters(workloads, "update")
            return "update"
        now_ns = time.time_ns()
        query = LogQuery(
            intervals=(Interval(start_ns=now_ns - self.training.workload_lookback_seconds * 10**9, end_ns=now_ns),),
            workloads=workload_filters(workloads),
            exclude_anomalies=True,
            exclude_keywords=ANOMALY_KEYWORDS,
        )
        record, _ = await self.intake.submit(Submission(query, request={"workloads": workloads}, requested_by=requested_by))
        await self.publish_status(record)
        await self.events.workload_parameters(workloads, "train")
        return "train"

    async def reset_model(self) -> None:
        """Forget the last trained model; the watchlist is empty already."""
        await self.state.put_value(LAST_MODEL_KEY, None)
        await self.state.put_value(TRAINING_STATUS_KEY, NO_MODEL_STATUS)
        await self.events.model_update("reset")
        await self.events.workload_parameters({}, "reset")
        log.info("model reset: workloads and last trained model forgotten")

    async def model_status(self) -> str:
        """`model_status`: `training` while a job is under way or queued, or an external trainer holds the
        GPU (Opni counts every JobStart); else `completed` once a model was trained, or `not started`."""
        if self.book.index.pending_count() or self.gpu.external_busy():
            return "training"
        return "completed" if await self.state.get_value(LAST_MODEL_KEY) else "not started"

    async def watched_workloads(self) -> dict[str, Any]:
        """`workload_parameters`: the watchlist last submitted (with train_model, by us or the gateway)."""
        value = await self.state.get_value(PARAMETERS_KEY) or {}
        if isinstance(value, dict) and set(value) <= {"uuid", "workloads"}:
            return value.get("workloads") or {}
        return value if isinstance(value, dict) else {}  # an older gateway's bare map

    async def last_workloads(self) -> dict[str, Any]:
        """The workloads the last trained model was trained on."""
        return (await self.state.get_value(LAST_MODEL_KEY) or {}).get("workloads") or {}

    async def last_model(self) -> dict[str, Any] | None:
        """`{job_id, workloads, at}` of the last model trained (or promoted), or None."""
        return await self.state.get_value(LAST_MODEL_KEY)

    async def model_trained(self, record: JobRecord) -> None:
        """Remember the model of a succeeded job as the last one trained."""
        value = {"job_id": record.job_id, "workloads": record.request.get("workloads") or {}, "at": record.finished_at}
        await self.state.put_value(LAST_MODEL_KEY, value)

    async def publish_status(self, record: JobRecord) -> None:
        """Keep `modelTrainingStatus` at the job's phase and progress."""
        await self.state.put_value(TRAINING_STATUS_KEY, training_status(record))


NO_MODEL_STATUS = {"status": "no model trained"}
# The gateway proto's ModelStatus: status, and statistics whose stage the UI knows as train / fetching data.
_STATUS: dict[JobPhase, tuple[str, str]] = {
    JobPhase.QUEUED: ("training", "fetching data"),
    JobPhase.EXPORTING: ("training", "fetching data"),
    JobPhase.LAUNCHING: ("training", "train"),
    JobPhase.RUNNING: ("training", "train"),
    JobPhase.SUCCEEDED: ("completed", "completed"),
    JobPhase.FAILED: ("training failed", "training failed"),
    JobPhase.CANCELLED: ("training failed", "cancelled"),
}


def training_status(record: JobRecord) -> dict[str, Any]:
    """The `modelTrainingStatus` value of a job: the gateway proto's `ModelStatus`, exactly.

    protojson on the gateway's side refuses unknown fields, and int64 fields hold whole numbers: so no job
    id, and no fractions of seconds or of a percent.
    """
    p = record.progress
    status, stage = _STATUS[record.phase]
    done = record.phase is JobPhase.SUCCEEDED
    return {
        "status": status,
        "statistics": {
            "timeElapsed": int(p.elapsed_s) if p else 0,
            "percentageCompleted": 100 if done else (int(p.percent) if p else 0),
            "remainingTime": 0 if record.phase.is_final or p is None else int(round(p.eta_s)),
            "currentEpoch": p.epoch if p else 0,
            "modelAccuracy": 0.0,
            "stage": stage,
        },
    }


def covers(trained: Workloads, wanted: Workloads) -> bool:
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


def workload_filters(workloads: Workloads) -> tuple[Workload, ...]:
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
