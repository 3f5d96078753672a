"""The objects the fake Kubernetes API server holds, made as their controllers make them, for the tests to set up.

Jobs and PyTorchJobs with the status their controllers write; pods as the Job controller makes those of an
Indexed Job (completion-index annotation and label, hostname and subdomain, JOB_COMPLETION_INDEX) and as the
Kubeflow Training Operator makes a PyTorchJob's (`<name>-master-0`, `<name>-worker-<i>`, replica-type and
replica-index labels), each with the log its trainer writes; and the `Status` objects of the API's errors.
"""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

_T0 = datetime(2026, 1, 1, tzinfo=UTC)
JOB_ID_LABEL = "training-controller/job-id"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    """A `Status` object as kube-apiserver sends it with an error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def condition(kind: str, *, reason: str | None = None, message: str | None = None, state: str = "True") -> dict[str, Any]:
    """A condition (of a Job, a PyTorchJob) as their controllers write it, with status True unless told."""
    c: dict[str, Any] = {
        "type": kind,
        "status": state,
        "lastProbeTime": "2026-01-01T00:05:00Z",
        "lastTransitionTime": "2026-01-01T00:05:00Z",
    }
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def _copy(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


class ClusterObjects:
    """The stored objects of the fake server, and how tests make and change them."""

    namespace: str
    jobs: dict[str, dict[str, Any]]
    pytorchjobs: dict[str, dict[str, Any]]
    pods: dict[str, dict[str, Any]]
    pod_logs: dict[str, list[str]]

    def _start_counting(self) -> None:
        self._rv = itertools.count(100)
        self._finished = itertools.count(1)

    def next_rv(self) -> str:
        return str(next(self._rv))

    def job_object(self, name: str, *, conditions: list[dict[str, Any]] | None = None, active: int = 1,
                   labels: dict[str, str] | None = None, store: bool = True) -> dict[str, Any]:
        """A Job as the API returns it, with a new resourceVersion; stored under its name unless `store` is False
        (a later state of the Job, for a scripted watch event)."""
        job = self.jobs.get(name) or {
            "kind": "Job",
            "apiVersion": "batch/v1",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": labels or {},
            },
            "spec": {
                "backoffLimit": 2,
                "completions": 1,
                "parallelism": 1,
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "0000"}},
                "template": {
                    "metadata": {"labels": labels or {}},
                    "spec": {"containers": [{"name": "train", "image": "nulog-train:test"}], "restartPolicy": "Never"},
                },
            },
        }
        job = _copy(job)
        job["metadata"]["resourceVersion"] = self.next_rv()
        job["status"] = {"startTime": "2026-01-01T00:00:01Z", "uncountedTerminatedPods": {}, "ready": 0, "terminating": 0}
        if conditions:
            job["status"]["conditions"] = conditions
            job["status"]["failed" if any(c["type"] == "Failed" for c in conditions) else "succeeded"] = 1
        else:
            job["status"]["active"] = active
        if store:
            self.jobs[name] = job
        return job

    def pytorchjob_object(self, name: str, *, conditions: list[dict[str, Any]], store: bool = True) -> dict[str, Any]:
        """A stored PyTorchJob with the status the training operator writes (conditions, replica statuses)."""
        job = _copy(self.pytorchjobs[name])
        job["metadata"]["resourceVersion"] = self.next_rv()
        replicas = job["spec"]["pytorchReplicaSpecs"]
        job["status"] = {
            "conditions": conditions,
            "replicaStatuses": {kind: {"active": spec.get("replicas", 1)} for kind, spec in replicas.items()},
            "startTime": "2026-01-01T00:00:01Z",
        }
        if store:
            self.pytorchjobs[name] = job
        return job

    def add_pod(self, name: str, *, job_id: str, phase: str = "Running", lines: list[str] | None = None,
                labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
                owner: tuple[str, str] | None = None, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        """A pod of a training, with the log its trainer container writes; owned by the Job unless told."""
        kind, owner_name = owner or ("Job", f"nulog-train-{job_id}")
        default_labels = {JOB_ID_LABEL: job_id, "app.kubernetes.io/name": "nulog-train"}
        if kind == "Job":
            default_labels.update({"job-name": owner_name, "batch.kubernetes.io/job-name": owner_name})
        pod = {
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "uid": str(uuid.uuid4()),
                "resourceVersion": self.next_rv(),
                "creationTimestamp": f"2026-01-01T00:00:{len(self.pods):02d}Z",
                "labels": {**default_labels, **(labels or {})},
                "ownerReferences": [{"apiVersion": "v1", "kind": kind, "name": owner_name, "uid": "0000", "controller": True}],
            },
            "spec": spec or {"containers": [{"name": "train", "image": "nulog-train:test"}], "restartPolicy": "Never"},
            "status": {"phase": phase},
        }
        if annotations:
            pod["metadata"]["annotations"] = dict(annotations)
        self.pods[name] = pod
        self.pod_logs[name] = list(lines or [])
        return pod

    def start_indexed_pods(self, job: str, *, logs: dict[int, list[str]] | None = None) -> list[str]:
        """The pods of a stored Job as the Job controller makes them, one per completion index; their names."""
        body = self.jobs[job]
        template = body["spec"]["template"]
        count = body["spec"].get("completions") or 1
        indexed = body["spec"].get("completionMode") == "Indexed"
        names = []
        for index in range(count):
            name = f"{job}-{index}-{uuid.uuid4().hex[:5]}" if indexed else f"{job}-{uuid.uuid4().hex[:5]}"
            spec = _copy(template["spec"])
            extra_labels, annotations = dict(template["metadata"].get("labels") or {}), None
            if indexed:
                spec["hostname"] = f"{job}-{index}"
                extra_labels[COMPLETION_INDEX] = str(index)
                annotations = {COMPLETION_INDEX: str(index)}
                for container in spec["containers"]:
                    container.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
            job_id = extra_labels[JOB_ID_LABEL]
            self.add_pod(name, job_id=job_id, labels=extra_labels, annotations=annotations, spec=spec,
                         lines=(logs or {}).get(index))
            names.append(name)
        return names

    def start_pytorchjob_pods(self, name: str, *, logs: dict[str, list[str]] | None = None) -> list[str]:
        """The pods of a stored PyTorchJob as the training operator makes them; their names, master first."""
        body = self.pytorchjobs[name]
        names = []
        for kind, replica in body["spec"]["pytorchReplicaSpecs"].items():
            template = replica["template"]
            for index in range(replica.get("replicas", 1)):
                pod_name = f"{name}-{kind.lower()}-{index}"
                labels = {
                    **(template["metadata"].get("labels") or {}),
                    "training.kubeflow.org/job-name": name,
                    "training.kubeflow.org/operator-name": "pytorchjob-controller",
                    "training.kubeflow.org/replica-type": kind.lower(),
                    "training.kubeflow.org/replica-index": str(index),
                }
                if kind == "Master":
                    labels["training.kubeflow.org/job-role"] = "master"
                job_id = labels[JOB_ID_LABEL]
                self.add_pod(pod_name, job_id=job_id, labels=labels, owner=("PyTorchJob", name), spec=_copy(template["spec"]),
                             lines=(logs or {}).get(pod_name))
                names.append(pod_name)
        return names

    def end_pod(self, name: str, *, exit_code: int, reason: str | None = None, lines: list[str] | None = None) -> None:
        """A pod's trainer container ends with this exit code (Succeeded for 0, else Failed), later than any before."""
        pod = self.pods[name]
        container = pod["spec"]["containers"][0]["name"]
        finished = _T0 + timedelta(minutes=10, seconds=next(self._finished))
        terminated = {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "startedAt": "2026-01-01T00:00:05Z",
            "finishedAt": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        pod["status"] = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [{"name": container, "ready": False, "restartCount": 0, "state": {"terminated": terminated}}],
        }
        pod["metadata"]["resourceVersion"] = self.next_rv()
        if lines is not None:
            self.pod_logs[name] = list(lines)

    def current_rv(self) -> str:
        """The resourceVersion of a list: the newest version among the stored objects."""
        objects = [*self.jobs.values(), *self.pytorchjobs.values(), *self.pods.values()]
        return str(max((int(o["metadata"]["resourceVersion"]) for o in objects), default=99))
