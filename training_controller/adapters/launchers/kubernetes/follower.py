"""The threads that follow one training on the cluster, and the typed messages they send to the event loop.

    watch thread   list-then-watch of the object that holds the training (a Job, a PyTorchJob):
                   ObjectSeen for each state of it, ObjectGone when it is deleted or was never there
    pods thread    lists the training's pods every `poll_seconds`: PodsSeen; on an Indexed Job it also labels
                   each pod with its role (master for index 0, worker for the rest)
    log thread     streams the master's log: PodLine for each line, LogsDone at the end

A watch ends when the API server's timeout does and is resumed from the last resourceVersion seen; a 410 Gone
(the version is too old) starts over with a fresh list. The log is read with timestamps, so a broken stream
resumes without repeating lines. The threads are daemons that feed an `asyncio.Queue`: a stream blocked on a
quiet socket never holds up the event loop nor the interpreter's exit, and `stop()` breaks every stream off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from training_controller.adapters.launchers.kubernetes import api as kube
from training_controller.adapters.launchers.kubernetes.errors import api_errors, short
from training_controller.adapters.launchers.kubernetes.manifest import MASTER, ROLE_LABEL
from training_controller.adapters.launchers.kubernetes.pods import WorkerOf, needs_role_label
from training_controller.config import KubernetesSettings
from training_controller.core.errors import (
    ControllerError,
    LauncherForbidden,
    LauncherRejected,
    LauncherUnavailable,
    PermanentError,
)

log = logging.getLogger(__name__)

_RETRY_SECONDS = 2.0
_LOG_RECONNECTS = 5
_LOG_RESUME_MARGIN = 60  # seconds


@dataclass(frozen=True, slots=True)
class ObjectSeen:
    """The training's object (Job or PyTorchJob) as the API returned it."""

    obj: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ObjectGone:
    """The training's object does not exist (any more)."""

    message: str


@dataclass(frozen=True, slots=True)
class FollowFailed:
    """Following cannot go on: a permanent error (a missing RBAC rule), or a thread that died."""

    error: ControllerError


@dataclass(frozen=True, slots=True)
class PodsSeen:
    """The training's pods as listed now."""

    pods: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class PodLine:
    """A line the master's trainer wrote."""

    pod: str
    line: str


@dataclass(frozen=True, slots=True)
class LogsDone:
    """The log thread has passed on every line it will."""


Message = ObjectSeen | ObjectGone | FollowFailed | PodsSeen | PodLine | LogsDone


@dataclass(frozen=True)
class Target:
    """What to follow: the training's object, its trainer container, and how to tell its pods apart."""

    job_id: str
    name: str
    kind: kube.Kind
    container: str
    worker_of: WorkerOf
    label_roles: bool = False  # put the role label on pods whose template could not carry it


