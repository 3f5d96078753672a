"""The one place that picks adapters from Settings and wires the service together."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from training_controller.adapters.events.nats import NatsEvents, NatsGpuService
from training_controller.adapters.launchers.local import LocalLauncher
from training_controller.adapters.logs.files import FilesLogSource
from training_controller.adapters.state.nats_kv import NatsKVStateStore
from training_controller.adapters.storage.local import LocalObjectStore
from training_controller.api import Api, EmbeddedWorker
from training_controller.bus import Bus
from training_controller.config import LauncherSettings, LogSourceSettings, Settings, StoreSettings
from training_controller.core.controller import TrainingController
from training_controller.core.export import Exporter, InProcessExporter
from training_controller.core.ports import Events, GpuService, Launcher, LogSource, ObjectStore, StateStore
from training_controller.core.supervisor import Supervisor
from training_controller.handlers import TRAIN_CONSUMER, TRAIN_STREAM, Handlers
from training_controller.http import HttpSurface, Metrics
from training_controller.messages import Subjects

log = logging.getLogger(__name__)


def build_log_source(settings: LogSourceSettings) -> LogSource:
    if settings.kind in ("elasticsearch", "opensearch"):
        es = settings.elasticsearch
        assert es.endpoint is not None
        from training_controller.adapters.logs.elasticsearch import ElasticsearchLogSource
        from training_controller.adapters.logs.opensearch import OpenSearchLogSource

        source = ElasticsearchLogSource if settings.kind == "elasticsearch" else OpenSearchLogSource
        # Every other Elasticsearch setting is an option of the source, by the same name.
        options = es.model_dump(exclude={"endpoint", "ca_certs"})
        return source(es.endpoint, ca_certs=str(es.ca_certs) if es.ca_certs else None, **options)
    assert settings.kind == "files" and settings.files_dir is not None
    return FilesLogSource(settings.files_dir)


def build_object_store(settings: StoreSettings) -> ObjectStore:
    if settings.kind == "minio":
        from training_controller.adapters.storage.minio import MinioObjectStore

        return MinioObjectStore.from_config(settings.minio)
    assert settings.kind == "local" and settings.local_dir is not None
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    return LocalObjectStore(settings.local_dir)


def build_launcher(settings: LauncherSettings, store: StoreSettings, *, jobs_dir: Path | None = None) -> Launcher:
    if settings.kind == "kubernetes":
        from training_controller.adapters.launchers.kubernetes import KubernetesLauncher

        return KubernetesLauncher.from_environment(settings.kubernetes, minio=store.minio)
    if settings.kind == "kubeflow":
        from training_controller.adapters.launchers.kubeflow import KubeflowLauncher

        return KubeflowLauncher.from_environment(settings.kubernetes, minio=store.minio)
    assert settings.kind == "local" and jobs_dir is not None
    minio = store.minio if store.kind == "minio" else None
    return LocalLauncher(jobs_dir, minio=minio, cancel_grace_seconds=settings.cancel_grace_seconds)


def build_exporter(settings: Settings, source: LogSource, store: ObjectStore) -> Exporter:
    """The export off the controller's GIL: a child process builds its own source and store from the same
    settings sections, masks and windows there, and the event loop only awaits the result. With
    EXPORT_IN_PROCESS the export runs in a thread of the controller instead (simpler to debug, not to serve)."""
    if settings.training.export_in_process:
        return InProcessExporter(source, store)
    from training_controller.adapters.export.process import ProcessExporter

    return ProcessExporter(
        functools.partial(build_log_source, settings.logs), functools.partial(build_object_store, settings.store)
    )


@dataclass(frozen=True)
class Adapters:
    """The ports of one service; each one left None is built from Settings (tests give their own)."""

    source: LogSource | None = None
    store: ObjectStore | None = None
    launcher: Launcher | None = None
    state: StateStore | None = None
    events: Events | None = None
    gpu_service: GpuService | None = None
    exporter: Exporter | None = None


class ServiceProbes:
    """What /healthz and /readyz check: the supervised tasks, the worker, NATS and the backends."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def liveness(self) -> list[str]:
        s = self._service
        problems = s.supervisor.problems()
        worker = s.controller.worker_status()
        bound = s.settings.health.worker_stall_seconds
        if worker.job_id is not None and worker.seconds_since_progress > bound:
            problems.append(
                f"the worker has made no progress on job {worker.job_id} ({worker.phase}) for "
                f"{worker.seconds_since_progress:.0f}s (bound {bound:.0f}s)"
            )
        return problems

    async def readiness(self) -> dict[str, bool]:
        s = self._service
        checks: dict[str, bool] = {"nats": s.bus.connected}
        checks.update({name: task.running for name, task in s.supervisor.health.items()})
        backends = s.controller.backends()
        answers = await asyncio.gather(*(_probe(name, ping) for name, ping in backends.items()))
        checks.update(zip(backends, answers, strict=True))
        return checks

    async def snapshot(self):  # -> (records, gpu busy), for the metrics
        return await self._service.controller.metrics_snapshot()


