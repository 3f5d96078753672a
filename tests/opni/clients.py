"""Opni's clients, as far as they talk to the training controller, acting exactly as their code does.

Each helper names the code it follows. The facts were read from the stored public repositories; where the
newest file version had no commit in the index, the citation gives the commit of the version before it,
whose wire behaviour is the same.
"""

from __future__ import annotations

import json
from typing import Any

import nats

# rancher/opni@0817cfab143a2efc42610d4a562c5a4f5c516645:plugins/aiops/pkg/gateway/plugin.go#L50-L54, L125-L173
GATEWAY_BUCKETS = {
    "os-workload-aggregation": "Storing aggregation of workload logs from Opensearch.",
    "model-training-parameters": "Storing the workloads specified for model training.",
    "model-training-statistics": "Storing the statistics for the training of the model.",
}


def nats_go_kv_stream(bucket: str, description: str) -> dict[str, Any]:
    """The stream config nats.go's `CreateKeyValue(&nats.KeyValueConfig{Bucket, Description})` sends.

    nats-io/nats.go@03f2bcbca21ed888d68530b6e34d53f64c89e4ee:kv.go (CreateKeyValue) and
    nats-io/nats.go@02b5ea9a7aa34d4192517800fe5d3576dc31903b:jsm.go (StreamConfig's JSON tags).
    """
    return {
        "name": f"KV_{bucket}",
        "description": description,
        "subjects": [f"$KV.{bucket}.>"],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": -1,
        "discard": "new",
        "max_age": 0,
        "max_msgs_per_subject": 1,
        "max_msg_size": -1,
        "storage": "file",
        "num_replicas": 1,
        "duplicate_window": 120_000_000_000,
        "deny_delete": True,
        "allow_rollup_hdrs": True,
        "allow_direct": True,
        "mirror_direct": False,
    }


class GatewayStartFailed(Exception):
    """The gateway's CreateKeyValue failed: it would log "fatal" and os.Exit(1)."""


async def gateway_starts(nc: nats.NATS) -> None:
    """The AIOps gateway's start-up: one CreateKeyValue per bucket; any error ends the gateway.

    nats.go's CreateKeyValue is a JetStream STREAM.CREATE request; on "already in use" it accepts the
    stream only if its config is the same (reflect.DeepEqual). Sending the identical create is what the
    server answers the same way: success for an identical stream, error 10058 for a different one.
    """
    for bucket, description in GATEWAY_BUCKETS.items():
        body = nats_go_kv_stream(bucket, description)
        reply = await nc.request(f"$JS.API.STREAM.CREATE.KV_{bucket}", json.dumps(body).encode(), timeout=5)
        answer = json.loads(reply.data)
        if "error" in answer:
            raise GatewayStartFailed(f"CreateKeyValue {bucket}: {answer['error']}")


async def gateway_train_model(nc: nats.NATS, workloads: dict[str, dict[str, list[str]]], uuid: str) -> bytes:
    """The gateway's TrainModel: KV puts first, then the request, returning the reply bytes unparsed.

    rancher/opni@6cb342b22372db0aa617173da56ea5b534e15b85:plugins/aiops/pkg/gateway/modeltraining.go#L31-L75
    (the newest version, index id 40133693891, has the same wire behaviour): `ModelTrainingParameters{UUID,
    Workloads}` with `omitempty` on both, marshalled compact with sorted keys; `modelTrainingStatus` gets
    `{"status":"training","statistics":{"stage":"fetching data"}}` (or `{"status":"no model trained"}` for
    an empty selection); then `Request("train_model", payload, time.Minute)`.
    """
    params: dict[str, Any] = {"uuid": uuid}
    if workloads:
        params["workloads"] = workloads
    payload = json.dumps(params, separators=(",", ":"), sort_keys=True).encode()
    js = nc.jetstream()
    await (await js.key_value("model-training-parameters")).put("modelTrainingParameters", payload)
    status = {"status": "training", "statistics": {"stage": "fetching data"}} if workloads else {"status": "no model trained"}
    await (await js.key_value("model-training-statistics")).put("modelTrainingStatus", json.dumps(status).encode())
    return (await nc.request("train_model", payload, timeout=60)).data