class Follower:
    """The three threads that follow one training; `queue` carries their messages to the event loop."""

    def __init__(self, api: kube.KubeApi, settings: KubernetesSettings, target: Target, loop: asyncio.AbstractEventLoop) -> None:
        self.api = api
        self.settings = settings
        self.target = target
        self.loop = loop
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.stopped = threading.Event()
        self.job_ended = threading.Event()
        self._lock = threading.Lock()
        self._responses: set[Any] = set()  # the streams under way, to break off on stop()
        self._watching = False
        self._last_contact = time.monotonic()

    def start(self) -> None:
        for target, what in ((self._watch, "watch"), (self._poll_pods, "pods"), (self._follow_logs, "logs")):
            threading.Thread(target=target, name=f"kube-{what}-{self.target.job_id}", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self.stopped.set()
            self.job_ended.set()
            for response in self._responses:
                kube.shutdown(response)

    def in_contact(self, seconds: float) -> bool:
        """Whether the API answered within `seconds`, or a watch on the object is open now."""
        return self._watching or time.monotonic() - self._last_contact < seconds

    def put(self, message: Message) -> None:
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between: nobody is listening any more
                self.loop.call_soon_threadsafe(self.queue.put_nowait, message)

    def _call(self, verb: str, resource: str | None = None, *, tolerate: tuple[int, ...] = ()):
        kind = self.target.kind
        group = kind.group if resource is None else ""
        return api_errors(
            verb, resource or kind.plural, namespace=self.api.namespace, group=group, job_id=self.target.job_id,
            tolerate=tolerate,
        )

    def _guarded(self, what: str, body: Callable[[], None], *, fatal: bool) -> None:
        try:
            body()
        except Exception as e:  # a thread that dies must not leave events() waiting for it
            log.exception("job %s: following the %s failed", self.target.job_id, what)
            if fatal:  # without the object's state nothing can be told; the pods and the log are extras
                self.put(FollowFailed(LauncherUnavailable(f"job {self.target.job_id}: following the {what} failed: {short(e)}")))

    # -- the watch on the object -----------------------------------------------------------------------

    def _watch(self) -> None:
        self._guarded(self.target.kind.kind, self._watch_until_the_end, fatal=True)

    def _watch_until_the_end(self) -> None:
        t, s = self.target, self.settings
        lister = self.api.lister(t.kind)
        selector = f"metadata.name={t.name}"
        version: str | None = None
        failures = 0
        while not self.stopped.is_set():
            try:
                if version is None:
                    with self._call("list"):
                        # A fresh list: where the object stands now, and the version to watch from.
                        listed = self.api.json(lister, field_selector=selector)
                    self._last_contact = time.monotonic()
                    version = (listed.get("metadata") or {}).get("resourceVersion")
                    items = listed.get("items") or []
                    if not items:
                        self.put(ObjectGone(f"the {t.kind.kind} {t.name} does not exist (deleted, or removed after it ended)"))
                        return
                    self.put(ObjectSeen(items[0]))
                with self._call("watch", tolerate=(410,)) as call:
                    # The client's Watch helper is not used: it cannot be stopped reliably from another thread
                    # before its request is under way, and it retries on its own. This is the same request.
                    response = self._open(
                        lister,
                        field_selector=selector,
                        resource_version=version,
                        allow_watch_bookmarks=True,
                        timeout_seconds=s.watch_timeout_seconds,
                        watch=True,
                        _preload_content=False,
                        _request_timeout=(s.request_timeout_seconds, s.watch_timeout_seconds + s.request_timeout_seconds),
                    )
                    self._watching = True
                    try:
                        for event in self._events(response):
                            failures = 0
                            version = (event["object"].get("metadata") or {}).get("resourceVersion") or version
                            if event["type"] == "DELETED":
                                self.put(ObjectGone(f"the {t.kind.kind} {t.name} was deleted"))
                                return
                            if event["type"] in ("ADDED", "MODIFIED"):
                                self.put(ObjectSeen(event["object"]))
                    finally:
                        self._watching = False
                        self._last_contact = time.monotonic()
                        self._close(response)
                if call.tolerated == 410:
                    log.info("job %s: watch of %s expired (410 Gone); listing again", t.job_id, t.name)
                    version = None
                    continue
                log.debug("job %s: watch ended at resourceVersion %s; resuming", t.job_id, version)
            except PermanentError as e:
                if not self.stopped.is_set():
                    self.put(FollowFailed(e))
                return
            except ControllerError as e:
                if self.stopped.is_set():
                    return
                failures += 1
                log.warning("job %s: following %s failed (%d), retrying: %s", t.job_id, t.name, failures, e)
                self.stopped.wait(min(30.0, _RETRY_SECONDS * 2 ** (failures - 1)))

    def _events(self, response: Any) -> Iterator[dict[str, Any]]:
        for line in kube.lines(response):
            if not line.strip():
                continue
            event = json.loads(line)
            obj = event.get("object") or {}
            self._last_contact = time.monotonic()
            if event.get("type") == "ERROR":
                # A Status inside the stream, e.g. 410 Expired when the version is too old.
                raise ApiException(status=obj.get("code"), reason=f"{obj.get('reason')}: {obj.get('message')}")
            yield {"type": event.get("type"), "object": obj}

    def _open(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Start a streamed request, registered so that stop() can break it off from another thread."""
        response = call(*args, **kwargs)
        with self._lock:
            self._responses.add(response)
            if self.stopped.is_set():  # stop() came while the request was under way
                kube.shutdown(response)
        return response

    def _close(self, response: Any) -> None:
        with self._lock:
            self._responses.discard(response)
        with contextlib.suppress(Exception):  # a connection broken off by stop() may fail to release; it is gone
            response.release_conn()

    # -- the pods --------------------------------------------------------------------------------------

    def _poll_pods(self) -> None:
        self._guarded("pods", self._list_pods_until_the_end, fatal=False)

    def _list_pods_until_the_end(self) -> None:
        t = self.target
        label_roles = t.label_roles
        while not self.job_ended.is_set():
            try:
                pods = self._pods()
            except LauncherForbidden as e:
                log.error("%s; the job's workers cannot be followed", e)
                return
            if pods is not None:
                self.put(PodsSeen(tuple(pods)))
                if label_roles:
                    label_roles = self._label_roles(pods)
            self.job_ended.wait(self.settings.poll_seconds)

    def _pods(self) -> list[dict[str, Any]] | None:
        """The training's pods, or None when they cannot be listed now; raises LauncherForbidden."""
        try:
            with self._call("list", "pods"):
                pods = self.api.pods_of(self.target.job_id)
        except LauncherForbidden:
            raise
        except ControllerError as e:
            log.warning("job %s: cannot list the pods: %s", self.target.job_id, e)
            return None
        self._last_contact = time.monotonic()
        return pods

    def _label_roles(self, pods: list[dict[str, Any]]) -> bool:
        """Label each pod with its role; False once labelling is forbidden (an older Role: not worth retrying)."""
        for pod in pods:
            worker = self.target.worker_of(pod)
            if not needs_role_label(pod, worker):
                continue
            try:
                with self._call("patch", "pods"):
                    self.api.label_pod(worker.name, {ROLE_LABEL: worker.role})
            except LauncherForbidden as e:
                log.warning("%s; the pods of job %s keep no role label", e, self.target.job_id)
                return False
            except ControllerError as e:
                log.info("job %s: cannot label pod %s with its role yet: %s", self.target.job_id, worker.name, e)
        return True

    # -- the master's log ------------------------------------------------------------------------------

    def _follow_logs(self) -> None:
        try:
            self._guarded("log", self._follow_master_pods, fatal=False)
        finally:
            self.put(LogsDone())

    def _follow_master_pods(self) -> None:
        t = self.target
        done: set[str] = set()
        while not self.stopped.is_set():
            final = self.job_ended.is_set()  # read before listing: a pod that ends later is seen on the next pass
            try:
                pods = self._pods() or []
            except LauncherForbidden as e:
                # The outcome is still followed; only the progress lines are lost.
                log.error("%s; the job's progress cannot be followed", e)
                return
            for pod in pods:
                name = pod["metadata"]["name"]
                started = (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")
                if started and name not in done and t.worker_of(pod).role == MASTER and not self.stopped.is_set():
                    try:
                        if self._stream_pod_log(name):
                            done.add(name)
                    except LauncherForbidden as e:
                        log.error("%s; the job's progress cannot be followed", e)
                        return
            if final:
                return
            self.job_ended.wait(self.settings.poll_seconds)

    def _stream_pod_log(self, pod: str) -> bool:
        """Pass on a pod's log lines until its container ends; False when it could not be read at all."""
        s = self.settings
        since: str | None = None  # the timestamp of the last line passed on, to resume after a broken stream
        for attempt in range(_LOG_RECONNECTS + 1):
            if attempt and self.stopped.wait(_RETRY_SECONDS):
                return True
            try:
                with self._call("get", "pods/log"):
                    # The client has no sinceTime: resume a little early with sinceSeconds (the node's clock may
                    # differ from ours) and skip the lines passed on already.
                    resume = {"since_seconds": kube.seconds_since(since) + _LOG_RESUME_MARGIN} if since else {}
                    response = self._open(
                        self.api.core.read_namespaced_pod_log,
                        pod,
                        self.api.namespace,
                        container=self.target.container,
                        follow=True,
                        timestamps=True,
                        _preload_content=False,
                        _request_timeout=(s.request_timeout_seconds, None),  # quiet epochs are normal
                        **resume,
                    )
                    try:
                        for stamped in kube.lines(response):
                            stamp, _, line = stamped.partition(" ")
                            if since is not None and stamp <= since:
                                continue  # passed on before the stream broke
                            since = stamp
                            if line.strip():
                                self.put(PodLine(pod, line))
                    finally:
                        self._close(response)
                return True
            except LauncherRejected:
                return since is not None  # not started yet (look again on the next pass), or gone
            except LauncherForbidden:
                raise
            except ControllerError as e:
                if self.stopped.is_set():
                    return True
                log.warning("job %s: the log of pod %s broke off, resuming: %s", self.target.job_id, pod, e)
        return True
