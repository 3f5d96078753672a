"""The deployment files and the Job the kubernetes launcher builds, checked without a cluster.

Every object must pass `kubernetes-validate --strict` (unknown fields rejected) against the newest Kubernetes
version the installed kubernetes-validate ships, which must be 1.30 or newer; beyond the schema, the checks are
the promises the files make: no secret value outside the placeholder example, RBAC limited to what the
launcher calls, and every pod fit for the "restricted" pod security standard that the namespace enforces.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.version import Version

from nulog.objectstore import MinioConfig
from tests.contract.kube_fixtures import K8S_VERSION, training_spec, validate_strict
from training_controller.adapters.launchers.kubeflow import pytorchjob_manifest
from training_controller.adapters.launchers.kubernetes import job_manifest, service_manifest
from training_controller.config import KubernetesSettings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = [ROOT / "rbac.yaml", ROOT / "training_controller.yaml", *sorted((ROOT / "k8s").glob("*.yaml"))]
KUSTOMIZATION = ROOT / "k8s" / "kustomization.yaml"
EXAMPLE_SECRET = ROOT / "k8s" / "secret.example.yaml"
NAMESPACE = "opni-training"
SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL)", re.IGNORECASE)
MINIO = MinioConfig(url="http://minio.opni-training.svc:9000")


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for every Kubernetes object in the deployment files."""
    return [(p.relative_to(ROOT).as_posix(), doc) for p in MANIFESTS if p != KUSTOMIZATION for doc in load(p)]


