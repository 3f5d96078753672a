"""Nothing is lost and nothing runs twice: the train stream, restarts, crashes of the controller and the job."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from tests.conftest import base_settings, interval, listen, request_json, serve_gpu_service, train_payload
from tests.conftest import wait_until as wait_for
from training_controller.adapters.launchers.local import LocalLauncher
from training_controller.bootstrap import Adapters, Service
from training_controller.config import Settings
from training_controller.natsserver import NatsServer

pytestmark = pytest.mark.slow


def settings_for(server: NatsServer, logs: Path, root: Path, **extra) -> Settings:
    return base_settings(server.url, root, logs, **{"train_max_lines": 200, **extra})


async def _answers(nc: nats.NATS, expected: bytes) -> bool:
    return (await nc.request("gpu_service_inference", b"payload", timeout=5)).data == expected


async def jobs(nc: nats.NATS) -> list[dict]:
    return (await request_json(nc, "training_jobs", {"limit": 100}))["jobs"]


async def test_train_published_while_no_controller_runs_trains_once_after_it_starts(
    nats_server: NatsServer, nc: nats.NATS, sample_logs: Path, tmp_path: Path
) -> None:
    settings = settings_for(nats_server, sample_logs, tmp_path)
    service = await Service.start(settings)  # the first start creates the train stream
    await service.stop()
    ann = await listen(nc)

    await nc.publish("train", train_payload(40))
    for _ in range(2):  # the same request twice, as a client retrying with the same Nats-Msg-Id
        await nc.publish("train", train_payload(20), headers={"Nats-Msg-Id": "retry-7"})
    await nc.flush()

    service = await Service.start(settings)
    try:
        async def both_done() -> bool:
            listed = await jobs(nc)
            return len(listed) >= 2 and all(j["phase"] in ("succeeded", "failed") for j in listed)

        await wait_for(both_done, timeout=240, what="two finished jobs")
        await asyncio.sleep(1)  # anything duplicated would show up now
        listed = await jobs(nc)
        assert len(listed) == 2
        assert all(j["phase"] == "succeeded" for j in listed), [j["message"] for j in listed]
        # A record reads succeeded before its model_ready and JobEnd are out (settle follows the phase).
        await ann.wait_for(lambda a: len(a.ready_jobs()) == 2 and a.gpu().count(b"JobEnd") == 2,
                           timeout=30, what="two model_ready and two JobEnd")
        assert sorted(ann.ready_jobs()) == sorted(j["job_id"] for j in listed)
        assert ann.gpu() == [b"JobStart", b"JobEnd", b"JobStart", b"JobEnd"]
        oldest_first = sorted(listed, key=lambda j: j["seq"])
        assert oldest_first[0]["request"]["time_intervals"] == [interval(40)]
        assert oldest_first[1]["msg_id"] == "retry-7"
    finally:
        await service.stop()


async def test_a_request_answered_directly_is_not_trained_again_from_the_stream(
    nats_server: NatsServer, nc: nats.NATS, sample_logs: Path, tmp_path: Path
) -> None:
    service = await Service.start(settings_for(nats_server, sample_logs, tmp_path, train_device="cuda"))
    try:
        reply = json.loads((await nc.request("train", train_payload(30), timeout=10)).data)
        assert reply["status"] == "queued"
        await asyncio.sleep(2)  # the stream's copy has been consumed by now
        listed = await jobs(nc)
        assert [j["job_id"] for j in listed] == [reply["job_id"]]
        assert listed[0]["stream_seq"] is not None  # the stream's copy was matched to the same job
    finally:
        await service.stop()


CRASHING_TRAINER = """#!/bin/sh
echo '{"event":"stage","stage":"training","message":"starting"}'
echo 'RuntimeError: CUDA error: an illegal memory access was encountered' >&2
kill -9 $$
"""


async def test_a_crashing_training_job_fails_with_its_reason_ends_the_job_and_frees_the_gpu(
    nats_server: NatsServer, nc: nats.NATS, sample_logs: Path, tmp_path: Path
) -> None:
    trainer = tmp_path / "crashing-python"
    trainer.write_text(CRASHING_TRAINER)
    trainer.chmod(0o755)
    settings = settings_for(nats_server, sample_logs, tmp_path)
    launcher = LocalLauncher(tmp_path / "jobs", python=str(trainer))
    await serve_gpu_service(nc)
    service = await Service.start(settings, adapters=Adapters(launcher=launcher))
    try:
        ann = await listen(nc)
        reply = json.loads((await nc.request("train", train_payload(30), timeout=10)).data)

        async def ended() -> bool:
            return b"JobEnd" in ann.gpu()

        await wait_for(ended, timeout=60, what="JobEnd")
        record = json.loads((await nc.request("training_status", json.dumps({"job_id": reply["job_id"]}).encode(), timeout=5)).data)
        assert record["phase"] == "failed"
        assert "exit code 137" in record["message"] and "illegal memory access" in record["message"]
        assert ann.gpu() == [b"JobStart", b"JobEnd"]
        assert ann.ready_jobs() == []
        await wait_for(lambda: _answers(nc, b"YES"), timeout=10, what="gpu_service_inference YES")
    finally:
        await service.stop()


def start_controller(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "NATS_SERVER_URL": settings.nats.url,
        "LOG_FILES_DIR": str(settings.logs.files_dir),
        "LOCAL_STORE_DIR": str(settings.store.local_dir),
        "LOCAL_JOBS_DIR": str(settings.launch.local_jobs_dir),
        "TRAIN_EPOCHS": "2",
        "TRAIN_MAX_LINES": "300",
        "TRAIN_DEVICE": "cpu",
        "HTTP_PORT": "0",
    }
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "training_controller", "serve"], env=env, stdout=out, stderr=out)


async def test_controller_killed_with_one_job_running_and_two_queued_finishes_all_three_once_in_order(
    nats_server: NatsServer, nc: nats.NATS, sample_logs: Path, tmp_path: Path
) -> None:
    settings = settings_for(nats_server, sample_logs, tmp_path)
    ann = await listen(nc)
    controller = start_controller(settings, tmp_path / "controller.log")
    try:
        async def ready() -> bool:
            try:
                return "jobs" in json.loads((await nc.request("training_jobs", b"", timeout=1)).data)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                return False

        await wait_for(ready, timeout=30, what="the controller")
        for minutes in (50, 35, 20):
            await nc.publish("train", train_payload(minutes))
        await nc.flush()

        async def one_running_two_queued() -> bool:
            phases = [j["phase"] for j in sorted(await jobs(nc), key=lambda j: j["seq"])]
            return phases == ["running", "queued", "queued"]

        await wait_for(one_running_two_queued, timeout=60, what="one running job and two queued")
        controller.send_signal(signal.SIGKILL)
        controller.wait()

        controller = start_controller(settings, tmp_path / "controller.log")

        async def all_finished() -> bool:
            try:
                listed = await jobs(nc)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                return False
            return len(listed) == 3 and all(j["phase"] in ("succeeded", "failed", "cancelled") for j in listed)

        await wait_for(all_finished, timeout=420, what="all three jobs to finish")
        await ann.wait_for(lambda a: a.gpu().count(b"JobEnd") >= 3, timeout=30, what="three JobEnd")
        await asyncio.sleep(1)  # anything announced twice would show up now
        listed = sorted(await jobs(nc), key=lambda j: j["seq"])
        assert [j["phase"] for j in listed] == ["succeeded"] * 3, [j["message"] for j in listed]
        assert [j["request"]["time_intervals"] for j in listed] == [[interval(m)] for m in (50, 35, 20)]
        finished = [j["finished_at"] for j in listed]
        assert finished == sorted(finished)  # queue order kept
        assert sorted(ann.ready_jobs()) == sorted(j["job_id"] for j in listed)  # each model_ready once
        assert ann.gpu().count(b"JobStart") == ann.gpu().count(b"JobEnd") == 3
        assert not any(j["gpu_held"] for j in listed)
    finally:
        controller.send_signal(signal.SIGTERM)
        controller.wait(timeout=20)
