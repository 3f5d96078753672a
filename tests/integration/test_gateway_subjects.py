"""The gateway and GPU subjects of the wire contract against a real nats-server and an in-process service.

Subjects: `gpu_service_running`, `gpu_service_inference` (+ `gpu_service_inference_internal`),
`gpu_trainingjob_status` from an external trainer, `model_status`, `workload_parameters` and `train_model`
(+ `model_update`, `model_workload_parameters`, the `model-training-parameters` KV bucket, `training_jobs`,
`training_status`).

Most tests need no training. Where a job must get as far as its export (to read its `log_count`) without
training, an external trainer holds the GPU (`JobStart` with no `JobEnd`): the job then exports, records its
count, and waits in `launching` for the GPU, so no training process is started. One test runs a real, tiny
training on CPU (marked slow).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.conftest import StartService, base_settings, listen, serve_gpu_service
from training_controller.bootstrap import Service
from training_controller.core.queries import ANOMALY_KEYWORDS
from training_controller.natsserver import NatsServer

MINUTE_NS = 60 * 10**9
WORKLOADS = {"c1": {"web": ["nginx"]}}



# -- fixtures and helpers ------------------------------------------------------------------------------------


@pytest.fixture
async def service(start_service: StartService) -> Service:
    return await start_service()



async def ask(nc: nats.NATS, subject: str, payload: bytes = b"") -> bytes:
    return (await nc.request(subject, payload, timeout=5)).data


async def ask_json(nc: nats.NATS, subject: str, payload: Any) -> Any:
    return json.loads(await ask(nc, subject, json.dumps(payload).encode()))


async def inference_answer_becomes(nc: nats.NATS, expected: bytes, *, timeout: float = 5.0) -> float:
    """Polls `gpu_service_inference` until it answers `expected`; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        got = await ask(nc, "gpu_service_inference", b"probe")
        if got == expected:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"gpu_service_inference still answers {got!r}, not {expected!r}"
        await asyncio.sleep(0.05)


async def external_trainer_takes_gpu(nc: nats.NATS) -> None:
    """An external trainer announces JobStart (plain publish, no headers) and the service has counted it."""
    await nc.publish("gpu_trainingjob_status", b"JobStart")
    await nc.flush()
    await inference_answer_becomes(nc, b"NO")


async def jobs(nc: nats.NATS) -> list[dict[str, Any]]:
    """`training_jobs`: every job, most recent first."""
    return (await ask_json(nc, "training_jobs", {}))["jobs"]


