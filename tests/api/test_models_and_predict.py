"""Models through the REST API, and predictions from the inference worker the controller starts itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp
import nats
import nats.errors
import pytest

from tests.api.conftest import TOKENS, Client, client_of, training
from tests.conftest import StartService, listen, wait_until

pytestmark = pytest.mark.slow

LINES = [
    '10.113.1.69 - - [29/Mar/2021:17:30:00 +0000] "GET /healthz HTTP/1.1" 200 2 "-" "kube-probe/1.20" 0.079',
    "connection from 10.0.0.7 refused after 3 retries",
]


async def finished(api: Client, run: str) -> bool:
    return (await api.get(f"/api/v1/trainings/{run}")).json["state"] in ("completed", "failed", "cancelled")


async def train(api: Client, minutes_before_end: int) -> str:
    run = (await api.post("/api/v1/trainings", training(minutes_before_end))).json["runId"]
    await wait_until(lambda: finished(api, run), timeout=240, what=f"training {run}")
    assert (await api.get(f"/api/v1/trainings/{run}")).json["state"] == "completed"
    return run


async def test_an_earlier_model_is_promoted_announced_as_new_and_predicts(
    start_service: StartService, sample_logs: Path, session: aiohttp.ClientSession, nc: nats.NATS
) -> None:
    service = await start_service(logs=sample_logs, api_tokens=TOKENS)
    api = client_of(service, session)
    assert service.inference_worker is not None  # embedded defaults: the controller runs `nulog serve`
    first = await train(api, 30)
    answer = await api.post("/api/v1/predict", {"logs": LINES})
    assert answer.status == 200, answer.text
    assert answer.json["model"]["job_id"] == first
    second = await train(api, 15)
    await wait_until(lambda: _answered_by(api, second), timeout=30, what="the worker to load the second model")

    listed = (await api.get("/api/v1/models")).json
    assert [m["job_id"] for m in listed["models"]] == [second, first] and listed["current"] == second
    old = listed["models"][1]
    assert old["current"] is False and old["available"] is True and old["metrics"]["steps"] > 0
    assert old["train_data_version_hash"] and old["log_count"] > 0 and "held_out_score" in old

    announced = await listen(nc, ("model_ready", "model_update"))
    promoted = await api.post(f"/api/v1/models/{first}/promote")
    assert promoted.status == 200, promoted.text
    assert promoted.json["job_id"] == first and promoted.json["current"] is True
    ready = await announced.next_json("model_ready")
    assert ready == {"bucket": "opni-nulog-models", "job_id": first,
                     "bucket_files": {"model_file": "nulog_model_latest.pt", "vocab_file": "vocab.txt"}}
    update = await announced.next_json("model_update")
    assert update == {"bucket": "opni-nulog-models", "bucket_files": ready["bucket_files"]}
    assert (await api.get("/api/v1/models")).json["current"] == first

    await wait_until(lambda: _answered_by(api, first), timeout=30, what="the worker to reload the promoted model")
    reply = (await api.post("/api/v1/predict", {"logs": LINES})).json
    assert [p["log"] for p in reply["predictions"]] == LINES
    assert reply["predictions"][1]["masked"] == "connection from <IP> refused after <NUM> retries"
    for p in reply["predictions"]:
        assert p["template"] and 0 <= p["score"] <= 1 and p["label"] in ("Normal", "Anomaly")
    assert reply["model"]["sha256"] == answer.json["model"]["sha256"]  # the first model's file, again

    pid = service.inference_worker.pid
    assert pid is not None
    await service.stop()
    service.stop = _stopped  # type: ignore[method-assign]  # the fixture stops it again at the end
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def _stopped() -> None:
    return None


async def _answered_by(api: Client, job: str) -> bool:
    reply = await api.post("/api/v1/predict", {"logs": LINES[:1]})
    return reply.status == 200 and reply.json["model"]["job_id"] == job


async def test_the_worker_answers_no_model_yet_and_never_answers_for_the_gpu_service(
    start_service: StartService, session: aiohttp.ClientSession, nc: nats.NATS
) -> None:
    service = await start_service(api_tokens=TOKENS, gpu_service=False)
    api = client_of(service, session)
    reply = await api.post("/api/v1/predict", {"logs": ["a line"]})
    assert reply.status == 503
    assert "has no model" in reply.problem["detail"]
    # Opni's GPU inference service answers gpu_service_running; the inference worker must not.
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request("gpu_service_running", b"check-up", timeout=2)
    direct = json.loads((await nc.request("nulog_predict", b'{"logs": []}', timeout=5)).data)
    assert direct["reason"] == "invalid_request"
