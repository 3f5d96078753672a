"""The trained models: which exist, which one is current, and making an earlier one current again.

Every succeeded job's model is kept in the archive bucket (`<job>/nulog_model.pt`, `vocab.txt`,
`metrics.json`); the current one is also at the root of the models bucket, where Opni's inference services
read it. Promoting a model (a rollback) copies it back to the root and announces it exactly as a new one:
`model_ready`, and `model_update` with the bucket payload.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from nulog.protocol import LATEST_MODEL_FILE, LATEST_VOCAB_FILE, METRICS_FILE, MODEL_FILE, VOCAB_FILE
from training_controller.config import StoreSettings
from training_controller.core.book import JobBook
from training_controller.core.errors import Conflict, InvalidRequest, TemporaryError
from training_controller.core.gateway import Gateway
from training_controller.core.jobs import JobPhase, JobRecord
from training_controller.core.ports import Events, ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """One trained model, for people choosing between models."""

    job_id: str
    trained_at: str | None
    train_data_version_hash: str | None
    log_count: int | None
    metrics: dict[str, Any] = field(default_factory=dict)
    current: bool = False
    available: bool = True  # its files are in the archive

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "trained_at": self.trained_at,
            "train_data_version_hash": self.train_data_version_hash,
            "log_count": self.log_count,
            "metrics": self.metrics,
            "current": self.current,
            "available": self.available,
        }


class Models:
    """The archive of trained models and the current one."""

    def __init__(self, *, book: JobBook, store: ObjectStore, events: Events, gateway: Gateway, buckets: StoreSettings) -> None:
        self._book = book
        self._store = store
        self._events = events
        self._gateway = gateway
        self._archive = buckets.archive_bucket
        self._models = buckets.models_bucket

    async def list(self) -> list[ModelInfo]:
        """Every model a job trained, the most recent first, with its training metrics."""
        last = await self._gateway.last_model() or {}
        found = []
        for record in reversed(self._book.all()):
            if record.phase is not JobPhase.SUCCEEDED:
                continue
            metrics, available = await self._metrics(record)
            found.append(
                ModelInfo(
                    job_id=record.job_id,
                    trained_at=record.finished_at,
                    train_data_version_hash=record.train_data_version_hash,
                    log_count=record.log_count,
                    metrics=metrics,
                    current=record.job_id == last.get("job_id"),
                    available=available,
                )
            )
        return found

    async def _metrics(self, record: JobRecord) -> tuple[dict[str, Any], bool]:
        try:
            raw = await self._store.get_bytes(self._archive, f"{record.job_id}/{METRICS_FILE}")
        except KeyError:
            return {}, await self._store.exists(self._archive, f"{record.job_id}/{MODEL_FILE}")
        except TemporaryError as e:
            log.warning("metrics of model %s not readable now: %s", record.job_id, e)
            return {}, True
        try:
            return json.loads(raw), True
        except ValueError:
            return {}, True

    async def promote(self, job_id: str) -> ModelInfo:
        """Make the model of a succeeded job current again, and announce it as a new model."""
        record = self._book.get(job_id)
        if record.phase is not JobPhase.SUCCEEDED:
            raise InvalidRequest(f"job {job_id} trained no model ({record.phase.value})")
        under_way = [r for r in self._book.index.pending() if r.phase in (JobPhase.LAUNCHING, JobPhase.RUNNING)]
        if under_way:
            raise Conflict(f"job {under_way[0].job_id} is training; promote a model once it has ended")
        missing = [f for f in (MODEL_FILE, VOCAB_FILE) if not await self._store.exists(self._archive, f"{job_id}/{f}")]
        if missing:
            raise Conflict(f"the model of job {job_id} is no longer in the archive (missing {', '.join(missing)})")
        await self._store.copy(self._archive, f"{job_id}/{MODEL_FILE}", self._models, LATEST_MODEL_FILE)
        await self._store.copy(self._archive, f"{job_id}/{VOCAB_FILE}", self._models, LATEST_VOCAB_FILE)
        await self._gateway.model_trained(record)
        await self._events.model_ready(
            bucket=self._models, model_file=LATEST_MODEL_FILE, vocab_file=LATEST_VOCAB_FILE, job_id=job_id
        )
        log.info("model of job %s promoted: it is the current model again", job_id)
        metrics, _ = await self._metrics(record)
        return ModelInfo(
            job_id=job_id, trained_at=record.finished_at, train_data_version_hash=record.train_data_version_hash,
            log_count=record.log_count, metrics=metrics, current=True,
        )
