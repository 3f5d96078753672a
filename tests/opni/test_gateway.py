"""The controller driven as Opni's AIOps gateway drives it, byte for byte (see `clients.py` for the code each
helper follows).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nats
import pytest

from tests.conftest import StartService, listen
from tests.opni.clients import (
    GatewayStartFailed,
    gateway_reads_model_status,
    gateway_reads_parameters,
    gateway_starts,
    gateway_train_model,
    preprocessing_keeps,
)

WORKLOADS = {"c1": {"web": ["nginx", "api"]}}


def doc(ts: int, log: str, deployment: str = "nginx") -> dict:
    return {"timestamp": ts, "log": log, "cluster_id": "c1", "namespace_name": "web", "deployment": deployment}


def write_recent_logs(log_dir: Path, n: int = 200) -> None:
    start = time.time_ns() - 20 * 60 * 10**9
    with (log_dir / "web.jsonl").open("w") as f:
        for i in range(n):
            f.write(json.dumps(doc(start + i * 3 * 10**9, f"GET /api/v1/orders/{i} HTTP/1.1 200 in {i % 7} ms")) + "\n")


async def kv_value(nc: nats.NATS, bucket: str, key: str) -> bytes:
    return (await (await nc.jetstream().key_value(bucket)).get(key)).value


async def test_the_gateway_starting_before_the_controller_on_an_empty_jetstream_leaves_it_working(
    nc: nats.NATS, start_service: StartService
) -> None:
    """rancher/opni@0817cfab143a2efc42610d4a562c5a4f5c516645:plugins/aiops/pkg/gateway/plugin.go#L125-L173:
    the gateway creates its three buckets and exits on any error; the controller then binds them."""
    await gateway_starts(nc)

    await start_service()

    assert await gateway_train_model(nc, WORKLOADS, uuid="u-1") == b"training job submitted"
    js = nc.jetstream()
    for bucket, description in (("model-training-parameters", "Storing the workloads specified for model training."),
                                ("model-training-statistics", "Storing the statistics for the training of the model.")):
        info = await js.stream_info(f"KV_{bucket}")
        assert info.config.description == description  # the gateway's stream, not replaced


async def test_the_gateway_starting_after_the_controller_finds_its_buckets_as_it_would_make_them(
    nc: nats.NATS, start_service: StartService
) -> None:
    """The same start-up after the controller made the buckets it uses: nats.go's CreateKeyValue must not
    fail with error 10058 (`stream name already in use with a different configuration`), or the gateway
    exits (plugin.go#L125-L173). nats-py's own create_key_value would make it fail: the controller does not
    use it."""
    await start_service()

    try:
        await gateway_starts(nc)
    except GatewayStartFailed as e:
        pytest.fail(f"the gateway would exit: {e}")
    assert await gateway_train_model(nc, WORKLOADS, uuid="u-2") == b"training job submitted"


async def test_both_kv_keys_read_back_as_the_gateway_and_the_preprocessing_service_parse_them(
    nc: nats.NATS, start_service: StartService, log_dir: Path
) -> None:
    """modelTrainingParameters keeps the gateway's {uuid, workloads} (modeltraining.go#L31-L62; the
    preprocessing service reads ["workloads"], preprocess.py#L32-L62); modelTrainingStatus is the proto's
    ModelStatus and nothing else (modeltraining.proto#L53-L86, read with protojson, modeltraining.go#L158-L180)."""
    write_recent_logs(log_dir)
    await gateway_starts(nc)
    await start_service()
    await nc.publish("gpu_trainingjob_status", b"JobStart")  # an external trainer holds the GPU: the job waits

    assert await gateway_train_model(nc, WORKLOADS, uuid="u-3") == b"training job submitted"

    parameters = await kv_value(nc, "model-training-parameters", "modelTrainingParameters")
    assert sorted(gateway_reads_parameters(parameters), key=lambda i: i["deployment"]) == [
        {"clusterId": "c1", "namespace": "web", "deployment": "api"},
        {"clusterId": "c1", "namespace": "web", "deployment": "nginx"},
    ]
    assert json.loads(parameters)["uuid"] == "u-3"
    assert preprocessing_keeps(parameters, cluster_id="c1", namespace_name="web", deployment="nginx")
    assert not preprocessing_keeps(parameters, cluster_id="c1", namespace_name="web", deployment="db")
    status = gateway_reads_model_status(await kv_value(nc, "model-training-statistics", "modelTrainingStatus"))
    assert status["status"] == "training" and status["statistics"]["stage"] in ("fetching data", "train")
    assert await nc.request("model_status", b"model_status", timeout=5) and (
        (await nc.request("model_status", b"model_status", timeout=5)).data == b"training"
    )
    # Older gateways asked for the watchlist: right after train_model it is the one just submitted.
    reply = await nc.request("workload_parameters", b"model_training_parameters", timeout=5)
    assert json.loads(reply.data) == WORKLOADS


@pytest.mark.slow
async def test_a_training_ends_with_a_model_status_the_gateway_reads_as_completed(
    nc: nats.NATS, start_service: StartService, log_dir: Path
) -> None:
    """GetModelStatus through protojson after a whole training: `completed`, whole numbers for int64."""
    write_recent_logs(log_dir)
    await gateway_starts(nc)
    await start_service(train_epochs=2)
    rec = await listen(nc)

    assert await gateway_train_model(nc, {"c1": {"web": ["nginx"]}}, uuid="u-4") == b"training job submitted"
    await rec.wait_for_job_ends(1, timeout=240)

    status = gateway_reads_model_status(await kv_value(nc, "model-training-statistics", "modelTrainingStatus"))
    assert status["status"] == "completed"
    assert status["statistics"]["percentageCompleted"] == 100 and status["statistics"]["remainingTime"] == 0
    assert status["statistics"]["currentEpoch"] == 2
    assert (await nc.request("model_status", b"model_status", timeout=5)).data == b"completed"


async def test_a_reset_from_the_current_gateway_is_a_reset(nc: nats.NATS, start_service: StartService) -> None:
    """The newest gateway resets with `{"uuid": ..}` (omitempty drops the empty workloads,
    modeltraining.go#L33-L58) and expects `model reset`, with the effects of `{}` in Opni's controller
    (rancher/opni-training-controller, newest main.py: `model_update {"status":"reset"}` and
    `model_workload_parameters {"workloads":{}, "status_type":"reset"}`)."""
    await gateway_starts(nc)
    await start_service()
    rec = await listen(nc, ("model_update", "model_workload_parameters"))

    assert await gateway_train_model(nc, {}, uuid="u-5") == b"model reset"

    assert await rec.next_json("model_update") == {"status": "reset"}
    assert await rec.next_json("model_workload_parameters") == {"workloads": {}, "status_type": "reset"}
    status = gateway_reads_model_status(await kv_value(nc, "model-training-statistics", "modelTrainingStatus"))
    assert status == {"status": "no model trained"}
    assert gateway_reads_parameters(await kv_value(nc, "model-training-parameters", "modelTrainingParameters")) == []
    assert (await nc.request("model_status", b"model_status", timeout=5)).data == b"not started"
