"""Per-request parameters and the trainer catalogue over NATS, with real trainers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nats
import pytest

from tests.conftest import StartService, interval, listen, request_json, wait_until

pytestmark = pytest.mark.slow

# A trainer of another model type: it speaks the trainer contract (events on stdout, files at --output)
# and takes a parameter of its own (--depth) after the contract's arguments.
FAKE_TRAINER = r'''
import json, pathlib, sys
args = sys.argv[1:]
out = pathlib.Path(args[args.index("--output") + 1])
depth = args[args.index("--depth") + 1]
print(json.dumps({"event": "stage", "stage": "training", "message": f"depth {depth}"}), flush=True)
out.mkdir(parents=True, exist_ok=True)
(out / "nulog_model.pt").write_bytes(b"a drain tree of depth " + depth.encode())
(out / "vocab.txt").write_text("")
(out / "metrics.json").write_text(json.dumps({"depth": int(depth)}))
print(json.dumps({"event": "done", "metrics": {"depth": int(depth)}}), flush=True)
'''


def train(model: str = "nulog", **parameters: object) -> bytes:
    body: dict = {"model_to_train": model, "time_intervals": [interval(30)]}
    if parameters:
        body["parameters"] = parameters
    return json.dumps(body).encode()


async def finished(nc: nats.NATS, job_id: str) -> dict:
    async def done() -> bool:
        return (await request_json(nc, "training_status", {"job_id": job_id}))["phase"] in ("succeeded", "failed")

    await wait_until(done, timeout=180, what=f"job {job_id} to end")
    return await request_json(nc, "training_status", {"job_id": job_id})


async def test_parameters_of_a_request_are_the_ones_in_force_and_reach_the_trainer(
    start_service: StartService, nc: nats.NATS, sample_logs: Path, tmp_path: Path
) -> None:
    await start_service(logs=sample_logs, train_epochs=1)

    reply = await request_json(nc, "train", train(epochs=2, seed=4))
    record = await finished(nc, reply["job_id"])

    assert record["phase"] == "succeeded", record["message"]
    assert record["parameters"]["epochs"] == 2 and record["parameters"]["seed"] == 4
    assert record["parameters"]["workers"] == 1  # defaults fill the rest
    spec = json.loads((tmp_path / "jobs" / reply["job_id"] / "spec.json").read_text())
    assert (spec["epochs"], spec["seed"]) == (2, 4)
    metrics = json.loads((tmp_path / "store" / "opni-nulog-models-archive" / reply["job_id"] / "metrics.json").read_text())
    assert metrics["epochs"] == 2


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (train(epochs=0), "parameters: epochs must be at least 1, not 0"),
        (train(epochs="three"), "parameters: epochs must be an int, not 'three'"),
        (train(epocs=3), "parameters: unknown parameter 'epocs' for model nulog"),
        (train(workers=99), "parameters: workers must be at most 4, not 99"),
        (train("gpt"), "model_to_train: unknown model 'gpt'; this controller trains: nulog"),
    ],
)
async def test_invalid_parameters_get_one_clear_error_and_queue_nothing(
    start_service: StartService, nc: nats.NATS, payload: bytes, says: str
) -> None:
    await start_service()

    reply = await request_json(nc, "train", payload)

    assert set(reply) == {"error"} and says in reply["error"], reply
    assert reply["error"].startswith("invalid train request: ")
    assert (await request_json(nc, "training_jobs", {}))["jobs"] == []


async def test_a_model_type_that_needs_no_gpu_trains_without_taking_the_gpu(
    start_service: StartService, nc: nats.NATS, sample_logs: Path, tmp_path: Path
) -> None:
    script = tmp_path / "drain_trainer.py"
    script.write_text(FAKE_TRAINER)
    catalogue = {"trainers": {"drain-baseline": {
        "command": [sys.executable, str(script)], "gpus": 0, "publishes_model": False,
        "parameters": {"depth": {"type": "int", "default": 4, "minimum": 2, "maximum": 8}},
    }}}
    await start_service(logs=sample_logs, trainers=json.dumps(catalogue))
    rec = await listen(nc)

    reply = await request_json(nc, "train", train("drain-baseline", depth=6))
    record = await finished(nc, reply["job_id"])

    assert record["phase"] == "succeeded", record["message"]
    assert record["model"] == "drain-baseline" and record["parameters"]["depth"] == 6
    assert record["gpu_held"] is False
    assert rec.gpu() == [] and rec.ready_jobs() == []  # no JobStart/JobEnd, and not the model inference loads
    archived = tmp_path / "store" / "opni-nulog-models-archive" / reply["job_id"] / "nulog_model.pt"
    assert archived.read_bytes() == b"a drain tree of depth 6"
    assert not (tmp_path / "store" / "opni-nulog-models").exists()
    assert (await nc.request("gpu_service_inference", b"batch", timeout=5)).data == b"YES"
