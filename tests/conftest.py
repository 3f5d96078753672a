"""Shared fixtures: a real nats-server with JetStream per test, sample logs, a real S3 endpoint, the service
started in-process with the embedded adapters (`start_service`), and one recorder of what the service
announces on NATS (`Recorder`)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from moto.server import ThreadedMotoServer

from training_controller.bootstrap import Adapters, Service
from training_controller.config import Settings
from training_controller.demo.samples import write_sample_logs
from training_controller.natsserver import NatsServer

# Every controller a test starts serves its HTTP surface on a free port, never on the fixed default.
os.environ["HTTP_PORT"] = "0"

# Sample logs span 2021-03-29 17:00-18:00 UTC.
SAMPLE_END_NS = 1_617_040_800 * 10**9
MINUTE_NS = 60 * 10**9

StartService = Callable[..., Awaitable[Service]]


def interval(minutes_before_end: int, length_minutes: int = 3) -> dict[str, int]:
    """A `time_intervals` entry inside the sample logs."""
    start = SAMPLE_END_NS - minutes_before_end * MINUTE_NS
    return {"start_ts": start, "end_ts": start + length_minutes * MINUTE_NS}


def train_payload(minutes_before_end: int = 30, length_minutes: int = 3) -> bytes:
    """A valid `train` payload over a few minutes of the sample logs."""
    body = {"model_to_train": "nulog", "time_intervals": [interval(minutes_before_end, length_minutes)]}
    return json.dumps(body).encode()


def base_settings(nats_url: str, root: Path, logs: Path, **overrides: Any) -> Settings:
    """Settings of the embedded setup with a tiny CPU training; `overrides` use the variables' names."""
    values: dict[str, Any] = {
        "nats_server_url": nats_url,
        "log_files_dir": logs,
        "local_store_dir": root / "store",
        "local_jobs_dir": root / "jobs",
        "http_host": "127.0.0.1",
        "http_port": 0,
        "train_epochs": 1,
        "train_max_lines": 300,
        "train_device": "cpu",
        "gpu_service_check_seconds": 0.2,
    }
    return Settings(**{**values, **overrides})


async def serve_gpu_service(nc: nats.NATS) -> Any:
    """Opni's GPU inference service, as far as the controller asks it: `gpu_service_running` -> running."""

    async def answer(msg: Any) -> None:
        await msg.respond(b"running")

    sub = await nc.subscribe("gpu_service_running", cb=answer)
    await nc.flush()
    return sub


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(nats_server.url, name="test-client")
    yield client
    await client.close()


@pytest.fixture(scope="session")
def sample_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("logs")
    write_sample_logs(out, hours=1, end_ns=SAMPLE_END_NS, rate_per_s=2.0, seed=3)
    return out


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """An empty log directory: a `train` request queues a job that fails at once for lack of logs."""
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
async def start_service(nats_server: NatsServer, tmp_path: Path, log_dir: Path) -> AsyncIterator[StartService]:
    """Start the service in-process: `await start_service(logs=..., adapters=..., **settings overrides)`.

    A GPU inference service answers `gpu_service_running` beside it, as in an Opni deployment, unless
    `gpu_service=False`. Every service started is stopped at the end of the test.
    """
    started: list[Service] = []
    helper = await nats.connect(nats_server.url, name="test-gpu-service")

    async def start(
        *, logs: Path | None = None, adapters: Adapters | None = None, gpu_service: bool = True, **overrides: Any
    ) -> Service:
        if gpu_service and not started:
            await serve_gpu_service(helper)
        settings = base_settings(nats_server.url, tmp_path, logs or log_dir, **overrides)
        service = await Service.start(settings, adapters=adapters)
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()
    await helper.close()


class Recorder:
    """What the service announces on NATS, in arrival order: `(subject, payload)` pairs."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()
        self._read: dict[str, int] = {}  # per subject, how many of its messages next() has handed out

    async def on_message(self, msg: Any) -> None:
        self.seen.append((msg.subject, msg.data))
        self._changed.set()

    def names(self) -> list[str]:
        """JobStart / JobEnd by payload, every other announcement by subject."""
        return [data.decode() if subject == "gpu_trainingjob_status" else subject for subject, data in self.seen]

    def gpu(self) -> list[bytes]:
        return [d for s, d in self.seen if s == "gpu_trainingjob_status"]

    def payloads(self, subject: str) -> list[Any]:
        return [json.loads(d) for s, d in self.seen if s == subject]

    def ready_jobs(self) -> list[str]:
        return [p["job_id"] for p in self.payloads("model_ready")]

    async def wait_for(self, predicate: Callable[[Recorder], bool], *, timeout: float = 240, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what or predicate}; seen: {self.names()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def _of(self, subject: str) -> list[bytes]:
        return [d for s, d in self.seen if s == subject]

    async def next(self, subject: str, timeout: float = 5.0) -> bytes:
        """The next message of `subject` not handed out yet, waiting for it up to `timeout`."""
        n = self._read.get(subject, 0)
        await self.wait_for(lambda r: len(r._of(subject)) > n, timeout=timeout, what=f"a message on {subject}")
        self._read[subject] = n + 1
        return self._of(subject)[n]

    async def next_json(self, subject: str, timeout: float = 5.0) -> Any:
        return json.loads(await self.next(subject, timeout))

    async def next_equal(self, subject: str, data: bytes, timeout: float) -> None:
        """Skip messages of `subject` until one equals `data`."""
        deadline = time.monotonic() + timeout
        while await self.next(subject, max(0.01, deadline - time.monotonic())) != data:
            pass

    def drain(self, subject: str) -> list[bytes]:
        """The messages of `subject` not handed out yet."""
        n = self._read.get(subject, 0)
        unread = self._of(subject)[n:]
        self._read[subject] = n + len(unread)
        return unread

    async def wait_for_job_ends(self, count: int = 1, *, timeout: float = 240) -> None:
        await self.wait_for(lambda r: r.gpu().count(b"JobEnd") >= count, timeout=timeout, what=f"{count} JobEnd")


ANNOUNCEMENTS = ("gpu_trainingjob_status", "model_ready", "model_update")


async def listen(nc: nats.NATS, subjects: tuple[str, ...] = ANNOUNCEMENTS) -> Recorder:
    """A Recorder subscribed to `subjects` (the GPU and model announcements by default)."""
    rec = Recorder()
    for subject in subjects:
        await nc.subscribe(subject, cb=rec.on_message)
    await nc.flush()
    return rec


async def wait_until(predicate: Callable[[], Awaitable[object]], *, timeout: float, what: str, every: float = 0.25) -> None:
    """Poll an async predicate until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


async def request_json(nc: nats.NATS, subject: str, payload: Any = b"", *, timeout: float = 10) -> Any:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return json.loads((await nc.request(subject, data, timeout=timeout)).data)


@pytest.fixture(scope="session")
def s3_url() -> Iterator[str]:
    """A real S3 endpoint: moto's threaded server on a free loopback port, for the MinIO client."""
    with pytest.MonkeyPatch.context() as mp:
        # moto signs nothing itself, but boto-style code inside it looks for credentials and a region.
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
