"""The one place that picks adapters from Settings and wires the service together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from training_controller.adapters.events.nats import NatsEvents
from training_controller.adapters.launchers.local import LocalLauncher
from training_controller.adapters.logs.files import FilesLogSource
from training_controller.adapters.state.nats_kv import NatsKVStateStore
from training_controller.adapters.storage.local import LocalObjectStore
from training_controller.bus import Bus
from training_controller.config import Settings
from training_controller.core.controller import ControllerOptions, TrainingController
from training_controller.core.ports import Launcher, LogSource, ObjectStore
from training_controller.handlers import TRAIN_CONSUMER, TRAIN_STREAM, Handlers
from training_controller.http import HttpSurface, Metrics
from training_controller.messages import Subjects

log = logging.getLogger(__name__)


def build_log_source(settings: Settings) -> LogSource:
    if settings.log_source in ("elasticsearch", "opensearch"):
        assert settings.es_endpoint is not None
        from training_controller.adapters.logs.elasticsearch import ElasticsearchLogSource
        from training_controller.adapters.logs.opensearch import OpenSearchLogSource

        source = ElasticsearchLogSource if settings.log_source == "elasticsearch" else OpenSearchLogSource
        return source(
            settings.es_endpoint,
            username=settings.es_username,
            password=settings.es_password,
            api_key=settings.es_api_key,
            ca_certs=str(settings.es_ca_certs) if settings.es_ca_certs else None,
            verify_certs=settings.es_verify_certs,
            index=settings.es_index,
            timestamp_field=settings.es_timestamp_field,
            timestamp_unit=settings.es_timestamp_unit,
            keyword_suffix=settings.es_keyword_suffix,
            page_size=settings.es_page_size,
        )
    assert settings.log_source == "files" and settings.log_files_dir is not None
    return FilesLogSource(settings.log_files_dir)


def build_object_store(settings: Settings) -> ObjectStore:
    if settings.object_store == "minio":
        from training_controller.adapters.storage.minio import MinioObjectStore

        assert settings.minio_server_url and settings.minio_access_key and settings.minio_secret_key
        return MinioObjectStore(
            settings.minio_server_url,
            access_key=settings.minio_access_key,
            secret_key=settings.minio_secret_key,
            verify_tls=settings.minio_verify_tls,
            ca_file=settings.minio_ca_file,
        )
    assert settings.object_store == "local" and settings.local_store_dir is not None
    settings.local_store_dir.mkdir(parents=True, exist_ok=True)
    return LocalObjectStore(settings.local_store_dir)


def build_launcher(settings: Settings) -> Launcher:
    if settings.launcher == "kubernetes":
        from training_controller.adapters.launchers.kubernetes import (
            KubernetesJobSettings,
            KubernetesLauncher,
        )

        assert settings.nulog_train_image_name is not None
        return KubernetesLauncher.from_environment(
            namespace=settings.job_namespace,
            image_name=settings.nulog_train_image_name,
            image_tag=settings.nulog_train_image_tag,
            settings=KubernetesJobSettings(
                gpu_resource=settings.train_gpu_resource,
                gpu_count=settings.train_gpu_count,
                backoff_limit=settings.train_backoff_limit,
                active_deadline_seconds=settings.train_active_deadline_seconds,
                ttl_seconds_after_finished=settings.train_ttl_seconds_after_finished,
                service_account=settings.train_service_account,
                credentials_secret=settings.credentials_secret_name,
                minio_server_url=settings.minio_server_url,
            ),
        )
    assert settings.launcher == "local"
    return LocalLauncher(settings.jobs_dir())


def controller_options(settings: Settings) -> ControllerOptions:
    return ControllerOptions(
        models_bucket=settings.s3_bucket,
        training_bucket=settings.training_bucket,
        window_seconds=settings.window_seconds,
        max_documents=settings.max_documents,
        epochs=settings.train_epochs,
        seed=settings.train_seed,
        max_lines=settings.train_max_lines,
        device=settings.train_device,
        gpu_reset_seconds=settings.gpu_training_reset_time,
        workload_lookback_seconds=settings.workload_lookback_seconds,
    )


class Service:
    """The running controller: a NATS connection, the routes it serves, the train stream's consumer, and the
    training worker."""

    def __init__(self, bus: Bus, controller: TrainingController) -> None:
        self.bus = bus
        self.controller = controller
        self.metrics = Metrics()
        self.http = HttpSurface(self, self.metrics)
        self._tasks: list[asyncio.Task] = []

    @classmethod
    async def start(cls, settings: Settings, *, launcher: Launcher | None = None) -> Service:
        """Connect and serve; `launcher` replaces the one Settings selects (tests use a crashing one)."""
        bus = await Bus.connect(settings.nats_server_url)
        instance = uuid.uuid4().hex
        try:
            controller = TrainingController(
                source=build_log_source(settings),
                store=build_object_store(settings),
                launcher=launcher or build_launcher(settings),
                state=await NatsKVStateStore.open(bus),
                events=NatsEvents(bus, instance=instance),
                options=controller_options(settings),
            )
            await controller.load()
        except BaseException:
            await bus.close()
            raise
        service = cls(bus, controller)
        try:
            await service._serve(settings, Handlers(controller, instance=instance))
        except BaseException:
            await service.stop()
            raise
        log.info(
            "training controller ready: logs=%s store=%s launcher=%s",
            controller.source.name,
            controller.store.name,
            controller.launcher.name,
        )
        return service

    async def _serve(self, settings: Settings, handlers: Handlers) -> None:
        self.bus.observe = lambda subject, seconds: self.metrics.request_seconds.labels(subject=subject).observe(seconds)
        for route in handlers.routes():
            await self.bus.serve(route)
        await self.bus.ensure_stream(TRAIN_STREAM, [Subjects.TRAIN])
        self._tasks = [
            asyncio.create_task(self.controller.run(), name="training-worker"),
            asyncio.create_task(
                self.bus.consume(TRAIN_STREAM, Subjects.TRAIN, TRAIN_CONSUMER, handlers.train_from_stream),
                name="train-stream-consumer",
            ),
        ]
        await self.http.start(host=settings.http_host, port=settings.http_port)

    async def stop(self) -> None:
        await self.http.stop()
        for task in self._tasks:
            # nats-py may swallow a cancellation that lands inside one of its own awaits (a flush), so ask
            # again until the task has really ended.
            for _ in range(100):
                if task.done():
                    break
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=1)
        await self.controller.source.close()
        await self.bus.close()
