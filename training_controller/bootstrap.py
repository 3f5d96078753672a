"""The one place that picks adapters from Settings and wires the service together."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from training_controller.adapters.events.nats import NatsEvents
from training_controller.adapters.launchers.local import LocalLauncher
from training_controller.adapters.logs.files import FilesLogSource
from training_controller.adapters.state.nats_kv import NatsKVStateStore
from training_controller.adapters.storage.local import LocalObjectStore
from training_controller.bus import Bus
from training_controller.config import Settings
from training_controller.core.controller import ControllerOptions, TrainingController
from training_controller.core.ports import Launcher, LogSource, ObjectStore
from training_controller.handlers import Handlers

log = logging.getLogger(__name__)


def build_log_source(settings: Settings) -> LogSource:
    assert settings.log_source == "files" and settings.log_files_dir is not None
    return FilesLogSource(settings.log_files_dir)


def build_object_store(settings: Settings) -> ObjectStore:
    assert settings.object_store == "local" and settings.local_store_dir is not None
    settings.local_store_dir.mkdir(parents=True, exist_ok=True)
    return LocalObjectStore(settings.local_store_dir)


def build_launcher(settings: Settings) -> Launcher:
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
    )


class Service:
    """The running controller: a NATS connection, the routes it serves, and the training worker."""

    def __init__(self, bus: Bus, controller: TrainingController) -> None:
        self.bus = bus
        self.controller = controller
        self._worker: asyncio.Task | None = None

    @classmethod
    async def start(cls, settings: Settings) -> Service:
        bus = await Bus.connect(settings.nats_server_url)
        try:
            controller = TrainingController(
                source=build_log_source(settings),
                store=build_object_store(settings),
                launcher=build_launcher(settings),
                state=await NatsKVStateStore.open(bus),
                events=NatsEvents(bus),
                options=controller_options(settings),
            )
            service = cls(bus, controller)
            for route in Handlers(controller).routes():
                await bus.serve(route)
            service._worker = asyncio.create_task(controller.run(), name="training-worker")
        except BaseException:
            await bus.close()
            raise
        log.info(
            "training controller ready: logs=%s store=%s launcher=%s",
            controller.source.name,
            controller.store.name,
            controller.launcher.name,
        )
        return service

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self.bus.close()
