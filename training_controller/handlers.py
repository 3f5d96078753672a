"""One short function per subject: validate (done by the bus), call the core, reply."""

from __future__ import annotations

from nats.aio.msg import Msg

from training_controller.bus import Route
from training_controller.core.controller import TrainingController
from training_controller.core.errors import LauncherUnavailable
from training_controller.messages import JobRequest, JobsRequest, Subjects, TrainAccepted, TrainRequest


class Handlers:
    """The service's request handlers."""

    def __init__(self, controller: TrainingController) -> None:
        self.controller = controller

    async def train(self, request: TrainRequest, msg: Msg) -> TrainAccepted:
        record = await self.controller.submit(
            request.to_query(), request=request.model_dump(), requested_by=f"nats:{msg.subject}"
        )
        position = await self.controller.queue_position(record.job_id)
        return TrainAccepted(job_id=record.job_id, queue_position=position)

    async def training_status(self, request: JobRequest, msg: Msg) -> dict:
        return (await self.controller.get_job(request.job_id)).to_json()

    async def training_jobs(self, request: JobsRequest, msg: Msg) -> dict:
        records = await self.controller.list_jobs(phase=request.status, limit=request.limit)
        return {"jobs": [r.to_json() for r in records]}

    async def gpu_service_running(self, payload: bytes, msg: Msg) -> str:
        if not await self.controller.launcher.healthy():
            raise LauncherUnavailable(f"the {self.controller.launcher.name} launcher is not healthy")
        return "running"

    def routes(self) -> list[Route]:
        return [
            Route(Subjects.TRAIN, self.train, TrainRequest),
            Route(Subjects.TRAINING_STATUS, self.training_status, JobRequest),
            Route(Subjects.TRAINING_JOBS, self.training_jobs, JobsRequest),
            Route(Subjects.GPU_SERVICE_RUNNING, self.gpu_service_running),
        ]
