"""One training across several workers with the kubernetes launcher: an Indexed Job and its headless Service,
against the local server that speaks the Kubernetes API wire format.

The bodies are asserted as sent and validated with `kubernetes-validate --strict`; the pods are made the way
the Job controller makes those of an Indexed Job (completion index annotation and label, hostname, subdomain).
"""

from __future__ import annotations

import pytest

from nulog.protocol import DEFAULT_MASTER_PORT, ErrorEvent, StageEvent, encode_event
from training_controller.core.errors import InvalidRequest
from training_controller.core.ports import Finished, TrainerOutput, WorkerState

from .kube_fixtures import (
    NS,
    TRAINING_LABELS,
    collect,
    make_launcher,
    modified,
    training_spec,
    validate_strict,
)
from .kube_server import FakeKubeServer, condition, status

NAME = "nulog-train-abc123"


def env_of(container: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container["env"]}


async def test_several_workers_make_an_indexed_job_and_a_headless_service_owned_by_it(kube: FakeKubeServer) -> None:
    await make_launcher(kube).launch(training_spec(workers=3))

    [create_job] = kube.of("POST", f"/apis/batch/v1/namespaces/{NS}/jobs")
    job = create_job.body
    validate_strict(job)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    # One failed worker fails the whole Job at once: no retry of an index, no failed index tolerated.
    assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (0, 0)
    assert {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "NotIn", "values": [0]}} in spec["podFailurePolicy"]["rules"]
    assert "backoffLimit" not in spec
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == NAME
    assert spec["template"]["metadata"]["labels"] == TRAINING_LABELS  # the role differs per index: labelled later
    [container] = pod["containers"]
    env = env_of(container)
    assert env["WORLD_SIZE"] == "3"
    assert env["MASTER_ADDR"] == f"{NAME}-0.{NAME}"  # pod 0's hostname under the Service's subdomain
    assert env["MASTER_PORT"] == str(DEFAULT_MASTER_PORT)
    assert env["LOCAL_RANK"] == "0"
    assert "RANK" not in env  # the trainer reads JOB_COMPLETION_INDEX, set by the Job controller per pod
    assert container["ports"] == [{"name": "rendezvous", "containerPort": DEFAULT_MASTER_PORT, "protocol": "TCP"}]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}  # per pod

    [create_service] = kube.of("POST", f"/api/v1/namespaces/{NS}/services")
    service = create_service.body
    validate_strict(service)
    assert service["metadata"]["name"] == NAME and service["metadata"]["labels"] == TRAINING_LABELS
    assert service["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": NAME, "uid": kube.jobs[NAME]["metadata"]["uid"]}
    ]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"training-controller/job-id": "abc123"}
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in service["spec"]["ports"]] == [DEFAULT_MASTER_PORT]


async def test_one_worker_stays_a_plain_job_without_a_service(kube: FakeKubeServer) -> None:
    await make_launcher(kube).launch(training_spec(workers=1))

    job = kube.of("POST", "/jobs")[0].body
    assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"]["spec"]
    assert job["spec"]["template"]["metadata"]["labels"]["training-controller/role"] == "master"
    assert not {"WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"} & set(env_of(job["spec"]["template"]["spec"]["containers"][0]))
    assert kube.of("POST", "/services") == []


