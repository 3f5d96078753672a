"""The command-line client against a running controller: submit and follow, status, jobs, cancel."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import nats
import pytest

from tests.conftest import MINUTE_NS, SAMPLE_END_NS, StartService
from training_controller.bootstrap import Service
from training_controller.natsserver import NatsServer

pytestmark = pytest.mark.slow


@pytest.fixture
async def service(start_service: StartService, sample_logs: Path) -> Service:
    return await start_service(logs=sample_logs, train_epochs=2)


async def cli(url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "training_controller", *args, "--nats", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=240)
    return proc.returncode, out.decode(), err.decode()


def ns(minutes_before_end: int) -> str:
    return str(SAMPLE_END_NS - minutes_before_end * MINUTE_NS)


async def test_submit_follow_prints_progress_and_ends_with_success(service: Service, nats_server: NatsServer) -> None:
    code, out, err = await cli(nats_server.url, "submit", "--interval", "2021-03-29T17:20:00Z", ns(35), "-f")
    assert code == 0, err
    assert "queued; 0 job(s) before it" in out
    assert "%  epoch 1/2  loss" in out and "[" in out
    assert out.rstrip().endswith("succeeded: model trained and published")
    job_id = out.split()[1]

    code, out, _ = await cli(nats_server.url, "jobs")
    assert code == 0 and job_id in out and "succeeded" in out
    code, out, _ = await cli(nats_server.url, "status", job_id, "--json")
    record = json.loads(out)
    assert record["phase"] == "succeeded"
    assert record["request"]["time_intervals"] == [{"start_ts": 1617038400 * 10**9, "end_ts": int(ns(35))}]
    code, out, err = await cli(nats_server.url, "cancel", job_id)
    assert code == 1 and f"job {job_id} has already ended (succeeded)" in err


async def test_cancel_a_queued_and_a_running_job(service: Service, nats_server: NatsServer, nc: nats.NATS) -> None:
    gpu: list[bytes] = []

    async def on_gpu(msg) -> None:
        gpu.append(msg.data)

    await nc.subscribe("gpu_trainingjob_status", cb=on_gpu)
    await nc.flush()
    code, out, _ = await cli(nats_server.url, "submit", "--interval", ns(50), ns(30))
    first = out.split()[1]
    code, out, _ = await cli(nats_server.url, "submit", "--interval", ns(30), ns(10))
    second = out.split()[1]
    assert "1 job(s) before it" in out

    code, out, err = await cli(nats_server.url, "cancel", second)
    assert code == 0 and out.strip() == f"job {second}: cancelled", err

    for _ in range(200):
        code, out, _ = await cli(nats_server.url, "status", first, "--json")
        if json.loads(out)["phase"] == "running":
            break
        await asyncio.sleep(0.1)
    code, out, err = await cli(nats_server.url, "cancel", first)
    assert code == 0, err
    code, out, _ = await cli(nats_server.url, "logs", first, "-f")
    assert code == 1  # -f exits non-zero for a job that did not succeed
    assert f"job {first}: cancelled" in out or out.rstrip().endswith("cancelled: cancelled while training")
    await asyncio.sleep(0.5)
    assert gpu == [b"JobStart", b"JobEnd"]
    gpu_answer = await nc.request("gpu_service_inference", b"x", timeout=5)
    assert gpu_answer.data == b"YES"
