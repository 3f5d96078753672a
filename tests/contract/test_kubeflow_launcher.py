"""The kubeflow launcher (PyTorchJob) against the local server that speaks the Kubernetes API wire format.

The PyTorchJob is validated against the CRD's own OpenAPI v3 schema (kept in `pytorchjob_crd_schema.yaml`, from
kubeflow/training-operator); its pods are made as the Training Operator makes them (`<name>-master-0`,
`<name>-worker-<i>`, replica-type and replica-index labels), and its conditions as the operator writes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nulog.objectstore import MinioConfig
from nulog.protocol import DEFAULT_MASTER_PORT, ErrorEvent, ProgressEvent, encode_event
from training_controller.adapters.launchers.kubeflow import KubeflowLauncher, pytorchjob_state
from training_controller.adapters.launchers.kubernetes import job_manifest
from training_controller.bootstrap import build_launcher
from training_controller.config import Settings
from training_controller.core.errors import LauncherRejected
from training_controller.core.ports import Finished, TrainerOutput, WorkerState

from .kube_fixtures import (
    NS,
    SETTINGS,
    collect,
    make_launcher,
    modified,
    training_spec,
    validate_pytorchjob,
)
from .kube_server import FakeKubeServer, condition, status

NAME = "nulog-train-abc123"
PYTORCHJOBS = f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs"
MINIO_CA = MinioConfig(url="https://minio:9000", ca_file=Path("/etc/minio/ca.crt"))
PROGRESS = ProgressEvent(epoch=1, epochs=1, step=1, steps=2, loss=0.4, percent=50.0, elapsed_s=1.0, eta_s=1.0)


def kubeflow(kube: FakeKubeServer | None, **settings: object) -> KubeflowLauncher:
    launcher = make_launcher(kube, KubeflowLauncher, **settings)
    assert isinstance(launcher, KubeflowLauncher)
    return launcher


def conditions(*kinds: str, failed_message: str = "") -> list[dict]:
    """The conditions the operator has written by then: each earlier one turned False, as it does for Running."""
    reasons = {"Created": "PyTorchJobCreated", "Running": "PyTorchJobRunning", "Succeeded": "PyTorchJobSucceeded",
               "Failed": "PyTorchJobFailed", "Restarting": "PyTorchJobRestarting"}
    messages = {"Created": f"PyTorchJob {NAME} is created.", "Running": f"PyTorchJob {NAME} is running.",
                "Succeeded": f"PyTorchJob {NAME} is successfully completed.", "Failed": failed_message,
                "Restarting": f"PyTorchJob {NAME} is restarting."}
    out = [condition(k, reason=reasons[k], message=messages[k] or None, state="False") for k in kinds]
    out[-1]["status"] = "True"
    if kinds[-1] in ("Succeeded", "Failed"):
        out[0]["status"] = "True"  # Created stays True
    return out


async def test_the_pytorchjob_has_a_master_and_n_minus_1_workers_with_the_job_s_pod(kube: FakeKubeServer) -> None:
    await kubeflow(kube, minio=MINIO_CA, minio_ca_secret="minio-ca", gpu_count=2).launch(training_spec(workers=3))

    [create] = [r for r in kube.requests if r.method == "POST"]
    assert create.path == PYTORCHJOBS
    body = create.body
    validate_pytorchjob(body)
    assert (body["apiVersion"], body["kind"], body["metadata"]["name"]) == ("kubeflow.org/v1", "PyTorchJob", NAME)
    replicas = body["spec"]["pytorchReplicaSpecs"]
    assert {k: (r["replicas"], r["restartPolicy"]) for k, r in replicas.items()} == {"Master": (1, "Never"), "Worker": (2, "Never")}
    assert body["spec"]["runPolicy"] == {"cleanPodPolicy": "Running", "activeDeadlineSeconds": 21600, "ttlSecondsAfterFinished": 86400}
    # The same container, environment, security context and GPU limit as the Job's, in the container the
    # operator knows by name, with the port it takes MASTER_PORT from.
    job_pod = job_manifest(training_spec(workers=3), make_launcher(None, minio_ca_secret="minio-ca", gpu_count=2).settings, MINIO_CA)["spec"]["template"]["spec"]
    job_container = job_pod["containers"][0]
    rendezvous = {"WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}  # set by the operator for a PyTorchJob
    for kind, role in (("Master", "master"), ("Worker", "worker")):
        template = replicas[kind]["template"]
        assert template["metadata"]["labels"]["training-controller/role"] == role
        assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "nulog-train"
        [container] = template["spec"]["containers"]
        assert container["name"] == "pytorch"
        assert container["ports"] == [{"name": "pytorchjob-port", "containerPort": DEFAULT_MASTER_PORT, "protocol": "TCP"}]
        assert container["env"] == [e for e in job_container["env"] if e["name"] not in rendezvous]
        for field in ("image", "command", "args", "securityContext", "resources", "volumeMounts"):
            assert container[field] == job_container[field], field
        assert container["resources"] == {"limits": {"nvidia.com/gpu": "2"}}
        assert template["spec"]["securityContext"] == job_pod["securityContext"]
        assert template["spec"]["volumes"] == job_pod["volumes"]


def test_one_worker_is_a_master_alone_and_the_schema_check_bites() -> None:
    body = kubeflow(None).build(training_spec(workers=1))

    validate_pytorchjob(body)
    assert list(body["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"].append({"name": "HOME", "value": "x"})
    with pytest.raises(pytest.fail.Exception, match="duplicate entries"):
        validate_pytorchjob(body)
    body = kubeflow(None).build(training_spec(workers=1))
    body["spec"]["runPolicy"]["backoffLimitt"] = 1
    with pytest.raises(pytest.fail.Exception, match="backoffLimitt"):
        validate_pytorchjob(body)


async def test_a_pytorchjob_is_followed_through_its_conditions_to_success(kube: FakeKubeServer) -> None:
    launcher = kubeflow(kube)
    await launcher.launch(training_spec(workers=2))
    master, worker = kube.start_pytorchjob_pods(
        NAME, logs={f"{NAME}-master-0": [encode_event(PROGRESS)], f"{NAME}-worker-0": ["not followed"]}
    )
    kube.pytorchjob_object(NAME, conditions=conditions("Created"))

    def succeeds() -> dict:
        kube.end_pod(master, exit_code=0)
        kube.end_pod(worker, exit_code=0)
        return modified(kube.pytorchjob_object(NAME, conditions=conditions("Created", "Running", "Succeeded")))

    kube.watch_script = [[modified(kube.pytorchjob_object(NAME, conditions=conditions("Created", "Running"))), 0.4, succeeds]]
    events = await collect(launcher, "abc123")

    assert [e for e in events if isinstance(e, TrainerOutput)] == [TrainerOutput(PROGRESS)]
    assert events[-1] == Finished(succeeded=True, message=f"PyTorchJobSucceeded: PyTorchJob {NAME} is successfully completed.")
    # Rank 0 is the master, worker i is rank i+1, as the operator sets RANK.
    assert {(e.index, e.role, e.name) for e in events if isinstance(e, WorkerState)} == {(0, "master", master), (1, "worker", worker)}
    [listing] = [r for r in kube.requests if r.path == PYTORCHJOBS and r.method == "GET" and "watch" not in r.query]
    assert listing.query["fieldSelector"] == f"metadata.name={NAME}"
    assert kube.watches("pytorchjobs")[0].query["resourceVersion"]
    assert {r.path for r in kube.of("GET", "/log")} == {f"/api/v1/namespaces/{NS}/pods/{master}/log"}
    assert kube.of("PATCH", "") == []  # the role labels are in the templates


async def test_a_failed_worker_ends_the_pytorchjob_and_finished_names_it(kube: FakeKubeServer) -> None:
    launcher = kubeflow(kube)
    await launcher.launch(training_spec(workers=3))
    master, first, second = kube.start_pytorchjob_pods(NAME)
    failed = f"PyTorchJob {NAME} is failed because 1 Worker replica(s) failed."

    def fails() -> dict:
        kube.end_pod(second, exit_code=1, lines=[encode_event(ErrorEvent(message="CUDA error: out of memory"))])
        return modified(kube.pytorchjob_object(NAME, conditions=conditions("Created", "Running", "Failed", failed_message=failed)))

    kube.watch_script = [[0.3, fails]]
    events = await collect(launcher, "abc123")

    assert events[-1] == Finished(
        succeeded=False,
        message=f"PyTorchJobFailed: {failed}; pod {second} (index 2, worker) failed: exit code 1 (Error); "
        "last log line: CUDA error: out of memory",
    )
    assert WorkerState(2, "worker", second, "failed", "exit code 1 (Error)") in events


async def test_cancel_deletes_the_pytorchjob_and_waits_until_its_pods_stopped(kube: FakeKubeServer) -> None:
    launcher = kubeflow(kube)
    await launcher.launch(training_spec(workers=2))
    kube.start_pytorchjob_pods(NAME)

    await launcher.cancel("abc123")

    [delete] = kube.of("DELETE", f"{PYTORCHJOBS}/{NAME}")
    assert delete.body["propagationPolicy"] == "Background"
    assert kube.pytorchjobs == {} and kube.pods == {}


async def test_list_jobs_maps_the_pytorchjobs_conditions(kube: FakeKubeServer) -> None:
    launcher = kubeflow(kube)
    for job_id in ("run1", "ok1", "bad1"):
        await launcher.launch(training_spec(job_id))
    kube.pytorchjob_object("nulog-train-run1", conditions=conditions("Created", "Running"))
    kube.pytorchjob_object("nulog-train-ok1", conditions=conditions("Created", "Running", "Succeeded"))
    kube.pytorchjob_object("nulog-train-bad1", conditions=conditions("Created", "Failed", failed_message="1 Master replica(s) failed."))

    jobs = {j.job_id: (j.state, j.message) for j in await launcher.list_jobs()}

    assert jobs == {
        "run1": ("running", f"PyTorchJobRunning: PyTorchJob {NAME} is running."),
        "ok1": ("succeeded", "PyTorchJobSucceeded: PyTorchJob nulog-train-abc123 is successfully completed."),
        "bad1": ("failed", "PyTorchJobFailed: 1 Master replica(s) failed."),
    }
    assert await launcher.ping() is True


async def test_a_cluster_without_the_training_operator_is_told_so(kube: FakeKubeServer) -> None:
    kube.create_error = status(404, "NotFound", "the server could not find the requested resource")

    with pytest.raises(LauncherRejected, match="is the Kubeflow Training Operator installed"):
        await kubeflow(kube).launch(training_spec())


def test_bootstrap_builds_the_kubeflow_launcher_from_the_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    common = dict(nats_server_url="nats://127.0.0.1:4222", log_files_dir=tmp_path, launcher="kubeflow",
                  nulog_train_image_name="nulog-train", job_namespace=SETTINGS["namespace"])
    minio = dict(object_store="minio", minio_server_url="http://minio:9000", minio_access_key="a", minio_secret_key="s")

    settings = Settings(**common, **minio)
    launcher = build_launcher(settings.launch, settings.store)

    assert isinstance(launcher, KubeflowLauncher) and launcher.namespace == NS
    with pytest.raises(ValueError, match="LAUNCHER=kubeflow needs OBJECT_STORE=minio"):
        Settings(**common, local_store_dir=tmp_path / "store")


def test_a_restarting_pytorchjob_still_runs_and_only_succeeded_or_failed_end_it() -> None:
    def job(*kinds: str) -> dict:
        return {"metadata": {"name": NAME}, "status": {"conditions": conditions(*kinds, failed_message="x")}}

    assert pytorchjob_state({"metadata": {"name": NAME}}) == ("running", "not yet seen by the training operator")
    assert pytorchjob_state(job("Created")) == ("running", f"PyTorchJobCreated: PyTorchJob {NAME} is created.")
    assert pytorchjob_state(job("Created", "Running", "Restarting"))[0] == "running"
    assert pytorchjob_state(job("Created", "Running", "Succeeded"))[0] == "succeeded"
    assert pytorchjob_state(job("Created", "Running", "Failed")) == ("failed", "PyTorchJobFailed: x")
    deleting = {"metadata": {"name": NAME, "deletionTimestamp": "2026-01-01T00:30:00Z"}, "status": {}}
    assert pytorchjob_state(deleting) == ("failed", "the PyTorchJob is being deleted")
