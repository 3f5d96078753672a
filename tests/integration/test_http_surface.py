"""/healthz, /readyz and /metrics of a running controller."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import aiohttp
import nats
import pytest

from tests.conftest import StartService
from training_controller.bootstrap import Service


@pytest.fixture
async def service(start_service: StartService) -> Service:
    return await start_service()


async def get(service: Service, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{service.http.port}{path}") as resp:
        return resp.status, await resp.text()


async def test_healthz_answers_while_the_process_runs(service: Service) -> None:
    assert await get(service, "/healthz") == (200, '{"status": "alive"}')


async def test_readyz_is_ready_when_nats_and_every_backend_answer(service: Service) -> None:
    status, body = await get(service, "/readyz")
    assert status == 200
    assert json.loads(body) == {
        "ready": True,
        "checks": {
            "nats": True,
            "training-worker": True,
            "train-stream-consumer": True,
            "state-watch": True,
            "gpu-watch": True,
            "logs (files)": True,
            "store (local)": True,
            "launcher (local)": True,
            "state": True,
        },
    }


async def test_readyz_is_not_ready_when_the_log_source_is_gone(service: Service, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "logs")
    status, body = await get(service, "/readyz")
    assert status == 503
    assert json.loads(body)["checks"]["logs (files)"] is False


async def test_metrics_count_jobs_by_phase_and_time_requests_by_subject(service: Service, nc: nats.NATS) -> None:
    payload = {"model_to_train": "nulog", "time_intervals": [{"start_ts": 1, "end_ts": 2}]}
    reply = json.loads((await nc.request("train", json.dumps(payload).encode(), timeout=5)).data)
    for _ in range(50):  # the empty interval makes the job fail at once
        record = json.loads((await nc.request("training_status", json.dumps({"job_id": reply["job_id"]}).encode(), timeout=5)).data)
        if record["phase"] == "failed":
            break
        await asyncio.sleep(0.05)  # "at once" is some milliseconds, more on a busy machine
    await nc.request("gpu_service_inference", b"x", timeout=5)

    status, text = await get(service, "/metrics")
    assert status == 200
    lines = text.splitlines()
    assert 'training_controller_jobs{phase="failed"} 1.0' in lines
    assert 'training_controller_jobs{phase="queued"} 0.0' in lines
    assert "training_controller_queue_depth 0.0" in lines
    assert "training_controller_gpu_busy 0.0" in lines
    assert "training_controller_exported_documents 0.0" in lines
    assert 'training_controller_request_duration_seconds_count{subject="train"} 1.0' in lines
    assert 'training_controller_request_duration_seconds_count{subject="gpu_service_inference"} 1.0' in lines
