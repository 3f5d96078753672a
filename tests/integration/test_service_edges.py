"""Edges of the service that need no training: status of unknown jobs, health check, bad filters."""

from __future__ import annotations

import json

import nats
import pytest

from tests.conftest import StartService
from training_controller.bootstrap import Service


@pytest.fixture
async def service(start_service: StartService) -> Service:
    return await start_service()



async def ask(nc: nats.NATS, subject: str, payload: bytes) -> bytes:
    return (await nc.request(subject, payload, timeout=5)).data


async def test_the_controller_does_not_answer_gpu_service_running_which_is_the_gpu_services_to_answer(
    start_service: StartService, nc: nats.NATS
) -> None:
    await start_service(gpu_service=False)
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request("gpu_service_running", b"check-up", timeout=2)
    assert await ask(nc, "gpu_service_inference", b"batch") == b"NO"  # nobody to take the batch


async def test_training_status_of_an_unknown_job_says_so(service: Service, nc: nats.NATS) -> None:
    reply = json.loads(await ask(nc, "training_status", b'{"job_id": "abc123"}'))
    assert reply == {"error": "no training job with id 'abc123'"}


async def test_training_status_without_job_id_names_the_missing_field(service: Service, nc: nats.NATS) -> None:
    reply = json.loads(await ask(nc, "training_status", b"{}"))
    assert reply == {"error": "invalid training_status request: job_id: Field required"}


async def test_training_jobs_with_an_unknown_status_lists_the_allowed_ones(service: Service, nc: nats.NATS) -> None:
    reply = json.loads(await ask(nc, "training_jobs", b'{"status": "sleeping"}'))
    assert "status" in reply["error"] and "queued" in reply["error"]
    assert json.loads(await ask(nc, "training_jobs", b"")) == {"jobs": [], "next": None}
