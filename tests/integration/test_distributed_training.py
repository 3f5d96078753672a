"""One training across two worker processes on the embedded setup, through the controller as an operator uses
it: `train` with `parameters.workers` 2, the real NuLog job on torch.distributed (gloo), the local launcher.

What a client sees: the record lists a master and a worker; a model that extracts templates when both succeed;
a failed job naming the worker, then JobEnd and the GPU free, when one of them is killed mid-training."""

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

from tests.conftest import StartService, interval, listen, request_json, wait_until
from tests.processes import processes

pytestmark = pytest.mark.slow

ARCHIVE = "opni-nulog-models-archive"


def two_workers(**parameters: object) -> bytes:
    return json.dumps({
        "model_to_train": "nulog", "time_intervals": [interval(30, 5)], "parameters": {"workers": 2, **parameters},
    }).encode()


async def status(nc: nats.NATS, job_id: str) -> dict:
    return await request_json(nc, "training_status", {"job_id": job_id})


async def ended(nc: nats.NATS, job_id: str, *, timeout: float = 240) -> dict:
    async def done() -> bool:
        return (await status(nc, job_id))["phase"] in ("succeeded", "failed", "cancelled")

    await wait_until(done, timeout=timeout, what=f"job {job_id} to end")
    return await status(nc, job_id)


def first_lines(logs: Path, n: int) -> list[str]:
    return [json.loads(line)["log"] for line in sorted(logs.glob("*.jsonl"))[0].read_text().splitlines()[:n]]


def templates_of(model: Path, lines: list[str]) -> list[str]:
    """`nulog templates` with this model, as an operator runs it."""
    result = subprocess.run([sys.executable, "-m", "nulog", "templates", "--model", str(model), "-"],
                            input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line)["template"] for line in result.stdout.splitlines()]


def trainer_pid(wrapper_pid: int) -> int:
    """The trainer under a worker's wrapper: the other member of the wrapper's process group."""
    for pid, pgrp in processes():
        if pgrp == wrapper_pid and pid != wrapper_pid:
            return pid
    raise AssertionError(f"no trainer process in the group of {wrapper_pid}")


async def test_two_workers_train_one_model_the_record_lists_both_and_the_model_extracts_templates(
    start_service: StartService, nc: nats.NATS, sample_logs: Path, tmp_path: Path
) -> None:
    await start_service(logs=sample_logs, train_epochs=2, train_max_lines=400)
    ann = await listen(nc)

    reply = await request_json(nc, "train", two_workers())
    record = await ended(nc, reply["job_id"])

    assert record["phase"] == "succeeded", record["message"]
    assert record["parameters"]["workers"] == 2
    workers = sorted(record["workers"], key=lambda w: w["index"])
    assert [(w["index"], w["role"], w["state"]) for w in workers] == [(0, "master", "succeeded"), (1, "worker", "succeeded")]
    assert all(w["name"].startswith("pid ") for w in workers) and workers[0]["name"] != workers[1]["name"]
    job_dir = tmp_path / "jobs" / reply["job_id"]
    assert (job_dir / "exit_code").read_text().strip() == "0"
    assert (job_dir / "rank-1" / "exit_code").read_text().strip() == "0"
    # Rank 0 alone reports: the other rank's stdout holds no progress.
    assert '"progress"' in (job_dir / "events.log").read_text()
    assert '"progress"' not in (job_dir / "rank-1" / "events.log").read_text()
    # model_ready goes out before JobEnd (settle's order), so wait for both rather than assume the second.
    await ann.wait_for(lambda a: a.ready_jobs() == [reply["job_id"]] and a.gpu() == [b"JobStart", b"JobEnd"],
                       timeout=30, what="model_ready, then JobEnd")

    lines = first_lines(sample_logs, 20)
    templates = await asyncio.to_thread(templates_of, tmp_path / "store" / "opni-nulog-models" / "nulog_model_latest.pt", lines)
    assert len(templates) == len(lines) and all(t.strip() for t in templates)
    assert any("<*>" in t for t in templates) and len(set(templates)) < len(lines)


async def test_a_worker_killed_mid_training_fails_the_job_naming_it_then_jobend_and_the_gpu_is_free(
    start_service: StartService, nc: nats.NATS, sample_logs: Path, tmp_path: Path
) -> None:
    await start_service(logs=sample_logs, train_epochs=1, train_max_lines=400)
    ann = await listen(nc)

    reply = await request_json(nc, "train", two_workers(epochs=500))
    job_id = reply["job_id"]

    async def training() -> bool:
        record = await status(nc, job_id)
        return record["phase"] == "running" and bool(record.get("progress"))

    await wait_until(training, timeout=120, what="the two workers to be training")
    assert (await nc.request("gpu_service_inference", b"x", timeout=5)).data == b"NO"
    wrapper = int((tmp_path / "jobs" / job_id / "rank-1" / "pid").read_text())
    os.kill(trainer_pid(wrapper), signal.SIGKILL)  # as the OOM killer would

    record = await ended(nc, job_id, timeout=120)
    assert record["phase"] == "failed"
    assert "worker 1 (worker" in record["message"] and "exit code 137" in record["message"], record["message"]
    states = {w["index"]: w["state"] for w in record["workers"]}
    assert states == {0: "failed", 1: "failed"}
    await ann.wait_for(lambda a: a.gpu() == [b"JobStart", b"JobEnd"], timeout=30, what="JobEnd")
    assert ann.ready_jobs() == []
    assert (await nc.request("gpu_service_inference", b"x", timeout=5)).data == b"YES"
    # Nothing of the training runs on: the master was stopped, not left waiting for its lost peer.
    groups = {int((d / "pid").read_text()) for d in (tmp_path / "jobs" / job_id, tmp_path / "jobs" / job_id / "rank-1")}
    assert not [pid for pid, pgrp in processes() if pgrp in groups]
