"""The kubernetes launcher's Job as a local server that speaks the Kubernetes API wire format receives it.

The official client is pointed at the server, so what is asserted is what a real API server would receive: the
Job body as sent (validated with `kubernetes-validate --strict`), the MinIO settings the pod gets, and how the
answers (409, 403, 5xx, no server at all) become the launcher's results. Following is in
test_kubernetes_events.py, cancelling and listing in test_kubernetes_jobs.py, several workers in
test_distributed_kubernetes.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from nulog.objectstore import MinioConfig
from training_controller.adapters.launchers.kubernetes import KubernetesLauncher
from training_controller.config import ConfigError, KubernetesSettings, load_settings
from training_controller.core.errors import LauncherForbidden, LauncherUnavailable, PermanentError

from .kube_fixtures import NS, TRAINING_LABELS, make_launcher, training_spec, validate_strict
from .kube_server import FakeKubeServer, status

SPEC = training_spec()
LABELS = TRAINING_LABELS
POD_LABELS = {**LABELS, "training-controller/role": "master"}


# -- launch -------------------------------------------------------------------------------------------------


async def test_launch_sends_the_training_job_as_a_batch_v1_job(kube: FakeKubeServer) -> None:
    await make_launcher(kube).launch(SPEC)

    [create] = kube.of("POST", f"/apis/batch/v1/namespaces/{NS}/jobs")
    job = create.body
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "nulog-train-abc123"
    assert job["metadata"]["namespace"] == NS
    assert job["metadata"]["labels"] == LABELS
    spec = job["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["activeDeadlineSeconds"] == 6 * 3600
    assert spec["ttlSecondsAfterFinished"] == 86400
    assert spec["podFailurePolicy"] == {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "NotIn", "values": [0]}},
        ]
    }
    template = spec["template"]
    assert template["metadata"]["labels"] == POD_LABELS
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    [container] = pod["containers"]
    assert container["name"] == "train"
    assert container["image"] == "rancher/nulog-train:v0.1.0"
    assert container["command"] + container["args"] == SPEC.command("python")
    assert container["command"] == ["python", "-m", "nulog.job"]
    assert container["args"][:2] == ["--job-id", "abc123"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["MINIO_SERVER_URL"] == {"name": "MINIO_SERVER_URL", "value": "http://minio.opni-training.svc:9000"}
    for name in ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": "training-controller", "key": name}}}
    assert "serviceAccountName" not in pod and "nodeSelector" not in pod and "tolerations" not in pod


async def test_launch_applies_the_optional_pod_settings(kube: FakeKubeServer) -> None:
    launcher = make_launcher(
        kube,
        gpu_resource="amd.com/gpu",
        gpu_count=2,
        backoff_limit=0,
        active_deadline_seconds=600,
        ttl_seconds_after_finished=60,
        service_account="nulog-train",
        credentials_secret="minio-creds",
        access_key_key="accesskey",
        secret_key_key="secretkey",
        node_selector={"gpu": "true"},
        tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        image_pull_secrets=("regcred",),
        resource_requests={"cpu": "2", "memory": "8Gi"},
    )
    await launcher.launch(SPEC)

    job = kube.of("POST", "/jobs")[0].body
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert container["resources"] == {"limits": {"amd.com/gpu": "2"}, "requests": {"cpu": "2", "memory": "8Gi"}}
    assert pod["serviceAccountName"] == "nulog-train"
    assert pod["nodeSelector"] == {"gpu": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs == {
        "MINIO_ACCESS_KEY": {"name": "minio-creds", "key": "accesskey"},
        "MINIO_SECRET_KEY": {"name": "minio-creds", "key": "secretkey"},
    }


async def test_launch_without_gpu_count_sets_no_gpu_limit(kube: FakeKubeServer) -> None:
    await make_launcher(kube, gpu_count=0).launch(SPEC)

    container = kube.of("POST", "/jobs")[0].body["spec"]["template"]["spec"]["containers"][0]
    assert "limits" not in container.get("resources", {})


async def test_the_job_as_sent_holds_no_secret_value(kube: FakeKubeServer) -> None:
    await make_launcher(kube).launch(SPEC)

    env = kube.of("POST", "/jobs")[0].body["spec"]["template"]["spec"]["containers"][0]["env"]
    secret_vars = [e for e in env if "KEY" in e["name"] or "SECRET" in e["name"] or "PASSWORD" in e["name"]]
    assert secret_vars and all("value" not in e and "secretKeyRef" in e["valueFrom"] for e in secret_vars)


async def test_launch_of_a_job_that_exists_already_counts_as_launched(kube: FakeKubeServer) -> None:
    launcher = make_launcher(kube)
    await launcher.launch(SPEC)
    await launcher.launch(SPEC)  # after a restart: the API answers 409 AlreadyExists

    assert len(kube.of("POST", "/jobs")) == 2
    assert list(kube.jobs) == ["nulog-train-abc123"]


async def test_launch_without_permission_names_the_missing_rbac_rule(kube: FakeKubeServer) -> None:
    kube.create_error = status(
        403,
        "Forbidden",
        'jobs.batch is forbidden: User "system:serviceaccount:opni-training:training-controller" cannot create '
        'resource "jobs" in API group "batch" in the namespace "opni-training"',
        group="batch",
        kind="jobs",
    )
    with pytest.raises(LauncherForbidden) as caught:
        await make_launcher(kube).launch(SPEC)

    message = str(caught.value)
    assert isinstance(caught.value, PermanentError)
    assert "create jobs.batch in namespace opni-training" in message
    assert 'verbs: ["create"]' in message and 'resources: ["jobs"]' in message and 'apiGroups: ["batch"]' in message
    assert "cannot create resource" in message  # the API server's own explanation is kept


async def test_launch_when_the_api_server_fails_is_a_temporary_error(kube: FakeKubeServer) -> None:
    kube.create_error = status(500, "InternalError", "etcdserver: request timed out")
    with pytest.raises(LauncherUnavailable, match="etcdserver: request timed out"):
        await make_launcher(kube).launch(SPEC)


async def test_launch_when_the_api_server_is_unreachable_is_a_temporary_error() -> None:
    configuration = client.Configuration(host="http://127.0.0.1:9")
    configuration.retries = 0
    launcher = KubernetesLauncher(
        client.ApiClient(configuration), KubernetesSettings(namespace=NS, image_name="nulog", request_timeout_seconds=2)
    )
    with pytest.raises(LauncherUnavailable, match="cannot reach the Kubernetes API"):
        await launcher.launch(SPEC)
    assert await launcher.ping() is False


async def test_a_job_id_that_cannot_name_a_job_is_refused_before_any_request(kube: FakeKubeServer) -> None:
    with pytest.raises(PermanentError, match="cannot name a Kubernetes Job"):
        await make_launcher(kube).launch(training_spec("Bad_ID"))
    assert kube.requests == []


# -- what the pod is given ----------------------------------------------------------------------------------


async def test_the_training_job_carries_the_minio_tls_settings_the_controller_was_given(kube: FakeKubeServer) -> None:
    minio = MinioConfig(url="https://minio.opni-training.svc:9000", verify_tls=True, ca_file=Path("/etc/minio/ca.crt"))
    await make_launcher(kube, minio=minio, minio_ca_secret="minio-ca").launch(SPEC)

    job = kube.of("POST", "/jobs")[0].body
    validate_strict(job)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MINIO_SERVER_URL"] == "https://minio.opni-training.svc:9000"
    assert env["MINIO_VERIFY_TLS"] == "true"
    assert env["MINIO_CA_FILE"] == "/etc/minio/ca.crt"
    # The same bundle, at the same path, from the Secret the settings name.
    assert {"name": "minio-ca", "mountPath": "/etc/minio/ca.crt", "subPath": "ca.crt", "readOnly": True} in container["volumeMounts"]
    assert {"name": "minio-ca", "secret": {"secretName": "minio-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in pod["volumes"]
    assert MinioConfig.from_env({k: v for k, v in env.items() if v is not None}).public_env() == minio.public_env()


async def test_a_ca_bundle_can_come_from_a_config_map_and_verification_off_reaches_the_pod(kube: FakeKubeServer) -> None:
    minio = MinioConfig(url="https://minio:9000", verify_tls=False, ca_file=Path("/etc/ssl/minio/bundle.pem"))
    await make_launcher(kube, minio=minio, minio_ca_config_map="minio-ca-bundle").launch(SPEC)

    pod = kube.of("POST", "/jobs")[0].body["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MINIO_VERIFY_TLS"] == "false"
    assert {"name": "minio-ca", "configMap": {"name": "minio-ca-bundle", "items": [{"key": "bundle.pem", "path": "bundle.pem"}]}} in pod["volumes"]


def test_a_ca_bundle_the_pod_could_not_get_is_refused_when_the_launcher_is_made() -> None:
    minio = MinioConfig(url="https://minio:9000", ca_file=Path("/etc/minio/ca.crt"))
    with pytest.raises(ValueError, match="MINIO_CA_SECRET or MINIO_CA_CONFIG_MAP"):
        make_launcher(None, minio=minio)


def test_without_a_ca_bundle_the_pod_mounts_none() -> None:
    job = make_launcher(None).build(SPEC)

    assert [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]] == ["tmp"]
    assert "MINIO_CA_FILE" not in {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_spec_s_image_entrypoint_and_gpus_replace_the_defaults() -> None:
    spec = training_spec(image="registry.example/other-trainer:2", entrypoint=("python", "-m", "other.job"), gpus_per_worker=4)
    job = make_launcher(None, gpu_count=1).build(spec)

    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/other-trainer:2"
    assert container["command"] == ["python", "-m", "other.job"]
    assert container["command"] + container["args"] == spec.command("python")
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "4"}}
    no_gpu = make_launcher(None, gpu_count=1).build(training_spec(gpus_per_worker=0))
    assert "resources" not in no_gpu["spec"]["template"]["spec"]["containers"][0]


def test_the_new_settings_are_read_from_their_variables_and_one_ca_source_is_allowed() -> None:
    base = {"NATS_SERVER_URL": "nats://nats:4222", "LOG_FILES_DIR": "/tmp", "LOCAL_STORE_DIR": "/tmp/store"}
    kube = load_settings({**base, "MINIO_CA_SECRET": "minio-ca", "KUBE_CANCEL_TIMEOUT_SECONDS": "45"}).launch.kubernetes
    assert (kube.minio_ca_secret, kube.minio_ca_config_map, kube.cancel_timeout_seconds) == ("minio-ca", None, 45.0)
    assert load_settings({**base, "MINIO_CA_CONFIG_MAP": "minio-ca"}).launch.kubernetes.minio_ca_config_map == "minio-ca"

    with pytest.raises(ConfigError, match="MINIO_CA_CONFIG_MAP: set MINIO_CA_SECRET or MINIO_CA_CONFIG_MAP, not both"):
        load_settings({**base, "MINIO_CA_SECRET": "a", "MINIO_CA_CONFIG_MAP": "b"})

