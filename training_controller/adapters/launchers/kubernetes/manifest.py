"""The objects a training is made of on Kubernetes, as pure functions of the job spec and the settings.

Nothing here talks to the API: each function returns the JSON body the API server receives (camelCase, as
`kubectl get -o json` shows it), so a body can be asserted and validated without a cluster, and the two
cluster launchers share one pod template:

    1 worker     batch/v1 Job nulog-train-<job>: one pod, role master
    N workers    batch/v1 Job, completionMode Indexed, completions = parallelism = N, plus a headless Service
                 nulog-train-<job> owned by the Job. Pod i is `nulog-train-<job>-i.nulog-train-<job>`, so every
                 rank finds rank 0 at MASTER_ADDR; the rank is the pod's JOB_COMPLETION_INDEX.
    kubeflow     kubeflow.org/v1 PyTorchJob, a Master and N-1 Workers (`adapters/launchers/kubeflow.py`)

The MinIO client configuration reaches the pod exactly as the controller has it (`MinioConfig.public_env()`),
the keys only by reference to a Secret, and a private CA bundle (MINIO_CA_FILE) is mounted at the same path
from the Secret or ConfigMap named by MINIO_CA_SECRET / MINIO_CA_CONFIG_MAP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nulog.objectstore import MinioConfig
from nulog.protocol import (
    DEFAULT_MASTER_PORT,
    LOCAL_RANK_VAR,
    MASTER_ADDR_VAR,
    MASTER_PORT_VAR,
    WORLD_SIZE_VAR,
)
from training_controller.config import KubernetesSettings
from training_controller.core.errors import InvalidRequest
from training_controller.core.ports import JobSpec

JOB_PREFIX = "nulog-train-"
CONTAINER = "train"
APP_LABEL = "app.kubernetes.io/name"
APP_NAME = "nulog-train"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "training-controller"
JOB_ID_LABEL = "training-controller/job-id"
ROLE_LABEL = "training-controller/role"
MASTER, WORKER = "master", "worker"
# Set by the Job controller on every pod of an Indexed Job (the label since Kubernetes 1.28).
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
RENDEZVOUS_PORT_NAME = "rendezvous"
CA_VOLUME = "minio-ca"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_LABEL = 63


def job_name(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}"


def check_job_id(job_id: str, *, longest_suffix: str = "") -> None:
    """Refuse a job id that cannot name the job's objects, the longest name derived from it included."""
    longest = job_name(job_id) + longest_suffix
    if not _DNS_LABEL.match(job_name(job_id)) or len(longest) > _MAX_LABEL:
        raise InvalidRequest(
            f"job id {job_id!r} cannot name a Kubernetes Job: lowercase a-z, 0-9 and '-' only, and "
            f"{longest!r} must fit in {_MAX_LABEL} characters"
        )


def labels(job_id: str, role: str | None = None) -> dict[str, str]:
    """The labels of every object of a training; pods also carry their role once it is known."""
    out = {APP_LABEL: APP_NAME, MANAGED_BY_LABEL: MANAGED_BY, JOB_ID_LABEL: job_id}
    if role is not None:
        out[ROLE_LABEL] = role
    return out


def check_ca_source(settings: KubernetesSettings, minio: MinioConfig) -> None:
    """Refuse a CA bundle the training pod could not get: raises ValueError naming the missing setting."""
    if minio.ca_file is None:
        return
    if not minio.ca_file.is_absolute():
        raise ValueError(f"MINIO_CA_FILE must be an absolute path to be mounted in the training pod, not {minio.ca_file}")
    if not (settings.minio_ca_secret or settings.minio_ca_config_map):
        raise ValueError(
            "MINIO_CA_FILE is set, so the training pod needs the same CA bundle: name the Secret or ConfigMap that "
            f"holds it under the key {minio.ca_file.name!r} with MINIO_CA_SECRET or MINIO_CA_CONFIG_MAP"
        )


def env(spec: JobSpec, settings: KubernetesSettings, minio: MinioConfig) -> list[dict[str, Any]]:
    """The trainer's environment: the object store's public settings as values, its keys by reference."""
    out: list[dict[str, Any]] = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HOME", "value": "/tmp"},  # the root filesystem is read-only
    ]
    out += [{"name": k, "value": v} for k, v in sorted(minio.public_env().items())]
    if settings.credentials_secret:
        # By reference: the Job, which anyone who may read Jobs can see, never holds a credential.
        out += [
            {"name": var, "valueFrom": {"secretKeyRef": {"name": settings.credentials_secret, "key": key}}}
            for var, key in (("MINIO_ACCESS_KEY", settings.access_key_key), ("MINIO_SECRET_KEY", settings.secret_key_key))
        ]
    if spec.workers > 1:
        out.append({"name": LOCAL_RANK_VAR, "value": "0"})  # one process per pod
    return out


