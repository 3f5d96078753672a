"""The `kubernetes` launcher: each training as a batch/v1 Job `nulog-train-<job>` with a GPU.

The Job, not the controller's memory, is the truth about what runs: a restarted controller finds its jobs by
label, and a Job that already exists when it is launched again counts as launched. The Job's pod runs the same
entrypoint as the local launcher (`python -m nulog.job` with the same arguments), so its log carries the same
JSON progress lines.

The official `kubernetes` client blocks. One-shot calls run in worker threads (`asyncio.to_thread`); the two
long-lived streams of a followed job (the watch on the Job, the pod's log) run in daemon threads that feed an
`asyncio.Queue`, so a stream blocked on a quiet socket never holds up the event loop nor the interpreter's exit,
and closing the events breaks both streams off at once.

Following a Job is list-then-watch: a watch ends when the API server's timeout does and is resumed from the last
resourceVersion seen; a 410 Gone (the version is too old) starts over with a fresh list. The pod's log is read
with timestamps, so a broken log stream resumes without repeating lines.

Errors are translated here: 403/401 and requests the API rejects become permanent errors that name what is
missing; 5xx, 429 and connection failures become `LauncherUnavailable` (retry later).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from nulog.objectstore import MinioConfig
from nulog.protocol import ErrorEvent
from training_controller.adapters.launchers.output import parse_line
from training_controller.config import KubernetesSettings
from training_controller.core.errors import (
    ControllerError,
    InvalidRequest,
    LauncherForbidden,
    LauncherRejected,
    LauncherUnavailable,
    PermanentError,
)
from training_controller.core.ports import (
    Finished,
    JobSpec,
    LaunchedJob,
    Launcher,
    LauncherEvent,
    LogLine,
    TrainerOutput,
)

log = logging.getLogger(__name__)

JOB_PREFIX = "nulog-train-"
CONTAINER = "train"
APP_LABEL = "app.kubernetes.io/name"
APP_NAME = "nulog-train"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "training-controller"
JOB_ID_LABEL = "training-controller/job-id"
# A Job's name becomes a label value on its pods (`job-name`), so it must fit in 63 characters.
_JOB_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,49}[a-z0-9])?$")
_RETRY_SECONDS = 2.0
_LOG_RECONNECTS = 5
_LOG_RESUME_MARGIN = 60  # seconds


def job_name(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}"


def job_state(job: Mapping[str, Any]) -> tuple[str, str]:
    """("running"|"succeeded"|"failed", message) of a Job as the API returns it (JSON)."""
    status = job.get("status") or {}
    true = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in true:
        return "succeeded", "the Job completed"
    if "Failed" in true:
        cond = true["Failed"]
        reason, message = cond.get("reason") or "Failed", cond.get("message") or ""
        return "failed", f"{reason}: {message}" if message else reason
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return "failed", "the Job is being deleted"
    return "running", f"{status.get('active') or 0} pod(s) active, {status.get('failed') or 0} failed"


class KubernetesLauncher(Launcher):
    """Training jobs as Kubernetes batch/v1 Jobs."""

    name = "kubernetes"

    def __init__(
        self, api_client: client.ApiClient, settings: KubernetesSettings, *, minio: MinioConfig | None = None
    ) -> None:
        if not settings.image_name:
            raise ValueError("the kubernetes launcher needs the training image (NULOG_TRAIN_IMAGE_NAME)")
        self.api_client = api_client
        self.settings = settings
        self.namespace = settings.namespace
        self.image = settings.image
        self.minio = minio or MinioConfig()
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def from_environment(cls, settings: KubernetesSettings, *, minio: MinioConfig | None = None) -> KubernetesLauncher:
        """A launcher with the in-cluster service account, or else the kubeconfig (`KUBECONFIG`, ~/.kube/config)."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            try:
                # KUBECONFIG as it is now (the client reads it once, at import); it may list several files.
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
            except (config.ConfigException, OSError) as e:
                raise LauncherUnavailable(f"no Kubernetes configuration: not in a cluster and no kubeconfig ({e})") from e
        return cls(client.ApiClient(configuration), settings, minio=minio)

    # -- the Job ---------------------------------------------------------------------------------------

    def build_job(self, spec: JobSpec) -> client.V1Job:
        """The Job that runs one training."""
        if not _JOB_ID.match(spec.job_id):
            raise InvalidRequest(f"job id {spec.job_id!r} cannot name a Kubernetes Job (lowercase a-z, 0-9, '-')")
        s = self.settings
        name = job_name(spec.job_id)
        labels = {APP_LABEL: APP_NAME, MANAGED_BY_LABEL: MANAGED_BY, JOB_ID_LABEL: spec.job_id}
        command = spec.command("python")
        env = [
            client.V1EnvVar(name="PYTHONUNBUFFERED", value="1"),
            client.V1EnvVar(name="HOME", value="/tmp"),  # the root filesystem is read-only
        ]
        env += [client.V1EnvVar(name=k, value=v) for k, v in sorted(self.minio.public_env().items())]
        if s.credentials_secret:
            # By reference: the Job, which anyone who may read Jobs can see, never holds a credential.
            env += [
                client.V1EnvVar(
                    name=var,
                    value_from=client.V1EnvVarSource(
                        secret_key_ref=client.V1SecretKeySelector(name=s.credentials_secret, key=key)
                    ),
                )
                for var, key in (("MINIO_ACCESS_KEY", s.access_key_key), ("MINIO_SECRET_KEY", s.secret_key_key))
            ]
        limits = {s.gpu_resource: str(s.gpu_count)} if s.gpu_count > 0 else None
        container = client.V1Container(
            name=CONTAINER,
            image=self.image,
            image_pull_policy=s.image_pull_policy,
            command=command[:3],
            args=command[3:],
            env=env,
            resources=client.V1ResourceRequirements(limits=limits, requests=dict(s.resource_requests) or None),
            security_context=client.V1SecurityContext(
                run_as_non_root=True,
                read_only_root_filesystem=True,
                allow_privilege_escalation=False,
                capabilities=client.V1Capabilities(drop=["ALL"]),
            ),
            volume_mounts=[client.V1VolumeMount(name="tmp", mount_path="/tmp")],
        )
        pod = client.V1PodSpec(
            restart_policy="Never",  # required by podFailurePolicy; the Job makes a new pod instead
            service_account_name=s.service_account,
            automount_service_account_token=False,  # the training never calls the Kubernetes API
            node_selector=dict(s.node_selector) or None,
            tolerations=[_toleration(t) for t in s.tolerations] or None,
            image_pull_secrets=[client.V1LocalObjectReference(name=n) for n in s.image_pull_secrets] or None,
            security_context=client.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=s.run_as_user,
                run_as_group=s.run_as_user,
                fs_group=s.run_as_user,
                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[container],
            volumes=[client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource())],
        )
        return client.V1Job(
            api_version="batch/v1",
            kind="Job",
            metadata=client.V1ObjectMeta(name=name, namespace=self.namespace, labels=labels),
            spec=client.V1JobSpec(
                backoff_limit=s.backoff_limit,
                active_deadline_seconds=s.active_deadline_seconds,
                ttl_seconds_after_finished=s.ttl_seconds_after_finished,
                pod_failure_policy=client.V1PodFailurePolicy(
                    rules=[
                        # First: a drained or preempted node is retried, even though the container then
                        # exits non-zero (rules apply in order, the first match wins).
                        client.V1PodFailurePolicyRule(
                            action="Ignore",
                            on_pod_conditions=[
                                client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
                            ],
                        ),
                        # A training command that fails fails the same way again: do not retry it.
                        client.V1PodFailurePolicyRule(
                            action="FailJob",
                            on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
                                container_name=CONTAINER, operator="NotIn", values=[0]
                            ),
                        ),
                    ]
                ),
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod),
            ),
        )

    # -- the port --------------------------------------------------------------------------------------

    async def launch(self, spec: JobSpec) -> None:
        body = self.build_job(spec)
        name = body.metadata.name
        try:
            await asyncio.to_thread(
                self.batch.create_namespaced_job, self.namespace, body, _request_timeout=self._timeout()
            )
        except ApiException as e:
            if e.status == 409:
                log.info("job %s: Job %s exists already in %s; treating it as launched", spec.job_id, name, self.namespace)
                return
            raise self._error(e, "create", "batch", "jobs", job_id=spec.job_id) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise self._unreachable(e, "create", "jobs", job_id=spec.job_id) from e
        log.info("job %s: created Job %s in %s (image %s)", spec.job_id, name, self.namespace, self.image)

    async def events(self, job_id: str) -> AsyncIterator[LauncherEvent]:
        follower = _Follower(self, job_id, asyncio.get_running_loop())
        follower.start()
        last_error = last_line = ""
        outcome: tuple[str, str] | None = None

        def parsed(line: str) -> LauncherEvent:
            nonlocal last_error, last_line
            event = parse_line(line)
            if isinstance(event, TrainerOutput) and isinstance(event.event, ErrorEvent):
                last_error = event.event.message
            elif isinstance(event, LogLine) and event.line:
                last_line = event.line
            return event

        try:
            while outcome is None:
                kind, value = await follower.queue.get()
                if kind == "line":
                    yield parsed(value)
                elif kind == "job":
                    state, message = job_state(value)
                    if state != "running":
                        outcome = (state, message)
                elif kind == "gone":
                    outcome = ("failed", value)
                elif kind == "fatal":
                    raise value
                elif kind == "logs-done":
                    follower.logs_done = True
            # The Job has ended: its pod's log may still hold lines the log thread has not passed on.
            follower.job_ended.set()
            async for line in follower.drain(self.settings.log_drain_seconds):
                yield parsed(line)
            state, message = outcome
            if state == "succeeded":
                log.info("job %s: Job %s completed", job_id, job_name(job_id))
                yield Finished(succeeded=True, message=message)
            else:
                reason = last_error or last_line
                message = f"{message}; last log line: {reason}" if reason else message
                log.info("job %s: Job %s failed: %s", job_id, job_name(job_id), message)
                yield Finished(succeeded=False, message=message)
        finally:
            follower.stop()

    async def cancel(self, job_id: str) -> None:
        name = job_name(job_id)
        try:
            await asyncio.to_thread(
                self.batch.delete_namespaced_job,
                name,
                self.namespace,
                propagation_policy="Background",
                _request_timeout=self._timeout(),
            )
        except ApiException as e:
            if e.status == 404:
                log.info("job %s: Job %s does not exist; nothing to cancel", job_id, name)
                return
            raise self._error(e, "delete", "batch", "jobs", job_id=job_id) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise self._unreachable(e, "delete", "jobs", job_id=job_id) from e
        log.info("job %s: deleted Job %s (its pods are removed in the background)", job_id, name)

    async def list_jobs(self) -> list[LaunchedJob]:
        try:
            jobs = await asyncio.to_thread(self._list_all_jobs)
        except ApiException as e:
            raise self._error(e, "list", "batch", "jobs") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise self._unreachable(e, "list", "jobs") from e
        launched = []
        for job in jobs:
            meta = job.get("metadata") or {}
            job_id = (meta.get("labels") or {}).get(JOB_ID_LABEL) or str(meta.get("name", "")).removeprefix(JOB_PREFIX)
            state, message = job_state(job)
            launched.append(LaunchedJob(job_id, state, message))
        return launched

    async def ping(self) -> bool:
        try:
            await asyncio.to_thread(
                self._get_json, self.batch.list_namespaced_job, self.namespace,
                label_selector=f"{APP_LABEL}={APP_NAME}", limit=1,
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            log.warning("kubernetes launcher unhealthy: cannot list jobs in %s: %s", self.namespace, _short(e))
            return False
        return True

    # -- blocking helpers, run in threads --------------------------------------------------------------

    def _timeout(self) -> float:
        return self.settings.request_timeout_seconds

    def _get_json(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call an API method and return the response as the JSON the server sent (no model classes)."""
        response = call(*args, _preload_content=False, _request_timeout=self._timeout(), **kwargs)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    def _list_all_jobs(self, *, page_size: int = 500) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            extra = {"_continue": token} if token else {}
            page = self._get_json(
                self.batch.list_namespaced_job, self.namespace, label_selector=f"{APP_LABEL}={APP_NAME}", limit=page_size, **extra
            )
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    # -- errors ----------------------------------------------------------------------------------------

    def _error(self, e: ApiException, verb: str, group: str, resource: str, *, job_id: str | None = None) -> ControllerError:
        who = f"job {job_id}: " if job_id else ""
        what = f"{verb} {resource}{'.' + group if group else ''} in namespace {self.namespace}"
        detail = _status_message(e)
        if e.status == 403:
            return LauncherForbidden(
                f"{who}the Kubernetes API refused to {what} (403 Forbidden: {detail}); the controller's service "
                f"account needs a Role in namespace {self.namespace} with the rule "
                f'apiGroups: ["{group}"], resources: ["{resource}"], verbs: ["{verb}"] (see rbac.yaml)'
            )
        if e.status == 401:
            return LauncherForbidden(f"{who}the Kubernetes API rejected the controller's credentials to {what} (401)")
        if e.status in (400, 404, 405, 413, 415, 422):
            return LauncherRejected(f"{who}the Kubernetes API rejected the request to {what} ({e.status}: {detail})")
        return LauncherUnavailable(f"{who}the Kubernetes API could not {what} ({e.status}: {detail})")

    def _unreachable(self, e: BaseException, verb: str, resource: str, *, job_id: str | None = None) -> LauncherUnavailable:
        who = f"job {job_id}: " if job_id else ""
        return LauncherUnavailable(
            f"{who}cannot reach the Kubernetes API to {verb} {resource} in namespace {self.namespace}: {_short(e)}"
        )


class _NoLogAccess(Exception):
    """The controller may not read the Job's pods or their logs."""


class _Follower:
    """The two threads that follow one Job: a watch on the Job object, and the log of its pod(s)."""

    def __init__(self, launcher: KubernetesLauncher, job_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.launcher = launcher
        self.job_id = job_id
        self.name = job_name(job_id)
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.stopped = threading.Event()
        self.job_ended = threading.Event()
        self._lock = threading.Lock()
        self._responses: set[Any] = set()  # the streams under way, to break off on stop()
        self.logs_done = False

    def start(self) -> None:
        for target, what in ((self._watch_job, "watch"), (self._follow_logs, "logs")):
            threading.Thread(target=target, name=f"kube-{what}-{self.job_id}", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self.stopped.set()
            self.job_ended.set()
            for response in self._responses:
                _shutdown(response)

    def put(self, kind: str, value: Any) -> None:
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))

    async def drain(self, seconds: float) -> AsyncIterator[str]:
        """The log lines still to come, until the log thread is done or `seconds` have passed."""
        deadline = self.loop.time() + seconds
        while not self.logs_done:
            try:
                kind, value = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - self.loop.time()))
            except TimeoutError:
                log.warning("job %s: the pod's log did not end within %.0fs of the Job; not waiting longer", self.job_id, seconds)
                return
            if kind == "line":
                yield value
            elif kind == "logs-done":
                self.logs_done = True

    # -- the watch on the Job --------------------------------------------------------------------------

    def _watch_job(self) -> None:
        try:
            self._watch_until_the_end()
        except Exception as e:  # a watch thread that dies must not leave events() waiting for it
            log.exception("job %s: following the Job failed", self.job_id)
            self.put("fatal", LauncherUnavailable(f"job {self.job_id}: following the Job failed: {_short(e)}"))

    def _watch_until_the_end(self) -> None:
        launcher, s = self.launcher, self.launcher.settings
        selector = f"metadata.name={self.name}"
        version: str | None = None
        failures = 0
        while not self.stopped.is_set():
            verb = "list" if version is None else "watch"
            try:
                if version is None:
                    # A fresh list: where the Job stands now, and the version to watch from.
                    listed = launcher._get_json(launcher.batch.list_namespaced_job, launcher.namespace, field_selector=selector)
                    version = (listed.get("metadata") or {}).get("resourceVersion")
                    items = listed.get("items") or []
                    if not items:
                        self.put("gone", f"the Job {self.name} does not exist (deleted, or removed after it ended)")
                        return
                    self.put("job", items[0])
                    verb = "watch"
                # The client's Watch helper is not used: it cannot be stopped reliably from another thread
                # before its request is under way, and it retries on its own. This is the same request.
                response = self._open(
                    launcher.batch.list_namespaced_job,
                    launcher.namespace,
                    field_selector=selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=s.watch_timeout_seconds,
                    watch=True,
                    _preload_content=False,
                    _request_timeout=(s.request_timeout_seconds, s.watch_timeout_seconds + s.request_timeout_seconds),
                )
                try:
                    for line in _lines(response):
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            # A Status inside the stream, e.g. 410 Expired when the version is too old.
                            raise ApiException(status=obj.get("code"), reason=f"{obj.get('reason')}: {obj.get('message')}")
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        failures = 0
                        if kind == "DELETED":
                            self.put("gone", f"the Job {self.name} was deleted")
                            return
                        if kind in ("ADDED", "MODIFIED"):
                            self.put("job", obj)
                finally:
                    self._close(response)
                log.debug("job %s: watch ended at resourceVersion %s; resuming", self.job_id, version)
            except ApiException as e:
                if self.stopped.is_set():
                    return
                if e.status == 410:
                    log.info("job %s: watch of %s expired (410 Gone); listing again", self.job_id, self.name)
                    version = None
                    continue
                error = launcher._error(e, verb, "batch", "jobs", job_id=self.job_id)
                if isinstance(error, PermanentError):
                    self.put("fatal", error)
                    return
                failures += 1
                log.warning("job %s: watching %s failed (%d), retrying: %s", self.job_id, self.name, failures, error)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                if self.stopped.is_set():
                    return
                failures += 1
                log.warning("job %s: watching %s failed (%d), retrying: %s", self.job_id, self.name, failures, _short(e))
            if failures:
                self.stopped.wait(min(30.0, _RETRY_SECONDS * 2 ** (failures - 1)))

    def _open(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Start a streamed request, registered so that stop() can break it off from another thread."""
        response = call(*args, **kwargs)
        with self._lock:
            self._responses.add(response)
            if self.stopped.is_set():  # stop() came while the request was under way
                _shutdown(response)
        return response

    def _close(self, response: Any) -> None:
        with self._lock:
            self._responses.discard(response)
        with contextlib.suppress(Exception):
            response.release_conn()

    # -- the pod's log ---------------------------------------------------------------------------------

    def _follow_logs(self) -> None:
        try:
            self._follow_pods()
        except _NoLogAccess as e:
            # The Job's outcome is still followed; only its progress lines are lost.
            log.error("%s; the job's progress cannot be followed", e)
        except Exception:  # a log thread that dies must not leave events() waiting for it
            log.exception("job %s: following the pod log failed", self.job_id)
        finally:
            self.put("logs-done", None)

    def _follow_pods(self) -> None:
        launcher = self.launcher
        done: set[str] = set()
        while not self.stopped.is_set():
            final = self.job_ended.is_set()  # read before listing: a pod that ends later is seen on the next pass
            try:
                pods = launcher._get_json(
                    launcher.core.list_namespaced_pod, launcher.namespace, label_selector=f"{JOB_ID_LABEL}={self.job_id}"
                ).get("items") or []
            except ApiException as e:
                if e.status in (401, 403):
                    raise _NoLogAccess(launcher._error(e, "list", "", "pods", job_id=self.job_id)) from e
                log.warning("job %s: cannot list the Job's pods: %s", self.job_id, _short(e))
                pods = []
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                log.warning("job %s: cannot list the Job's pods: %s", self.job_id, _short(e))
                pods = []
            started = sorted(
                (p for p in pods if (p.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")),
                key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]),
            )
            for pod in started:
                pod_name = pod["metadata"]["name"]
                if pod_name not in done and not self.stopped.is_set():
                    if self._stream_pod_log(pod_name):
                        done.add(pod_name)
            if final:
                return
            self.job_ended.wait(launcher.settings.poll_seconds)

    def _stream_pod_log(self, pod: str) -> bool:
        """Pass on a pod's log lines until its container ends; False when it could not be read at all."""
        launcher = self.launcher
        since: str | None = None  # the timestamp of the last line passed on, to resume after a broken stream
        for attempt in range(_LOG_RECONNECTS + 1):
            if attempt and self.stopped.wait(_RETRY_SECONDS):
                return True
            try:
                # The client has no sinceTime: resume a little early with sinceSeconds (the node's clock may
                # differ from ours) and skip the lines passed on already.
                kwargs: dict[str, Any] = {"since_seconds": _seconds_since(since) + _LOG_RESUME_MARGIN} if since else {}
                response = self._open(
                    launcher.core.read_namespaced_pod_log,
                    pod,
                    launcher.namespace,
                    container=CONTAINER,
                    follow=True,
                    timestamps=True,
                    _preload_content=False,
                    _request_timeout=(launcher.settings.request_timeout_seconds, None),  # quiet epochs are normal
                    **kwargs,
                )
            except ApiException as e:
                if e.status in (401, 403):
                    raise _NoLogAccess(launcher._error(e, "get", "", "pods/log", job_id=self.job_id)) from e
                if e.status in (400, 404):
                    return since is not None  # not started yet (look again on the next pass), or gone
                log.warning("job %s: cannot read the log of pod %s: %s", self.job_id, pod, _short(e))
                continue
            except (urllib3.exceptions.HTTPError, OSError) as e:
                log.warning("job %s: cannot read the log of pod %s: %s", self.job_id, pod, _short(e))
                continue
            try:
                for stamped in _lines(response):
                    stamp, _, line = stamped.partition(" ")
                    if since is not None and stamp <= since:
                        continue  # passed on before the stream broke
                    since = stamp
                    if line.strip():
                        self.put("line", line)
                return True
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                if self.stopped.is_set():
                    return True
                log.warning("job %s: the log stream of pod %s broke, resuming: %s", self.job_id, pod, _short(e))
            finally:
                self._close(response)
        return True


def _lines(response: Any) -> Iterator[str]:
    """The lines of a streamed response as they arrive, the last one even without its newline."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", errors="replace")


def _seconds_since(stamp: str) -> int:
    """Whole seconds from an RFC3339 log timestamp to now, rounded up; 0 for one that cannot be read."""
    try:
        at = datetime.fromisoformat(stamp[:19] + "+00:00")
    except ValueError:
        return 0
    return max(0, math.ceil((datetime.now(UTC) - at).total_seconds()))


def _shutdown(response: Any) -> None:
    """Unblock a thread reading a streamed response by shutting its socket down."""
    if response is None:
        return
    with contextlib.suppress(Exception):
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)


def _status_message(e: ApiException) -> str:
    """The `message` of the Status object the API server sent, or the HTTP reason."""
    try:
        body = json.loads(e.body) if e.body else {}
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or e.reason or "no details") if isinstance(body, dict) else str(e.reason)


def _short(e: BaseException) -> str:
    if isinstance(e, ApiException):
        return f"{e.status} {_status_message(e)}"
    return f"{type(e).__name__}: {e}"


def _toleration(t: Mapping[str, Any]) -> client.V1Toleration:
    return client.V1Toleration(
        key=t.get("key"),
        operator=t.get("operator"),
        value=t.get("value"),
        effect=t.get("effect"),
        toleration_seconds=t.get("tolerationSeconds", t.get("toleration_seconds")),
    )
