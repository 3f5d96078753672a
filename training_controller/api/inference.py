"""Prediction without torch in the controller: /api/v1/predict is forwarded to the inference worker.

The worker is `nulog serve` (in `nulog/`, with torch), answering `nulog_predict` on NATS. In a cluster it is
a Deployment of its own; on embedded defaults (the local object store) the controller starts one as a child
process and stops it (`EmbeddedWorker`). The child is started with `--exit-with-stdin`: its stdin is a pipe
whose other end only this process holds, so it also ends when the controller is SIGKILLed. A child that
exits is logged and started again with backoff; it never makes the controller unhealthy, since prediction is
not the controller's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import nats.errors
from pydantic import ValidationError

from training_controller.api.problems import Problem
from training_controller.bus import Bus
from training_controller.config import Settings
from training_controller.messages import (
    WORKER_READY_LINE,
    PredictError,
    PredictReply,
    PredictRequest,
    Subjects,
    describe,
)

log = logging.getLogger(__name__)

# Variables the child never needs; secrets of the controller stay in the controller.
PRIVATE_VARIABLES = ("API_TOKENS", "ES_PASSWORD", "ES_API_KEY", "ES_USERNAME")
STOP_SECONDS = 10.0
READY_WAIT_SECONDS = 20.0  # how long a /predict waits for a child that is still starting


class EmbeddedWorker:
    """`nulog serve` as a child process, restarted when it exits and stopped with the service."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.ready = asyncio.Event()
        self.starts = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> EmbeddedWorker:
        store = settings.store
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_VARIABLES and not k.startswith("MINIO_")}
        env.update(NATS_SERVER_URL=settings.nats.url, OBJECT_STORE=store.kind, S3_BUCKET=store.models_bucket)
        if store.kind == "local":
            assert store.local_dir is not None
            env["LOCAL_STORE_DIR"] = str(Path(store.local_dir).resolve())
        else:
            env.update(store.minio.public_env())
            env.update(store.minio.secret_env())
        return cls(env)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.returncode is None else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inference-worker")

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            try:
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "nulog", "serve", "--lazy", "--exit-with-stdin", "--announce-ready",
                    env=self._env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                )
            except OSError as e:
                log.error("cannot start the inference worker: %s", e)
                code: int | None = None
            else:
                self.starts += 1
                log.info("inference worker started (pid %d)", self._process.pid)
                code = await self._watch(self._process)
            self.ready.clear()
            if self._stopping:
                return
            failures = 0 if time.monotonic() - started > 60 else failures + 1
            wait = min(60.0, 2.0 ** min(failures, 6))
            log.warning("the inference worker exited (code %s); starting it again in %.0fs", code, wait)
            await asyncio.sleep(wait)

    async def _watch(self, process: asyncio.subprocess.Process) -> int:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            if line.strip() == WORKER_READY_LINE.encode():
                self.ready.set()
        return await process.wait()

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), timeout)
        return self.ready.is_set()

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_SECONDS)
            except TimeoutError:
                log.warning("the inference worker did not stop within %.0fs; killing it", STOP_SECONDS)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class InferenceClient:
    """Forwards predictions to whichever inference worker answers `nulog_predict`."""

    def __init__(self, bus: Bus, *, timeout: float, worker: EmbeddedWorker | None = None) -> None:
        self._bus = bus
        self._timeout = timeout
        self._worker = worker

    async def predict(self, request: PredictRequest) -> PredictReply:
        """The worker's reply; raises Problem 503 when no worker answers or it has no model."""
        if self._worker is not None and not self._worker.ready.is_set():
            await self._worker.wait_ready(min(READY_WAIT_SECONDS, self._timeout))
        try:
            msg = await self._bus.nc.request(
                Subjects.NULOG_PREDICT, request.model_dump_json().encode(), timeout=self._timeout
            )
        except nats.errors.NoRespondersError:
            raise Problem(503, f"no inference worker answers on {Subjects.NULOG_PREDICT}: start `nulog serve` "
                          "(on embedded defaults the controller starts one itself)", headers={"Retry-After": "5"}) from None
        except TimeoutError:
            raise Problem(503, f"the inference worker did not answer within {self._timeout:.0f}s",
                          headers={"Retry-After": "5"}) from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError, ConnectionError) as e:
            raise Problem(503, f"NATS is not reachable now ({type(e).__name__}); try again",
                          headers={"Retry-After": "2"}) from None
        try:
            return PredictReply.model_validate_json(msg.data)
        except ValidationError:
            pass
        try:
            error = PredictError.model_validate_json(msg.data)
        except ValidationError as e:
            raise Problem(503, f"the inference worker sent a reply that is not one: {describe(e)}") from None
        if error.reason == "invalid_request":
            raise Problem(422, error.error)
        raise Problem(503, error.error, headers={"Retry-After": "5"})
