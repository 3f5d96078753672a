"""The `train` subject against a real nats-server, with the real training job (a tiny config)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from tests.conftest import MINUTE_NS, SAMPLE_END_NS, Recorder, StartService, listen
from training_controller.bootstrap import Service

pytestmark = pytest.mark.slow

INTERVAL = {"start_ts": SAMPLE_END_NS - 30 * MINUTE_NS, "end_ts": SAMPLE_END_NS - 25 * MINUTE_NS}
VALID = {"model_to_train": "nulog", "time_intervals": [INTERVAL]}


@pytest.fixture
async def service(start_service: StartService, sample_logs: Path) -> Service:
    return await start_service(logs=sample_logs)


async def recorder(nc: nats.NATS) -> Recorder:
    return await listen(nc, ("gpu_trainingjob_status", "model_ready"))


async def test_train_request_announces_job_start_model_ready_and_job_end_in_order(
    service: Service, nc: nats.NATS, tmp_path: Path
) -> None:
    rec = await recorder(nc)

    reply = json.loads((await nc.request("train", json.dumps(VALID).encode(), timeout=10)).data)
    assert reply["status"] == "queued" and reply["queue_position"] == 0
    await rec.wait_for_job_ends()

    assert rec.names() == ["JobStart", "model_ready", "JobEnd"]
    ready = json.loads(rec.seen[1][1])
    assert ready == {
        "bucket": "opni-nulog-models",
        "bucket_files": {"model_file": "nulog_model_latest.pt", "vocab_file": "vocab.txt"},
        "job_id": reply["job_id"],
    }
    models = tmp_path / "store" / "opni-nulog-models"
    archive = tmp_path / "store" / "opni-nulog-models-archive" / reply["job_id"]
    assert sorted(p.name for p in models.iterdir()) == ["nulog_model_latest.pt", "vocab.txt"]
    for name in ("nulog_model.pt", "vocab.txt", "metrics.json"):
        assert (archive / name).stat().st_size > 0, name
    assert (models / "nulog_model_latest.pt").read_bytes() == (archive / "nulog_model.pt").read_bytes()
    data = tmp_path / "store" / "training-logs" / reply["job_id"]
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["count"] > 0 and (data / "windows.jsonl.gz").exists()

    record = json.loads((await nc.request("training_status", json.dumps({"job_id": reply["job_id"]}).encode(), timeout=5)).data)
    assert record["phase"] == "succeeded"
    # What Opni's gateway reads: the KV key modelTrainingStatus, the proto's ModelStatus.
    kv = await nc.jetstream().key_value("model-training-statistics")
    status = json.loads((await kv.get("modelTrainingStatus")).value)
    assert status["status"] == "completed" and set(status) == {"status", "statistics"}
    assert status["statistics"]["percentageCompleted"] == 100
    assert status["statistics"]["remainingTime"] == 0
    assert status["statistics"]["currentEpoch"] == 1
    assert status["statistics"]["stage"] == "completed"
    assert status["statistics"]["timeElapsed"] >= 0
    assert [step["phase"] for step in record["history"]] == ["queued", "exporting", "launching", "running", "succeeded"]
    assert record["log_count"] == manifest["count"]
    assert record["train_data_version_hash"] == manifest["sha256"]


MALFORMED = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (json.dumps({"model_to_train": "nulog", "time_intervals": "yesterday"}).encode(), "time_intervals"),
    (json.dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": "soon", "end_ts": 5}]}).encode(), "time_intervals.0.start_ts"),
    (json.dumps({"model_to_train": 7, "time_intervals": [INTERVAL]}).encode(), "model_to_train"),
    (json.dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": 9, "end_ts": 9}]}).encode(), "must be before end_ts"),
    (json.dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": 10, "end_ts": 3}]}).encode(), "must be before end_ts"),
    (json.dumps({"model_to_train": "nulog", "time_intervals": []}).encode(), "time_intervals: List should have at least 1 item"),
    (json.dumps({"model_to_train": "gpt", "time_intervals": [INTERVAL]}).encode(), "unknown model 'gpt'"),
    (json.dumps({"time_intervals": [INTERVAL]}).encode(), "model_to_train: Field required"),
    (json.dumps({"model_to_train": "nulog", "time_intervals": [{"start_ts": 1, "end_ts": 10**30}]}).encode(), "end_ts"),
]


async def test_malformed_train_requests_get_error_replies_and_the_next_valid_request_still_trains(
    service: Service, nc: nats.NATS
) -> None:
    rec = await recorder(nc)
    for payload, expected in MALFORMED:
        reply = json.loads((await nc.request("train", payload, timeout=5)).data)
        assert set(reply) == {"error"}, payload
        assert expected in reply["error"], (payload, reply)
    # A malformed request without a reply subject is logged and dropped, and does not stop the service.
    await nc.publish("train", b"{broken")

    reply = json.loads((await nc.request("train", json.dumps(VALID).encode(), timeout=10)).data)
    await rec.wait_for_job_ends()
    assert rec.names() == ["JobStart", "model_ready", "JobEnd"]
    assert json.loads(rec.seen[1][1])["job_id"] == reply["job_id"]
    jobs = json.loads((await nc.request("training_jobs", b"", timeout=5)).data)["jobs"]
    assert [j["job_id"] for j in jobs] == [reply["job_id"]]


async def test_train_request_for_an_interval_without_logs_fails_without_taking_the_gpu(
    service: Service, nc: nats.NATS
) -> None:
    rec = await recorder(nc)
    empty = {"model_to_train": "nulog", "time_intervals": [{"start_ts": 1, "end_ts": 2}]}
    reply = json.loads((await nc.request("train", json.dumps(empty).encode(), timeout=10)).data)
    for _ in range(100):
        record = json.loads((await nc.request("training_status", json.dumps({"job_id": reply["job_id"]}).encode(), timeout=5)).data)
        if record["phase"] == "failed":
            break
        await asyncio.sleep(0.1)
    assert record["phase"] == "failed"
    assert "no log documents match" in record["message"]
    assert rec.names() == []
