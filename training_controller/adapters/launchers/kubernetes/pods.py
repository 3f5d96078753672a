"""Reading a training's pods: which worker each one is, how it stands, and which one failed first.

A pod is read as the API server returns it (JSON). Which rank a pod runs is told by the object that made it:
the Job controller annotates (and, since 1.28, labels) each pod of an Indexed Job with its completion index;
the Kubeflow Training Operator labels each pod with its replica type and index (`kubeflow.py`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from training_controller.adapters.launchers.kubernetes.manifest import (
    COMPLETION_INDEX,
    MASTER,
    ROLE_LABEL,
    WORKER,
)

_STATES = {"Pending": "pending", "Running": "running", "Succeeded": "succeeded", "Failed": "failed"}
# The Job controller's message when podFailurePolicy fails a Job: "... for pod <namespace>/<name> failed with ..."
_NAMED_POD = re.compile(r"\bfor pod [^/\s]+/(\S+)")


@dataclass(frozen=True)
class Worker:
    """One pod of a training: its rank, role and name."""

    index: int
    role: str
    name: str


WorkerOf = Callable[[Mapping[str, Any]], Worker]


def indexed_worker(pod: Mapping[str, Any]) -> Worker:
    """The worker a Job's pod is: its completion index is its rank; index 0 (or a non-indexed Job) is the master."""
    meta = pod.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(COMPLETION_INDEX) or (meta.get("labels") or {}).get(COMPLETION_INDEX)
    index = int(value) if value is not None and str(value).isdigit() else 0
    return Worker(index, MASTER if index == 0 else WORKER, str(meta.get("name", "")))


def needs_role_label(pod: Mapping[str, Any], worker: Worker) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(ROLE_LABEL) != worker.role


def phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def state(pod: Mapping[str, Any]) -> str:
    """The port's word for a pod's phase: pending, running, succeeded or failed (Unknown counts as pending)."""
    return _STATES.get(phase(pod), "pending")


def _container_status(pod: Mapping[str, Any], container: str) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == container), {})


def _terminated(pod: Mapping[str, Any], container: str) -> Mapping[str, Any]:
    status = _container_status(pod, container)
    return (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated") or {}


def detail(pod: Mapping[str, Any], container: str) -> str:
    """Why a pod stands where it does, in a few words: an exit code, a waiting reason, an eviction."""
    terminated = _terminated(pod, container)
    if terminated:
        words = f"exit code {terminated.get('exitCode')}"
        if terminated.get("reason"):
            words += f" ({terminated['reason']})"
        return f"{words}: {terminated['message']}" if terminated.get("message") else words
    waiting = (_container_status(pod, container).get("state") or {}).get("waiting") or {}
    status = pod.get("status") or {}
    reason = waiting.get("reason") or status.get("reason")
    message = waiting.get("message") or status.get("message")
    if reason:
        return f"{reason}: {message}" if message else str(reason)
    return str(message or "")


def first_failed(pods: Iterable[Mapping[str, Any]], job_message: str, container: str) -> Mapping[str, Any] | None:
    """The pod whose failure ended the training: the one the Job's condition names, else the first to fail."""
    pods = list(pods)
    named = _NAMED_POD.search(job_message or "")
    if named:
        found = [p for p in pods if (p.get("metadata") or {}).get("name") == named.group(1)]
        if found:
            return found[0]
    failed = [p for p in pods if phase(p) == "Failed"]
    # A failure that made the others stop comes first: the earliest end, then the earliest pod.
    failed.sort(key=lambda p: (str(_terminated(p, container).get("finishedAt") or "~"), p["metadata"].get("name", "")))
    return failed[0] if failed else None