READY_CHECK_SECONDS = 5.0


async def _probe(name: str, ping: Callable[[], Awaitable[bool]]) -> bool:
    """A backend's readiness: its ping within READY_CHECK_SECONDS; a probe reports, it never raises."""
    try:
        return bool(await asyncio.wait_for(ping(), READY_CHECK_SECONDS))
    except Exception as e:  # a failing backend is an answer (False), not an error of the probe
        log.warning("readiness check %s failed: %s", name, e)
        return False


class Service:
    """The running controller: a NATS connection, the routes it serves, and its supervised tasks (the train
    stream's consumer and the training worker)."""

    def __init__(self, settings: Settings, bus: Bus, controller: TrainingController, adapters: Adapters) -> None:
        self.settings = settings
        self.bus = bus
        self.controller = controller
        self.adapters = adapters
        self.supervisor = Supervisor(settings.health)
        self.metrics = Metrics()
        # On embedded defaults the inference worker (`nulog serve`, with torch) runs as a child process.
        wanted = settings.http.inference_worker
        child = wanted == "child" or (wanted == "auto" and settings.store.kind == "local")
        self.inference_worker = EmbeddedWorker.for_settings(settings) if child else None
        self.api = Api(controller, bus, settings, worker=self.inference_worker)
        self.http = HttpSurface(ServiceProbes(self), self.metrics, mount=self.api)

    @classmethod
    async def start(cls, settings: Settings, *, adapters: Adapters | None = None) -> Service:
        """Connect and serve; every port that `adapters` does not give is built from `settings`."""
        bus = await Bus.connect(settings.nats)
        instance = uuid.uuid4().hex
        given = adapters or Adapters()
        try:
            source = given.source or build_log_source(settings.logs)
            store = given.store or build_object_store(settings.store)
            ports = Adapters(
                source=source,
                store=store,
                launcher=given.launcher or build_launcher(settings.launch, settings.store, jobs_dir=settings.jobs_dir()),
                state=given.state or await NatsKVStateStore.open(bus),
                events=given.events or NatsEvents(bus, instance=instance),
                gpu_service=given.gpu_service
                or NatsGpuService(bus, timeout=settings.training.gpu_service_timeout_seconds),
                exporter=given.exporter or build_exporter(settings, source, store),
            )
            controller = TrainingController(
                **vars(ports),  # every port, by its name
                training=settings.training,
                buckets=settings.store,
                catalogue=settings.catalogue(),
            )
            # The GPU claims of a previous controller are held again before any request is answered.
            await controller.load()
        except BaseException:
            await bus.close()
            raise
        service = cls(settings, bus, controller, ports)
        try:
            await service._serve(Handlers(controller, instance=instance))
        except BaseException:
            await service.stop()
            raise
        log.info(
            "training controller ready: logs=%s store=%s launcher=%s",
            ports.source.name, ports.store.name, ports.launcher.name,  # type: ignore[union-attr]
        )
        return service

    async def _serve(self, handlers: Handlers) -> None:
        self.bus.observe = self.metrics.observe_request
        for route in handlers.routes():
            await self.bus.serve(route)
        await self.bus.ensure_stream(TRAIN_STREAM, [Subjects.TRAIN])
        await self.bus.ensure_consumer(TRAIN_STREAM, Subjects.TRAIN, TRAIN_CONSUMER)
        self.supervisor.start("training-worker", self.controller.run)
        self.supervisor.start("state-watch", self.adapters.state.watch)  # type: ignore[union-attr]
        self.supervisor.start("gpu-watch", self.controller.watch_gpu)
        self.supervisor.start(
            "train-stream-consumer",
            lambda: self.bus.consume(TRAIN_STREAM, Subjects.TRAIN, TRAIN_CONSUMER, handlers.train_from_stream),
        )
        await self.api.start()
        await self.http.start(host=self.settings.http.host, port=self.settings.http.port)
        if self.inference_worker is not None:
            self.inference_worker.start()

    async def stop(self) -> None:
        """Stop serving and release every port; raises, after all is released, what a task ended with."""
        await self.http.stop()
        if self.inference_worker is not None:
            await self.inference_worker.stop()
        errors = await self.supervisor.stop()
        ports = self.adapters
        for name, port in (("log source", ports.source), ("object store", ports.store), ("launcher", ports.launcher)):
            try:
                await port.close()  # type: ignore[union-attr]
            except Exception as e:  # the others are closed all the same; the error is raised at the end
                log.error("closing the %s failed", name, exc_info=e)
                errors.append(e)
        await self.bus.close()
        if errors:
            raise ExceptionGroup("the service did not stop cleanly", errors)