def find(kind: str, name: str) -> dict[str, Any]:
    [obj] = [doc for _, doc in resources() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return obj


def _settings(**settings: Any) -> KubernetesSettings:
    return KubernetesSettings(namespace=NAMESPACE, image_name="registry.example/nulog-train", image_tag="0.1.0", **settings)


def built_job(*, workers: int = 1, minio: MinioConfig = MINIO, **settings: Any) -> dict[str, Any]:
    """The Job the kubernetes launcher sends for a training of `workers` workers."""
    return job_manifest(training_spec("0123456789ab", workers=workers), _settings(**settings), minio)


def built_pytorchjob(*, workers: int = 3, **settings: Any) -> dict[str, Any]:
    """The PyTorchJob the kubeflow launcher sends."""
    return pytorchjob_manifest(training_spec("0123456789ab", workers=workers), _settings(**settings), MINIO)


FULL_SETTINGS = dict(
    service_account="nulog-train",
    node_selector={"nvidia.com/gpu.present": "true"},
    tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60},),
    image_pull_secrets=("regcred",),
    image_pull_policy="IfNotPresent",
    resource_requests={"cpu": "4", "memory": "16Gi"},
)


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """(what, pod spec) of every workload, the launcher's Job included."""
    pods = [
        (f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"])
        for _, doc in resources()
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
    ]
    pods.append(("the launcher's Job", built_job()["spec"]["template"]["spec"]))
    pods.append(("the launcher's Job, all options", built_job(**FULL_SETTINGS)["spec"]["template"]["spec"]))
    pods.append(("the launcher's Indexed Job", built_job(workers=3)["spec"]["template"]["spec"]))
    pods.append(("the launcher's Job with a CA", built_job(minio=CA_MINIO, minio_ca_secret="minio-ca")["spec"]["template"]["spec"]))
    for kind, replica in built_pytorchjob()["spec"]["pytorchReplicaSpecs"].items():
        pods.append((f"the kubeflow launcher's {kind}", replica["template"]["spec"]))
    return pods


def test_kubernetes_validate_ships_a_version_of_at_least_1_30() -> None:
    assert Version(K8S_VERSION) >= Version("1.30"), K8S_VERSION


@pytest.mark.parametrize("path", [p for p in MANIFESTS if p != KUSTOMIZATION], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_manifest_passes_strict_validation(path: Path) -> None:
    docs = load(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        validate_strict(doc)


def test_the_cli_agrees_with_strict_validation() -> None:
    files = [str(p) for p in MANIFESTS if p != KUSTOMIZATION]
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", K8S_VERSION, *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout and "WARN" not in result.stdout


CA_MINIO = MinioConfig(url="https://minio.opni-training.svc:9000", ca_file="/etc/minio/ca.crt")
BUILDS = {
    "defaults": {},
    "all-options": FULL_SETTINGS,
    "several-workers": {"workers": 4},
    "ca-from-a-secret": {"minio": CA_MINIO, "minio_ca_secret": "minio-ca"},
    "ca-from-a-config-map": {"minio": CA_MINIO, "minio_ca_config_map": "minio-ca", "workers": 2},
}


@pytest.mark.parametrize("options", BUILDS.values(), ids=BUILDS.keys())
def test_the_job_the_launcher_builds_passes_strict_validation(options: dict[str, Any]) -> None:
    job = built_job(**options)

    validate_strict(job)
    assert job["metadata"]["name"] == "nulog-train-0123456789ab"


def test_the_headless_service_of_several_workers_passes_strict_validation() -> None:
    validate_strict(service_manifest(training_spec("0123456789ab", workers=3), _settings(), owner_uid="5d4b9c1e"))


def test_every_object_is_in_the_training_namespace() -> None:
    for where, doc in resources():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{where}: {doc['kind']}/{doc['metadata']['name']}"
    assert find("Namespace", NAMESPACE)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# -- secrets --------------------------------------------------------------------------------------------------


def test_only_the_example_secret_holds_secret_values_and_they_are_placeholders() -> None:
    secrets = [(where, doc) for where, doc in resources() if doc["kind"] == "Secret"]
    assert [where for where, _ in secrets] == [EXAMPLE_SECRET.relative_to(ROOT).as_posix()]
    [(_, secret)] = secrets
    assert "data" not in secret
    assert secret["stringData"] and all("change-me" in value for value in secret["stringData"].values())


def _env_literals(pod: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (env["name"], env["value"])
        for container in pod["containers"] + pod.get("initContainers", [])
        for env in container.get("env", [])
        if "value" in env
    ]


def test_no_workload_or_config_map_holds_a_secret_literal() -> None:
    for what, pod in pod_specs():
        for name, _ in _env_literals(pod):
            assert not SECRET_NAME.search(name), f"{what}: env {name} is a literal; take it from a Secret"
    for where, doc in resources():
        if doc["kind"] == "ConfigMap":
            for key in doc.get("data", {}):
                assert not SECRET_NAME.search(key) or key == "CREDENTIALS_SECRET_NAME", f"{where}: {key}"


def test_the_job_takes_the_minio_credentials_from_the_secret_by_reference() -> None:
    env = {e["name"]: e for e in built_job()["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "training-controller", "key": name}
    secret_keys = set(find("Secret", "training-controller")["stringData"])
    assert {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"} <= secret_keys


# -- RBAC -----------------------------------------------------------------------------------------------------


def test_the_role_grants_only_what_the_launcher_uses() -> None:
    role = find("Role", "training-controller")
    granted = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        ("batch", "jobs"): sorted(["create", "get", "list", "watch", "delete"]),
        ("kubeflow.org", "pytorchjobs"): sorted(["create", "get", "list", "watch", "delete"]),
        ("", "services"): ["create"],
        ("", "pods"): sorted(["get", "list", "watch", "patch"]),
        ("", "pods/log"): ["get"],
    }
    assert all("resourceNames" not in rule and "nonResourceURLs" not in rule for rule in role["rules"])
    assert not [doc for _, doc in resources() if doc["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_the_role_is_bound_to_the_service_account_the_controller_runs_as() -> None:
    binding = find("RoleBinding", "training-controller")
    deployment = find("Deployment", "training-controller")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    find("ServiceAccount", account)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "training-controller"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]


# -- the controller -------------------------------------------------------------------------------------------


def _port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def test_the_controller_runs_non_root_with_a_read_only_root_filesystem() -> None:
    pod = find("Deployment", "training-controller")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_the_controller_has_liveness_and_readiness_probes_on_port_8080() -> None:
    [container] = find("Deployment", "training-controller")["spec"]["template"]["spec"]["containers"]
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz" and _port(container, live["port"]) == 8080
    assert ready["path"] == "/readyz" and _port(container, ready["port"]) == 8080
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env.get("HTTP_PORT", "8080") == "8080"
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_controller_selects_the_production_adapters_and_reads_its_settings() -> None:
    deployment = find("Deployment", "training-controller")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LOG_SOURCE"] == "elasticsearch"
    assert env["OBJECT_STORE"] == "minio"
    assert env["LAUNCHER"] == "kubernetes"
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"configMapRef": "training-controller-config", "secretRef": "training-controller"}
    config = find("ConfigMap", "training-controller-config")["data"]
    for name in ("NATS_SERVER_URL", "ES_ENDPOINT", "MINIO_SERVER_URL", "JOB_NAMESPACE", "NULOG_TRAIN_IMAGE_NAME"):
        assert config.get(name), f"the ConfigMap lacks {name}"
    assert config["JOB_NAMESPACE"] == NAMESPACE  # where rbac.yaml grants the Role
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"


def test_the_controller_service_is_scraped_by_prometheus_on_8080() -> None:
    service = find("Service", "training-controller")
    deployment = find("Deployment", "training-controller")
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert [p["port"] for p in service["spec"]["ports"]] == [8080]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


# -- every pod ------------------------------------------------------------------------------------------------


def test_every_pod_meets_the_restricted_pod_security_standard() -> None:
    for what, pod in pod_specs():
        pod_sc = pod.get("securityContext", {})
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container.get("securityContext", {})
            where = f"{what}, container {container['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser")) != 0, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert not sc.get("privileged"), where
            seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
            assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), where
            assert sc.get("readOnlyRootFilesystem") is True, where
        for volume in pod.get("volumes", []):
            assert "hostPath" not in volume, what
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), what


def test_nats_runs_jetstream_on_a_persistent_volume() -> None:
    config = find("ConfigMap", "nats-config")["data"]["nats.conf"]
    match = re.search(r"jetstream\s*\{[^}]*store_dir:\s*(\S+)", config)
    assert match, "nats.conf does not enable JetStream with a store_dir"
    nats = find("StatefulSet", "nats")
    [container] = nats["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("nats:")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == match.group(1)
    assert [t["metadata"]["name"] for t in nats["spec"]["volumeClaimTemplates"]] == ["data"]
    url = find("ConfigMap", "training-controller-config")["data"]["NATS_SERVER_URL"]
    assert url == f"nats://nats.{NAMESPACE}.svc:4222"
    find("Service", "nats")


def test_minio_keeps_its_data_on_a_claim_and_its_root_user_in_the_secret() -> None:
    minio = find("Deployment", "minio")
    pod = minio["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["minio-data"]
    find("PersistentVolumeClaim", "minio-data")
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    for name in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "training-controller"
    find("Service", "minio")


# -- kustomize ------------------------------------------------------------------------------------------------


def test_the_kustomization_lists_every_file_under_k8s() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in (ROOT / "k8s").glob("*.yaml") if p != KUSTOMIZATION)
    assert sorted(listed) == on_disk
    assert kustomization["namespace"] == NAMESPACE


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kustomize_builds_k8s_into_valid_objects() -> None:
    targets = [ROOT / "k8s"] + ([ROOT] if (ROOT / "kustomization.yaml").exists() else [])
    for target in targets:
        result = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        assert {d["kind"] for d in docs} >= {"Namespace", "ConfigMap", "Secret", "StatefulSet", "Deployment", "Service"}
        for doc in docs:
            validate_strict(doc)


# -- the images -----------------------------------------------------------------------------------------------


def _stage(dockerfile: str, target: str) -> str:
    match = re.search(rf"^FROM .+ AS {target}\n(.*?)(?=^FROM |\Z)", dockerfile, re.MULTILINE | re.DOTALL)
    assert match, f"the Dockerfile has no target {target}"
    return match.group(0)


def test_the_controller_image_has_no_torch_and_runs_serve_as_a_non_root_user() -> None:
    stage = _stage((ROOT / "Dockerfile").read_text(), "controller")
    assert re.search(r"^FROM python:3\.11-slim", stage, re.MULTILINE)
    installs = [line for line in stage.splitlines() if "pip install" in line]
    assert installs and not [line for line in installs if "nulog]" in line or "torch" in line]
    assert re.search(r"^USER 10001", stage, re.MULTILINE)
    assert re.search(r"^EXPOSE 8080", stage, re.MULTILINE)
    assert 'ENTRYPOINT ["training-controller"]' in stage and 'CMD ["serve"]' in stage


def test_the_trainer_image_runs_the_job_entrypoint_as_a_non_root_user() -> None:
    stage = _stage((ROOT / "Dockerfile").read_text(), "trainer")
    assert "[nulog]" in stage
    assert re.search(r"^USER 10001", stage, re.MULTILINE)  # the uid the launcher's Job runs as
    assert 'ENTRYPOINT ["python", "-m", "nulog.job"]' in stage
    assert KubernetesSettings().run_as_user == 10001
