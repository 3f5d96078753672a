"""The `kubeflow` launcher: each training as a kubeflow.org/v1 PyTorchJob, for clusters with the Kubeflow
Training Operator.

The PyTorchJob has a Master replica and, for `spec.workers` = N > 1, N-1 Worker replicas, all with the trainer
container, environment, security context, GPU limit and labels of the `kubernetes` launcher's Job (the role
label is in each replica's template). The operator makes the pods (`<name>-master-0`, `<name>-worker-<i>`) and a
Service for each, and sets the rendezvous variables in the container it knows by name, `pytorch`: MASTER_ADDR
(the master's Service), MASTER_PORT (the container port named `pytorchjob-port`), WORLD_SIZE, and RANK (0 for
the master, i+1 for worker i). Facts from kubeflow/training-operator, pkg/apis/kubeflow.org/v1 and
pkg/controller.v1/pytorch.

With restartPolicy Never a replica that fails fails the PyTorchJob (condition Failed), and cleanPodPolicy
Running stops the workers left waiting in the rendezvous while the failed pod stays for its log to be read.
The PyTorchJob is followed through its conditions (Created, Running, Restarting, Succeeded, Failed) by
list-then-watch, exactly as the Job is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nulog.objectstore import MinioConfig
from nulog.protocol import DEFAULT_MASTER_PORT
from training_controller.adapters.launchers.kubernetes import manifest
from training_controller.adapters.launchers.kubernetes.api import Kind
from training_controller.adapters.launchers.kubernetes.follower import Target
from training_controller.adapters.launchers.kubernetes.launcher import ClusterLauncher
from training_controller.adapters.launchers.kubernetes.pods import Worker
from training_controller.config import KubernetesSettings
from training_controller.core.ports import JobSpec

PYTORCHJOBS = Kind("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
CONTAINER = "pytorch"  # the operator sets the rendezvous variables only in the container of this name
PORT_NAME = "pytorchjob-port"  # the operator's MASTER_PORT is the master container's port of this name
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"


def pytorchjob_manifest(spec: JobSpec, settings: KubernetesSettings, minio: MinioConfig) -> dict[str, Any]:
    """The PyTorchJob of a training: one Master and `spec.workers - 1` Workers."""
    # The operator names a pod and its Service `<name>-worker-<i>`: the longest must still be a DNS label.
    manifest.check_job_id(spec.job_id, longest_suffix=f"-worker-{max(spec.workers - 2, 0)}")
    ports = [{"name": PORT_NAME, "containerPort": DEFAULT_MASTER_PORT, "protocol": "TCP"}]
    pod = manifest.pod_spec(settings, minio, manifest.container(spec, settings, minio, name=CONTAINER, ports=ports))

    def replica(role: str, replicas: int) -> dict[str, Any]:
        template = {"metadata": {"labels": manifest.labels(spec.job_id, role)}, "spec": pod}
        return {"replicas": replicas, "restartPolicy": "Never", "template": template}

    replicas = {"Master": replica(manifest.MASTER, 1)}
    if spec.workers > 1:
        replicas["Worker"] = replica(manifest.WORKER, spec.workers - 1)
    return {
        "apiVersion": f"{PYTORCHJOBS.group}/{PYTORCHJOBS.version}",
        "kind": PYTORCHJOBS.kind,
        "metadata": {
            "name": manifest.job_name(spec.job_id),
            "namespace": settings.namespace,
            "labels": manifest.labels(spec.job_id),
        },
        "spec": {
            "runPolicy": {
                "cleanPodPolicy": "Running",
                "activeDeadlineSeconds": settings.active_deadline_seconds,
                "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            },
            "pytorchReplicaSpecs": replicas,
        },
    }


def pytorchjob_state(obj: Mapping[str, Any]) -> tuple[str, str]:
    """("running"|"succeeded"|"failed", message) of a PyTorchJob, from the condition that is True last."""
    conditions = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    true = {c.get("type"): c for c in conditions}

    def words(c: Mapping[str, Any]) -> str:
        reason, message = c.get("reason") or c.get("type") or "", c.get("message") or ""
        return f"{reason}: {message}" if message else str(reason)

    if "Succeeded" in true:
        return "succeeded", words(true["Succeeded"])
    if "Failed" in true:
        return "failed", words(true["Failed"])
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return "failed", "the PyTorchJob is being deleted"
    return "running", words(conditions[-1]) if conditions else "not yet seen by the training operator"


def kubeflow_worker(pod: Mapping[str, Any]) -> Worker:
    """The worker a PyTorchJob's pod is, from the operator's labels: the master is rank 0, worker i rank i+1."""
    meta = pod.get("metadata") or {}
    pod_labels = meta.get("labels") or {}
    name = str(meta.get("name", ""))
    kind = str(pod_labels.get(REPLICA_TYPE_LABEL) or pod_labels.get(manifest.ROLE_LABEL) or "").lower()
    if kind == manifest.MASTER:
        return Worker(0, manifest.MASTER, name)
    index = str(pod_labels.get(REPLICA_INDEX_LABEL, "0"))
    return Worker(int(index) + 1 if index.isdigit() else 1, manifest.WORKER, name)


class KubeflowLauncher(ClusterLauncher):
    """Trainings as PyTorchJobs of the Kubeflow Training Operator."""

    name = "kubeflow"
    kind = PYTORCHJOBS
    container = CONTAINER
    hint_404 = "is the Kubeflow Training Operator installed (CustomResourceDefinition pytorchjobs.kubeflow.org)?"

    def build(self, spec: JobSpec) -> dict[str, Any]:
        return pytorchjob_manifest(spec, self.settings, self.minio)

    def state_of(self, obj: Mapping[str, Any]) -> tuple[str, str]:
        return pytorchjob_state(obj)

    def target(self, job_id: str) -> Target:
        return Target(job_id, manifest.job_name(job_id), PYTORCHJOBS, CONTAINER, kubeflow_worker)
