"""Shared fixtures: a real nats-server with JetStream per test, sample logs, settings for the embedded adapters."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from moto.server import ThreadedMotoServer

from training_controller.natsserver import NatsServer
from training_controller.samples import write_sample_logs

# Every controller a test starts serves its HTTP surface on a free port, never on the fixed default.
os.environ["HTTP_PORT"] = "0"

# Sample logs span 2021-03-29 17:00-18:00 UTC.
SAMPLE_END_NS = 1_617_040_800 * 10**9
MINUTE_NS = 60 * 10**9


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
