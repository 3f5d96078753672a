"""The controller as Opni's inference services and GPU trainers see it: model announcements, the GPU."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import nats
import pytest

from tests.conftest import StartService, interval, listen, serve_gpu_service
from tests.opni.clients import inference_acts_on

pytestmark = pytest.mark.slow


async def answers(nc: nats.NATS, expected: bytes, *, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while (got := (await nc.request("gpu_service_inference", b"batch", timeout=3)).data) != expected:
        assert time.monotonic() < deadline, f"gpu_service_inference answers {got!r}, not {expected!r}"
        await asyncio.sleep(0.05)


async def test_a_new_model_is_announced_with_the_bucket_payload_inference_services_reload_on(
    nc: nats.NATS, start_service: StartService, sample_logs: Path, tmp_path: Path
) -> None:
    """rancher/opni-inference-service@2d6877975bcac5aade3b663d8de64c733e082507:
    opni_inference_service/start_opnilog_inference.py#L86-L131 reloads on `model_update` with the bucket
    payload (and drops its model, emptying the bucket, on `{"status":"training"}`); it loads
    `nulog_model_latest.pt` and `vocab.txt` from the bucket root (opnilog_predictor.py@6ddff684#L27-L56).
    Older services reload on `model_ready`: both are published."""
    await start_service(logs=sample_logs)
    rec = await listen(nc, ("model_update", "model_ready", "gpu_trainingjob_status"))

    reply = json.loads((await nc.request("train", json.dumps(
        {"model_to_train": "nulog", "time_intervals": [interval(30)]}).encode(), timeout=10)).data)
    await rec.wait_for_job_ends(1, timeout=240)

    updates = rec.payloads("model_update")
    assert [inference_acts_on(json.dumps(u).encode()) for u in updates] == ["drop-and-empty-bucket", "reload"]
    assert updates[0] == {"status": "training"}
    assert updates[1] == {"bucket": "opni-nulog-models",
                          "bucket_files": {"model_file": "nulog_model_latest.pt", "vocab_file": "vocab.txt"}}
    assert rec.payloads("model_ready") == [{**updates[1], "job_id": reply["job_id"]}]
    assert rec.names() == ["JobStart", "model_update", "model_ready", "model_update", "JobEnd"]
    root = tmp_path / "store" / "opni-nulog-models"
    assert sorted(p.name for p in root.iterdir()) == ["nulog_model_latest.pt", "vocab.txt"]
    # What `{"status":"training"}` makes every inference replica do (reset_model: delete every object of
    # the bucket) cannot touch the archive of trained models.
    for obj in list(root.iterdir()):
        obj.unlink()
    assert (tmp_path / "store" / "opni-nulog-models-archive" / reply["job_id"] / "nulog_model.pt").is_file()


async def test_a_job_reset_voids_external_claims_and_the_controller_sends_one_when_a_claim_lapses(
    nc: nats.NATS, start_service: StartService
) -> None:
    """rancher/opni-training-controller@154bbc5ae0e8a9b561cc399e168914aee603c332:
    training_controller/app/training_controller.py (consume_request): `JobReset` sets the count of claims to
    0; a JobStart without JobEnd for GPU_TRAINING_RESET_TIME (3600 s there) makes the controller publish
    `JobReset` itself."""
    await start_service(gpu_training_reset_time=1.5)
    rec = await listen(nc, ("gpu_trainingjob_status",))

    await nc.publish("gpu_trainingjob_status", b"JobStart")
    await answers(nc, b"NO")
    assert (await nc.request("model_status", b"model_status", timeout=5)).data == b"training"  # any JobStart counts
    await nc.publish("gpu_trainingjob_status", b"JobReset")
    await answers(nc, b"YES")

    await nc.publish("gpu_trainingjob_status", b"JobStart")  # and this trainer never says JobEnd
    await answers(nc, b"NO")
    await rec.next_equal("gpu_trainingjob_status", b"JobReset", timeout=10)
    await answers(nc, b"YES")


async def test_inference_gets_the_gpu_only_while_the_gpu_service_answers_its_health_check(
    nc: nats.NATS, start_service: StartService
) -> None:
    """Opni's controller asks `gpu_service_running` (`check-up` -> `running`, timeout 5 s) before a YES,
    and answers NO when nothing answers, because YES forwards the batch to `gpu_service_inference_internal`
    (rancher/opni-training-controller, newest main.py, index id 6890139374, #L66-L93 and #L253-L292; the
    GPU service answers `running`: opni-inference-service start_opnilog_inference.py@2d687797#L50-L52)."""
    await start_service(gpu_service=False)
    rec = await listen(nc, ("gpu_service_inference_internal",))
    asked: list[bytes] = []

    await answers(nc, b"NO")
    assert rec.drain("gpu_service_inference_internal") == []

    async def gpu_service(msg) -> None:
        asked.append(msg.data)
        await msg.respond(b"running")

    sub = await nc.subscribe("gpu_service_running", cb=gpu_service)
    await answers(nc, b"YES")
    assert asked and set(asked) == {b"check-up"}
    assert rec.drain("gpu_service_inference_internal")[-1] == b"batch"  # the same bytes, handed on
    await sub.unsubscribe()
    await answers(nc, b"NO")


async def test_the_controller_never_answers_the_gpu_services_own_health_check(
    nc: nats.NATS, start_service: StartService
) -> None:
    await start_service(gpu_service=False)
    await serve_gpu_service(nc)  # only the GPU service answers; were the controller to answer too,
    replies = []  # its own question could be answered by itself

    async def on_reply(msg) -> None:
        replies.append(msg.data)

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_reply)
    await nc.publish("gpu_service_running", b"check-up", reply=inbox)
    await asyncio.sleep(1)
    await sub.unsubscribe()

    assert replies == [b"running"]