class PhaseWatch:
    """Follows the phase events of every job on `training_logs.<job>`."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @classmethod
    async def on(cls, nc: nats.NATS) -> PhaseWatch:
        watch = cls()

        async def put(msg: Any) -> None:
            event = json.loads(msg.data)
            if event.get("kind") == "phase":
                watch.events.put_nowait(event)

        await nc.subscribe("training_logs.>", cb=put)
        await nc.flush()
        return watch

    def clear(self) -> None:
        while not self.events.empty():
            self.events.get_nowait()

    async def settled(self, timeout: float = 20.0) -> dict[str, Any]:
        """The next phase event of a job that then writes nothing more for a while: waiting for the GPU in
        `launching` (held by an external trainer), or ended."""
        deadline = time.monotonic() + timeout
        while True:
            event = await asyncio.wait_for(self.events.get(), max(0.01, deadline - time.monotonic()))
            if event["phase"] in ("launching", "succeeded", "failed", "cancelled"):
                return event


async def submit_workload_training(nc: nats.NATS, workloads: dict) -> dict[str, Any]:
    """Sends train_model with new workloads (the GPU held externally) and returns the job's record once it
    has exported and waits for the GPU."""
    watch = await PhaseWatch.on(nc)
    assert await ask(nc, "train_model", json.dumps(workloads).encode()) == b"training job submitted"
    event = await watch.settled()
    return await ask_json(nc, "training_status", {"job_id": event["job_id"]})


def recent_ns(minutes_ago: float) -> int:
    return time.time_ns() - int(minutes_ago * MINUTE_NS)


_CLEAN_TEMPLATES = (
    "GET /api/v1/orders/{n} HTTP/1.1 200 {size} bytes in {ms} ms",
    "POST /api/v1/cart/{n}/items HTTP/1.1 201 {size} bytes in {ms} ms",
    "GET /static/js/app.{n}.js HTTP/1.1 304 0 bytes in {ms} ms",
    "upstream 10.0.{a}.{b}:8080 answered request {n} in {ms} ms",
    "reloaded configuration for server block {n} with {a} upstreams",
    "GET /healthz HTTP/1.1 200 2 bytes in {ms} ms from kube-probe",
)


def clean_line(i: int) -> str:
    line = _CLEAN_TEMPLATES[i % len(_CLEAN_TEMPLATES)].format(
        n=1000 + 37 * i, size=200 + 13 * i, ms=1 + i % 97, a=i % 250, b=(7 * i) % 250
    )
    assert not any(word in line.lower() for word in ANOMALY_KEYWORDS), line
    return line


def doc(ts: int, log: str, *, cluster: str = "c1", namespace: str = "web", deployment: str = "nginx", **extra: Any) -> dict:
    return {
        "timestamp": ts,
        "log": log,
        "cluster_id": cluster,
        "namespace_name": namespace,
        "deployment": deployment,
        "pod_name": f"{deployment}-abc12",
        "is_control_plane_log": False,
        **extra,
    }


def write_docs(path: Path, docs: list[dict]) -> None:
    with path.open("a", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")


# -- gpu_service_running, gpu_service_inference, gpu_trainingjob_status ------------------------------------------


async def test_gpu_service_inference_is_no_while_the_gpu_service_does_not_answer_and_yes_once_it_does(
    start_service: StartService, nc: nats.NATS
) -> None:
    await start_service(gpu_service=False)
    assert await ask(nc, "gpu_service_inference", b"probe") == b"NO"

    sub = await serve_gpu_service(nc)
    await inference_answer_becomes(nc, b"YES")
    await sub.unsubscribe()
    await inference_answer_becomes(nc, b"NO")


async def test_inference_is_granted_and_the_exact_bytes_are_forwarded_internally(service: Service, nc: nats.NATS) -> None:
    inbox = await listen(nc, ("gpu_service_inference_internal",))
    payload = b'{"x":1}\x00raw'

    assert await ask(nc, "gpu_service_inference", payload) == b"YES"

    assert await inbox.next("gpu_service_inference_internal") == payload
    await asyncio.sleep(0.2)
    assert inbox.drain("gpu_service_inference_internal") == []


async def test_external_job_start_refuses_inference_until_its_job_end(service: Service, nc: nats.NATS) -> None:
    inbox = await listen(nc, ("gpu_service_inference_internal",))

    await nc.publish("gpu_trainingjob_status", b"JobStart")
    await nc.flush()
    await inference_answer_becomes(nc, b"NO")
    assert await ask(nc, "gpu_service_inference", b"refused payload") == b"NO"
    await asyncio.sleep(0.2)
    assert inbox.drain("gpu_service_inference_internal") == [], "a refused inference must not be forwarded"

    await nc.publish("gpu_trainingjob_status", b"JobEnd")
    await nc.flush()
    await inference_answer_becomes(nc, b"YES")
    inbox.drain("gpu_service_inference_internal")  # the polling's own probes
    assert await ask(nc, "gpu_service_inference", b"granted payload") == b"YES"
    assert await inbox.next("gpu_service_inference_internal") == b"granted payload"


async def test_external_job_start_without_job_end_lapses_after_the_reset_time(
    start_service: StartService, nc: nats.NATS
) -> None:
    await start_service(gpu_training_reset_time=1)

    await nc.publish("gpu_trainingjob_status", b"JobStart")
    await nc.flush()
    await inference_answer_becomes(nc, b"NO", timeout=0.8)

    waited = await inference_answer_becomes(nc, b"YES", timeout=3.0)
    assert await ask(nc, "gpu_service_inference", b"x") == b"YES"
    assert waited <= 1.5


async def test_an_external_job_start_right_after_start_up_is_counted(start_service: StartService, nc: nats.NATS) -> None:
    await start_service()
    await nc.publish("gpu_trainingjob_status", b"JobStart")
    await nc.flush()

    await inference_answer_becomes(nc, b"NO")
    await asyncio.sleep(0.3)  # nothing read later at start-up forgets it
    assert await ask(nc, "gpu_service_inference", b"x") == b"NO"


# -- model_status, workload_parameters on a fresh service ----------------------------------------------------------


async def test_model_status_of_a_fresh_service_is_not_started(service: Service, nc: nats.NATS) -> None:
    assert await ask(nc, "model_status", b"") == b"not started"


async def test_workload_parameters_of_a_fresh_service_is_an_empty_json_object(service: Service, nc: nats.NATS) -> None:
    reply = await ask(nc, "workload_parameters", b"")
    assert reply == b"{}"
    assert json.loads(reply) == {}


# -- train_model -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"{}", b'{"uuid": "u0", "workloads": {}}'], ids=["empty", "empty-object", "empty-workloads"])
async def test_train_model_with_no_workloads_resets_the_model(service: Service, nc: nats.NATS, payload: bytes) -> None:
    inbox = await listen(nc, ("model_update", "model_workload_parameters"))

    assert await ask(nc, "train_model", payload) == b"model reset"

    assert await inbox.next_json("model_update") == {"status": "reset"}
    assert await inbox.next_json("model_workload_parameters") == {"workloads": {}, "status_type": "reset"}
    assert await jobs(nc) == []
    assert await ask(nc, "model_status") == b"not started"
    assert await ask(nc, "workload_parameters") == b"{}"


@pytest.mark.parametrize(
    "payload",
    [{"uuid": "u1", "workloads": WORKLOADS}, WORKLOADS],
    ids=["wrapped", "bare"],
)
async def test_train_model_with_new_workloads_submits_one_job_and_records_them(
    service: Service, nc: nats.NATS, log_dir: Path, payload: dict
) -> None:
    write_docs(log_dir / "web.jsonl", [doc(recent_ns(10) + i * 10**9, clean_line(i)) for i in range(10)])
    await external_trainer_takes_gpu(nc)  # the job exports, then waits for the GPU: not finished, no training
    inbox = await listen(nc, ("model_workload_parameters",))
    watch = await PhaseWatch.on(nc)

    assert await ask(nc, "train_model", json.dumps(payload).encode()) == b"training job submitted"

    assert await inbox.next_json("model_workload_parameters") == {"workloads": WORKLOADS, "status_type": "train"}
    assert (await watch.settled())["phase"] == "launching"
    kv = await nc.jetstream().key_value("model-training-parameters")
    stored = json.loads((await kv.get("modelTrainingParameters")).value)
    assert set(stored) == {"uuid", "workloads"} and stored["workloads"] == WORKLOADS  # the gateway's shape
    assert await ask(nc, "model_status") == b"training"
    listed = await jobs(nc)
    assert len(listed) == 1
    assert listed[0]["request"] == {"workloads": WORKLOADS}
    assert listed[0]["requested_by"] == "nats:train_model"
    assert json.loads(await ask(nc, "workload_parameters")) == WORKLOADS  # the watchlist just submitted


@pytest.mark.slow
async def test_train_model_trains_then_updates_without_a_job_and_trains_again_on_a_new_deployment(
    start_service: StartService, nc: nats.NATS, log_dir: Path
) -> None:
    start = recent_ns(30)
    write_docs(log_dir / "web.jsonl", [doc(start + i * 5 * 10**9, clean_line(i)) for i in range(300)])
    await start_service(train_epochs=1, train_max_lines=200, train_device="cpu")
    inbox = await listen(nc, ("model_workload_parameters", "gpu_trainingjob_status"))
    request = {"uuid": "u1", "workloads": WORKLOADS}

    watch = await PhaseWatch.on(nc)
    assert await ask(nc, "train_model", json.dumps(request).encode()) == b"training job submitted"
    assert await inbox.next_json("model_workload_parameters") == {"workloads": WORKLOADS, "status_type": "train"}
    kv = await nc.jetstream().key_value("model-training-parameters")
    assert json.loads((await kv.get("modelTrainingParameters")).value) == request
    job_id = (await watch.events.get())["job_id"]
    record = await ask_json(nc, "training_status", {"job_id": job_id})
    assert record["request"] == {"workloads": WORKLOADS}
    assert record["phase"] not in ("succeeded", "failed", "cancelled")
    # (model_status while the record is being rewritten is checked by the test at the end)

    await inbox.next_equal("gpu_trainingjob_status", b"JobEnd", timeout=180)
    record = await ask_json(nc, "training_status", {"job_id": job_id})
    assert record["phase"] == "succeeded", record["message"]
    assert record["log_count"] == 300
    [job] = await jobs(nc)
    assert job["job_id"] == job_id and job["request"] == {"workloads": WORKLOADS}
    assert await ask(nc, "model_status") == b"completed"
    assert json.loads(await ask(nc, "workload_parameters")) == WORKLOADS

    # The same workloads: nothing new to learn.
    assert await ask(nc, "train_model", json.dumps(request).encode()) == b"training job submitted"
    assert await inbox.next_json("model_workload_parameters") == {"workloads": WORKLOADS, "status_type": "update"}
    assert [j["job_id"] for j in await jobs(nc)] == [job["job_id"]]
    assert await ask(nc, "model_status") == b"completed"

    # A new deployment: a second training (kept short of running by an external trainer on the GPU).
    await external_trainer_takes_gpu(nc)
    watch.clear()
    more = {"c1": {"web": ["nginx", "api"]}}
    assert await ask(nc, "train_model", json.dumps({"uuid": "u2", "workloads": more}).encode()) == b"training job submitted"
    assert await inbox.next_json("model_workload_parameters") == {"workloads": more, "status_type": "train"}
    assert (await watch.settled())["phase"] == "launching"
    listed = await jobs(nc)
    assert len(listed) == 2
    assert listed[0]["request"] == {"workloads": more} and listed[1]["job_id"] == job["job_id"]
    assert json.loads((await kv.get("modelTrainingParameters")).value) == {"uuid": "u2", "workloads": more}
    assert await ask(nc, "model_status") == b"training"
    assert json.loads(await ask(nc, "workload_parameters")) == more  # the watchlist just submitted


async def pretend_model_trained_on(nc: nats.NATS, workloads: dict) -> None:
    """Stores `lastModelTrained` as a finished training would, and waits until the controller has seen it."""
    kv = await nc.jetstream().key_value("training-controller")
    value = {"job_id": "earlier0job0", "workloads": workloads, "at": "2024-01-01T00:00:00.000Z"}
    await kv.put("lastModelTrained", json.dumps(value).encode())
    for _ in range(100):
        if await ask(nc, "model_status") == b"completed":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the controller did not see lastModelTrained")


async def test_train_model_with_workloads_already_learnt_announces_update_and_queues_nothing(
    service: Service, nc: nats.NATS
) -> None:
    await pretend_model_trained_on(nc, {"c1": {"web": ["nginx", "api"], "data": ["postgres"]}})
    inbox = await listen(nc, ("model_workload_parameters",))

    assert await ask(nc, "train_model", json.dumps(WORKLOADS).encode()) == b"training job submitted"

    assert await inbox.next_json("model_workload_parameters") == {"workloads": WORKLOADS, "status_type": "update"}
    assert await jobs(nc) == []
    assert await ask(nc, "model_status") == b"completed"


async def test_widening_a_namespace_to_all_its_deployments_trains_again(service: Service, nc: nats.NATS) -> None:
    await pretend_model_trained_on(nc, WORKLOADS)
    await external_trainer_takes_gpu(nc)
    inbox = await listen(nc, ("model_workload_parameters",))
    wider = {"c1": {"web": []}}

    assert await ask(nc, "train_model", json.dumps(wider).encode()) == b"training job submitted"

    assert await inbox.next_json("model_workload_parameters") == {"workloads": wider, "status_type": "train"}
    assert len(await jobs(nc)) == 1


# -- what a workload training exports ----------------------------------------------------------------------------

QUERY_SYNTAX_COUNTS = {
    "nginx*": 3,
    "nginx-ingress": 5,
    "nginx": 7,
    "web OR db": 4,
    "web": 6,
    "db": 8,
    'say "hi"': 2,
    "say": 9,
    "*": 1,
    "\\": 2,
}


@pytest.mark.parametrize("name", ["nginx*", "web OR db", 'say "hi"', "*", "\\"])
async def test_a_deployment_name_with_query_syntax_matches_only_that_exact_name(
    service: Service, nc: nats.NATS, log_dir: Path, name: str
) -> None:
    start = recent_ns(20)
    docs, i = [], 0
    for deployment, count in QUERY_SYNTAX_COUNTS.items():
        for _ in range(count):
            docs.append(doc(start + i * 10**9, clean_line(i), namespace="ns", deployment=deployment))
            i += 1
    write_docs(log_dir / "mixed.jsonl", docs)
    await external_trainer_takes_gpu(nc)

    record = await submit_workload_training(nc, {"c1": {"ns": [name]}})

    assert record["phase"] == "launching", record["message"]
    assert record["log_count"] == QUERY_SYNTAX_COUNTS[name]


async def test_a_namespace_name_with_query_syntax_matches_only_that_exact_namespace(
    service: Service, nc: nats.NATS, log_dir: Path
) -> None:
    start = recent_ns(20)
    counts = {"kube-*": 3, "kube-system": 5, "kube-public": 4}
    docs = [
        doc(start + i * 10**9, clean_line(i), namespace=ns, deployment="d")
        for i, ns in enumerate(ns for ns, n in counts.items() for _ in range(n))
    ]
    write_docs(log_dir / "ns.jsonl", docs)
    await external_trainer_takes_gpu(nc)

    record = await submit_workload_training(nc, {"c1": {"kube-*": []}})

    assert record["phase"] == "launching", record["message"]
    assert record["log_count"] == 3


async def test_documents_with_anomaly_keywords_or_labelled_anomalous_are_left_out_of_a_workload_training(
    service: Service, nc: nats.NATS, log_dir: Path
) -> None:
    start = recent_ns(20)
    clean = [doc(start + i * 10**9, clean_line(i)) for i in range(20)]
    normal_labelled = [doc(start + (100 + i) * 10**9, clean_line(i), anomaly_level="Normal") for i in range(5)]
    keyworded = [
        doc(start + (200 + i) * 10**9, line)
        for i, line in enumerate(
            [
                "dial tcp 10.0.0.7:5432: connection refused",
                "ERROR upstream timed out: timeout after 30s",
                "Fatal: cannot open /etc/nginx/nginx.conf",
                "java.lang.NullPointerException at Handler.run",
                "backend unavailable, retrying",
                "request FAILED with status 502",
                "worker crash detected",
                "NETWORK ERROR on eth0",
                "DEADLOCK detected in pool",
                "node is under high load",
                "out of disk on /var/lib",
            ]
        )
    ]
    labelled = [doc(start + (300 + i) * 10**9, clean_line(i), anomaly_level="Anomaly") for i in range(6)]
    write_docs(log_dir / "web.jsonl", clean + normal_labelled + keyworded + labelled)
    await external_trainer_takes_gpu(nc)

    record = await submit_workload_training(nc, WORKLOADS)

    assert record["phase"] == "launching", record["message"]
    assert record["log_count"] == len(clean) + len(normal_labelled)


async def test_documents_outside_the_lookback_or_of_other_workloads_are_left_out(
    service: Service, nc: nats.NATS, log_dir: Path
) -> None:
    now = time.time_ns()
    write_docs(
        log_dir / "web.jsonl",
        [doc(now - (10 + i) * 10**9, clean_line(i)) for i in range(7)]  # counted
        + [doc(now - 2 * 3600 * 10**9 + i, clean_line(i)) for i in range(4)]  # older than the lookback
        + [doc(now - 20 * 10**9, clean_line(1), cluster="c2")]  # another cluster
        + [doc(now - 20 * 10**9, clean_line(2), namespace="data")]  # another namespace
        + [doc(now - 20 * 10**9, clean_line(3), deployment="nginx-ingress")],  # another deployment
    )
    await external_trainer_takes_gpu(nc)

    record = await submit_workload_training(nc, WORKLOADS)

    assert record["phase"] == "launching", record["message"]
    assert record["log_count"] == 7


# -- listings while a job record changes --------------------------------------------------------------------------


async def test_model_status_and_training_jobs_see_a_job_whose_record_is_being_saved(
    service: Service, nc: nats.NATS, log_dir: Path
) -> None:
    write_docs(log_dir / "web.jsonl", [doc(recent_ns(10) + i * 10**9, clean_line(i)) for i in range(10)])
    await external_trainer_takes_gpu(nc)
    record = await submit_workload_training(nc, WORKLOADS)
    assert record["phase"] == "launching"
    kv = await nc.jetstream().key_value("training-jobs")
    saved = (await kv.get(record["job_id"])).value
    saving = True

    async def save_progress() -> None:
        """Rewrites the record unchanged, as the worker does with each progress report of a training."""
        while saving:
            await kv.put(record["job_id"], saved)
            await asyncio.sleep(0.002)

    saver = asyncio.create_task(save_progress())
    try:
        statuses = [await ask(nc, "model_status") for _ in range(150)]
        counts = [len(await jobs(nc)) for _ in range(150)]
    finally:
        saving = False
        await saver

    assert set(statuses) == {b"training"}
    assert set(counts) == {1}


# -- stopping ------------------------------------------------------------------------------------------------------


async def test_a_service_stopped_right_after_start_stops(nats_server: NatsServer, tmp_path: Path, log_dir: Path) -> None:
    settings = base_settings(nats_server.url, tmp_path, log_dir)
    for _ in range(8):
        svc = await Service.start(settings)
        stopping = asyncio.ensure_future(svc.stop())
        done, _ = await asyncio.wait([stopping], timeout=5)
        assert done, "Service.stop() did not return within 5 s"
