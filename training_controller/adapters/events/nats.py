"""The `nats` events adapter: announces the controller's news with Opni's subjects and payloads."""

from __future__ import annotations

from typing import Any

from training_controller.bus import NATS_TEMPORARY, Bus
from training_controller.core.ports import Events, GpuService, JobUpdate
from training_controller.messages import (
    CONTROLLER_HEADER,
    JOB_END,
    JOB_RESET,
    JOB_START,
    BucketFiles,
    ModelFiles,
    ModelReady,
    ModelUpdate,
    ModelWorkloadParameters,
    Subjects,
    job_log_message,
)


class NatsEvents(Events):
    """Publishes on the wire contract's subjects."""

    def __init__(self, bus: Bus, *, instance: str) -> None:
        self.bus = bus
        # Our own JobStart/JobEnd carry this header, so that our subscription can tell them from an
        # external trainer's; Opni's listeners read only the payload.
        self._headers = {CONTROLLER_HEADER: instance}

    async def job_start(self, job_id: str) -> None:
        await self.bus.publish(Subjects.GPU_TRAININGJOB_STATUS, JOB_START, headers={**self._headers, "Job-Id": job_id})

    async def job_end(self, job_id: str) -> None:
        await self.bus.publish(Subjects.GPU_TRAININGJOB_STATUS, JOB_END, headers={**self._headers, "Job-Id": job_id})

    async def model_ready(self, *, bucket: str, model_file: str, vocab_file: str, job_id: str) -> None:
        files = BucketFiles(model_file=model_file, vocab_file=vocab_file)
        await self.bus.publish(Subjects.MODEL_READY, ModelReady(bucket=bucket, bucket_files=files, job_id=job_id))
        await self.bus.publish(Subjects.MODEL_UPDATE, ModelFiles(bucket=bucket, bucket_files=files))

    async def model_update(self, status: str) -> None:
        await self.bus.publish(Subjects.MODEL_UPDATE, ModelUpdate(status=status))  # type: ignore[arg-type]

    async def job_reset(self) -> None:
        await self.bus.publish(Subjects.GPU_TRAININGJOB_STATUS, JOB_RESET, headers=self._headers)

    async def job_progress(self, job_id: str, update: JobUpdate) -> None:
        await self.bus.publish(Subjects.training_logs(job_id), job_log_message(job_id, update))

    async def workload_parameters(self, workloads: dict[str, Any], status_type: str) -> None:
        payload = ModelWorkloadParameters(workloads=workloads, status_type=status_type)
        await self.bus.publish(Subjects.MODEL_WORKLOAD_PARAMETERS, payload)

    async def inference_granted(self, payload: bytes) -> None:
        await self.bus.publish(Subjects.GPU_SERVICE_INFERENCE_INTERNAL, payload)


class NatsGpuService(GpuService):
    """Asks the GPU inference service over NATS, as Opni's training controller does."""

    def __init__(self, bus: Bus, *, timeout: float) -> None:
        self.bus = bus
        self.timeout = timeout

    async def running(self) -> bool:
        try:
            reply = await self.bus.nc.request(Subjects.GPU_SERVICE_RUNNING, b"check-up", timeout=self.timeout)
        except NATS_TEMPORARY:  # no responder, no answer in time, no connection: not running, as far as we know
            return False
        return reply.data.strip() == b"running"