async def test_a_launch_again_after_a_restart_creates_the_service_the_job_lacks(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    await launcher.launch(training_spec(workers=2))
    kube.services.clear()  # the controller died between the Job and its Service

    await launcher.launch(training_spec(workers=2))

    assert [r.method for r in kube.requests if "/jobs" in r.path or "/services" in r.path] == [
        "POST", "POST", "POST", "GET", "POST"
    ]
    assert kube.services[NAME]["metadata"]["ownerReferences"][0]["uid"] == kube.jobs[NAME]["metadata"]["uid"]


def test_a_job_id_too_long_for_the_pods_hostnames_is_refused() -> None:
    job_id = "a" * 50  # nulog-train-<50>-0 would be 64 characters
    make_launcher(None).build(training_spec(job_id))  # one pod has no index in its name
    with pytest.raises(InvalidRequest, match="must fit in 63 characters"):
        make_launcher(None).build(training_spec(job_id, workers=2))


async def test_the_pods_of_an_indexed_job_are_labelled_with_their_role_and_followed(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    await launcher.launch(training_spec(workers=3))
    master, *workers = kube.start_indexed_pods(
        NAME, logs={0: [encode_event(StageEvent(stage="training"))], 1: ["worker 1 says hello"]}
    )

    def ends() -> dict:
        for pod in (master, *workers):
            kube.end_pod(pod, exit_code=0)
        return modified(kube.job_object(NAME, conditions=[condition("Complete")]))

    kube.watch_script = [[0.6, ends]]
    events = await collect(launcher, "abc123")

    # `kubectl get pods -l app.kubernetes.io/name=nulog-train -L training-controller/role` lists a master and its workers.
    roles = {p["metadata"]["name"]: p["metadata"]["labels"].get("training-controller/role") for p in kube.pods.values()}
    assert roles == {master: "master", workers[0]: "worker", workers[1]: "worker"}
    patches = kube.of("PATCH", "")
    assert {r.path.rsplit("/", 1)[1] for r in patches} == {master, *workers}
    assert all(r.body == {"metadata": {"labels": {"training-controller/role": roles[r.path.rsplit("/", 1)[1]]}}} for r in patches)
    # Progress comes from the master's log alone.
    assert [e for e in events if isinstance(e, TrainerOutput)] == [TrainerOutput(StageEvent(stage="training"))]
    assert {r.path for r in kube.of("GET", "/log")} == {f"/api/v1/namespaces/{NS}/pods/{master}/log"}
    running = {(e.index, e.role, e.name) for e in events if isinstance(e, WorkerState) and e.state == "running"}
    assert running == {(0, "master", master), (1, "worker", workers[0]), (2, "worker", workers[1])}
    assert events[-1] == Finished(succeeded=True, message="the Job completed")


async def test_a_failed_worker_fails_the_training_and_finished_names_that_worker(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    await launcher.launch(training_spec(workers=2))
    master, worker = kube.start_indexed_pods(NAME, logs={0: [encode_event(StageEvent(stage="training"))]})

    def worker_dies() -> dict:
        kube.end_pod(
            worker, exit_code=1,
            lines=["epoch 1 step 3", encode_event(ErrorEvent(message="RuntimeError: NCCL communicator was aborted")), "bye"],
        )
        kube.end_pod(master, exit_code=143)  # then stopped by the Job controller
        message = f"Container train for pod {NS}/{worker} failed with exit code 1 matching FailJob rule at index 1"
        return modified(kube.job_object(NAME, conditions=[condition("FailureTarget", reason="PodFailurePolicy", message=message),
                                                          condition("Failed", reason="PodFailurePolicy", message=message)]))

    kube.watch_script = [[0.4, worker_dies]]
    events = await collect(launcher, "abc123")

    final = events[-1]
    assert isinstance(final, Finished) and not final.succeeded
    assert f"pod {worker} (index 1, worker) failed: exit code 1 (Error)" in final.message
    assert final.message.endswith("last log line: RuntimeError: NCCL communicator was aborted")
    [tail] = [r for r in kube.of("GET", f"/pods/{worker}/log")]
    assert tail.query["container"] == "train" and "follow" not in tail.query and int(tail.query["tailLines"]) > 0
    assert WorkerState(1, "worker", worker, "failed", "exit code 1 (Error)") in events


async def test_a_killed_worker_is_named_even_when_the_job_s_reason_names_no_pod(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    await launcher.launch(training_spec(workers=2))
    master, worker = kube.start_indexed_pods(NAME)

    def worker_killed() -> dict:
        kube.end_pod(worker, exit_code=137, reason="OOMKilled", lines=["loading 2000000 lines"])
        kube.end_pod(master, exit_code=143)
        return modified(kube.job_object(NAME, conditions=[condition(
            "Failed", reason="MaxFailedIndexesExceeded", message="Job has exceeded the specified maximal number of failed indexes")]))

    kube.watch_script = [[0.3, worker_killed]]
    events = await collect(launcher, "abc123")

    assert events[-1].message == (
        "MaxFailedIndexesExceeded: Job has exceeded the specified maximal number of failed indexes; "
        f"pod {worker} (index 1, worker) failed: exit code 137 (OOMKilled); last log line: loading 2000000 lines"
    )


async def test_role_labels_that_may_not_be_set_leave_the_training_followed(kube: FakeKubeServer, caplog: pytest.LogCaptureFixture) -> None:
    launcher = make_launcher(kube)
    await launcher.launch(training_spec(workers=2))
    kube.start_indexed_pods(NAME, logs={0: [encode_event(StageEvent(stage="training"))]})
    kube.patch_error = status(403, "Forbidden", 'pods "x" is forbidden: cannot patch resource "pods"')
    kube.watch_script = [[0.4, lambda: modified(kube.job_object(NAME, conditions=[condition("Complete")]))]]

    events = await collect(launcher, "abc123")

    assert events[-1].succeeded and TrainerOutput(StageEvent(stage="training")) in events
    assert 'resources: ["pods"], verbs: ["patch"]' in caplog.text
    assert len(kube.of("PATCH", "")) == 1  # not asked again and again


async def test_cancel_of_an_indexed_job_waits_for_all_its_pods_and_its_service_goes_with_it(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    await launcher.launch(training_spec(workers=3))
    kube.start_indexed_pods(NAME)

    await launcher.cancel("abc123")

    assert kube.jobs == {} and kube.pods == {} and kube.services == {}
