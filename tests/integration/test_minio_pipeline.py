"""A whole training through an S3 endpoint: the controller exports to it, the job reads from and writes to it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest
from minio import Minio

from tests.conftest import MINUTE_NS, SAMPLE_END_NS, base_settings
from training_controller.bootstrap import Service
from training_controller.natsserver import NatsServer

pytestmark = pytest.mark.slow


async def test_training_with_the_minio_store_reads_and_writes_s3_only(
    nats_server: NatsServer, nc: nats.NATS, sample_logs: Path, tmp_path: Path, s3_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing in the environment: the training process gets the controller's MinIO configuration.
    for name in ("MINIO_SERVER_URL", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = base_settings(
        nats_server.url, tmp_path, sample_logs,
        object_store="minio", local_store_dir=None, minio_server_url=s3_url, minio_access_key="ak",
        minio_secret_key="sk", train_max_lines=200,
    )
    service = await Service.start(settings)
    try:
        ready: asyncio.Future = asyncio.get_running_loop().create_future()

        async def on_ready(msg) -> None:
            if not ready.done():
                ready.set_result(json.loads(msg.data))

        await nc.subscribe("model_ready", cb=on_ready)
        start = SAMPLE_END_NS - 30 * MINUTE_NS
        payload = {"model_to_train": "nulog", "time_intervals": [{"start_ts": start, "end_ts": start + 5 * MINUTE_NS}]}
        reply = json.loads((await nc.request("train", json.dumps(payload).encode(), timeout=10)).data)
        event = await asyncio.wait_for(ready, timeout=180)
    finally:
        await service.stop()

    job = reply["job_id"]
    assert event["job_id"] == job
    s3 = Minio(s3_url.removeprefix("http://"), access_key="ak", secret_key="sk", secure=False)
    archived = sorted(o.object_name for o in s3.list_objects("opni-nulog-models-archive", prefix=f"{job}/", recursive=True))
    assert archived == [f"{job}/metrics.json", f"{job}/nulog_model.pt", f"{job}/vocab.txt"]
    assert {o.object_name for o in s3.list_objects("opni-nulog-models")} == {"nulog_model_latest.pt", "vocab.txt"}
    data = sorted(o.object_name for o in s3.list_objects("training-logs", prefix=f"{job}/", recursive=True))
    assert data == [f"{job}/manifest.json", f"{job}/windows.jsonl.gz"]
    latest = s3.get_object("opni-nulog-models", "nulog_model_latest.pt").read()
    assert latest == s3.get_object("opni-nulog-models-archive", f"{job}/nulog_model.pt").read()
    spec = json.loads((tmp_path / "jobs" / job / "spec.json").read_text())
    assert spec["data"] == [f"s3://training-logs/{job}/windows.jsonl.gz"]
    assert spec["output"] == f"s3://opni-nulog-models-archive/{job}"
