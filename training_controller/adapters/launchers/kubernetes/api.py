"""The slice of the Kubernetes API the cluster launchers use, as blocking calls that return the server's JSON.

The official client blocks: everything here runs in a worker thread (`asyncio.to_thread`) or in one of the
follower's threads, never on the event loop. Answers are read as the JSON the server sent, not as the client's
model classes, so a custom resource (PyTorchJob) and a Job are handled alike, and tests assert the wire format.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from training_controller.adapters.launchers.kubernetes.manifest import JOB_ID_LABEL


@dataclass(frozen=True)
class Kind:
    """A kind of object that holds one training (a Job, a PyTorchJob): how to create, list, watch, delete it."""

    group: str  # "batch", "kubeflow.org"
    version: str
    plural: str  # "jobs", "pytorchjobs"
    kind: str  # "Job", "PyTorchJob"


JOBS = Kind("batch", "v1", "jobs", "Job")


class KubeApi:
    """Blocking calls on one namespace, with the request timeout of the settings."""

    def __init__(self, api_client: client.ApiClient, namespace: str, *, request_timeout: float) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.request_timeout = request_timeout
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def json(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call an API method and return the response as the JSON the server sent."""
        response = call(*args, _preload_content=False, _request_timeout=self.request_timeout, **kwargs)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    # -- the objects that hold a training ----------------------------------------------------------------

    def lister(self, kind: Kind) -> Callable[..., Any]:
        """The list (and watch) method of a kind, taking the query as keyword arguments."""
        if kind == JOBS:
            return lambda **kw: self.batch.list_namespaced_job(self.namespace, **kw)
        return lambda **kw: self.custom.list_namespaced_custom_object(
            kind.group, kind.version, self.namespace, kind.plural, **kw
        )

    def create(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        if kind == JOBS:
            return self.json(self.batch.create_namespaced_job, self.namespace, body)
        return self.json(self.custom.create_namespaced_custom_object, kind.group, kind.version, self.namespace, kind.plural, body)

    def get(self, kind: Kind, name: str) -> dict[str, Any]:
        if kind == JOBS:
            return self.json(self.batch.read_namespaced_job, name, self.namespace)
        return self.json(self.custom.get_namespaced_custom_object, kind.group, kind.version, self.namespace, kind.plural, name)

    def delete(self, kind: Kind, name: str) -> None:
        """Delete the object; its pods (and a Job's Service) go with it, removed by the garbage collector."""
        options = client.V1DeleteOptions(propagation_policy="Background")
        if kind == JOBS:
            self.json(self.batch.delete_namespaced_job, name, self.namespace, body=options)
        else:
            self.json(
                self.custom.delete_namespaced_custom_object,
                kind.group, kind.version, self.namespace, kind.plural, name, body=options,
            )

    def list_all(self, kind: Kind, *, label_selector: str, page_size: int = 500) -> list[dict[str, Any]]:
        """Every object of a kind with these labels, page by page."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            extra = {"_continue": token} if token else {}
            page = self.json(self.lister(kind), label_selector=label_selector, limit=page_size, **extra)
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    # -- pods and services -------------------------------------------------------------------------------

    def create_service(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.json(self.core.create_namespaced_service, self.namespace, body)

    def pods_of(self, job_id: str) -> list[dict[str, Any]]:
        """The pods of a training, found by its job-id label, oldest first."""
        items = self.json(self.core.list_namespaced_pod, self.namespace, label_selector=f"{JOB_ID_LABEL}={job_id}").get("items")
        return sorted(items or [], key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))

    def label_pod(self, name: str, labels: dict[str, str]) -> None:
        self.json(
            self.core.patch_namespaced_pod, name, self.namespace, {"metadata": {"labels": labels}},
            _content_type="application/merge-patch+json",
        )

    def log_tail(self, pod: str, container: str, *, lines: int) -> list[str]:
        """The last lines a pod's container wrote (the log of a pod that has ended)."""
        response = self.core.read_namespaced_pod_log(
            pod, self.namespace, container=container, tail_lines=lines,
            _preload_content=False, _request_timeout=self.request_timeout,
        )
        try:
            return response.data.decode("utf-8", errors="replace").splitlines()
        finally:
            response.release_conn()


def lines(response: Any) -> Iterator[str]:
    """The lines of a streamed response as they arrive, the last one even without its newline."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", errors="replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", errors="replace")


def shutdown(response: Any) -> None:
    """Unblock a thread reading a streamed response by shutting its socket down."""
    if response is None:
        return
    with contextlib.suppress(Exception):  # the socket may be closed already; then nothing is blocked on it
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)


def seconds_since(stamp: str) -> int:
    """Whole seconds from an RFC3339 log timestamp to now, rounded up; 0 for one that cannot be read."""
    try:
        at = datetime.fromisoformat(stamp[:19] + "+00:00")
    except ValueError:
        return 0
    return max(0, math.ceil((datetime.now(UTC) - at).total_seconds()))
