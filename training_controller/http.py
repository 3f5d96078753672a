"""The HTTP surface: liveness, readiness and Prometheus metrics, and whatever else is mounted on it (the
REST API and the console, `training_controller.api`).

`/healthz` fails (503) when the controller is broken in a way only a restart mends: a supervised task that
keeps dying or stays down, or a worker that has made no progress on a job for too long; Kubernetes' liveness
probe then restarts the pod. `/readyz` answers 200 only while NATS is connected, the supervised tasks run
and every backend answers. `/metrics` is computed from the job records at scrape time, so it is right after
a restart too. The surface is given the probes it asks, not the service, so it imports nothing of it.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from training_controller.core.jobs import JobPhase
from training_controller.core.records import JobTotals

log = logging.getLogger(__name__)


class Probes(Protocol):
    """What the HTTP surface asks of the service."""

    def liveness(self) -> list[str]:
        """Why the controller needs a restart; empty when it does not."""

    async def readiness(self) -> dict[str, bool]:
        """Each check of readiness and whether it passes."""

    async def snapshot(self) -> tuple[JobTotals, bool]:
        """What the job records add up to, and whether the GPU is busy, for the metrics."""


class Mount(Protocol):
    """Routes added to the surface beside the probes, with the largest request body they accept."""

    max_body_bytes: int

    def mount(self, app: web.Application) -> None:
        """Add routes, middlewares and shutdown hooks to `app`."""


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
        self.workers = Gauge(
            "training_controller_workers",
            "Worker processes of the trainings under way, by state.",
            ["state"],
            registry=self.registry,
        )
        self.request_seconds = RequestTimes(
            "training_controller_request_duration_seconds", "Time to answer a NATS request, by subject."
        )
        self.registry.register(self.request_seconds)

    def refresh(self, totals: JobTotals, *, gpu_busy: bool) -> None:
        for phase, count in totals.by_phase.items():
            self.jobs.labels(phase=phase.value).set(count)
        self.queue_depth.set(totals.by_phase.get(JobPhase.QUEUED, 0))
        self.gpu_busy.set(1 if gpu_busy else 0)
        self.exported.set(totals.documents)
        workers = [w for r in totals.under_way for w in r.workers]
        for state in ("pending", "running", "succeeded", "failed"):
            self.workers.labels(state=state).set(sum(1 for w in workers if w.state == state))
        if totals.latest_export_rate is not None:
            self.export_rate.set(totals.latest_export_rate)

    def observe_request(self, subject: str, seconds: float) -> None:
        """One request answered: its time, under its subject."""
        self.request_seconds.observe(subject, seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTimes(Collector):
    """A histogram of request times by subject, counted in plain lists and summed up at scrape time.

    Every request the controller answers is counted here, on the event loop. prometheus_client's own
    Histogram takes a lock for its sum and another for its bucket (0.65 us a request, measured; a bare
    NATS responder spends 7 us on a whole request); this finds the bucket by bisection and adds to a list
    (0.2 us). Only the event loop's thread may call `observe`; a scrape reads the lists as they are.
    """

    def __init__(self, name: str, documentation: str, bounds: tuple[float, ...] = Histogram.DEFAULT_BUCKETS) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(b for b in bounds if b != float("inf"))
        self._counts: dict[str, list[int]] = {}  # per subject: requests per bucket, the last one +Inf
        self._sums: dict[str, float] = {}

    def observe(self, subject: str, seconds: float) -> None:
        counts = self._counts.get(subject)
        if counts is None:
            counts = self._counts[subject] = [0] * (len(self.bounds) + 1)
            self._sums[subject] = 0.0
        counts[bisect.bisect_left(self.bounds, seconds)] += 1  # a bucket holds the times <= its bound
        self._sums[subject] += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["subject"])
        for subject, counts in list(self._counts.items()):
            cumulative, total = [], 0
            for bound, count in zip((*self.bounds, float("inf")), list(counts), strict=True):
                total += count
                cumulative.append((floatToGoString(bound), total))
            family.add_metric([subject], cumulative, sum_value=self._sums[subject])
        yield family


class HttpSurface:
    """An aiohttp server for probes and metrics, and the mounted routes."""

    def __init__(self, probes: Probes, metrics: Metrics, *, mount: Mount | None = None) -> None:
        self.probes = probes
        self.metrics = metrics
        self.mounted = mount
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, *, host: str, port: int) -> None:
        app = web.Application(client_max_size=self.mounted.max_body_bytes if self.mounted else 1 << 20)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_page)
        if self.mounted is not None:
            self.mounted.mount(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked
        log.info("HTTP surface on %s:%d (/healthz /readyz /metrics%s)", host, self.port,
                 " /api/v1 and the console at /" if self.mounted else "")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        problems = self.probes.liveness()
        if problems:
            for problem in problems:
                log.error("liveness check failed: %s", problem)
            return web.json_response({"status": "unhealthy", "problems": problems}, status=503)
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        results = await self.probes.readiness()
        ready = all(results.values())
        return web.json_response({"ready": ready, "checks": results}, status=200 if ready else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        totals, busy = await self.probes.snapshot()
        self.metrics.refresh(totals, gpu_busy=busy)
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
