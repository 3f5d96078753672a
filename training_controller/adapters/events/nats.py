"""The `nats` events adapter: announces the controller's news with Opni's subjects and payloads."""

from __future__ import annotations

from typing import Any

from training_controller.bus import Bus
from training_controller.core.ports import Events
from training_controller.messages import JOB_END, JOB_START, BucketFiles, ModelReady, ModelUpdate, Subjects


class NatsEvents(Events):
    """Publishes on the wire contract's subjects."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def job_start(self, job_id: str) -> None:
        await self.bus.publish(Subjects.GPU_TRAININGJOB_STATUS, JOB_START)

    async def job_end(self, job_id: str) -> None:
        await self.bus.publish(Subjects.GPU_TRAININGJOB_STATUS, JOB_END)

    async def model_ready(self, *, bucket: str, model_file: str, vocab_file: str, job_id: str) -> None:
        files = BucketFiles(model_file=model_file, vocab_file=vocab_file)
        await self.bus.publish(Subjects.MODEL_READY, ModelReady(bucket=bucket, bucket_files=files, job_id=job_id))

    async def model_update(self, status: str) -> None:
        await self.bus.publish(Subjects.MODEL_UPDATE, ModelUpdate(status=status))

    async def job_progress(self, job_id: str, data: dict[str, Any]) -> None:
        await self.bus.publish(Subjects.training_logs(job_id), {"job_id": job_id, **data})