def container(
    spec: JobSpec,
    settings: KubernetesSettings,
    minio: MinioConfig,
    *,
    name: str = CONTAINER,
    extra_env: Sequence[Mapping[str, Any]] = (),
    ports: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The trainer's container: its image, command, environment, GPU limit and locked-down security context."""
    command = spec.command("python")
    argv = len(spec.args.to_argv())
    gpus = settings.gpu_count if spec.gpus_per_worker is None else spec.gpus_per_worker
    resources: dict[str, Any] = {}
    if gpus > 0:
        resources["limits"] = {settings.gpu_resource: str(gpus)}
    if settings.resource_requests:
        resources["requests"] = dict(settings.resource_requests)
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if minio.ca_file is not None:
        # subPath puts the one file at the very path MINIO_CA_FILE names, beside whatever the image has there.
        mounts.append({"name": CA_VOLUME, "mountPath": str(minio.ca_file), "subPath": minio.ca_file.name, "readOnly": True})
    out: dict[str, Any] = {
        "name": name,
        "image": spec.image or settings.image,
        "command": command[: len(command) - argv],
        "args": command[len(command) - argv :],
        "env": [*env(spec, settings, minio), *extra_env],
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    if settings.image_pull_policy:
        out["imagePullPolicy"] = settings.image_pull_policy
    if resources:
        out["resources"] = resources
    if ports:
        out["ports"] = [dict(p) for p in ports]
    return out


def pod_spec(settings: KubernetesSettings, minio: MinioConfig, trainer: Mapping[str, Any]) -> dict[str, Any]:
    """A pod that runs the trainer container as the restricted pod security standard asks."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if minio.ca_file is not None:
        check_ca_source(settings, minio)
        items = [{"key": minio.ca_file.name, "path": minio.ca_file.name}]
        if settings.minio_ca_secret:
            volumes.append({"name": CA_VOLUME, "secret": {"secretName": settings.minio_ca_secret, "items": items}})
        else:
            volumes.append({"name": CA_VOLUME, "configMap": {"name": settings.minio_ca_config_map, "items": items}})
    out: dict[str, Any] = {
        "restartPolicy": "Never",  # required by podFailurePolicy; a failed trainer is not restarted in place
        "automountServiceAccountToken": False,  # the training never calls the Kubernetes API
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "fsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [dict(trainer)],
        "volumes": volumes,
    }
    if settings.service_account:
        out["serviceAccountName"] = settings.service_account
    if settings.node_selector:
        out["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        out["tolerations"] = [_toleration(t) for t in settings.tolerations]
    if settings.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    return out


def rendezvous_address(job_id: str) -> str:
    """Where every rank finds rank 0: pod 0 of the Indexed Job under the headless Service's subdomain."""
    return f"{job_name(job_id)}-0.{job_name(job_id)}"


def job_manifest(spec: JobSpec, settings: KubernetesSettings, minio: MinioConfig) -> dict[str, Any]:
    """The batch/v1 Job of a training: one pod, or an Indexed Job of `spec.workers` pods."""
    workers = spec.workers
    check_job_id(spec.job_id, longest_suffix=f"-{workers - 1}" if workers > 1 else "")
    name = job_name(spec.job_id)
    rendezvous: list[dict[str, Any]] = []
    if workers > 1:
        # RANK stays unset: the trainer reads JOB_COMPLETION_INDEX, which the Job controller sets per pod.
        rendezvous = [
            {"name": WORLD_SIZE_VAR, "value": str(workers)},
            {"name": MASTER_ADDR_VAR, "value": rendezvous_address(spec.job_id)},
            {"name": MASTER_PORT_VAR, "value": str(DEFAULT_MASTER_PORT)},
        ]
    ports = [{"name": RENDEZVOUS_PORT_NAME, "containerPort": DEFAULT_MASTER_PORT, "protocol": "TCP"}] if workers > 1 else []
    pod = pod_spec(settings, minio, container(spec, settings, minio, extra_env=rendezvous, ports=ports))
    job: dict[str, Any] = {
        "activeDeadlineSeconds": settings.active_deadline_seconds,
        "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
        "podFailurePolicy": {
            "rules": [
                # First: a drained or preempted node is retried, even though the container then exits non-zero
                # (rules apply in order, the first match wins).
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                # A training command that fails fails the same way again, and one failed rank breaks the
                # rendezvous of all: fail the whole Job at once.
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "NotIn", "values": [0]}},
            ]
        },
    }
    if workers == 1:
        job["backoffLimit"] = settings.backoff_limit
        template_labels = labels(spec.job_id, MASTER)
    else:
        # Any other failed pod (one without an exit code) fails its index, and one failed index the Job.
        job.update(completionMode="Indexed", completions=workers, parallelism=workers, backoffLimitPerIndex=0, maxFailedIndexes=0)
        pod["subdomain"] = name
        # One template serves every index, so the role label is put on each pod as it appears (the follower).
        template_labels = labels(spec.job_id)
    job["template"] = {"metadata": {"labels": template_labels}, "spec": pod}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels(spec.job_id)},
        "spec": job,
    }


def service_manifest(spec: JobSpec, settings: KubernetesSettings, *, owner_uid: str) -> dict[str, Any]:
    """The headless Service that gives the pods of an Indexed Job their DNS names; deleted with the Job."""
    name = job_name(spec.job_id)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": labels(spec.job_id),
            # Owned by the Job: the garbage collector deletes it with the Job (cancel, TTL after the end).
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": owner_uid}],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {JOB_ID_LABEL: spec.job_id},
            # The ranks look rank 0 up while it starts, before any pod could count as ready.
            "publishNotReadyAddresses": True,
            "ports": [
                {"name": RENDEZVOUS_PORT_NAME, "port": DEFAULT_MASTER_PORT, "targetPort": DEFAULT_MASTER_PORT, "protocol": "TCP"}
            ],
        },
    }


def _toleration(t: Mapping[str, Any]) -> dict[str, Any]:
    seconds = t.get("tolerationSeconds", t.get("toleration_seconds"))
    out = {k: t.get(k) for k in ("key", "operator", "value", "effect")}
    out["tolerationSeconds"] = seconds
    return {k: v for k, v in out.items() if v is not None}
