"""The small HTTP surface: liveness, readiness and Prometheus metrics.

`/healthz` answers while the process runs; `/readyz` only while NATS is connected and every backend answers,
so that Kubernetes routes nothing to (and restarts nothing of) a controller that cannot work; `/metrics` is
computed from the job records at scrape time, so it is right after a restart too.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest

from training_controller.core.jobs import JobPhase, JobRecord

if TYPE_CHECKING:
    from training_controller.bootstrap import Service

log = logging.getLogger(__name__)

READY_CHECK_SECONDS = 5.0


class Metrics:
    """The Prometheus metrics of one controller."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge("training_controller_jobs", "Job records by phase.", ["phase"], registry=self.registry)
        self.queue_depth = Gauge("training_controller_queue_depth", "Jobs waiting for the GPU.", registry=self.registry)
        self.gpu_busy = Gauge("training_controller_gpu_busy", "1 while a training holds the GPU.", registry=self.registry)
        self.exported = Gauge(
            "training_controller_exported_documents", "Log documents exported for the recorded jobs.", registry=self.registry
        )
        self.export_rate = Gauge(
            "training_controller_export_rate_documents_per_second",
            "Export rate of the most recent export.",
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "training_controller_request_duration_seconds",
            "Time to answer a NATS request, by subject.",
            ["subject"],
            registry=self.registry,
        )

    def refresh(self, records: list[JobRecord], *, gpu_busy: bool) -> None:
        for phase in JobPhase:
            self.jobs.labels(phase=phase.value).set(sum(1 for r in records if r.phase is phase))
        self.queue_depth.set(sum(1 for r in records if r.phase is JobPhase.QUEUED))
        self.gpu_busy.set(1 if gpu_busy else 0)
        self.exported.set(sum(r.log_count or 0 for r in records))
        rates = [(r.seq, rate) for r in records if (rate := export_rate(r)) is not None]
        if rates:
            self.export_rate.set(max(rates)[1])

    def render(self) -> bytes:
        return generate_latest(self.registry)


def export_rate(record: JobRecord) -> float | None:
    """Documents per second of a job's export, from its history."""
    times = {step.phase: step.at for step in record.history}
    if not record.log_count or JobPhase.EXPORTING not in times or JobPhase.LAUNCHING not in times:
        return None
    start = datetime.fromisoformat(times[JobPhase.EXPORTING].replace("Z", "+00:00"))
    end = datetime.fromisoformat(times[JobPhase.LAUNCHING].replace("Z", "+00:00"))
    seconds = (end - start).total_seconds()
    return record.log_count / seconds if seconds > 0 else None


class HttpSurface:
    """An aiohttp server for probes and metrics."""

    def __init__(self, service: Service, metrics: Metrics) -> None:
        self.service = service
        self.metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, *, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked
        log.info("HTTP surface on %s:%d (/healthz /readyz /metrics)", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        controller = self.service.controller
        checks = {
            "nats": _const(self.service.bus.connected),
            f"logs ({controller.source.name})": controller.source.ping(),
            f"store ({controller.store.name})": controller.store.ping(),
            f"launcher ({controller.launcher.name})": controller.launcher.healthy(),
        }
        results = {}
        for name, check in checks.items():
            try:
                results[name] = bool(await asyncio.wait_for(check, READY_CHECK_SECONDS))
            except Exception as e:  # a probe reports a failing backend; it never raises
                log.warning("readiness check %s failed: %s", name, e)
                results[name] = False
        ready = all(results.values())
        return web.json_response({"ready": ready, "checks": results}, status=200 if ready else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        controller = self.service.controller
        self.metrics.refresh(await controller.state.list_jobs(), gpu_busy=controller.gpu.busy())
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _const(value: bool) -> bool:
    return value