# rancher/opni@efac86478ede62a125ee1d482f69c4a505015911:plugins/aiops/apis/modeltraining/modeltraining.proto#L53-L86
MODEL_STATUS_FIELDS = {"status": str, "statistics": dict}
STATISTICS_FIELDS = {
    "timeElapsed": int, "percentageCompleted": int, "remainingTime": int, "currentEpoch": int,
    "modelAccuracy": float, "stage": str,
}


def gateway_reads_model_status(value: bytes) -> dict[str, Any]:
    """`protojson.Unmarshal` into `ModelStatus` with default options (DiscardUnknown=false): an unknown field
    or a wrong type is an Internal error of GetModelStatus; int64 takes whole numbers only.

    rancher/opni@6cb342b22372db0aa617173da56ea5b534e15b85:plugins/aiops/pkg/gateway/modeltraining.go#L158-L180
    """
    status = json.loads(value)
    unknown = set(status) - set(MODEL_STATUS_FIELDS)
    assert not unknown, f"protojson: unknown field(s) {unknown}"
    assert isinstance(status.get("status", ""), str)
    stats = status.get("statistics", {})
    unknown = set(stats) - set(STATISTICS_FIELDS)
    assert not unknown, f"protojson: unknown field(s) {unknown} in statistics"
    for name, kind in STATISTICS_FIELDS.items():
        if name in stats:
            value_ = stats[name]
            if kind is int:
                assert isinstance(value_, int) and not isinstance(value_, bool), f"{name}: int64 wants a whole number, not {value_!r}"
            elif kind is float:
                assert isinstance(value_, int | float) and not isinstance(value_, bool), f"{name}: double, not {value_!r}"
            else:
                assert isinstance(value_, str), f"{name}: string, not {value_!r}"
    return status


def gateway_reads_parameters(value: bytes) -> list[dict[str, str]]:
    """`GetModelTrainingParameters`: json.Unmarshal into {uuid, workloads} and flatten to items; a value in
    another shape (a bare map) unmarshals to nothing.

    rancher/opni@6cb342b22372db0aa617173da56ea5b534e15b85:plugins/aiops/pkg/gateway/modeltraining.go#L182-L220
    """
    raw = json.loads(value)
    workloads = raw.get("workloads") or {} if isinstance(raw, dict) else {}
    return [
        {"clusterId": cluster, "namespace": namespace, "deployment": deployment}
        for cluster, namespaces in workloads.items()
        for namespace, deployments in namespaces.items()
        for deployment in deployments
    ]


def preprocessing_keeps(value: bytes, *, cluster_id: str, namespace_name: str, deployment: str) -> bool:
    """opni-preprocessing-service's filter: `d = json.loads(...)["workloads"]`, then
    `cid in d and ns in d[cid] and dep in d[cid][ns]` (a KeyError on a value without `workloads`).

    rancher/opni-preprocessing-service (newest found, index id 38090722061): preprocessing-service/preprocess.py#L32-L62
    """
    d = json.loads(value)["workloads"]
    return cluster_id in d and namespace_name in d[cluster_id] and deployment in d[cluster_id][namespace_name]


def inference_acts_on(model_update: bytes, *, s3_bucket: str = "opni-nulog-models") -> str:
    """What opni-inference-service's workload service does with a `model_update` payload.

    rancher/opni-inference-service@2d6877975bcac5aade3b663d8de64c733e082507:
    opni_inference_service/start_opnilog_inference.py#L86-L131: a dict with `bucket == S3_BUCKET` downloads
    every `bucket_files` value and reloads; `status` training or reset drops the model and empties the
    bucket; anything else would be fed to the model as logs.
    """
    payload = json.loads(model_update)
    if isinstance(payload, dict):
        if "bucket" in payload and payload["bucket"] == s3_bucket:
            assert set(payload["bucket_files"]) == {"model_file", "vocab_file"}
            return "reload"
        if "status" in payload and payload["status"] in ("training", "reset"):
            return "drop-and-empty-bucket"
    return "treated-as-logs"
